//! Registry rows to and from `sm.models.v1` events: the command side (smctl, the trainer,
//! `ModelService`) writes the registry and publishes what it did; a follower (the prediction
//! agent) or a replay reads the events back into the same rows.

use sm_domain::{ModelArchived, ModelPromoted, ModelRegistered, Timestamp, rfc3339};
use sm_models::{ModelKind, TrainingData};

use crate::RegistryError;
use crate::artifacts::ArtifactRef;
use crate::registry::{ModelVersion, NewVersion};

/// The event that announces a registered version.
pub fn registered(version: &ModelVersion) -> ModelRegistered {
    let at = |text: &Option<String>| text.as_deref().and_then(|t| rfc3339::parse(t).ok());
    ModelRegistered {
        name: version.name.clone(),
        version: i32::try_from(version.version).unwrap_or(i32::MAX),
        kind: version.kind.as_str().to_owned(),
        asset_type: version.asset_type.clone(),
        features: version.features.clone(),
        training_from: at(&version.training.from),
        training_to: at(&version.training.to),
        training_rows: i64::try_from(version.training.rows).unwrap_or(i64::MAX),
        training_source: version.training.source.clone(),
        metrics: version.metrics.clone(),
        artifact_location: version.artifact.location.clone(),
        artifact_sha256: version.artifact.sha256.clone(),
        artifact_size: i64::try_from(version.artifact.size).unwrap_or(i64::MAX),
    }
}

/// What a `ModelRegistered` event asks the registry to record (for
/// [`crate::Registry::apply_registered`]): the version, its number and its artifact.
pub fn from_registered(
    event: &ModelRegistered,
    registered_at: Timestamp,
) -> Result<(NewVersion, u32, ArtifactRef), RegistryError> {
    let kind = match event.kind.as_str() {
        "failure_classifier" => ModelKind::FailureClassifier,
        "remaining_useful_life" => ModelKind::RemainingUsefulLife,
        other => {
            return Err(RegistryError::InvalidVersion(format!(
                "model kind {other:?} is not known to this build; upgrade it"
            )));
        }
    };
    let version = u32::try_from(event.version)
        .map_err(|_| RegistryError::InvalidVersion(format!("version {} is not positive", event.version)))?;
    let new = NewVersion {
        name: event.name.clone(),
        kind,
        asset_type: event.asset_type.clone(),
        features: event.features.clone(),
        training: TrainingData {
            source: event.training_source.clone(),
            from: event.training_from.map(rfc3339::format),
            to: event.training_to.map(rfc3339::format),
            rows: usize::try_from(event.training_rows).unwrap_or(0),
            units: 0,
        },
        metrics: event.metrics.clone(),
        comparison: None,
        registered_at,
    };
    let artifact = ArtifactRef {
        location: event.artifact_location.clone(),
        sha256: event.artifact_sha256.clone(),
        size: u64::try_from(event.artifact_size).unwrap_or(0),
    };
    Ok((new, version, artifact))
}

/// The event that announces a promotion (`previous`: the production version it archived).
pub fn promoted(
    name: &str,
    version: u32,
    previous: Option<u32>,
    reason: &str,
    comparison: std::collections::BTreeMap<String, f64>,
) -> ModelPromoted {
    ModelPromoted {
        name: name.to_owned(),
        version: i32::try_from(version).unwrap_or(i32::MAX),
        previous_version: previous.and_then(|v| i32::try_from(v).ok()),
        reason: reason.to_owned(),
        comparison,
    }
}

/// The event that announces an archival.
pub fn archived(name: &str, version: u32, reason: &str) -> ModelArchived {
    ModelArchived {
        name: name.to_owned(),
        version: i32::try_from(version).unwrap_or(i32::MAX),
        reason: reason.to_owned(),
    }
}
