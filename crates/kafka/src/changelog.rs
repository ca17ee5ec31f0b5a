//! Reading a topic from its start to its current end: how agents load a compacted topic
//! (the asset registry, a state changelog) before they start handling inputs.

use crate::KafkaConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// Why a topic could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("reading {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {0} has no partitions; create it with `smctl topics create`")]
    NoPartitions(String),
}

/// A consumer assigned to every partition of `topic` from the beginning. It reads committed
/// records only and never commits offsets (`group` only names it in broker logs).
pub fn assign_from_start(config: &KafkaConfig, topic: &str, group: &str) -> Result<StreamConsumer, ChangelogError> {
    let kafka = |source| ChangelogError::Kafka { topic: topic.to_owned(), source };
    let consumer: StreamConsumer = config
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(kafka)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).map_err(kafka)?;
    let partitions: Vec<i32> =
        metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    if partitions.is_empty() {
        return Err(ChangelogError::NoPartitions(topic.to_owned()));
    }
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning).map_err(kafka)?;
    }
    consumer.assign(&assignment).map_err(kafka)?;
    Ok(consumer)
}

/// Passes every record of the assigned partitions of `topic`, up to the end each had when
/// called, to `apply`; returns how many. The consumer stays positioned after them, so it can
/// keep following the topic.
pub async fn read_to_end(
    consumer: &StreamConsumer,
    topic: &str,
    mut apply: impl FnMut(&BorrowedMessage<'_>),
) -> Result<usize, ChangelogError> {
    let kafka = |source| ChangelogError::Kafka { topic: topic.to_owned(), source };
    let assignment = consumer.assignment().map_err(kafka)?;
    let mut ends = HashMap::new();
    for element in assignment.elements_for_topic(topic) {
        let (low, high) =
            consumer.fetch_watermarks(topic, element.partition(), Duration::from_secs(30)).map_err(kafka)?;
        if high > low {
            ends.insert(element.partition(), high);
        }
    }
    let mut read = 0;
    while !ends.is_empty() {
        // A partition whose last offsets are transaction markers (or aborted records) never
        // delivers its end: wake up now and then to look at the position instead.
        if let Ok(received) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            let message = received.map_err(kafka)?;
            apply(&message);
            read += 1;
            if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
                ends.remove(&message.partition());
            }
        }
        // Transaction markers take offsets too: "at the end" is the position, not the last
        // record's offset.
        ends.retain(|partition, end| !position_at_end(consumer, topic, *partition, *end));
    }
    Ok(read)
}

fn position_at_end(consumer: &StreamConsumer, topic: &str, partition: i32, end: i64) -> bool {
    consumer
        .position()
        .ok()
        .and_then(|list| list.find_partition(topic, partition).and_then(|p| p.offset().to_raw()))
        .is_some_and(|position| position >= end)
}

/// Loads `topic` from its start to its current end through `apply`, then keeps following it
/// in a background task (dropping the handle does not stop it; `abort()` does). How an agent
/// keeps a side view (the asset registry, the model registry) next to its main input.
pub async fn follow<F>(
    config: &KafkaConfig,
    topic: &str,
    group: &str,
    mut apply: F,
) -> Result<(usize, tokio::task::JoinHandle<()>), ChangelogError>
where
    F: FnMut(&BorrowedMessage<'_>) + Send + 'static,
{
    let consumer = assign_from_start(config, topic, group)?;
    let loaded = read_to_end(&consumer, topic, &mut apply).await?;
    let topic = topic.to_owned();
    let task = tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(message) => apply(&message),
                Err(error) => {
                    tracing::warn!(topic = %topic, error = %error, "follower consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok((loaded, task))
}
