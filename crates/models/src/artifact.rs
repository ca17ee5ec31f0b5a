//! Model artifacts: a model and its card as one byte string, its SHA-256, and a loader that
//! refuses bytes that do not hash to what the registry recorded.
//!
//! The format is JSON (`format_version` 1) so that an artifact can be read by eye and diffed;
//! the registry, object storage and Kafka events are elsewhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ModelError;
use crate::failure::FailureClassifier;
use crate::rul::RulRegressor;

/// The artifact format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One of the models the platform serves.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Model {
    FailureClassifier(FailureClassifier),
    RemainingUsefulLife(RulRegressor),
}

/// The kind of a model, as stored in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    FailureClassifier,
    RemainingUsefulLife,
}

impl ModelKind {
    /// The registry's spelling (`failure_classifier`, `remaining_useful_life`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailureClassifier => "failure_classifier",
            Self::RemainingUsefulLife => "remaining_useful_life",
        }
    }
}

impl Model {
    pub fn kind(&self) -> ModelKind {
        match self {
            Self::FailureClassifier(_) => ModelKind::FailureClassifier,
            Self::RemainingUsefulLife(_) => ModelKind::RemainingUsefulLife,
        }
    }

    /// The model's inputs, in order.
    pub fn feature_names(&self) -> Vec<String> {
        match self {
            Self::FailureClassifier(_) => crate::failure::FAILURE_FEATURES.iter().map(|s| s.to_string()).collect(),
            Self::RemainingUsefulLife(model) => model.feature_names(),
        }
    }
}

/// What the data a model was trained on was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingData {
    /// Where it came from (a file name, or the projection and query the trainer used).
    pub source: String,
    /// First and last event time covered, RFC 3339, when the data has timestamps.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Rows (processes or engine cycles) and units (machines or engines) trained on.
    pub rows: usize,
    pub units: usize,
}

/// The registry's description of a model version, stored inside the artifact as well so that
/// the bytes are self-describing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub name: String,
    pub kind: ModelKind,
    /// The model's inputs, in order; checked against the model when the artifact is built.
    pub features: Vec<String>,
    pub training: TrainingData,
    /// Evaluation figures by name (`test_f1`, `last_cycle_rmse`...), all on held-out units.
    pub metrics: BTreeMap<String, f64>,
    /// RFC 3339, given by the caller: this crate has no clock.
    pub created_at: String,
}

/// A model with its card: what goes to object storage.
#[derive(Debug, Serialize, Deserialize)]
pub struct Artifact {
    pub format_version: u32,
    pub card: ModelCard,
    pub model: Model,
}

impl Artifact {
    /// Pairs a card with its model, refusing a card that describes another kind or other inputs.
    pub fn new(card: ModelCard, model: Model) -> Result<Self, ModelError> {
        if card.kind != model.kind() {
            return Err(ModelError::CardMismatch(format!(
                "card says {}, model is {}",
                card.kind.as_str(),
                model.kind().as_str()
            )));
        }
        if card.features != model.feature_names() {
            return Err(ModelError::CardMismatch("the card's feature list differs from the model's inputs".into()));
        }
        Ok(Self { format_version: FORMAT_VERSION, card, model })
    }

    /// The artifact's bytes. Non-finite metrics are refused (JSON has no NaN).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        if let Some((name, value)) = self.card.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(ModelError::CardMismatch(format!("metric {name} is {value}; record only finite figures")));
        }
        serde_json::to_vec(self).map_err(ModelError::Serialize)
    }
}

/// Lower-case hex SHA-256 of `bytes`, as recorded in the registry.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads an artifact after checking that its bytes hash to `expected_sha256` (hex, any case).
/// Altered bytes are refused before any of them is parsed.
pub fn load(bytes: &[u8], expected_sha256: &str) -> Result<Artifact, ModelError> {
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(expected_sha256.trim()) {
        return Err(ModelError::ChecksumMismatch { expected: expected_sha256.to_string(), actual });
    }
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version = serde_json::from_slice(bytes).map_err(ModelError::MalformedArtifact)?;
    if version.format_version != FORMAT_VERSION {
        return Err(ModelError::UnsupportedFormat { found: version.format_version, supported: FORMAT_VERSION });
    }
    let artifact: Artifact = serde_json::from_slice(bytes).map_err(ModelError::MalformedArtifact)?;
    if artifact.card.kind != artifact.model.kind() || artifact.card.features != artifact.model.feature_names() {
        return Err(ModelError::CardMismatch("the stored card does not describe the stored model".into()));
    }
    Ok(artifact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai4i::ProcessSample;
    use crate::failure::{FailureExample, FailureParams};
    use crate::synthetic;

    fn artifact() -> (Artifact, Vec<ProcessSample>) {
        let rows = synthetic::ai4i_like(1_500, 9);
        let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
        let params = FailureParams {
            boost: crate::BoostParams { trees: 40, ..FailureParams::default().boost },
            ..FailureParams::default()
        };
        let (model, report) = FailureClassifier::train(&examples, &params).unwrap();
        let model = Model::FailureClassifier(model);
        let card = ModelCard {
            name: "milling-failure".into(),
            kind: ModelKind::FailureClassifier,
            features: model.feature_names(),
            training: TrainingData {
                source: "synthetic".into(),
                from: None,
                to: None,
                rows: report.rows,
                units: report.units,
            },
            metrics: BTreeMap::from([("out_of_fold_f1".to_string(), report.out_of_fold_f1)]),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        (Artifact::new(card, model).unwrap(), rows.iter().map(|r| r.sample).collect())
    }

    #[test]
    fn round_trips_and_predicts_exactly_as_before() {
        let (artifact, samples) = artifact();
        let bytes = artifact.to_bytes().unwrap();
        let sha = sha256_hex(&bytes);
        assert_eq!(sha.len(), 64);
        let loaded = load(&bytes, &sha.to_uppercase()).unwrap();
        assert_eq!(loaded.card, artifact.card);
        let (Model::FailureClassifier(before), Model::FailureClassifier(after)) = (&artifact.model, &loaded.model)
        else {
            panic!("kind changed");
        };
        for sample in samples.iter().take(200) {
            assert_eq!(before.probability(sample).unwrap(), after.probability(sample).unwrap());
        }
        assert_eq!(before.threshold(), after.threshold());
        // Same model, same bytes: the hash identifies the artifact.
        assert_eq!(loaded.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn same_data_and_seed_give_the_same_bytes() {
        let (first, _) = artifact();
        let (second, _) = artifact();
        assert_eq!(sha256_hex(&first.to_bytes().unwrap()), sha256_hex(&second.to_bytes().unwrap()));
    }

    #[test]
    fn refuses_a_flipped_byte_with_advice() {
        let (artifact, _) = artifact();
        let mut bytes = artifact.to_bytes().unwrap();
        let sha = sha256_hex(&bytes);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let error = load(&bytes, &sha).unwrap_err();
        assert!(matches!(error, ModelError::ChecksumMismatch { .. }));
        let message = error.to_string();
        assert!(message.contains("altered") && message.contains("fetch the artifact again"), "{message}");
        bytes.truncate(middle);
        assert!(matches!(load(&bytes, &sha), Err(ModelError::ChecksumMismatch { .. })));
    }

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn refuses_mismatched_cards_unknown_formats_and_nan_metrics() {
        let (artifact, _) = artifact();
        let Artifact { card, model, .. } = artifact;
        let wrong_kind = ModelCard { kind: ModelKind::RemainingUsefulLife, ..card.clone() };
        assert!(matches!(
            Artifact::new(wrong_kind, Model::FailureClassifier(take(model))),
            Err(ModelError::CardMismatch(_))
        ));

        let (artifact, _) = self::artifact();
        let mut value: serde_json::Value = serde_json::from_slice(&artifact.to_bytes().unwrap()).unwrap();
        value["format_version"] = 2.into();
        let bytes = serde_json::to_vec(&value).unwrap();
        assert!(matches!(load(&bytes, &sha256_hex(&bytes)), Err(ModelError::UnsupportedFormat { found: 2, .. })));

        let (mut artifact, _) = self::artifact();
        artifact.card.metrics.insert("test_roc_auc".into(), f64::NAN);
        assert!(artifact.to_bytes().is_err());
    }

    fn take(model: Model) -> FailureClassifier {
        match model {
            Model::FailureClassifier(m) => m,
            Model::RemainingUsefulLife(_) => unreachable!(),
        }
    }
}
