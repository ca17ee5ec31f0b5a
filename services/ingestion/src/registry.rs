//! The asset registry as ingestion sees it: every sensor and the asset it belongs to, followed
//! from the compacted `sm.assets.v1` topic (latest registration of each asset wins; a
//! tombstone removes it). [`follow`] replays the topic to its end before it returns, so the
//! agent never judges a reading against a half-loaded registry, then keeps following it.

use crate::validate::RegisteredSensor;
use rdkafka::Message;
use sm_domain::{AssetId, AssetRegistered, Codec, SensorId};
use sm_kafka::KafkaConfig;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

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
/// Why the registry could not be loaded.
pub type RegistryError = sm_kafka::changelog::ChangelogError;

/// Loads `topic` to its end into a new registry, then keeps following it in a background
/// task (aborted when the returned handle is dropped... or with `abort()`).
pub async fn follow(
    config: &KafkaConfig,
    topic: &str,
) -> Result<(AssetRegistry, tokio::task::JoinHandle<()>), RegistryError> {
    let registry = AssetRegistry::default();
    let codec = Codec::embedded().expect("embedded schemas are valid");
    let started = Instant::now();
    let following = registry.clone();
    let (_, task) = sm_kafka::changelog::follow(config, topic, "sm-ingestion-registry", move |message| {
        apply_message(&following, &codec, message)
    })
    .await?;
    tracing::info!(
        sensors = registry.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "asset registry loaded"
    );
    Ok((registry, task))
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
