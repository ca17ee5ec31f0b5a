//! Topic creation. Platform topics are created by the project with explicit partition counts
//! and cleanup policies, never by broker auto-creation.

use crate::KafkaConfig;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Segment age after which a compacted topic's active segment can be cleaned (10 minutes).
const COMPACTED_SEGMENT_MS: &str = "600000";

/// Why the topics could not be made sure of.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot create topic {topic}: {code}{}", hint(*code))]
    Refused { topic: String, code: RDKafkaErrorCode },
    /// The broker refused our credentials or we refused its certificate: permanent until the
    /// settings change, so reported at once rather than as the request's timeout.
    #[error("cannot connect to Kafka: {detail}{}", handshake_hint(detail))]
    Handshake { detail: String },
}

fn handshake_hint(detail: &str) -> &'static str {
    if detail.contains("SASL") {
        " (check SM_KAFKA__SASL_USERNAME and SM_KAFKA__SASL_PASSWORD: a principal of deploy/kafka/access and its password)"
    } else {
        " (check SM_KAFKA__SSL_CA_LOCATION: the CA that signs the brokers' certificates, and the broker's host name)"
    }
}

fn hint(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            " (the Kafka principal SM_KAFKA__SASL_USERNAME needs CREATE on it: deploy/kafka/access lists what each agent may do)"
        }
        _ => "",
    }
}

/// Watches a connection of its own for what would make the admin request fail only by timing
/// out 30 s later: librdkafka reports a refused password or certificate as an error event on
/// the client's main queue, and the admin client never polls that queue (its logs go there
/// too). A producer polled on a thread of its own does; it sends nothing.
struct HandshakeProbe {
    stop: Arc<AtomicBool>,
}

impl HandshakeProbe {
    /// Starts probing; the first refusal is sent on `refused`.
    fn start(config: &KafkaConfig, refused: watch::Sender<Option<String>>) -> Result<Self, TopicsError> {
        let producer: BaseProducer<ProbeContext> =
            config.client_config().create_with_context(ProbeContext { refused })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("kafka-handshake-probe".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    producer.poll(Duration::from_millis(100));
                }
            })
            .map_err(|e| TopicsError::Handshake { detail: format!("cannot start a thread: {e}") })?;
        Ok(Self { stop })
    }
}

impl Drop for HandshakeProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct ProbeContext {
    refused: watch::Sender<Option<String>>,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::forward_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)) {
            self.refused.send_if_modified(|first| first.is_none() && first.replace(reason.to_owned()).is_none());
        }
        tracing::error!(target: "librdkafka", error = %error, "librdkafka: {reason}");
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Creates each `(topic, compacted)` that does not exist yet; existing topics are left as
/// they are.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[(&str, bool)]) -> Result<(), TopicsError> {
    let (refused, mut handshake_failed) = watch::channel(None);
    let _probe = HandshakeProbe::start(config, refused)?;
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
    let results = tokio::select! {
        results = admin.create_topics(&new_topics, &options) => results?,
        Ok(detail) = handshake_failed.wait_for(Option::is_some) => {
            return Err(TopicsError::Handshake { detail: detail.clone().unwrap_or_default() });
        }
    };
    for result in results {
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
