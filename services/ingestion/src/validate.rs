//! The ingestion rules, as a pure function of the reading, its sensor's registration, the
//! clock and the policy. Each rejection has a stable reason code (a metric label and the
//! dead letter's `reason_code`); what passes is in its sensor's canonical unit, with quality
//! flags saying what was noticed.

use serde::{Deserialize, Serialize};
use sm_domain::units::{UnitError, to_canonical};
use sm_domain::{AssetId, Envelope, SensorReading, SensorSpec, Timestamp, ValidatedReading};
use sm_kafka::Rejection;

/// Limits of what ingestion accepts (`SM_INGESTION__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// A reading more than this far in the future is rejected (`future_timestamp`): clocks
    /// drift, but not by minutes.
    pub max_future_skew_ms: i64,
    /// A live reading older than this is rejected (`too_old`); historical imports must say
    /// `backfill`.
    pub max_age_ms: i64,
    /// A reading older than this is accepted but flagged `late`.
    pub late_after_ms: i64,
    /// Beyond its physical range by at most this share of the range, a value is clamped to
    /// the limit and flagged `clamped` (sensor noise at the rails); further is `out_of_range`.
    pub clamp_tolerance: f64,
    /// How long a (sensor, timestamp, sequence) is remembered to suppress duplicates (s).
    pub dedup_window_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_future_skew_ms: 60_000,
            max_age_ms: 24 * 3_600_000,
            late_after_ms: 60_000,
            clamp_tolerance: 0.01,
            dedup_window_secs: 3_600,
        }
    }
}

impl Policy {
    /// Checks the settings; the error names the one to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_future_skew_ms < 0 || self.max_age_ms <= 0 || self.late_after_ms < 0 {
            return Err(
                "SM_INGESTION__MAX_FUTURE_SKEW_MS, __MAX_AGE_MS and __LATE_AFTER_MS must not be negative".into()
            );
        }
        if self.late_after_ms > self.max_age_ms {
            return Err("SM_INGESTION__LATE_AFTER_MS must not exceed SM_INGESTION__MAX_AGE_MS".into());
        }
        if !(0.0..0.5).contains(&self.clamp_tolerance) {
            return Err("SM_INGESTION__CLAMP_TOLERANCE must be in [0, 0.5)".into());
        }
        if self.dedup_window_secs == 0 {
            return Err("SM_INGESTION__DEDUP_WINDOW_SECS must be positive".into());
        }
        Ok(())
    }
}

/// A registered sensor and the asset it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredSensor {
    pub asset_id: AssetId,
    pub spec: SensorSpec,
}

/// The outcome for one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Valid(ValidatedReading),
    Rejected(Rejection),
}

/// Applies every rule, in the order a person would check them.
pub fn validate(
    reading: &Envelope<SensorReading>,
    sensor: Option<&RegisteredSensor>,
    now: Timestamp,
    policy: &Policy,
) -> Verdict {
    let r = &reading.payload;
    let reject = |code: &'static str, detail: String| Verdict::Rejected(Rejection::new(code, detail));
    if r.sensor_id.as_str().trim().is_empty() {
        return reject("missing_field", "sensor_id is empty".into());
    }
    if reading.header.asset_id.as_str().trim().is_empty() {
        return reject("missing_field", "asset_id is empty".into());
    }
    if !r.value.is_finite() {
        return reject("non_finite_value", format!("value {} of {} is not a finite number", r.value, r.sensor_id));
    }
    let Some(sensor) = sensor else {
        return reject(
            "unknown_sensor",
            format!("sensor {} is not registered; register its asset (smctl assets apply) and replay", r.sensor_id),
        );
    };
    if sensor.asset_id != reading.header.asset_id {
        return reject(
            "sensor_asset_mismatch",
            format!("sensor {} belongs to asset {}, not {}", r.sensor_id, sensor.asset_id, reading.header.asset_id),
        );
    }
    let (value, unit) = match to_canonical(&sensor.spec.sensor_type, &r.unit, r.value) {
        Ok(converted) => converted,
        Err(error @ (UnitError::UnknownUnit { .. } | UnitError::UnknownSensorType(_))) => {
            return reject("unknown_unit", format!("{}: {error}", r.sensor_id));
        }
    };
    let age_ms = (now.as_micros() - reading.header.occurred_at.as_micros()) / 1000;
    if -age_ms > policy.max_future_skew_ms {
        return reject(
            "future_timestamp",
            format!(
                "{} is {} ms in the future (limit {} ms); check the gateway clock",
                r.sensor_id, -age_ms, policy.max_future_skew_ms
            ),
        );
    }
    if age_ms > policy.max_age_ms && !r.backfill {
        return reject(
            "too_old",
            format!(
                "{} is {} s old (limit {} s); send history with backfill=true",
                r.sensor_id,
                age_ms / 1000,
                policy.max_age_ms / 1000
            ),
        );
    }
    let mut flags = Vec::new();
    let (min, max) = (sensor.spec.min_value, sensor.spec.max_value);
    let slack = (max - min) * policy.clamp_tolerance;
    let value = if value < min || value > max {
        if value < min - slack || value > max + slack {
            return reject(
                "out_of_range",
                format!("{} = {value} {unit} is outside its physical range [{min}, {max}]", r.sensor_id),
            );
        }
        flags.push("clamped".to_owned());
        value.clamp(min, max)
    } else {
        value
    };
    if r.backfill {
        flags.push("backfill".to_owned());
    } else if age_ms > policy.late_after_ms {
        flags.push("late".to_owned());
    }
    if !r.unit.eq(unit) {
        flags.push("converted".to_owned());
    }
    Verdict::Valid(ValidatedReading {
        sensor_id: r.sensor_id.clone(),
        sensor_type: sensor.spec.sensor_type.clone(),
        value,
        unit: unit.to_owned(),
        sequence: r.sequence,
        quality_flags: flags,
        backfill: r.backfill,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm_domain::TenantId;

    const NOW: Timestamp = Timestamp(1_764_000_000_000_000);

    fn sensor() -> RegisteredSensor {
        RegisteredSensor {
            asset_id: AssetId::from("pump-1"),
            spec: SensorSpec {
                sensor_id: "pump-1.temperature".into(),
                sensor_type: "temperature".into(),
                unit: "degC".into(),
                min_value: -40.0,
                max_value: 160.0,
                expected_interval_ms: 1000,
            },
        }
    }

    fn reading(value: f64, unit: &str, age_ms: i64) -> Envelope<SensorReading> {
        Envelope::origin(
            TenantId::from("t"),
            AssetId::from("pump-1"),
            Timestamp(NOW.0 - age_ms * 1000),
            "test",
            SensorReading {
                sensor_id: "pump-1.temperature".into(),
                value,
                unit: unit.into(),
                sequence: 1,
                backfill: false,
            },
        )
    }

    fn code(verdict: Verdict) -> &'static str {
        match verdict {
            Verdict::Rejected(r) => r.reason_code,
            Verdict::Valid(v) => panic!("expected a rejection, got {v:?}"),
        }
    }

    fn valid(verdict: Verdict) -> ValidatedReading {
        match verdict {
            Verdict::Valid(v) => v,
            Verdict::Rejected(r) => panic!("expected valid, got {r}"),
        }
    }

    #[test]
    fn accepts_a_good_reading_unchanged() {
        let v = valid(validate(&reading(71.5, "degC", 10), Some(&sensor()), NOW, &Policy::default()));
        assert_eq!((v.value, v.unit.as_str(), v.sensor_type.as_str()), (71.5, "degC", "temperature"));
        assert!(v.quality_flags.is_empty());
    }

    #[test]
    fn normalises_units_and_says_so() {
        let v = valid(validate(&reading(212.0, "degF", 10), Some(&sensor()), NOW, &Policy::default()));
        assert!((v.value - 100.0).abs() < 1e-9);
        assert_eq!(v.unit, "degC");
        assert_eq!(v.quality_flags, vec!["converted"]);
    }

    #[test]
    fn rejects_each_kind_of_bad_reading_with_its_code() {
        let p = Policy::default();
        let s = sensor();
        let mut no_sensor_id = reading(1.0, "degC", 0);
        no_sensor_id.payload.sensor_id = "".into();
        assert_eq!(code(validate(&no_sensor_id, Some(&s), NOW, &p)), "missing_field");
        assert_eq!(code(validate(&reading(f64::NAN, "degC", 0), Some(&s), NOW, &p)), "non_finite_value");
        assert_eq!(code(validate(&reading(f64::INFINITY, "degC", 0), Some(&s), NOW, &p)), "non_finite_value");
        assert_eq!(code(validate(&reading(1.0, "degC", 0), None, NOW, &p)), "unknown_sensor");
        let mut other_asset = reading(1.0, "degC", 0);
        other_asset.header.asset_id = AssetId::from("pump-2");
        assert_eq!(code(validate(&other_asset, Some(&s), NOW, &p)), "sensor_asset_mismatch");
        assert_eq!(code(validate(&reading(1.0, "psi", 0), Some(&s), NOW, &p)), "unknown_unit");
        assert_eq!(code(validate(&reading(900.0, "degC", 0), Some(&s), NOW, &p)), "out_of_range");
        assert_eq!(code(validate(&reading(1.0, "degC", -3_600_000), Some(&s), NOW, &p)), "future_timestamp");
        assert_eq!(code(validate(&reading(1.0, "degC", 7 * 86_400_000), Some(&s), NOW, &p)), "too_old");
    }

    #[test]
    fn clamps_values_just_past_the_physical_limit() {
        let v = valid(validate(&reading(161.0, "degC", 0), Some(&sensor()), NOW, &Policy::default()));
        assert_eq!(v.value, 160.0);
        assert_eq!(v.quality_flags, vec!["clamped"]);
        assert_eq!(
            code(validate(&reading(163.0, "degC", 0), Some(&sensor()), NOW, &Policy::default())),
            "out_of_range"
        );
    }

    #[test]
    fn backfill_may_be_old_and_is_flagged() {
        let mut old = reading(20.0, "degC", 30 * 86_400_000);
        old.payload.backfill = true;
        let v = valid(validate(&old, Some(&sensor()), NOW, &Policy::default()));
        assert_eq!(v.quality_flags, vec!["backfill"]);
        assert!(v.backfill);
    }

    #[test]
    fn late_readings_are_accepted_and_flagged() {
        let v = valid(validate(&reading(20.0, "degC", 5 * 60_000), Some(&sensor()), NOW, &Policy::default()));
        assert_eq!(v.quality_flags, vec!["late"]);
    }

    #[test]
    fn small_clock_skew_is_tolerated() {
        valid(validate(&reading(20.0, "degC", -5_000), Some(&sensor()), NOW, &Policy::default()));
    }

    #[test]
    fn default_policy_validates_and_bad_ones_are_named() {
        Policy::default().validate().unwrap();
        let bad = Policy { late_after_ms: 10, max_age_ms: 5, ..Policy::default() };
        assert!(bad.validate().unwrap_err().contains("LATE_AFTER_MS"));
    }
}
