//! Conversions between the wire types of `sm.v1` and the domain's. They are total where the
//! domain type is wider than the wire type; where the wire allows what the domain does not
//! (a timestamp outside `i64` microseconds), they return `None` and the caller says which
//! field was wrong. Validation of business rules (known sensor types, limits) is not here: it
//! belongs to the service that accepts the request.
//!
//! The analytics events have one conversion per message ([`anomaly`], [`drift`],
//! [`sensor_stale`], [`retrain_request`]) from an [`AlertOrigin`] and the event's payload: the
//! live stream builds both from a decoded event, the lists from a projection row, so a field
//! can not come out differently on the two paths.

use crate::v1;
use sm_domain::{
    AlertEvent, AnomalyDetected, DriftDetected, Envelope, EnvelopeHeader, ModelRetrainRequested, SensorSpec,
    SensorStale, Timestamp,
};

const MICROS_PER_SECOND: i64 = 1_000_000;
const NANOS_PER_MICRO: i32 = 1_000;

/// Event time as a `google.protobuf.Timestamp` (exact: microseconds fit in nanoseconds).
pub fn to_timestamp(time: Timestamp) -> prost_types::Timestamp {
    let micros = time.as_micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(MICROS_PER_SECOND),
        nanos: (micros.rem_euclid(MICROS_PER_SECOND) as i32) * NANOS_PER_MICRO,
    }
}

/// Event time of a `google.protobuf.Timestamp`, rounded down to the microsecond. `None` when
/// `nanos` is outside `0..1e9` (not a normalised timestamp) or the time overflows `i64`
/// microseconds (about ±292,000 years).
pub fn from_timestamp(timestamp: &prost_types::Timestamp) -> Option<Timestamp> {
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return None;
    }
    let micros = timestamp.seconds.checked_mul(MICROS_PER_SECOND)?.checked_add(i64::from(timestamp.nanos / 1000))?;
    Some(Timestamp(micros))
}

impl From<SensorSpec> for v1::Sensor {
    fn from(spec: SensorSpec) -> Self {
        Self {
            sensor_id: spec.sensor_id.0,
            sensor_type: spec.sensor_type,
            unit: spec.unit,
            min_value: spec.min_value,
            max_value: spec.max_value,
            expected_interval_ms: spec.expected_interval_ms,
        }
    }
}

impl From<v1::Sensor> for SensorSpec {
    /// Field for field; the caller validates (see `RegisterAsset` in `services/query`).
    fn from(sensor: v1::Sensor) -> Self {
        Self {
            sensor_id: sensor.sensor_id.into(),
            sensor_type: sensor.sensor_type,
            unit: sensor.unit,
            min_value: sensor.min_value,
            max_value: sensor.max_value,
            expected_interval_ms: sensor.expected_interval_ms,
        }
    }
}

/// The envelope fields an alert message repeats: from an event's header (see the `From`
/// impl) or from the columns a projection row keeps of it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOrigin {
    pub event_id: String,
    pub tenant_id: String,
    pub asset_id: String,
    pub occurred_at: Timestamp,
    /// When the event was written to Kafka. Only `Anomaly` and `Drift` carry it (the
    /// projector keeps it only for those).
    pub recorded_at: Timestamp,
}

impl From<&EnvelopeHeader> for AlertOrigin {
    fn from(header: &EnvelopeHeader) -> Self {
        Self {
            event_id: header.event_id.to_string(),
            tenant_id: header.tenant_id.as_str().to_owned(),
            asset_id: header.asset_id.as_str().to_owned(),
            occurred_at: header.occurred_at,
            recorded_at: header.recorded_at,
        }
    }
}

/// `AnomalyDetected` as `sm.v1.Anomaly`. Asset-scope anomalies have no sensor: empty strings.
pub fn anomaly(origin: AlertOrigin, anomaly: AnomalyDetected) -> v1::Anomaly {
    v1::Anomaly {
        event_id: origin.event_id,
        tenant_id: origin.tenant_id,
        asset_id: origin.asset_id,
        scope: anomaly.scope,
        sensor_id: anomaly.sensor_id.map(|id| id.0).unwrap_or_default(),
        sensor_type: anomaly.sensor_type.unwrap_or_default(),
        detector: anomaly.detector,
        score: anomaly.score,
        threshold: anomaly.threshold,
        severity: anomaly.severity,
        value: anomaly.value,
        expected_low: anomaly.expected_low,
        expected_high: anomaly.expected_high,
        contributing: anomaly
            .contributing
            .into_iter()
            .map(|c| v1::Contribution { sensor_id: c.sensor_id.0, share: c.share, value: c.value })
            .collect(),
        triggered_by: anomaly.triggered_by,
        window_start: anomaly.window_start.map(to_timestamp),
        backfill: anomaly.backfill,
        occurred_at: Some(to_timestamp(origin.occurred_at)),
        recorded_at: Some(to_timestamp(origin.recorded_at)),
    }
}

/// `DriftDetected` as `sm.v1.Drift`.
pub fn drift(origin: AlertOrigin, drift: DriftDetected) -> v1::Drift {
    v1::Drift {
        event_id: origin.event_id,
        tenant_id: origin.tenant_id,
        asset_id: origin.asset_id,
        sensor_id: drift.sensor_id.0,
        sensor_type: drift.sensor_type,
        test: drift.test,
        statistic: drift.statistic,
        p_value: drift.p_value,
        psi: drift.psi,
        reference_start: Some(to_timestamp(drift.reference_start)),
        reference_end: Some(to_timestamp(drift.reference_end)),
        reference_size: drift.reference_size,
        current_start: Some(to_timestamp(drift.current_start)),
        current_end: Some(to_timestamp(drift.current_end)),
        current_size: drift.current_size,
        backfill: drift.backfill,
        occurred_at: Some(to_timestamp(origin.occurred_at)),
        recorded_at: Some(to_timestamp(origin.recorded_at)),
    }
}

/// `SensorStale` as `sm.v1.SensorStale`.
pub fn sensor_stale(origin: AlertOrigin, stale: SensorStale) -> v1::SensorStale {
    v1::SensorStale {
        event_id: origin.event_id,
        tenant_id: origin.tenant_id,
        asset_id: origin.asset_id,
        sensor_id: stale.sensor_id.0,
        sensor_type: stale.sensor_type,
        last_reading_at: Some(to_timestamp(stale.last_reading_at)),
        silent_for_ms: stale.silent_for_ms,
        expected_interval_ms: stale.expected_interval_ms,
        stale_after_ms: stale.stale_after_ms,
        occurred_at: Some(to_timestamp(origin.occurred_at)),
    }
}

/// `ModelRetrainRequested` as `sm.v1.RetrainRequest`.
pub fn retrain_request(origin: AlertOrigin, retrain: ModelRetrainRequested) -> v1::RetrainRequest {
    v1::RetrainRequest {
        event_id: origin.event_id,
        tenant_id: origin.tenant_id,
        asset_id: origin.asset_id,
        sensor_id: retrain.sensor_id.0,
        sensor_type: retrain.sensor_type,
        reason: retrain.reason,
        history_from: Some(to_timestamp(retrain.history_from)),
        history_to: Some(to_timestamp(retrain.history_to)),
        occurred_at: Some(to_timestamp(origin.occurred_at)),
    }
}

impl From<Envelope<AlertEvent>> for v1::Alert {
    fn from(event: Envelope<AlertEvent>) -> Self {
        use v1::alert::Kind;
        let origin = AlertOrigin::from(&event.header);
        let kind = match event.payload {
            AlertEvent::Anomaly(a) => Kind::Anomaly(anomaly(origin, a)),
            AlertEvent::Drift(d) => Kind::Drift(drift(origin, d)),
            AlertEvent::Stale(s) => Kind::SensorStale(sensor_stale(origin, s)),
            AlertEvent::Retrain(r) => Kind::RetrainRequest(retrain_request(origin, r)),
        };
        v1::Alert { kind: Some(kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_exactly_including_before_1970() {
        for micros in [0, 1, 999_999, 1_764_000_000_123_456, -1, -1_000_001, i64::MAX, i64::MIN + 1_000_000] {
            let wire = to_timestamp(Timestamp(micros));
            assert!((0..1_000_000_000).contains(&wire.nanos), "{micros}: {wire:?}");
            assert_eq!(from_timestamp(&wire), Some(Timestamp(micros)), "{micros}");
        }
        assert_eq!(to_timestamp(Timestamp(-1)), prost_types::Timestamp { seconds: -1, nanos: 999_999_000 });
    }

    #[test]
    fn sub_microsecond_nanos_round_down_and_bad_timestamps_are_refused() {
        let wire = prost_types::Timestamp { seconds: 10, nanos: 1_999 };
        assert_eq!(from_timestamp(&wire), Some(Timestamp(10_000_001)));
        assert_eq!(from_timestamp(&prost_types::Timestamp { seconds: 0, nanos: -1 }), None);
        assert_eq!(from_timestamp(&prost_types::Timestamp { seconds: 0, nanos: 1_000_000_000 }), None);
        assert_eq!(from_timestamp(&prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }), None);
    }

    #[test]
    fn sensor_specs_convert_both_ways() {
        let spec = SensorSpec {
            sensor_id: "pump-1.temp".into(),
            sensor_type: "temperature".into(),
            unit: "degC".into(),
            min_value: -40.0,
            max_value: 150.0,
            expected_interval_ms: 1000,
        };
        assert_eq!(SensorSpec::from(v1::Sensor::from(spec.clone())), spec);
    }

    #[test]
    fn an_anomaly_event_converts_field_for_field() {
        let payload = AnomalyDetected {
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
            contributing: vec![sm_domain::Contribution { sensor_id: "p.vib".into(), share: 0.75, value: 9.5 }],
            triggered_by: vec!["0194".into()],
            window_start: Some(Timestamp(1_000_000)),
            backfill: false,
        };
        let header = EnvelopeHeader::origin("AnomalyDetected", "t".into(), "p".into(), Timestamp(2_000_000), "test");
        let event = Envelope { header, payload: AlertEvent::Anomaly(payload) };
        let alert = v1::Alert::from(event.clone());
        let Some(v1::alert::Kind::Anomaly(anomaly)) = alert.kind else { panic!("not an anomaly: {alert:?}") };
        assert_eq!(anomaly.event_id, event.header.event_id.to_string());
        assert_eq!((anomaly.asset_id.as_str(), anomaly.sensor_id.as_str(), anomaly.scope.as_str()), ("p", "", "asset"));
        assert_eq!((anomaly.value, anomaly.expected_low, anomaly.severity), (None, Some(1.0), 4));
        assert_eq!(anomaly.contributing, [v1::Contribution { sensor_id: "p.vib".into(), share: 0.75, value: 9.5 }]);
        assert_eq!(anomaly.window_start, Some(to_timestamp(Timestamp(1_000_000))));
        assert_eq!(anomaly.occurred_at, Some(to_timestamp(Timestamp(2_000_000))));
        assert_eq!(anomaly.recorded_at, Some(to_timestamp(event.header.recorded_at)));
    }

    #[test]
    fn each_alert_event_becomes_its_own_kind() {
        let stale = SensorStale {
            sensor_id: "p.temp".into(),
            sensor_type: "temperature".into(),
            last_reading_at: Timestamp(5),
            silent_for_ms: 12_000,
            expected_interval_ms: 1000,
            stale_after_ms: 10_000,
        };
        let retrain = ModelRetrainRequested {
            sensor_id: "p.temp".into(),
            sensor_type: "temperature".into(),
            reason: "drift:ks_psi".into(),
            history_from: Timestamp(3),
            history_to: Timestamp(4),
        };
        let kind = |payload: AlertEvent| {
            let header = EnvelopeHeader::origin("any", "t".into(), "p".into(), Timestamp(7), "test");
            v1::Alert::from(Envelope { header, payload }).kind.unwrap()
        };
        assert!(matches!(kind(AlertEvent::Stale(stale)), v1::alert::Kind::SensorStale(s) if s.silent_for_ms == 12_000));
        assert!(
            matches!(kind(AlertEvent::Retrain(retrain)), v1::alert::Kind::RetrainRequest(r) if r.reason == "drift:ks_psi")
        );
    }
}
