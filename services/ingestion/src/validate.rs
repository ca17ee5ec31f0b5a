//! The ingestion rules, as a pure function of the reading, its sensor's registration, the
//! clock and the policy. Each rejection has a stable reason code (a metric label and the
//! dead letter's `reason_code`); what passes is in its sensor's canonical unit, with quality
//! flags saying what was noticed.

use serde::{Deserialize, Serialize};
use sm_domain::units::{UnitError, to_canonical};
use sm_domain::{AssetId, Envelope, QUOTE_MAX_CHARS, SensorReading, SensorSpec, Timestamp, ValidatedReading, quote};
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

/// Applies every rule, in the order a person would check them. `key` is the record's Kafka
/// key, which on an asset topic must be the envelope's asset id (the architecture's "key =
/// asset id": it is what keeps one asset's readings in order on one partition).
///
/// Whatever the sender chose (ids, unit, key) is quoted with [`quote`] in the detail, so a
/// 100 kB id makes a short dead letter.
pub fn validate(
    reading: &Envelope<SensorReading>,
    key: Option<&[u8]>,
    sensor: Option<&RegisteredSensor>,
    now: Timestamp,
    policy: &Policy,
) -> Verdict {
    let r = &reading.payload;
    let reject = |code: &'static str, detail: String| Verdict::Rejected(Rejection::new(code, detail));
    let q = |text: &str| quote(text, QUOTE_MAX_CHARS);
    let (sensor_id, asset_id) = (q(r.sensor_id.as_str()), q(reading.header.asset_id.as_str()));
    if r.sensor_id.as_str().trim().is_empty() {
        return reject("missing_field", "sensor_id is empty".into());
    }
    if reading.header.asset_id.as_str().trim().is_empty() {
        return reject("missing_field", "asset_id is empty".into());
    }
    match key {
        None | Some([]) => {
            return reject(
                "missing_key",
                format!(
                    "the record has no Kafka key; key every reading by its asset id ({asset_id}), which keeps an \
                     asset's readings in order on one partition"
                ),
            );
        }
        Some(key) if key != reading.header.asset_id.as_str().as_bytes() => {
            return reject(
                "key_mismatch",
                format!(
                    "Kafka key {} is not the envelope's asset_id {asset_id}; key every reading by its asset id, \
                     which keeps an asset's readings in order on one partition",
                    q(&String::from_utf8_lossy(key))
                ),
            );
        }
        Some(_) => {}
    }
    if !r.value.is_finite() {
        return reject("non_finite_value", format!("value {} of {sensor_id} is not a finite number", r.value));
    }
    let occurred_at = reading.header.occurred_at;
    // Checked before any arithmetic on it: an `i64::MIN` timestamp would overflow the age.
    let age_ms = match now.millis_since(occurred_at) {
        Some(age_ms) if occurred_at.in_range() => age_ms,
        _ => {
            return reject(
                "invalid_timestamp",
                format!(
                    "occurred_at of {sensor_id} is {} µs since the epoch, outside the accepted range \
                     [{}, {}] µs (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z); check how the gateway \
                     encodes time (Avro timestamp-micros, JSON timestamp_ms)",
                    occurred_at.as_micros(),
                    Timestamp::MIN.as_micros(),
                    Timestamp::MAX.as_micros()
                ),
            );
        }
    };
    let Some(sensor) = sensor else {
        return reject(
            "unknown_sensor",
            format!("sensor {sensor_id} is not registered; register its asset (smctl assets apply) and replay"),
        );
    };
    if sensor.asset_id != reading.header.asset_id {
        return reject(
            "sensor_asset_mismatch",
            format!("sensor {sensor_id} belongs to asset {}, not {asset_id}", q(sensor.asset_id.as_str())),
        );
    }
    let (value, unit) = match to_canonical(&sensor.spec.sensor_type, &r.unit, r.value) {
        Ok(converted) => converted,
        Err(UnitError::UnknownUnit { sensor_type, canonical, .. }) => {
            return reject(
                "unknown_unit",
                format!("{sensor_id}: unit {} is not a unit of {sensor_type} (canonical: {canonical})", q(&r.unit)),
            );
        }
        // The registration's type, not the sender's: registrations are checked when made.
        Err(error @ UnitError::UnknownSensorType(_)) => {
            return reject("unknown_unit", format!("{sensor_id}: {error}"));
        }
    };
    // `millis_since` divided by 1000, so negating cannot overflow.
    if -age_ms > policy.max_future_skew_ms {
        return reject(
            "future_timestamp",
            format!(
                "{sensor_id} is {} ms in the future (limit {} ms); check the gateway clock",
                -age_ms, policy.max_future_skew_ms
            ),
        );
    }
    if age_ms > policy.max_age_ms && !r.backfill {
        return reject(
            "too_old",
            format!(
                "{sensor_id} is {} s old (limit {} s); send history with backfill=true",
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
    /// The Kafka key of [`reading`]'s records: its asset id.
    const KEY: Option<&[u8]> = Some(b"pump-1");

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

    fn detail_of(verdict: Verdict) -> String {
        match verdict {
            Verdict::Rejected(r) => r.detail,
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
        let v = valid(validate(&reading(71.5, "degC", 10), KEY, Some(&sensor()), NOW, &Policy::default()));
        assert_eq!((v.value, v.unit.as_str(), v.sensor_type.as_str()), (71.5, "degC", "temperature"));
        assert!(v.quality_flags.is_empty());
    }

    #[test]
    fn normalises_units_and_says_so() {
        let v = valid(validate(&reading(212.0, "degF", 10), KEY, Some(&sensor()), NOW, &Policy::default()));
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
        assert_eq!(code(validate(&no_sensor_id, KEY, Some(&s), NOW, &p)), "missing_field");
        assert_eq!(code(validate(&reading(f64::NAN, "degC", 0), KEY, Some(&s), NOW, &p)), "non_finite_value");
        assert_eq!(code(validate(&reading(f64::INFINITY, "degC", 0), KEY, Some(&s), NOW, &p)), "non_finite_value");
        assert_eq!(code(validate(&reading(1.0, "degC", 0), KEY, None, NOW, &p)), "unknown_sensor");
        let mut other_asset = reading(1.0, "degC", 0);
        other_asset.header.asset_id = AssetId::from("pump-2");
        // Keyed by its (wrong) asset, as a producer does: the key agrees, the registry does not.
        assert_eq!(code(validate(&other_asset, Some(b"pump-2"), Some(&s), NOW, &p)), "sensor_asset_mismatch");
        assert_eq!(code(validate(&reading(1.0, "psi", 0), KEY, Some(&s), NOW, &p)), "unknown_unit");
        assert_eq!(code(validate(&reading(900.0, "degC", 0), KEY, Some(&s), NOW, &p)), "out_of_range");
        assert_eq!(code(validate(&reading(1.0, "degC", -3_600_000), KEY, Some(&s), NOW, &p)), "future_timestamp");
        assert_eq!(code(validate(&reading(1.0, "degC", 7 * 86_400_000), KEY, Some(&s), NOW, &p)), "too_old");
    }

    #[test]
    fn rejects_a_record_keyed_by_another_asset_quoting_both() {
        let (p, s) = (Policy::default(), sensor());
        let r = reading(1.0, "degC", 0);
        let verdict = validate(&r, Some(b"pump-2"), Some(&s), NOW, &p);
        assert_eq!(code(verdict.clone()), "key_mismatch");
        let detail = detail_of(verdict);
        assert!(detail.contains(r#"Kafka key "pump-2""#) && detail.contains(r#"asset_id "pump-1""#), "{detail}");
        // A huge or binary key is quoted short.
        let huge = vec![b'k'; 100_000];
        let detail = detail_of(validate(&r, Some(&huge), Some(&s), NOW, &p));
        assert!(detail.len() < 400 && detail.contains("99936 bytes cut"), "{detail}");
        assert_eq!(code(validate(&r, Some(&[0xff, 0xfe]), Some(&s), NOW, &p)), "key_mismatch");
        // A key that only looks like the asset id is another key.
        assert_eq!(code(validate(&r, Some(b"pump-1 "), Some(&s), NOW, &p)), "key_mismatch");
    }

    #[test]
    fn rejects_a_record_without_a_key() {
        let (p, s) = (Policy::default(), sensor());
        let r = reading(1.0, "degC", 0);
        for key in [None, Some(&b""[..])] {
            let verdict = validate(&r, key, Some(&s), NOW, &p);
            assert_eq!(code(verdict.clone()), "missing_key", "{key:?}");
            assert!(detail_of(verdict).contains(r#"asset id ("pump-1")"#));
        }
    }

    #[test]
    fn rejects_timestamps_outside_the_accepted_range_without_overflowing() {
        let (p, s) = (Policy::default(), sensor());
        let at = |micros: i64, backfill: bool| {
            let mut r = reading(1.0, "degC", 0);
            r.header.occurred_at = Timestamp(micros);
            r.payload.backfill = backfill;
            r
        };
        for micros in [i64::MIN, i64::MAX, Timestamp::MIN.0 - 1, Timestamp::MAX.0 + 1] {
            for backfill in [false, true] {
                let verdict = validate(&at(micros, backfill), KEY, Some(&s), NOW, &p);
                assert_eq!(code(verdict.clone()), "invalid_timestamp", "{micros}");
                let detail = detail_of(verdict);
                assert!(detail.contains(&micros.to_string()), "{detail}");
                assert!(detail.contains("0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"), "{detail}");
                assert!(!detail.contains("future"), "{detail}");
            }
        }
        // The limits themselves are times: history from year 1 is old, not invalid.
        valid(validate(&at(Timestamp::MIN.0, true), KEY, Some(&s), NOW, &p));
        assert_eq!(code(validate(&at(Timestamp::MIN.0, false), KEY, Some(&s), NOW, &p)), "too_old");
        assert_eq!(code(validate(&at(Timestamp::MAX.0, false), KEY, Some(&s), NOW, &p)), "future_timestamp");
    }

    #[test]
    fn details_quote_what_the_sender_chose_and_keep_it_short() {
        let (p, s) = (Policy::default(), sensor());
        let mut r = reading(1.0, "degC", 0);
        r.payload.sensor_id = "s".repeat(100_000).into();
        let detail = detail_of(validate(&r, KEY, None, NOW, &p));
        assert!(detail.starts_with(r#"sensor "sss"#) && detail.len() < 400, "{detail}");
        assert!(detail.contains("99936 bytes cut"), "{detail}");
        let detail = detail_of(validate(&reading(1.0, &"u".repeat(100_000), 0), KEY, Some(&s), NOW, &p));
        assert!(detail.contains("canonical: degC") && detail.len() < 400, "{detail}");
    }

    #[test]
    fn clamps_values_just_past_the_physical_limit() {
        let v = valid(validate(&reading(161.0, "degC", 0), KEY, Some(&sensor()), NOW, &Policy::default()));
        assert_eq!(v.value, 160.0);
        assert_eq!(v.quality_flags, vec!["clamped"]);
        assert_eq!(
            code(validate(&reading(163.0, "degC", 0), KEY, Some(&sensor()), NOW, &Policy::default())),
            "out_of_range"
        );
    }

    #[test]
    fn backfill_may_be_old_and_is_flagged() {
        let mut old = reading(20.0, "degC", 30 * 86_400_000);
        old.payload.backfill = true;
        let v = valid(validate(&old, KEY, Some(&sensor()), NOW, &Policy::default()));
        assert_eq!(v.quality_flags, vec!["backfill"]);
        assert!(v.backfill);
    }

    #[test]
    fn late_readings_are_accepted_and_flagged() {
        let v = valid(validate(&reading(20.0, "degC", 5 * 60_000), KEY, Some(&sensor()), NOW, &Policy::default()));
        assert_eq!(v.quality_flags, vec!["late"]);
    }

    #[test]
    fn small_clock_skew_is_tolerated() {
        valid(validate(&reading(20.0, "degC", -5_000), KEY, Some(&sensor()), NOW, &Policy::default()));
    }

    #[test]
    fn default_policy_validates_and_bad_ones_are_named() {
        Policy::default().validate().unwrap();
        let bad = Policy { late_after_ms: 10, max_age_ms: 5, ..Policy::default() };
        assert!(bad.validate().unwrap_err().contains("LATE_AFTER_MS"));
    }
}
