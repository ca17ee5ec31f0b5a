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

/// A compacted topic followed into memory: each key's latest event (a tombstone removes it).
/// Every instance of an agent sees the whole table (the roster, the asset registry), unlike
/// its partitioned inputs. [`Table::version`] moves on with every change, so a handler can
/// notice one without comparing contents.
#[derive(Debug)]
pub struct Table<T> {
    inner: std::sync::Arc<std::sync::RwLock<TableRows<T>>>,
}

#[derive(Debug)]
struct TableRows<T> {
    rows: std::collections::BTreeMap<String, sm_domain::Envelope<T>>,
    version: u64,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self { inner: std::sync::Arc::new(std::sync::RwLock::new(TableRows { rows: Default::default(), version: 0 })) }
    }
}

impl<T: sm_domain::Decode + Clone + Send + Sync + 'static> Table<T> {
    /// Loads `topic` to its end, then keeps following it (see [`follow`]).
    pub async fn follow(
        config: &KafkaConfig,
        topic: &str,
        group: &str,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ChangelogError> {
        let table = Self::default();
        let following = table.clone();
        let codec = sm_domain::Codec::embedded().expect("embedded schemas are valid");
        let name = topic.to_owned();
        let (_, task) = follow(config, topic, group, move |message| {
            let Some(key) = message.key().map(|k| String::from_utf8_lossy(k).into_owned()) else { return };
            match message.payload() {
                None => following.set(key, None),
                Some(bytes) => match T::decode(&codec, bytes, None) {
                    Ok(event) => following.set(key, Some(event)),
                    Err(error) => tracing::warn!(topic = %name, key, error = %error, "undecodable record ignored"),
                },
            }
        })
        .await?;
        Ok((table, task))
    }
}

impl<T: Clone> Table<T> {
    /// Records `key`'s latest event (`None`: deleted).
    pub fn set(&self, key: String, event: Option<sm_domain::Envelope<T>>) {
        let mut table = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Some(event) => table.rows.insert(key, event),
            None => table.rows.remove(&key),
        };
        table.version += 1;
    }

    pub fn get(&self, key: &str) -> Option<sm_domain::Envelope<T>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).rows.get(key).cloned()
    }

    /// Every row that `keep` keeps, in key order.
    pub fn select(&self, mut keep: impl FnMut(&sm_domain::Envelope<T>) -> bool) -> Vec<sm_domain::Envelope<T>> {
        let table = self.inner.read().unwrap_or_else(|e| e.into_inner());
        table.rows.values().filter(|row| keep(row)).cloned().collect()
    }

    /// Changes applied so far.
    pub fn version(&self) -> u64 {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).version
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
