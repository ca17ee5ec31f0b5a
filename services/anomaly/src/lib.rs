//! The anomaly agent: validated readings in, `AnomalyDetected` and `SensorStale` out.
//!
//! - Every sensor has its own streaming detector ([`sm_analytics::sensor`]: robust z-score on
//!   a rolling median/MAD and EWMA, k-of-n persistence, hysteresis): one anomaly per episode,
//!   not one per abnormal point.
//! - Every asset has a multivariate model ([`sm_analytics::multivariate`]) over its sensors
//!   aligned in event-time buckets, fitted on the first buckets (the healthy warm-up) and
//!   frozen: it catches slow wear that a rolling per-sensor baseline follows along, and names
//!   the sensors that drove the score.
//! - Backfilled readings are scored by detectors of their own (history must not disturb the
//!   live baselines) and their anomalies carry `backfill = true`: stored, never a live alert.
//! - A sensor silent for `stale_factor` × its usual interval (learned from its own readings)
//!   is reported once as `SensorStale`, on wall-clock time ([`Handler::tick`]).
//!
//! All detector state lives in one [`StateStore`] checkpointed to `sm.anomaly.state.v1` with
//! every transaction: a restart resumes with the baselines as of the committed offsets, so
//! it neither forgets a sensor nor reports an anomaly twice.

use serde::{Deserialize, Serialize};
use sm_analytics::multivariate::{AssetDetector, AssetDetectorConfig, BucketAligner};
use sm_analytics::sensor::{AlarmChange, SensorDetector, SensorDetectorConfig, severity};
use sm_domain::{
    AnomalyDetected, AssetId, Contribution, Envelope, SensorStale, TenantId, Timestamp, ValidatedReading, topics,
};
use sm_kafka::{HandleError, Handler, KafkaConfig, Outputs, Source, StateStore};
use sm_telemetry::TelemetryConfig;
use std::time::Duration;

/// Settings of the anomaly agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    pub anomaly: AnomalySettings,
}

/// Every commit carries the checkpoint of each sensor touched since the last one (a few KiB
/// each), so this agent commits less often than the runtime's default: the changelog volume
/// falls with the interval, at the price of that much alert latency.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 500;

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig { commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS, ..KafkaConfig::default() },
            telemetry: TelemetryConfig::default(),
            anomaly: AnomalySettings::default(),
        }
    }
}

impl AnomalyConfig {
    /// Loads from the process environment (and `SM_CONFIG`), then validates.
    pub fn load() -> Result<Self, sm_telemetry::ConfigError> {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let config: Self = sm_telemetry::load_config(&env)?;
        config.kafka.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        config.anomaly.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        Ok(config)
    }
}

/// Detection settings (`SM_ANOMALY__*`; detector settings nest, e.g.
/// `SM_ANOMALY__SENSOR__Z_THRESHOLD`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalySettings {
    /// Per-sensor detectors.
    pub sensor: SensorDetectorConfig,
    /// Per-asset multivariate model.
    pub asset: AssetDetectorConfig,
    /// Run the per-asset model at all.
    pub multivariate: bool,
    /// Event-time bucket the asset's sensors are aligned in.
    pub bucket_ms: i64,
    /// How long after a bucket's end late readings still count for it.
    pub bucket_grace_ms: i64,
    /// A sensor is stale after this many times its usual interval without a reading...
    pub stale_factor: f64,
    /// ...and never sooner than this.
    pub stale_min_ms: i64,
    /// How often silent sensors are looked for.
    pub stale_check_interval_ms: u64,
    /// No stale reports this long after start: the agent may still be catching up.
    pub startup_grace_ms: i64,
    /// A sensor silent this long is forgotten (its state deleted): state stays bounded as
    /// sensors are retired. It starts afresh, with a new warm-up, if it ever reports again.
    pub forget_after_ms: i64,
    /// At most this many contributing sensors per anomaly.
    pub max_contributors: usize,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
            sensor: SensorDetectorConfig::default(),
            asset: AssetDetectorConfig::default(),
            multivariate: true,
            bucket_ms: 5_000,
            bucket_grace_ms: 2_000,
            stale_factor: 5.0,
            stale_min_ms: 5_000,
            stale_check_interval_ms: 1_000,
            startup_grace_ms: 30_000,
            forget_after_ms: 7 * 24 * 3_600_000,
            max_contributors: 5,
        }
    }
}

impl AnomalySettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket_ms <= 0 || self.bucket_grace_ms < 0 {
            return Err("SM_ANOMALY__BUCKET_MS must be positive and SM_ANOMALY__BUCKET_GRACE_MS not negative".into());
        }
        if self.stale_factor.is_nan() || self.stale_factor <= 1.0 {
            return Err("SM_ANOMALY__STALE_FACTOR must be above 1 (a multiple of the usual interval)".into());
        }
        if self.stale_check_interval_ms == 0 {
            return Err("SM_ANOMALY__STALE_CHECK_INTERVAL_MS must be positive".into());
        }
        self.sensor.validate().map_err(|e| format!("SM_ANOMALY__SENSOR__*: {e}"))?;
        self.asset.validate().map_err(|e| format!("SM_ANOMALY__ASSET__*: {e}"))?;
        Ok(())
    }
}

/// What the agent remembers, per key: `s/<sensor>` (live), `b/<sensor>` (backfill),
/// `a/<asset>` (multivariate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Sensor(SensorState),
    Asset(AssetState),
}

/// One sensor's detector and cadence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SensorState {
    tenant: String,
    asset: String,
    sensor_type: String,
    detector: SensorDetector,
    /// Event time of the newest reading (µs).
    last_event_us: i64,
    /// Wall clock when the newest reading was handled (ms): staleness is about arrival.
    last_arrival_ms: i64,
    /// Smoothed event-time interval between readings (ms).
    interval_ms: Option<f64>,
    stale_reported: bool,
}

/// One asset's aligned buckets and multivariate model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssetState {
    /// Sensor of each model dimension, in order of first appearance.
    sensors: Vec<String>,
    aligner: BucketAligner,
    detector: AssetDetector,
}

/// The anomaly agent's handler. [`AnomalyAgent::detect`] is the whole per-reading decision
/// and does no I/O, so tests and the query service's on-demand scoring use it directly.
pub struct AnomalyAgent {
    settings: AnomalySettings,
    state: StateStore<Entry>,
    started_ms: i64,
    metrics: AnomalyMetrics,
}

impl AnomalyAgent {
    pub fn new(settings: AnomalySettings) -> Self {
        Self { settings, state: StateStore::new(), started_ms: now_ms(), metrics: AnomalyMetrics::new() }
    }

    /// Scores one reading; returns the anomalies it raises. `arrival_ms` is the wall clock
    /// (it only matters for staleness).
    pub fn detect(&mut self, reading: &Envelope<ValidatedReading>, arrival_ms: i64) -> Vec<AnomalyDetected> {
        let payload = &reading.payload;
        if !payload.value.is_finite() {
            return Vec::new();
        }
        let mut found = Vec::new();
        let event_us = reading.header.occurred_at.as_micros();
        let backfill = payload.backfill;
        let key = format!("{}/{}", if backfill { "b" } else { "s" }, payload.sensor_id.as_str());
        let sensor_config = self.settings.sensor;
        let entry = self.state.get_mut_or_insert_with(&key, || {
            Entry::Sensor(SensorState {
                tenant: reading.header.tenant_id.as_str().to_owned(),
                asset: reading.header.asset_id.as_str().to_owned(),
                sensor_type: payload.sensor_type.clone(),
                detector: SensorDetector::new(sensor_config),
                last_event_us: event_us,
                last_arrival_ms: arrival_ms,
                interval_ms: None,
                stale_reported: false,
            })
        });
        let Entry::Sensor(sensor) = entry else { unreachable!("sensor keys hold sensor state") };
        let score = sensor.detector.observe(payload.value);
        if !backfill {
            let delta_ms = (event_us - sensor.last_event_us) as f64 / 1000.0;
            if delta_ms > 0.0 {
                sensor.interval_ms = Some(match sensor.interval_ms {
                    None => delta_ms,
                    Some(previous) => previous + 0.1 * (delta_ms - previous),
                });
            }
            sensor.last_arrival_ms = arrival_ms;
            sensor.stale_reported = false;
        }
        sensor.last_event_us = sensor.last_event_us.max(event_us);
        if score.alarm == AlarmChange::Raised {
            self.metrics.found("sensor", score.detector.name(), backfill);
            found.push(AnomalyDetected {
                scope: AnomalyDetected::SCOPE_SENSOR.into(),
                sensor_id: Some(payload.sensor_id.clone()),
                sensor_type: Some(payload.sensor_type.clone()),
                detector: score.detector.name().into(),
                score: score.score,
                threshold: score.threshold,
                severity: i32::from(severity(score.score, score.threshold)),
                value: Some(payload.value),
                expected_low: Some(score.expected.0),
                expected_high: Some(score.expected.1),
                contributing: vec![Contribution {
                    sensor_id: payload.sensor_id.clone(),
                    share: 1.0,
                    value: payload.value,
                }],
                triggered_by: vec![reading.header.event_id.to_string()],
                window_start: None,
                backfill,
            });
        }
        if self.settings.multivariate && !backfill {
            found.extend(self.detect_asset(reading));
        }
        found
    }

    fn detect_asset(&mut self, reading: &Envelope<ValidatedReading>) -> Vec<AnomalyDetected> {
        let payload = &reading.payload;
        let key = format!("a/{}", reading.header.asset_id.as_str());
        let (bucket_ms, grace_ms, asset_config) =
            (self.settings.bucket_ms, self.settings.bucket_grace_ms, self.settings.asset);
        let Entry::Asset(asset) = self.state.get_mut_or_insert_with(&key, || {
            Entry::Asset(AssetState {
                sensors: Vec::new(),
                aligner: BucketAligner::new(bucket_ms, grace_ms),
                detector: AssetDetector::new(asset_config),
            })
        }) else {
            unreachable!("asset keys hold asset state")
        };
        let dim = match asset.sensors.iter().position(|s| s == payload.sensor_id.as_str()) {
            Some(dim) => dim,
            None if asset.detector.is_fitted() => return Vec::new(), // a sensor added after fitting
            None => {
                asset.sensors.push(payload.sensor_id.as_str().to_owned());
                asset.sensors.len() - 1
            }
        };
        let ts_ms = reading.header.occurred_at.as_micros().div_euclid(1000);
        let mut found = Vec::new();
        for bucket in asset.aligner.push(dim, ts_ms, payload.value) {
            let Some(score) = asset.detector.observe(&bucket.values) else {
                continue;
            };
            if asset.detector.is_fitted() {
                asset.aligner.freeze_dims();
            }
            if score.alarm != AlarmChange::Raised {
                continue;
            }
            let mut contributing: Vec<Contribution> = score
                .contributions
                .iter()
                .enumerate()
                .filter(|(dim, _)| *dim < asset.sensors.len())
                .map(|(dim, share)| Contribution {
                    sensor_id: asset.sensors[dim].as_str().into(),
                    share: *share,
                    value: bucket.values[dim],
                })
                .collect();
            contributing.sort_by(|a, b| b.share.total_cmp(&a.share));
            contributing.truncate(self.settings.max_contributors);
            self.metrics.found("asset", score.detector.name(), false);
            found.push(AnomalyDetected {
                scope: AnomalyDetected::SCOPE_ASSET.into(),
                sensor_id: None,
                sensor_type: None,
                detector: score.detector.name().into(),
                score: score.score,
                threshold: score.threshold,
                severity: i32::from(severity(score.score, score.threshold)),
                value: None,
                expected_low: None,
                expected_high: None,
                contributing,
                triggered_by: vec![reading.header.event_id.to_string()],
                window_start: Some(Timestamp(bucket.start_ms * 1000)),
                backfill: false,
            });
        }
        found
    }

    /// Sensors silent for too long at wall-clock `now_ms`, each reported once until it sends
    /// again: `(tenant, asset, event)`.
    pub fn stale_sensors(&mut self, now_ms: i64) -> Vec<(TenantId, AssetId, SensorStale)> {
        if now_ms - self.started_ms < self.settings.startup_grace_ms {
            return Vec::new();
        }
        let (factor, floor) = (self.settings.stale_factor, self.settings.stale_min_ms);
        let forget_after = self.settings.forget_after_ms;
        let forgotten: Vec<String> = self
            .state
            .iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Sensor(s) if key.starts_with("s/") && now_ms - s.last_arrival_ms > forget_after => {
                    Some(key.clone())
                }
                _ => None,
            })
            .collect();
        for key in forgotten {
            self.state.remove(&key);
        }
        let due: Vec<String> = self
            .state
            .iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Sensor(s) if key.starts_with("s/") && !s.stale_reported => {
                    let limit = s.interval_ms.map(|i| ((i * factor) as i64).max(floor))?;
                    (now_ms - s.last_arrival_ms > limit).then(|| key.clone())
                }
                _ => None,
            })
            .collect();
        let mut stale = Vec::with_capacity(due.len());
        for key in due {
            let Some(Entry::Sensor(s)) = self.state.get_mut(&key) else { continue };
            s.stale_reported = true;
            let interval = s.interval_ms.unwrap_or_default();
            self.metrics.stale.inc();
            stale.push((
                TenantId(s.tenant.clone()),
                AssetId(s.asset.clone()),
                SensorStale {
                    sensor_id: key["s/".len()..].into(),
                    sensor_type: s.sensor_type.clone(),
                    last_reading_at: Timestamp(s.last_event_us),
                    silent_for_ms: now_ms - s.last_arrival_ms,
                    expected_interval_ms: interval.round() as i64,
                    stale_after_ms: ((interval * factor) as i64).max(floor),
                },
            ));
        }
        stale
    }

    /// Keys of sensor and asset state held (for tests and the restore log).
    pub fn tracked(&self) -> usize {
        self.state.len()
    }
}

impl Handler for AnomalyAgent {
    type Input = ValidatedReading;

    async fn handle(&mut self, input: &Envelope<ValidatedReading>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        let mut outputs = Outputs::none();
        for anomaly in self.detect(input, now_ms()) {
            outputs.push(topics::ANOMALIES, anomaly);
        }
        Ok(outputs)
    }

    sm_kafka::state_hooks!(state, topics::ANOMALY_STATE);

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.settings.stale_check_interval_ms))
    }

    fn tick(&mut self, now: Timestamp) -> Outputs {
        let mut outputs = Outputs::none();
        for (tenant, asset, stale) in self.stale_sensors(now.as_micros() / 1000) {
            outputs.push_origin(topics::ANOMALIES, tenant, asset, now, stale);
        }
        outputs
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_micros() / 1000
}

/// What the agent found, for Grafana: `sm_anomaly_*`.
struct AnomalyMetrics {
    found: prometheus::IntCounterVec,
    stale: prometheus::IntCounter,
}

impl AnomalyMetrics {
    fn new() -> Self {
        let found = prometheus::IntCounterVec::new(
            prometheus::Opts::new("sm_anomaly_detected_total", "Anomalies raised, by scope and detector"),
            &["scope", "detector", "backfill"],
        )
        .expect("valid metric");
        let stale = prometheus::IntCounter::new("sm_anomaly_stale_sensors_total", "Sensors reported silent")
            .expect("valid metric");
        let _ = prometheus::register(Box::new(found.clone()));
        let _ = prometheus::register(Box::new(stale.clone()));
        Self { found, stale }
    }

    fn found(&self, scope: &str, detector: &str, backfill: bool) {
        self.found.with_label_values(&[scope, detector, if backfill { "true" } else { "false" }]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(sensor: &str, at_ms: i64, value: f64, backfill: bool) -> Envelope<ValidatedReading> {
        Envelope::origin(
            TenantId::from("t"),
            AssetId::from("pump-1"),
            Timestamp::from_millis(at_ms),
            "test",
            ValidatedReading {
                sensor_id: sensor.into(),
                sensor_type: "temperature".into(),
                value,
                unit: "degC".into(),
                sequence: at_ms,
                quality_flags: Vec::new(),
                backfill,
            },
        )
    }

    /// Deterministic noise in [-1, 1].
    fn noise(i: i64) -> f64 {
        ((i as f64) * 12.9898).sin() * 43_758.545 % 1.0
    }

    fn settings() -> AnomalySettings {
        AnomalySettings { startup_grace_ms: 0, ..AnomalySettings::default() }
    }

    /// Two sensors of one asset at 1 Hz; `spike_at` adds a large spike to the first.
    fn stream(n: i64, spike_at: i64) -> Vec<Envelope<ValidatedReading>> {
        (0..n)
            .flat_map(|i| {
                let spike = if i == spike_at { 40.0 } else { 0.0 };
                [
                    reading("pump-1.temp", i * 1_000, 60.0 + noise(i) + spike, false),
                    reading("pump-1.vib", i * 1_000 + 1, 3.0 + 0.1 * noise(i + 7_777), false),
                ]
            })
            .collect()
    }

    #[test]
    fn a_spike_is_one_sensor_anomaly_naming_its_reading() {
        let mut agent = AnomalyAgent::new(settings());
        let readings = stream(2_000, 1_500);
        let found: Vec<(usize, AnomalyDetected)> = readings
            .iter()
            .enumerate()
            .flat_map(|(i, r)| agent.detect(r, 0).into_iter().map(move |a| (i, a)))
            .filter(|(_, a)| a.scope == AnomalyDetected::SCOPE_SENSOR)
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        let (i, anomaly) = &found[0];
        assert_eq!(anomaly.sensor_id.as_ref().unwrap().as_str(), "pump-1.temp");
        assert_eq!(anomaly.triggered_by, vec![readings[*i].header.event_id.to_string()]);
        assert!(anomaly.value.unwrap() > anomaly.expected_high.unwrap());
        assert!((1..=5).contains(&anomaly.severity));
        assert!(!anomaly.backfill);
    }

    /// A restart restores the checkpoint taken at the last commit and carries on exactly as
    /// if it had never stopped; what the aborted transaction did is forgotten.
    #[test]
    fn restored_state_finds_exactly_what_one_uninterrupted_run_finds() {
        let readings = stream(3_000, 2_500);
        let mut uninterrupted = AnomalyAgent::new(settings());
        let expected: Vec<_> =
            readings.iter().flat_map(|r| uninterrupted.detect(r, 0)).map(|a| a.triggered_by).collect();
        assert!(!expected.is_empty());

        let mut first = AnomalyAgent::new(settings());
        let mut found = Vec::new();
        for r in &readings[..2_000] {
            found.extend(first.detect(r, 0).into_iter().map(|a| a.triggered_by));
        }
        let checkpoint = first.checkpoint();
        first.committed();
        for r in &readings[2_000..2_400] {
            first.detect(r, 0); // handled, never committed: the process dies here
        }
        let mut second = AnomalyAgent::new(settings());
        for (key, value) in &checkpoint {
            second.restore(key.as_bytes(), value.as_deref());
        }
        for r in &readings[2_000..] {
            found.extend(second.detect(r, 0).into_iter().map(|a| a.triggered_by));
        }
        assert_eq!(found, expected);
    }

    #[test]
    fn a_silent_sensor_is_reported_once_until_it_reports_again() {
        let mut agent = AnomalyAgent::new(settings());
        let start = now_ms();
        for i in 0..100 {
            agent.detect(&reading("pump-1.temp", i * 1_000, 60.0, false), start + i * 1_000);
        }
        let last_arrival = start + 99 * 1_000;
        assert!(agent.stale_sensors(last_arrival + 4_000).is_empty(), "not yet: 5 intervals and 5 s");
        let stale = agent.stale_sensors(last_arrival + 6_000);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].2.sensor_id.as_str(), "pump-1.temp");
        assert_eq!(stale[0].2.expected_interval_ms, 1_000);
        assert_eq!(stale[0].2.last_reading_at, Timestamp::from_millis(99_000));
        assert!(agent.stale_sensors(last_arrival + 60_000).is_empty(), "reported once");
        assert!(agent.state.get("s/pump-1.temp").is_some());
        agent.detect(&reading("pump-1.temp", 100_000, 60.0, false), last_arrival + 61_000);
        assert_eq!(agent.stale_sensors(last_arrival + 70_000).len(), 1, "silent again after it came back");
        let week = 7 * 24 * 3_600_000;
        assert!(agent.stale_sensors(last_arrival + 61_000 + week + 1).is_empty());
        assert!(agent.state.get("s/pump-1.temp").is_none(), "forgotten after a week of silence");
    }

    #[test]
    fn backfill_is_scored_apart_and_never_live() {
        let mut agent = AnomalyAgent::new(settings());
        let found: Vec<AnomalyDetected> = stream(2_000, 1_500)
            .into_iter()
            .map(|mut r| {
                r.payload.backfill = true;
                r
            })
            .flat_map(|r| agent.detect(&r, 0))
            .collect();
        assert!(!found.is_empty() && found.iter().all(|a| a.backfill));
        assert!(agent.state.get("s/pump-1.temp").is_none(), "live baseline untouched");
        assert!(agent.stale_sensors(i64::MAX / 2).is_empty(), "history never goes stale");
    }
}
