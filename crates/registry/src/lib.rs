//! The model registry's storage: which model versions exist, which one serves, and where
//! their bytes are. Metadata lives in PostgreSQL (one row per version); artifacts live in
//! object storage and are checked against their SHA-256 on every read.
//!
//! This crate is storage only: no Kafka, no gRPC. The registry service will turn commands
//! into `sm.models.v1` events and apply them here; every write method is therefore
//! idempotent, so applying the same event twice leaves the same rows.
//!
//! # Layout
//! - [`config`]: [`ArtifactStoreConfig`] (`SM_ARTIFACTS__*`), a local directory or S3;
//! - [`artifacts`]: [`ArtifactStore`] and [`ArtifactRef`]: put bytes, get them back verified;
//! - [`schema`]: the PostgreSQL migrations ([`MIGRATIONS`]);
//! - [`registry`]: [`Registry`]: register, list, get, resolve, promote, archive.

pub mod artifacts;
pub mod config;
pub mod events;
pub mod registry;
pub mod schema;

pub use artifacts::{ArtifactRef, ArtifactStore};
pub use config::ArtifactStoreConfig;
pub use registry::{Change, ModelSummary, ModelVersion, NewVersion, Promotion, Registry, Selector, Stage};
pub use schema::MIGRATIONS;

use sm_storage::StorageError;

/// Everything the registry can refuse or fail at; each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid artifact store configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "model name {0:?} is not valid: use 1 to 100 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("invalid version selector {0:?}: use auto, production, staging or a version number (1, 2, ...)")]
    InvalidSelector(String),
    #[error("invalid model version: {0}")]
    InvalidVersion(String),
    #[error("unknown model {0:?}: check the name against the model list, or register a first version")]
    UnknownModel(String),
    #[error("model {name} has no version {version}: list its versions to see which exist")]
    UnknownVersion { name: String, version: u32 },
    #[error("model {name} has no {selector} version: register one, or promote a staging version")]
    NoVersion { name: String, selector: Selector },
    #[error(
        "version {version} of {name} is archived, and archived versions stay archived: register its artifact again as a new version to serve it"
    )]
    Archived { name: String, version: u32 },
    #[error("model {name} is a {existing} model, not {requested}: register this model under another name")]
    KindMismatch { name: String, existing: String, requested: String },
    #[error(
        "version {version} of {name} is already registered with artifact sha-256 {existing}, not {requested}: \
         two registries allocated the same version, or an event was applied to the wrong database"
    )]
    VersionConflict { name: String, version: u32, existing: String, requested: String },
    #[error(
        "artifact {location} does not exist: it was deleted, or SM_ARTIFACTS__URL names another store; \
         restore the object, or archive this version and register a new one"
    )]
    ArtifactMissing { location: String },
    #[error(
        "artifact {location} has sha-256 {actual} ({actual_size} bytes) but the registry recorded {expected} \
         ({expected_size} bytes): the stored bytes were altered or truncated; do not serve them — restore the \
         object from a backup, or archive this version and register a new one"
    )]
    ArtifactAltered { location: String, expected: String, actual: String, expected_size: u64, actual_size: u64 },
    #[error(
        "artifact {location} is not in the configured store {store}: set SM_ARTIFACTS__URL to the store that holds it"
    )]
    ForeignArtifact { location: String, store: String },
    #[error("object store {store}: {source}")]
    ObjectStore {
        store: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "the model registry's tables do not exist in this database yet: the projector creates them when it \
         starts (so does `smctl train`); start it against the same SM_POSTGRES__URL database"
    )]
    NotMigrated(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<tokio_postgres::Error> for RegistryError {
    fn from(error: tokio_postgres::Error) -> Self {
        // Only an attached registry (`Registry::attach`) can meet missing tables.
        if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            return Self::NotMigrated(error);
        }
        Self::Storage(StorageError::Database(error))
    }
}

/// Names become object keys and log fields, so they are kept to a portable alphabet.
pub fn validate_model_name(name: &str) -> Result<(), RegistryError> {
    let valid = (1..=100).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if valid { Ok(()) } else { Err(RegistryError::InvalidName(name.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_portable_names_and_refuses_the_rest() {
        for name in ["milling-failure", "turbofan_rul.v2", "9lives"] {
            assert!(validate_model_name(name).is_ok(), "{name}");
        }
        for name in ["", "Milling", "-lead", ".hidden", "a/b", "a b", "ü", &"x".repeat(101)] {
            assert!(matches!(validate_model_name(name), Err(RegistryError::InvalidName(_))), "{name}");
        }
    }
}
