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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftAgentConfig {
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    pub drift: DriftSettings,
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

    fn state_topic(&self) -> Option<&'static str> {
        Some(topics::DRIFT_STATE)
    }

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.state.restore(key, value);
    }

    fn checkpoint(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        self.state.checkpoint()
    }

    fn committed(&mut self) {
        self.state.committed();
    }

    fn rolled_back(&mut self) {
        self.state.rollback();
    }
}
