//! What the analytics agents find: anomalies and stale sensors (`sm.anomalies.v1`), drift and
//! the retrain requests it causes (`sm.drift.v1`). [`AlertEvent`] reads any of them, so one
//! consumer (the projector, the query service's alert stream) can follow both topics.

use crate::codec::{Codec, CodecError};
use crate::events::{Decode, DomainEvent};
use crate::{Envelope, SensorId, Timestamp};
use serde::{Deserialize, Serialize};

/// A detector found a sensor, or an asset's sensors together, outside what it learned as
/// normal. The envelope's `occurred_at` is the triggering reading's event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyDetected {
    /// `sensor` (one sensor's detector) or `asset` (the asset's multivariate model).
    pub scope: String,
    pub sensor_id: Option<SensorId>,
    pub sensor_type: Option<String>,
    /// `robust_z`, `ewma`, `kmeans`, `pca_t2`, `pca_q`.
    pub detector: String,
    pub score: f64,
    pub threshold: f64,
    /// 1 (just past the threshold) to 5 (far past it).
    pub severity: i32,
    pub value: Option<f64>,
    pub expected_low: Option<f64>,
    pub expected_high: Option<f64>,
    /// Sensors that drove the score, largest share first.
    pub contributing: Vec<Contribution>,
    /// Event ids of the readings that triggered it.
    pub triggered_by: Vec<String>,
    /// Start of the scored time bucket (scope `asset`).
    pub window_start: Option<Timestamp>,
    /// Found in backfilled history: stored, never a live alert.
    pub backfill: bool,
}

impl AnomalyDetected {
    pub const SCOPE_SENSOR: &'static str = "sensor";
    pub const SCOPE_ASSET: &'static str = "asset";
}

impl DomainEvent for AnomalyDetected {
    const EVENT_TYPE: &'static str = "AnomalyDetected";
    const SCHEMA: &'static str = "anomaly_detected";
}

/// How much one sensor explains of an anomaly score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub sensor_id: SensorId,
    /// 0 to 1; the shares of one anomaly add up to 1.
    pub share: f64,
    pub value: f64,
}

/// A sensor has sent nothing for several times its usual interval (wall-clock time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorStale {
    pub sensor_id: SensorId,
    pub sensor_type: String,
    /// Event time of the last reading.
    pub last_reading_at: Timestamp,
    pub silent_for_ms: i64,
    /// The sensor's usual interval, learned from its readings.
    pub expected_interval_ms: i64,
    pub stale_after_ms: i64,
}

impl DomainEvent for SensorStale {
    const EVENT_TYPE: &'static str = "SensorStale";
    const SCHEMA: &'static str = "sensor_stale";
}

/// A sensor's recent distribution differs from its reference window: one event per
/// confirmed drift. Windows are in event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftDetected {
    pub sensor_id: SensorId,
    pub sensor_type: String,
    /// `ks_psi` or `page_hinkley`.
    pub test: String,
    /// KS D, or the Page–Hinkley cumulative statistic.
    pub statistic: f64,
    pub p_value: Option<f64>,
    pub psi: Option<f64>,
    pub reference_start: Timestamp,
    pub reference_end: Timestamp,
    pub reference_size: i32,
    pub current_start: Timestamp,
    pub current_end: Timestamp,
    pub current_size: i32,
    pub backfill: bool,
}

impl DomainEvent for DriftDetected {
    const EVENT_TYPE: &'static str = "DriftDetected";
    const SCHEMA: &'static str = "drift_detected";
}

/// Models that use this sensor were trained on data unlike today's: retrain them on
/// `history_from..history_to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRetrainRequested {
    pub sensor_id: SensorId,
    pub sensor_type: String,
    /// What triggered it, e.g. `drift:ks_psi`.
    pub reason: String,
    pub history_from: Timestamp,
    pub history_to: Timestamp,
}

impl DomainEvent for ModelRetrainRequested {
    const EVENT_TYPE: &'static str = "ModelRetrainRequested";
    const SCHEMA: &'static str = "model_retrain_requested";
}

/// Any event of `sm.anomalies.v1` or `sm.drift.v1`.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertEvent {
    Anomaly(AnomalyDetected),
    Stale(SensorStale),
    Drift(DriftDetected),
    Retrain(ModelRetrainRequested),
}

impl Decode for AlertEvent {
    fn decode(codec: &Codec, bytes: &[u8], content_type: Option<&str>) -> Result<Envelope<Self>, CodecError> {
        use crate::events::decode_variant as wrap;
        const EXPECTED: &str = "an anomaly or drift event";
        match codec.subject_of(bytes, content_type, EXPECTED)? {
            AnomalyDetected::SCHEMA => wrap(codec, bytes, content_type, AlertEvent::Anomaly),
            SensorStale::SCHEMA => wrap(codec, bytes, content_type, AlertEvent::Stale),
            DriftDetected::SCHEMA => wrap(codec, bytes, content_type, AlertEvent::Drift),
            ModelRetrainRequested::SCHEMA => wrap(codec, bytes, content_type, AlertEvent::Retrain),
            other => Err(CodecError::WrongEventType { expected: EXPECTED, found: other }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AssetId, SensorReading, TenantId};

    fn envelope<T: DomainEvent>(payload: T) -> Envelope<T> {
        Envelope::origin(
            TenantId::from("t"),
            AssetId::from("pump-1"),
            Timestamp(1_764_000_000_000_000),
            "test",
            payload,
        )
    }

    fn anomaly() -> AnomalyDetected {
        AnomalyDetected {
            scope: AnomalyDetected::SCOPE_ASSET.into(),
            sensor_id: None,
            sensor_type: None,
            detector: "kmeans".into(),
            score: 3.5,
            threshold: 1.0,
            severity: 4,
            value: None,
            expected_low: Some(1.0),
            expected_high: None,
            contributing: vec![Contribution { sensor_id: "pump-1.vib".into(), share: 0.75, value: 9.5 }],
            triggered_by: vec!["0194".into()],
            window_start: Some(Timestamp(1_763_999_990_000_000)),
            backfill: true,
        }
    }

    /// Each analytics event round-trips through its schema, and `AlertEvent` reads each one
    /// back as its own variant.
    #[test]
    fn alert_events_round_trip_and_dispatch_on_their_schema() {
        let codec = Codec::embedded().unwrap();
        let check = |bytes: Vec<u8>, expected: AlertEvent| {
            let back = AlertEvent::decode(&codec, &bytes, None).unwrap();
            assert_eq!(back.payload, expected);
            assert_eq!(back.header.asset_id.as_str(), "pump-1");
        };
        let a = anomaly();
        check(codec.encode(&envelope(a.clone())).unwrap(), AlertEvent::Anomaly(a));
        let stale = SensorStale {
            sensor_id: "pump-1.temp".into(),
            sensor_type: "temperature".into(),
            last_reading_at: Timestamp(5),
            silent_for_ms: 12_000,
            expected_interval_ms: 1000,
            stale_after_ms: 10_000,
        };
        check(codec.encode(&envelope(stale.clone())).unwrap(), AlertEvent::Stale(stale));
        let drift = DriftDetected {
            sensor_id: "pump-1.temp".into(),
            sensor_type: "temperature".into(),
            test: "ks_psi".into(),
            statistic: 0.4,
            p_value: Some(1e-9),
            psi: Some(0.31),
            reference_start: Timestamp(1),
            reference_end: Timestamp(2),
            reference_size: 300,
            current_start: Timestamp(3),
            current_end: Timestamp(4),
            current_size: 200,
            backfill: false,
        };
        check(codec.encode(&envelope(drift.clone())).unwrap(), AlertEvent::Drift(drift));
        let retrain = ModelRetrainRequested {
            sensor_id: "pump-1.temp".into(),
            sensor_type: "temperature".into(),
            reason: "drift:ks_psi".into(),
            history_from: Timestamp(3),
            history_to: Timestamp(4),
        };
        check(codec.encode(&envelope(retrain.clone())).unwrap(), AlertEvent::Retrain(retrain));
    }

    #[test]
    fn alert_event_refuses_other_event_types_with_a_reason() {
        let codec = Codec::embedded().unwrap();
        let reading =
            SensorReading { sensor_id: "s".into(), value: 1.0, unit: "degC".into(), sequence: 0, backfill: false };
        let error = AlertEvent::decode(&codec, &codec.encode(&envelope(reading)).unwrap(), None).unwrap_err();
        assert_eq!(error.reason_code(), "wrong_event_type");
        assert!(AlertEvent::decode(&codec, b"junk", None).is_err());
    }

    #[test]
    fn alert_event_honours_the_content_type_and_names_an_empty_record() {
        let codec = Codec::embedded().unwrap();
        let stale = SensorStale {
            sensor_id: "pump-1.temp".into(),
            sensor_type: "temperature".into(),
            last_reading_at: Timestamp(1),
            silent_for_ms: 20_000,
            expected_interval_ms: 1000,
            stale_after_ms: 10_000,
        };
        let bytes = codec.encode(&envelope(stale)).unwrap();
        assert!(AlertEvent::decode(&codec, &bytes, None).is_ok());
        for content_type in ["text/plain", "application/json"] {
            let error = AlertEvent::decode(&codec, &bytes, Some(content_type)).unwrap_err();
            assert_eq!(error.reason_code(), "unsupported_content_type", "{content_type}: {error}");
        }
        assert_eq!(AlertEvent::decode(&codec, b"", None).unwrap_err().reason_code(), "empty_record");
    }
}
