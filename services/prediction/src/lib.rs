//! The prediction agent: validated readings in, `FailurePredicted` out.
//!
//! - Each asset's readings become cycles: event-time windows of the serving model's cycle
//!   length, one mean per sensor type ([`sm_models::CycleBuilder`], the same code the model
//!   was trained with).
//! - Each closed cycle runs the model serving the asset's type over the recent cycles and
//!   emits the remaining useful life with its interval, the probability of failure within
//!   the horizon, the model name and version, and the features that drove it.
//! - Models come from the registry's events (`sm.models.v1`, see [`models`]); a promotion is
//!   loaded beside the serving model and swapped in, so it takes effect within seconds
//!   without a restart or a gap. An asset type with no model gets no prediction: the agent
//!   counts it (`sm_prediction_no_model_total`) and logs it, and never makes a number up.
//! - Asset types come from the asset registry (`sm.assets.v1`, followed like ingestion does).
//!
//! The cycle builders are checkpointed to `sm.prediction.state.v1` with every transaction, so
//! a restart resumes each asset's history where the committed offsets left it.

pub mod models;

use models::{ModelShelf, ServedModel};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use sm_domain::{
    AssetId, AssetRegistered, Codec, Envelope, FailurePredicted, FeatureContribution, ValidatedReading, topics,
};
use sm_kafka::{HandleError, Handler, KafkaConfig, Outputs, Source, StateStore};
use sm_models::stream::Pushed;
use sm_models::{CycleBuilder, ModelKind};
use sm_registry::ArtifactStoreConfig;
use sm_telemetry::TelemetryConfig;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Settings of the prediction agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionConfig {
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    /// Where model artifacts are read from (`SM_ARTIFACTS__*`): the registry's store.
    pub artifacts: ArtifactStoreConfig,
    pub prediction: PredictionSettings,
}

/// Each commit carries the cycle history of every asset touched since the last one.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 500;

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig { commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS, ..KafkaConfig::default() },
            telemetry: TelemetryConfig::default(),
            artifacts: ArtifactStoreConfig::default(),
            prediction: PredictionSettings::default(),
        }
    }
}

impl PredictionConfig {
    /// Loads from the process environment (and `SM_CONFIG`), then validates.
    pub fn load() -> Result<Self, sm_telemetry::ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let config: Self = sm_telemetry::load_config(&env)?;
        config.kafka.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        config.artifacts.validate().map_err(|e| sm_telemetry::ConfigError::Invalid(e.to_string()))?;
        config.prediction.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        Ok(config)
    }
}

/// Prediction settings (`SM_PREDICTION__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionSettings {
    /// `failure_probability` is the probability of failing within this many seconds.
    pub horizon_seconds: f64,
    /// Closed cycles an asset needs before its first prediction (slopes over fewer points
    /// are noise).
    pub min_cycles: usize,
    /// Features reported per prediction, largest contribution first.
    pub max_contributions: usize,
    /// Where model events are read from; only tests change it.
    pub models_topic: String,
    /// Where asset registrations are read from; only tests change it.
    pub assets_topic: String,
}

impl Default for PredictionSettings {
    fn default() -> Self {
        Self {
            horizon_seconds: 30.0,
            min_cycles: 5,
            max_contributions: 5,
            models_topic: topics::MODELS.to_owned(),
            assets_topic: topics::ASSETS.to_owned(),
        }
    }
}

impl PredictionSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.horizon_seconds > 0.0 && self.horizon_seconds.is_finite()) {
            return Err("SM_PREDICTION__HORIZON_SECONDS must be a positive number of seconds".into());
        }
        if self.min_cycles < 2 {
            return Err("SM_PREDICTION__MIN_CYCLES must be at least 2 (a slope needs two points)".into());
        }
        Ok(())
    }
}

/// Asset id → asset type, followed from the asset registry.
#[derive(Debug, Clone, Default)]
pub struct AssetTypes {
    inner: Arc<RwLock<HashMap<AssetId, String>>>,
}

impl AssetTypes {
    pub fn get(&self, asset_id: &AssetId) -> Option<String> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).get(asset_id).cloned()
    }

    /// Records `asset_id`'s type (`None`: the asset was deleted).
    pub fn set(&self, asset_id: AssetId, asset_type: Option<String>) {
        let mut types = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match asset_type {
            Some(asset_type) => types.insert(asset_id, asset_type),
            None => types.remove(&asset_id),
        };
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the compacted asset topic to its end, then keeps following it.
    pub async fn follow(
        config: &KafkaConfig,
        topic: &str,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), sm_kafka::changelog::ChangelogError> {
        let types = Self::default();
        let following = types.clone();
        let codec = Codec::embedded().expect("embedded schemas are valid");
        let (_, task) = sm_kafka::changelog::follow(config, topic, "sm-prediction-assets", move |message| {
            let Some(key) = message.key().map(|k| AssetId(String::from_utf8_lossy(k).into_owned())) else {
                return;
            };
            match message.payload() {
                None => following.set(key, None),
                Some(bytes) => match codec.decode::<AssetRegistered>(bytes, None) {
                    Ok(event) => following.set(event.header.asset_id, Some(event.payload.asset_type)),
                    Err(error) => {
                        tracing::warn!(asset_id = %key, error = %error, "undecodable asset registration ignored")
                    }
                },
            }
        })
        .await?;
        Ok((types, task))
    }
}

/// The prediction agent's handler. [`PredictionAgent::observe`] is the whole per-reading
/// decision given the asset types and the models serving, without I/O.
pub struct PredictionAgent {
    settings: PredictionSettings,
    state: StateStore<CycleBuilder>,
    shelf: ModelShelf,
    asset_types: AssetTypes,
    metrics: PredictionMetrics,
    /// Asset types already logged as having no model (counted every time, logged once).
    unserved: std::collections::HashSet<String>,
}

impl PredictionAgent {
    pub fn new(settings: PredictionSettings, shelf: ModelShelf, asset_types: AssetTypes) -> Self {
        Self {
            settings,
            state: StateStore::new(),
            shelf,
            asset_types,
            metrics: PredictionMetrics::new(),
            unserved: Default::default(),
        }
    }

    /// Adds one reading to its asset's cycles; when it closes a cycle, predicts.
    pub fn observe(&mut self, reading: &Envelope<ValidatedReading>) -> Option<FailurePredicted> {
        let payload = &reading.payload;
        if payload.backfill {
            // History arriving late says nothing about the asset's state now.
            self.metrics.skipped.with_label_values(&["backfill"]).inc();
            return None;
        }
        let asset_id = &reading.header.asset_id;
        let Some(asset_type) = self.asset_types.get(asset_id) else {
            self.metrics.skipped.with_label_values(&["unregistered_asset"]).inc();
            return None;
        };
        let Some(model) = self.shelf.get(&asset_type) else {
            self.metrics.no_model.with_label_values(&[&asset_type]).inc();
            if self.unserved.insert(asset_type.clone()) {
                tracing::warn!(
                    asset_type,
                    "no model for this asset type: no predictions until one is registered (smctl train rul --simulated --asset-type ...)"
                );
            }
            return None;
        };
        self.unserved.remove(&asset_type);
        let keep = model.regressor.window_cycles().max(self.settings.min_cycles);
        let builder = self.state.get_mut_or_insert_with(asset_id.as_str(), || CycleBuilder::new(&model.layout, keep));
        if !builder.fits(&model.layout) {
            // A version reading other channels or cycles: this asset starts its history anew.
            *builder = CycleBuilder::new(&model.layout, keep);
        }
        builder.keep_at_least(keep);
        let event_ms = reading.header.occurred_at.as_micros().div_euclid(1000);
        match builder.push(&payload.sensor_type, event_ms, payload.value) {
            Pushed::Closed => {}
            Pushed::Late => {
                self.metrics.skipped.with_label_values(&["late"]).inc();
                return None;
            }
            Pushed::Added | Pushed::UnknownChannel => return None,
        }
        let history = builder.history();
        if history.len() < self.settings.min_cycles {
            return None;
        }
        let prediction = predict(&model, history, &self.settings);
        if prediction.is_some() {
            self.metrics.predictions.with_label_values(&[&asset_type]).inc();
        }
        prediction
    }

    /// Assets with cycle history held.
    pub fn tracked(&self) -> usize {
        self.state.len()
    }
}

/// Runs `model` over `history` (one asset's closed cycles, oldest first).
pub fn predict(
    model: &ServedModel,
    history: &[sm_models::cmapss::Cycle],
    settings: &PredictionSettings,
) -> Option<FailurePredicted> {
    let prediction = match model.regressor.predict(history) {
        Ok(prediction) => prediction,
        Err(error) => {
            tracing::warn!(model = %model.name, version = model.version, error = %error, "prediction failed");
            return None;
        }
    };
    let seconds_per_cycle = model.layout.cycle_ms as f64 / 1000.0;
    let probability =
        model.regressor.failure_probability(prediction.rul_cycles, settings.horizon_seconds / seconds_per_cycle);
    Some(FailurePredicted {
        model_name: model.name.clone(),
        model_version: model.version,
        model_kind: ModelKind::RemainingUsefulLife.as_str().to_owned(),
        asset_type: model.asset_type.clone(),
        rul_seconds: prediction.rul_cycles * seconds_per_cycle,
        rul_low_seconds: prediction.lower_cycles * seconds_per_cycle,
        rul_high_seconds: prediction.upper_cycles * seconds_per_cycle,
        coverage: prediction.coverage,
        horizon_seconds: settings.horizon_seconds,
        failure_probability: probability,
        cycles: i32::try_from(history.len()).unwrap_or(i32::MAX),
        contributions: prediction
            .contributions
            .iter()
            .take(settings.max_contributions)
            .map(|c| FeatureContribution {
                feature: c.feature.clone(),
                value: c.value,
                contribution: c.contribution * seconds_per_cycle,
            })
            .collect(),
    })
}

impl Handler for PredictionAgent {
    type Input = ValidatedReading;

    async fn handle(&mut self, input: &Envelope<ValidatedReading>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        Ok(match self.observe(input) {
            Some(prediction) => Outputs::one(topics::PREDICTIONS, prediction),
            None => Outputs::none(),
        })
    }

    sm_kafka::state_hooks!(state, topics::PREDICTION_STATE);
}

/// What the agent did, for Grafana: `sm_prediction_*`.
struct PredictionMetrics {
    predictions: prometheus::IntCounterVec,
    no_model: prometheus::IntCounterVec,
    skipped: prometheus::IntCounterVec,
}

impl PredictionMetrics {
    fn new() -> Self {
        let counter = |name: &str, help: &str, label: &str| {
            let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &[label]).expect("valid metric");
            let _ = prometheus::register(Box::new(c.clone()));
            c
        };
        Self {
            predictions: counter("sm_prediction_predictions_total", "FailurePredicted events emitted", "asset_type"),
            no_model: counter(
                "sm_prediction_no_model_total",
                "Readings of assets whose type has no model: nothing predicted",
                "asset_type",
            ),
            skipped: counter("sm_prediction_skipped_total", "Readings not used, by reason", "reason"),
        }
    }
}

/// A small stream RUL model trained on seeded synthetic wear (for the agent's tests and
/// benchmark, which must not depend on a registry): `temperature` and `current` rise
/// linearly, `vibration_rms` exponentially, `pressure` stays put.
#[doc(hidden)]
pub mod fixtures {
    use sm_models::cmapss::{Cycle, SENSORS, SETTINGS, Trajectory};
    use sm_models::{BoostParams, RulParams, RulRegressor, StreamLayout};

    /// The channels of [`stream_model`], in slot order.
    pub const CHANNELS: [&str; 4] = ["current", "pressure", "temperature", "vibration_rms"];

    /// Expected value of `channel` at wear `x` in [0, 1].
    pub fn expected(channel: &str, x: f64) -> f64 {
        let x = x.clamp(0.0, 1.0);
        match channel {
            "current" => 62.0 + 15.0 * x,
            "pressure" => 650.0,
            "temperature" => 55.0 + 30.0 * x,
            "vibration_rms" => 2.5 * (1.0 + 5.0 * ((3.0 * x).exp_m1() / 3f64.exp_m1())),
            _ => 0.0,
        }
    }

    /// A deterministic standard-normal-ish draw (sum of uniforms from a 64-bit LCG).
    pub fn noise(state: &mut u64) -> f64 {
        let mut sum = 0.0;
        for _ in 0..4 {
            *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            sum += (*state >> 11) as f64 / (1u64 << 53) as f64;
        }
        (sum - 2.0) * 3f64.sqrt()
    }

    /// Trains on `units` synthetic run-to-failure assets of 60 to 120 cycles.
    pub fn stream_model(units: u32, cycle_ms: i64) -> RulRegressor {
        let mut state = 7u64;
        let trajectories: Vec<Trajectory> = (0..units)
            .map(|unit| {
                let life = 60 + (unit * 37) % 61;
                let onset = life / 4;
                let cycles = (1..=life)
                    .map(|cycle| {
                        let x = f64::from(cycle.saturating_sub(onset)) / f64::from(life - onset);
                        let mut sensors = [0.0; SENSORS];
                        for (slot, channel) in CHANNELS.iter().enumerate() {
                            sensors[slot] = expected(channel, x) * (1.0 + 0.01 * noise(&mut state));
                        }
                        Cycle { unit, cycle, settings: [0.0; SETTINGS], sensors }
                    })
                    .collect();
                Trajectory { unit, cycles }
            })
            .collect();
        let params = RulParams {
            boost: BoostParams { trees: 60, learning_rate: 0.15, max_depth: 4, ..RulParams::default().boost },
            mean_window_cycles: 5,
            slope_window_cycles: 20,
            cap_cycles: 125.0,
            use_age: false,
            ..RulParams::default()
        };
        let (model, _) = RulRegressor::train(&trajectories, &params).expect("synthetic data trains");
        model
            .for_stream(StreamLayout { channels: CHANNELS.iter().map(|c| c.to_string()).collect(), cycle_ms })
            .expect("valid layout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm_domain::{TenantId, Timestamp};

    fn reading(asset: &str, channel: &str, at_ms: i64, value: f64, backfill: bool) -> Envelope<ValidatedReading> {
        Envelope::origin(
            TenantId::from("t"),
            AssetId::from(asset),
            Timestamp::from_millis(at_ms),
            "test",
            ValidatedReading {
                sensor_id: format!("{asset}.{channel}").into(),
                sensor_type: channel.into(),
                value,
                unit: String::new(),
                sequence: 0,
                quality_flags: vec![],
                backfill,
            },
        )
    }

    fn served(version: i32) -> ServedModel {
        let regressor = fixtures::stream_model(24, 1_000);
        ServedModel {
            name: "rul-pump".into(),
            version,
            asset_type: "pump".into(),
            layout: regressor.stream_layout().unwrap(),
            regressor,
        }
    }

    /// Feeds `cycles` one-second cycles of a pump wearing out over `life` cycles.
    fn run(agent: &mut PredictionAgent, asset: &str, cycles: i64, life: f64) -> Vec<FailurePredicted> {
        let mut state = 3u64;
        let mut found = Vec::new();
        for cycle in 0..cycles {
            let x = (cycle as f64 - life / 4.0).max(0.0) / (0.75 * life);
            for (i, channel) in fixtures::CHANNELS.iter().enumerate() {
                for k in 0..3 {
                    let value = fixtures::expected(channel, x) * (1.0 + 0.01 * fixtures::noise(&mut state));
                    let at = 1_000_000 + cycle * 1_000 + (i as i64) * 50 + k * 300;
                    found.extend(agent.observe(&reading(asset, channel, at, value, false)));
                }
            }
        }
        found
    }

    #[test]
    fn predicts_a_falling_rul_for_a_wearing_asset_and_explains_it() {
        let (shelf, types) = (ModelShelf::default(), AssetTypes::default());
        shelf.put(served(1));
        types.set(AssetId::from("pump-1"), Some("pump".into()));
        let mut agent = PredictionAgent::new(PredictionSettings::default(), shelf, types);
        let found = run(&mut agent, "pump-1", 100, 100.0);
        // One prediction per closed cycle once min_cycles are there.
        assert_eq!(found.len(), 100 - 1 - (PredictionSettings::default().min_cycles - 1));
        let early = found[..20].iter().map(|p| p.rul_seconds).sum::<f64>() / 20.0;
        let late = found[found.len() - 10..].iter().map(|p| p.rul_seconds).sum::<f64>() / 10.0;
        assert!(late < early - 30.0, "RUL should fall: early {early:.1}s, late {late:.1}s");
        let last = found.last().unwrap();
        assert!(last.failure_probability > found[0].failure_probability);
        assert!(last.rul_low_seconds <= last.rul_seconds && last.rul_seconds <= last.rul_high_seconds);
        assert_eq!((last.model_name.as_str(), last.model_version), ("rul-pump", 1));
        assert_eq!(last.contributions.len(), 5);
        assert!(last.contributions.windows(2).all(|w| w[0].contribution.abs() >= w[1].contribution.abs()));
    }

    #[test]
    fn no_model_no_prediction_and_a_promoted_version_takes_over_without_losing_history() {
        let (shelf, types) = (ModelShelf::default(), AssetTypes::default());
        types.set(AssetId::from("pump-1"), Some("pump".into()));
        types.set(AssetId::from("fan-1"), Some("fan".into()));
        let mut agent = PredictionAgent::new(PredictionSettings::default(), shelf.clone(), types);
        assert!(run(&mut agent, "pump-1", 20, 100.0).is_empty(), "no model for pumps yet");
        assert_eq!(agent.tracked(), 0);
        shelf.put(served(1));
        let first = run(&mut agent, "pump-1", 20, 100.0);
        assert!(first.iter().all(|p| p.model_version == 1) && !first.is_empty());
        shelf.put(served(2));
        // Same layout: the asset keeps its history, so the very next closed cycle (19, closed
        // by cycle 20's first reading) is predicted by the new version, and so is cycle 20.
        let mut state = 9u64;
        let mut next = Vec::new();
        for cycle in 20..22 {
            for channel in fixtures::CHANNELS {
                let value = fixtures::expected(channel, 0.0) * (1.0 + 0.01 * fixtures::noise(&mut state));
                next.extend(agent.observe(&reading("pump-1", channel, 1_000_000 + cycle * 1_000, value, false)));
            }
        }
        assert_eq!(next.len(), 2);
        assert!(next.iter().all(|p| p.model_version == 2));
        assert!(run(&mut agent, "fan-1", 20, 100.0).is_empty(), "fans have no model");
        // Backfill and unregistered assets are skipped.
        assert!(agent.observe(&reading("pump-1", "current", 9_000_000, 1.0, true)).is_none());
        assert!(agent.observe(&reading("ghost-1", "current", 9_000_000, 1.0, false)).is_none());
    }
}
