//! Topic creation. Platform topics are created by the project with explicit partition counts
//! and cleanup policies, never by broker auto-creation.

use crate::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Segment age after which a compacted topic's active segment can be cleaned (10 minutes).
const COMPACTED_SEGMENT_MS: &str = "600000";

/// Why the topics could not be made sure of.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot create topic {topic}: {code}{}", hint(*code))]
    Refused { topic: String, code: RDKafkaErrorCode },
}

fn hint(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            " (the Kafka principal SM_KAFKA__SASL_USERNAME needs CREATE on it: deploy/kafka/access lists what each agent may do)"
        }
        _ => "",
    }
}

/// Creates each `(topic, compacted)` that does not exist yet; existing topics are left as
/// they are.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[(&str, bool)]) -> Result<(), TopicsError> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let retention = config.topic_retention_ms.to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, compacted)| {
            let topic =
                NewTopic::new(name, config.topic_partitions, TopicReplication::Fixed(config.topic_replication_factor));
            if *compacted {
                // Small segments and an eager cleaner keep a changelog written on every
                // commit short, so restoring it at start stays fast.
                topic
                    .set("cleanup.policy", "compact")
                    .set("segment.ms", COMPACTED_SEGMENT_MS)
                    .set("min.cleanable.dirty.ratio", "0.1")
            } else {
                topic.set("retention.ms", &retention)
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, partitions = config.topic_partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::error!(topic = %topic, error = %code, "cannot create topic");
                return Err(TopicsError::Refused { topic, code });
            }
        }
    }
    Ok(())
}
