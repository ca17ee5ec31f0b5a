//! Conversions between the wire types of `sm.v1` and the domain's. They are total where the
//! domain type is wider than the wire type; where the wire allows what the domain does not
//! (a timestamp outside `i64` microseconds), they return `None` and the caller says which
//! field was wrong. Validation of business rules (known sensor types, limits) is not here: it
//! belongs to the service that accepts the request.

use crate::v1;
use sm_domain::{SensorSpec, Timestamp};

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
}
