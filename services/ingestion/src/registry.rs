//! The asset registry as ingestion sees it: every sensor and the asset it belongs to, followed
//! from the compacted `sm.assets.v1` topic (latest registration of each asset wins; a
//! tombstone removes it). [`follow`] replays the topic to its end before it returns, so the
//! agent never judges a reading against a half-loaded registry, then keeps following it.

use crate::validate::RegisteredSensor;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sm_domain::{AssetId, AssetRegistered, Codec, SensorId};
use sm_kafka::KafkaConfig;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Sensors by id, shared between the follower task and the handler.
#[derive(Debug, Clone, Default)]
pub struct AssetRegistry {
    inner: Arc<RwLock<Sensors>>,
}

#[derive(Debug, Default)]
struct Sensors {
    by_sensor: HashMap<SensorId, Arc<RegisteredSensor>>,
    by_asset: HashMap<AssetId, Vec<SensorId>>,
}

impl AssetRegistry {
    /// The registration of `sensor_id`, if any.
    pub fn sensor(&self, sensor_id: &SensorId) -> Option<Arc<RegisteredSensor>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).by_sensor.get(sensor_id).cloned()
    }

    /// Number of registered sensors.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).by_sensor.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces everything known about `asset_id` (`None`: the asset was deleted).
    pub fn apply(&self, asset_id: &AssetId, registration: Option<&AssetRegistered>) {
        let mut sensors = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for old in sensors.by_asset.remove(asset_id).unwrap_or_default() {
            sensors.by_sensor.remove(&old);
        }
        if let Some(registration) = registration {
            let ids: Vec<SensorId> = registration.sensors.iter().map(|s| s.sensor_id.clone()).collect();
            for spec in &registration.sensors {
                let sensor = RegisteredSensor { asset_id: asset_id.clone(), spec: spec.clone() };
                sensors.by_sensor.insert(spec.sensor_id.clone(), Arc::new(sensor));
            }
            sensors.by_asset.insert(asset_id.clone(), ids);
        }
    }
}

/// Errors of loading the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("reading the asset registry topic {topic}: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("the asset registry topic {0} has no partitions; create it with `smctl topics create`")]
    NoPartitions(String),
}

/// Loads `topic` to its end into a new registry, then keeps following it in a background
/// task (aborted when the returned handle is dropped... or with `abort()`).
pub async fn follow(
    config: &KafkaConfig,
    topic: &str,
) -> Result<(AssetRegistry, tokio::task::JoinHandle<()>), RegistryError> {
    let kafka = |source| RegistryError::Kafka { topic: topic.to_owned(), source };
    let consumer: StreamConsumer = config
        .client_config()
        .set("group.id", "sm-ingestion-registry") // never commits: assign() reads from the start
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(kafka)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).map_err(kafka)?;
    let partitions: Vec<i32> =
        metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    if partitions.is_empty() {
        return Err(RegistryError::NoPartitions(topic.to_owned()));
    }
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning).map_err(kafka)?;
        let (low, high) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(30)).map_err(kafka)?;
        if high > low {
            ends.insert(*partition, high);
        }
    }
    consumer.assign(&assignment).map_err(kafka)?;
    let registry = AssetRegistry::default();
    let codec = Codec::embedded().expect("embedded schemas are valid");
    let started = Instant::now();
    // Catch up: until every partition's position reached the end seen at start.
    while !ends.is_empty() {
        let message = consumer.recv().await.map_err(kafka)?;
        apply_message(&registry, &codec, &message);
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
        if ends.keys().all(|p| position_at_end(&consumer, topic, *p, ends[p])) {
            break;
        }
    }
    tracing::info!(
        sensors = registry.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "asset registry loaded"
    );
    let following = registry.clone();
    let task = tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(message) => apply_message(&following, &codec, &message),
                Err(error) => {
                    tracing::warn!(error = %error, "asset registry consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok((registry, task))
}

/// Transaction markers take offsets too, so "at the end" is the consumer position, not the
/// last record's offset.
fn position_at_end(consumer: &StreamConsumer, topic: &str, partition: i32, end: i64) -> bool {
    consumer
        .position()
        .ok()
        .and_then(|list| list.find_partition(topic, partition).and_then(|p| p.offset().to_raw()))
        .is_some_and(|position| position >= end)
}

fn apply_message(registry: &AssetRegistry, codec: &Codec, message: &rdkafka::message::BorrowedMessage<'_>) {
    let Some(key) = message.key().map(|k| AssetId(String::from_utf8_lossy(k).into_owned())) else {
        tracing::warn!(offset = message.offset(), "asset registration without a key ignored");
        return;
    };
    match message.payload() {
        None => registry.apply(&key, None),
        Some(bytes) => match codec.decode::<AssetRegistered>(bytes, None) {
            Ok(event) => registry.apply(&event.header.asset_id, Some(&event.payload)),
            Err(error) => tracing::warn!(asset_id = %key, error = %error, "undecodable asset registration ignored"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm_domain::SensorSpec;

    fn registration(sensors: &[&str]) -> AssetRegistered {
        AssetRegistered {
            name: "p".into(),
            asset_type: "pump".into(),
            site: String::new(),
            sensors: sensors
                .iter()
                .map(|id| SensorSpec {
                    sensor_id: (*id).into(),
                    sensor_type: "temperature".into(),
                    unit: "degC".into(),
                    min_value: 0.0,
                    max_value: 1.0,
                    expected_interval_ms: 1000,
                })
                .collect(),
        }
    }

    #[test]
    fn a_new_registration_replaces_the_old_sensors() {
        let registry = AssetRegistry::default();
        let asset = AssetId::from("pump-1");
        registry.apply(&asset, Some(&registration(&["a", "b"])));
        registry.apply(&asset, Some(&registration(&["b", "c"])));
        assert!(registry.sensor(&"a".into()).is_none());
        assert_eq!(registry.sensor(&"c".into()).unwrap().asset_id, asset);
        registry.apply(&asset, None);
        assert!(registry.is_empty());
    }
}
