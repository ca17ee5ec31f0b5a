//! Which model serves which asset type, followed from `sm.models.v1`.
//!
//! [`ModelCatalog`] is the registry as the events tell it (pure): every registered version,
//! its stage, and for each asset type the version to serve — the production version of a
//! remaining-useful-life model for that type, else its newest staging version (the registry's
//! `auto`); when several model names are registered for one type, the latest decision
//! wins: the most recently promoted production version, else the most recently registered
//! staging one. [`ModelShelf`] holds the loaded models the handler reads; [`follow`] keeps both up
//! to date. A promoted version is loaded (and its SHA-256 checked) *before* it replaces the
//! one serving, so predictions never pause, and a version that fails to load leaves the
//! previous one serving and says why.

use rdkafka::Message;
use sm_domain::{Codec, Decode, ModelEvent, ModelRegistered};
use sm_kafka::KafkaConfig;
use sm_models::{Model, ModelKind, RulRegressor, StreamLayout};
use sm_registry::{ArtifactRef, ArtifactStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// Stage of a version as the events tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Staging,
    Production,
    Archived,
}

/// The registry as followed from its events.
#[derive(Debug, Default)]
pub struct ModelCatalog {
    versions: BTreeMap<(String, i32), Entry>,
    /// Events applied so far: the order decisions were taken in.
    applied: u64,
}

#[derive(Debug)]
struct Entry {
    registered: ModelRegistered,
    stage: Stage,
    /// When (in applied events) it was registered, and last promoted.
    registered_seq: u64,
    promoted_seq: u64,
}

/// The version chosen for an asset type.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub name: String,
    pub version: i32,
    pub artifact: ArtifactRef,
}

impl ModelCatalog {
    /// Applies one event; events of unknown versions (registered before the topic's
    /// retention, or out of order) are ignored.
    pub fn apply(&mut self, event: &ModelEvent) {
        self.applied += 1;
        let seq = self.applied;
        match event {
            ModelEvent::Registered(registered) => {
                self.versions.entry((registered.name.clone(), registered.version)).or_insert_with(|| Entry {
                    registered: registered.clone(),
                    stage: Stage::Staging,
                    registered_seq: seq,
                    promoted_seq: 0,
                });
            }
            ModelEvent::Promoted(promoted) => {
                if !self.versions.contains_key(&(promoted.name.clone(), promoted.version)) {
                    return;
                }
                for ((name, _), entry) in self.versions.iter_mut() {
                    if *name == promoted.name && entry.stage == Stage::Production {
                        entry.stage = Stage::Archived;
                    }
                }
                if let Some(entry) = self.versions.get_mut(&(promoted.name.clone(), promoted.version)) {
                    entry.stage = Stage::Production;
                    entry.promoted_seq = seq;
                }
            }
            ModelEvent::Archived(archived) => {
                if let Some(entry) = self.versions.get_mut(&(archived.name.clone(), archived.version)) {
                    entry.stage = Stage::Archived;
                }
            }
        }
    }

    /// The version to serve for `asset_type`: the most recently promoted production RUL model
    /// for the type, else the most recently registered staging one.
    pub fn choice(&self, asset_type: &str) -> Option<Choice> {
        let rul = ModelKind::RemainingUsefulLife.as_str();
        let candidates = self.versions.iter().filter(|(_, e)| {
            e.registered.asset_type == asset_type && e.registered.kind == rul && e.stage != Stage::Archived
        });
        let best = candidates.max_by_key(|(_, e)| match e.stage {
            Stage::Production => (1, e.promoted_seq),
            _ => (0, e.registered_seq),
        })?;
        let ((name, version), Entry { registered, .. }) = best;
        Some(Choice {
            name: name.clone(),
            version: *version,
            artifact: ArtifactRef {
                location: registered.artifact_location.clone(),
                sha256: registered.artifact_sha256.clone(),
                size: u64::try_from(registered.artifact_size).unwrap_or(0),
            },
        })
    }

    /// Every asset type some version is registered for.
    pub fn asset_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.versions.values().map(|e| e.registered.asset_type.clone()).collect();
        types.sort();
        types.dedup();
        types
    }
}

/// A loaded model, ready to serve one asset type.
#[derive(Debug)]
pub struct ServedModel {
    pub name: String,
    pub version: i32,
    pub asset_type: String,
    pub layout: StreamLayout,
    pub regressor: RulRegressor,
}

impl ServedModel {
    /// Checks an artifact's bytes against `choice` and reads them as a stream RUL model.
    pub fn from_artifact(choice: &Choice, asset_type: &str, bytes: &[u8]) -> Result<Self, String> {
        let artifact = sm_models::load(bytes, &choice.artifact.sha256).map_err(|e| e.to_string())?;
        let Model::RemainingUsefulLife(regressor) = artifact.model else {
            return Err(format!("{} v{} is not a remaining-useful-life model", choice.name, choice.version));
        };
        let layout = regressor.stream_layout().ok_or_else(|| {
            format!(
                "{} v{} was trained on files, not streams (no channel layout); train it with `smctl train rul --simulated`",
                choice.name, choice.version
            )
        })?;
        Ok(Self {
            name: choice.name.clone(),
            version: choice.version,
            asset_type: asset_type.to_owned(),
            layout,
            regressor,
        })
    }
}

/// The models serving, by asset type: read by the handler on every reading, swapped by the
/// follower. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ModelShelf {
    inner: Arc<RwLock<HashMap<String, Arc<ServedModel>>>>,
}

impl ModelShelf {
    pub fn get(&self, asset_type: &str) -> Option<Arc<ServedModel>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).get(asset_type).cloned()
    }

    /// Puts `model` in service for its asset type (the one it replaces finishes any prediction
    /// in flight: the handler holds its own `Arc`).
    pub fn put(&self, model: ServedModel) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).insert(model.asset_type.clone(), Arc::new(model));
    }

    pub fn remove(&self, asset_type: &str) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).remove(asset_type);
    }

    /// `(asset type, name, version)` of everything serving.
    pub fn serving(&self) -> Vec<(String, String, i32)> {
        let mut all: Vec<_> = self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|m| (m.asset_type.clone(), m.name.clone(), m.version))
            .collect();
        all.sort();
        all
    }
}

/// Brings the shelf in line with the catalog: loads what changed, removes what no longer
/// serves. A load that fails keeps the previous model serving.
pub async fn reconcile(catalog: &ModelCatalog, shelf: &ModelShelf, store: &ArtifactStore, metrics: &LoadMetrics) {
    for asset_type in catalog.asset_types() {
        let current = shelf.get(&asset_type).map(|m| (m.name.clone(), m.version));
        match catalog.choice(&asset_type) {
            None if current.is_some() => {
                tracing::warn!(asset_type, "no model serves this asset type any more: its predictions stop");
                shelf.remove(&asset_type);
            }
            None => {}
            Some(choice) if current.as_ref() == Some(&(choice.name.clone(), choice.version)) => {}
            Some(choice) => {
                let loaded = match store.get(&choice.artifact).await {
                    Ok(bytes) => ServedModel::from_artifact(&choice, &asset_type, &bytes),
                    Err(error) => Err(error.to_string()),
                };
                match loaded {
                    Ok(model) => {
                        tracing::info!(
                            asset_type,
                            model = %choice.name,
                            version = choice.version,
                            replaced = ?current,
                            "model loaded and serving"
                        );
                        metrics.loaded.with_label_values(&[&asset_type]).inc();
                        shelf.put(model);
                    }
                    Err(error) => {
                        tracing::error!(
                            asset_type,
                            model = %choice.name,
                            version = choice.version,
                            error = %error,
                            "model refused; the previous one (if any) keeps serving"
                        );
                        metrics.refused.with_label_values(&[&asset_type]).inc();
                    }
                }
            }
        }
    }
}

/// Model loads, for Grafana: `sm_prediction_model_loads_total`, `..._refused_total`.
#[derive(Clone)]
pub struct LoadMetrics {
    loaded: prometheus::IntCounterVec,
    refused: prometheus::IntCounterVec,
}

impl LoadMetrics {
    pub fn new() -> Self {
        let counter = |name: &str, help: &str| {
            let c = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &["asset_type"])
                .expect("valid metric");
            let _ = prometheus::register(Box::new(c.clone()));
            c
        };
        Self {
            loaded: counter("sm_prediction_model_loads_total", "Model versions loaded into service"),
            refused: counter(
                "sm_prediction_model_refused_total",
                "Model versions that could not be loaded (artifact missing, altered or unreadable)",
            ),
        }
    }
}

impl Default for LoadMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Loads `topic` (the model events) to its end and the models it chooses, then keeps
/// following it: each event is applied and the shelf reconciled. Returns once the shelf
/// holds what the topic said when called.
pub async fn follow(
    config: &KafkaConfig,
    topic: &str,
    store: ArtifactStore,
    shelf: ModelShelf,
) -> Result<tokio::task::JoinHandle<()>, sm_kafka::changelog::ChangelogError> {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<ModelEvent>();
    let codec = Codec::embedded().expect("embedded schemas are valid");
    // `follow` applies the records up to the topic's end synchronously, so when it returns
    // they are all in the channel; later ones arrive as the follower reads them.
    let (loaded, follower) = sm_kafka::changelog::follow(config, topic, "sm-prediction-models", move |message| {
        let Some(bytes) = message.payload() else { return };
        match ModelEvent::decode(&codec, bytes, None) {
            Ok(event) => {
                let _ = sender.send(event.payload);
            }
            Err(error) => tracing::warn!(offset = message.offset(), error = %error, "undecodable model event ignored"),
        }
    })
    .await?;
    let metrics = LoadMetrics::new();
    let mut catalog = ModelCatalog::default();
    while let Ok(event) = receiver.try_recv() {
        catalog.apply(&event);
    }
    reconcile(&catalog, &shelf, &store, &metrics).await;
    tracing::info!(events = loaded, serving = ?shelf.serving(), "model registry loaded");
    Ok(tokio::spawn(async move {
        let _follower = AbortOnDrop(follower);
        while let Some(event) = receiver.recv().await {
            catalog.apply(&event);
            while let Ok(more) = receiver.try_recv() {
                catalog.apply(&more);
            }
            reconcile(&catalog, &shelf, &store, &metrics).await;
        }
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm_domain::{ModelArchived, ModelPromoted};

    fn registered(name: &str, version: i32, asset_type: &str, kind: ModelKind) -> ModelEvent {
        ModelEvent::Registered(ModelRegistered {
            name: name.into(),
            version,
            kind: kind.as_str().into(),
            asset_type: asset_type.into(),
            features: vec!["temperature_last".into()],
            training_from: None,
            training_to: None,
            training_rows: 1,
            training_source: "test".into(),
            metrics: BTreeMap::new(),
            artifact_location: format!("models/{name}/{version}.json"),
            artifact_sha256: format!("{version:064}"),
            artifact_size: 1,
        })
    }

    fn promoted(name: &str, version: i32) -> ModelEvent {
        ModelEvent::Promoted(ModelPromoted {
            name: name.into(),
            version,
            previous_version: None,
            reason: "test".into(),
            comparison: BTreeMap::new(),
        })
    }

    fn chosen(catalog: &ModelCatalog, asset_type: &str) -> Option<(String, i32)> {
        catalog.choice(asset_type).map(|c| (c.name, c.version))
    }

    #[test]
    fn serves_production_else_the_newest_staging_version_of_the_types_rul_model() {
        let mut catalog = ModelCatalog::default();
        assert_eq!(chosen(&catalog, "pump"), None);
        catalog.apply(&registered("rul-pump", 1, "pump", ModelKind::RemainingUsefulLife));
        catalog.apply(&registered("failure-pump", 1, "pump", ModelKind::FailureClassifier));
        catalog.apply(&registered("rul-fan", 1, "fan", ModelKind::RemainingUsefulLife));
        assert_eq!(chosen(&catalog, "pump"), Some(("rul-pump".into(), 1)));
        catalog.apply(&registered("rul-pump", 2, "pump", ModelKind::RemainingUsefulLife));
        assert_eq!(chosen(&catalog, "pump"), Some(("rul-pump".into(), 2)), "newest staging");
        catalog.apply(&promoted("rul-pump", 1));
        assert_eq!(chosen(&catalog, "pump"), Some(("rul-pump".into(), 1)), "production beats newer staging");
        catalog.apply(&promoted("rul-pump", 2));
        assert_eq!(chosen(&catalog, "pump"), Some(("rul-pump".into(), 2)));
        catalog.apply(&ModelEvent::Archived(ModelArchived { name: "rul-pump".into(), version: 2, reason: "x".into() }));
        assert_eq!(chosen(&catalog, "pump"), None, "v1 was archived by v2's promotion");
        assert_eq!(chosen(&catalog, "fan"), Some(("rul-fan".into(), 1)));
        assert_eq!(catalog.asset_types(), vec!["fan".to_string(), "pump".to_string()]);
    }

    #[test]
    fn between_model_names_the_latest_decision_wins_not_the_highest_number() {
        let mut catalog = ModelCatalog::default();
        for version in 1..=3 {
            catalog.apply(&registered("old-pump", version, "pump", ModelKind::RemainingUsefulLife));
        }
        catalog.apply(&promoted("old-pump", 3));
        catalog.apply(&registered("new-pump", 1, "pump", ModelKind::RemainingUsefulLife));
        assert_eq!(chosen(&catalog, "pump"), Some(("old-pump".into(), 3)), "production beats a newer staging");
        catalog.apply(&promoted("new-pump", 1));
        assert_eq!(chosen(&catalog, "pump"), Some(("new-pump".into(), 1)), "the latest promotion wins");
        catalog.apply(&promoted("old-pump", 2));
        assert_eq!(chosen(&catalog, "pump"), Some(("old-pump".into(), 2)));
        catalog.apply(&promoted("ghost", 9));
        assert_eq!(chosen(&catalog, "pump"), Some(("old-pump".into(), 2)), "unknown versions change nothing");
    }
}
