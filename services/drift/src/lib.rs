//! The drift agent: validated readings in, `DriftDetected` and `ModelRetrainRequested` out.
//!
//! Each sensor has a [`DriftMonitor`]: a reference window and a sliding current window in
//! event time, compared with the two-sample Kolmogorov–Smirnov test and PSI every few
//! readings, plus a Page–Hinkley detector for mean shifts. A drift must be confirmed on
//! consecutive checks (hysteresis) and is then one event; the reference re-bases onto the
//! recent data, so the same shift does not fire again. Every live drift also asks for the
//! models using the sensor to be retrained on the recent history.
//!
//! Backfilled readings have monitors of their own and never ask for a retrain. The monitors
//! are checkpointed to `sm.drift.state.v1` with every transaction (see `sm_kafka::state`).

use serde::{Deserialize, Serialize};
use sm_analytics::drift::{DriftConfig, DriftFinding, DriftMonitor, WindowBounds};
use sm_domain::{DriftDetected, Envelope, ModelRetrainRequested, Timestamp, ValidatedReading, topics};
use sm_kafka::{HandleError, Handler, KafkaConfig, Outputs, Source, StateStore};
use sm_telemetry::TelemetryConfig;

/// Settings of the drift agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftAgentConfig {
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    pub drift: DriftSettings,
}

/// Each commit carries the windows of every sensor touched since the last one (up to ~20 KiB
/// each), and drift is a slow signal: this agent commits once a second by default.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 1_000;

impl Default for DriftAgentConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig { commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS, ..KafkaConfig::default() },
            telemetry: TelemetryConfig::default(),
            drift: DriftSettings::default(),
        }
    }
}

impl DriftAgentConfig {
    /// Loads from the process environment (and `SM_CONFIG`), then validates.
    pub fn load() -> Result<Self, sm_telemetry::ConfigError> {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let config: Self = sm_telemetry::load_config(&env)?;
        config.kafka.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        Ok(config)
    }
}

/// Drift settings (`SM_DRIFT__*`; the monitor's nest: `SM_DRIFT__MONITOR__KS_ALPHA`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftSettings {
    pub monitor: DriftConfig,
}

/// One sensor's monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SensorDrift {
    sensor_type: String,
    monitor: DriftMonitor,
}

/// What one reading found: the drift and, for live data, the retrain request.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub drift: DriftDetected,
    pub retrain: Option<ModelRetrainRequested>,
}

/// The drift agent's handler; [`DriftAgent::observe`] is the whole decision, without I/O.
pub struct DriftAgent {
    settings: DriftSettings,
    state: StateStore<SensorDrift>,
    metrics: prometheus::IntCounterVec,
}

impl DriftAgent {
    pub fn new(settings: DriftSettings) -> Self {
        let metrics = prometheus::IntCounterVec::new(
            prometheus::Opts::new("sm_drift_detected_total", "Confirmed drifts, by test"),
            &["test", "backfill"],
        )
        .expect("valid metric");
        let _ = prometheus::register(Box::new(metrics.clone()));
        Self { settings, state: StateStore::new(), metrics }
    }

    /// Feeds one reading to its sensor's monitor.
    pub fn observe(&mut self, reading: &Envelope<ValidatedReading>) -> Option<Found> {
        let payload = &reading.payload;
        if !payload.value.is_finite() {
            return None;
        }
        let backfill = payload.backfill;
        let key = format!("{}/{}", if backfill { "b" } else { "s" }, payload.sensor_id.as_str());
        let config = self.settings.monitor;
        let sensor = self.state.get_mut_or_insert_with(&key, || SensorDrift {
            sensor_type: payload.sensor_type.clone(),
            monitor: DriftMonitor::new(config),
        });
        let ts_ms = reading.header.occurred_at.as_micros().div_euclid(1000);
        let finding = sensor.monitor.observe(ts_ms, payload.value)?;
        let test = finding.test.name();
        self.metrics.with_label_values(&[test, if backfill { "true" } else { "false" }]).inc();
        let drift = drift_event(payload, &finding, backfill);
        let retrain = (!backfill).then(|| ModelRetrainRequested {
            sensor_id: payload.sensor_id.clone(),
            sensor_type: payload.sensor_type.clone(),
            reason: format!("drift:{test}"),
            history_from: millis(finding.current.start_ms),
            history_to: millis(finding.current.end_ms),
        });
        Some(Found { drift, retrain })
    }
}

fn drift_event(payload: &ValidatedReading, finding: &DriftFinding, backfill: bool) -> DriftDetected {
    let size = |w: &WindowBounds| i32::try_from(w.size).unwrap_or(i32::MAX);
    DriftDetected {
        sensor_id: payload.sensor_id.clone(),
        sensor_type: payload.sensor_type.clone(),
        test: finding.test.name().into(),
        statistic: finding.statistic,
        p_value: finding.p_value,
        psi: finding.psi,
        reference_start: millis(finding.reference.start_ms),
        reference_end: millis(finding.reference.end_ms),
        reference_size: size(&finding.reference),
        current_start: millis(finding.current.start_ms),
        current_end: millis(finding.current.end_ms),
        current_size: size(&finding.current),
        backfill,
    }
}

fn millis(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

impl Handler for DriftAgent {
    type Input = ValidatedReading;

    async fn handle(&mut self, input: &Envelope<ValidatedReading>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        let mut outputs = Outputs::none();
        if let Some(found) = self.observe(input) {
            outputs.push(topics::DRIFT, found.drift);
            if let Some(retrain) = found.retrain {
                outputs.push(topics::DRIFT, retrain);
            }
        }
        Ok(outputs)
    }

    sm_kafka::state_hooks!(state, topics::DRIFT_STATE);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm_domain::{AssetId, TenantId};

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

    /// A deterministic, noisy-looking value in [-1, 1] (no RNG needed).
    fn noise(i: i64) -> f64 {
        ((i as f64) * 12.9898).sin() * 43_758.545 % 1.0
    }

    fn settings() -> DriftSettings {
        let mut settings = DriftSettings::default();
        settings.monitor.reference_ms = 60_000;
        settings.monitor.current_ms = 60_000;
        settings
    }

    /// A level step after 10 minutes of 1 Hz readings: one drift and one retrain request
    /// whose history window lies after the step.
    #[test]
    fn a_step_is_one_drift_and_one_retrain_request() {
        let mut agent = DriftAgent::new(settings());
        let step_at = 600_000;
        let mut found = Vec::new();
        for i in 0..1_200 {
            let at = i * 1_000;
            let value = 50.0 + noise(i) + if at >= step_at { 4.0 } else { 0.0 };
            found.extend(agent.observe(&reading("pump-1.temp", at, value, false)));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        let Found { drift, retrain } = &found[0];
        assert!(!drift.backfill);
        assert!(drift.current_end.as_micros() >= step_at * 1_000);
        let retrain = retrain.as_ref().expect("a live drift asks for a retrain");
        assert_eq!(retrain.reason, format!("drift:{}", drift.test));
        assert_eq!((retrain.history_from, retrain.history_to), (drift.current_start, drift.current_end));
    }

    /// History imported with `backfill` is watched by monitors of its own: its drift is
    /// reported as backfill, asks for no retrain, and leaves the live monitor alone.
    #[test]
    fn backfill_drift_asks_for_no_retrain_and_does_not_touch_live_state() {
        let mut agent = DriftAgent::new(settings());
        let mut found = Vec::new();
        for i in 0..1_200 {
            let value = 50.0 + noise(i) + if i >= 600 { 4.0 } else { 0.0 };
            found.extend(agent.observe(&reading("pump-1.temp", i * 1_000, value, true)));
        }
        assert_eq!(found.len(), 1);
        assert!(found[0].drift.backfill && found[0].retrain.is_none());
        assert!(agent.state.get("s/pump-1.temp").is_none(), "live monitor untouched");
    }
}
