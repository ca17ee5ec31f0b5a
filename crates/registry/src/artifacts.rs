//! Model artifacts in object storage. Each version's bytes live at
//! `<store>/<name>/v<version>/model.json`, and [`ArtifactStore::get`] hands them out only when
//! they hash to the SHA-256 the registry recorded, so altered bytes are never served.
//!
//! Deliberately not here: which version to fetch (that is [`crate::Registry`]) and parsing
//! the model (that is `sm_models::load`, which checks the hash again before parsing).

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::{ArtifactStoreConfig, Location};
use crate::{RegistryError, validate_model_name};

/// Where a version's artifact is and what it must hash to: what the registry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// A full URL (`s3://bucket/prefix/name/v3/model.json`, `file:///dir/name/v3/model.json`),
    /// so that a record says which store holds it.
    pub location: String,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    /// Length of the bytes, checked before hashing.
    pub size: u64,
}

/// Puts and gets model artifacts in one store.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// The configured URL without a trailing slash; every location starts with it.
    root: String,
    /// Key prefix inside the store (the S3 prefix; empty for a directory, whose path is the
    /// store's own root).
    prefix: Vec<String>,
}

impl ArtifactStore {
    pub(crate) fn build(config: &ArtifactStoreConfig, location: Location) -> Result<Self, RegistryError> {
        let root = config.url.trim_end_matches('/').to_owned();
        let failed = |source| RegistryError::ObjectStore { store: root.clone(), source };
        let (store, prefix): (Arc<dyn ObjectStore>, Vec<String>) = match location {
            Location::Local { directory } => {
                std::fs::create_dir_all(&directory).map_err(|e| {
                    RegistryError::InvalidConfig(format!(
                        "cannot create artifact directory {} ({e}): create it, or set SM_ARTIFACTS__URL to a writable directory",
                        directory.display()
                    ))
                })?;
                // Automatic cleanup removes emptied `v<n>` directories if an object is deleted.
                let store = LocalFileSystem::new_with_prefix(&directory).map_err(failed)?.with_automatic_cleanup(true);
                (Arc::new(store), Vec::new())
            }
            Location::S3 { bucket, prefix } => {
                // reqwest is built without a bundled crypto provider (see Cargo.toml); install
                // ring's for this process. An error means one is installed already, which serves.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_region(&config.region)
                    .with_allow_http(config.allow_http);
                if !config.endpoint.is_empty() {
                    builder = builder.with_endpoint(&config.endpoint);
                }
                if !config.access_key_id.expose().is_empty() {
                    builder = builder
                        .with_access_key_id(config.access_key_id.expose())
                        .with_secret_access_key(config.secret_access_key.expose());
                }
                let store = builder.build().map_err(failed)?;
                let prefix = prefix.split('/').filter(|part| !part.is_empty()).map(str::to_owned).collect();
                (Arc::new(store), prefix)
            }
        };
        Ok(Self { store, root, prefix })
    }

    /// The store's URL, as configured.
    pub fn url(&self) -> &str {
        &self.root
    }

    /// Stores `bytes` as the artifact of `name` version `version`, replacing what is there:
    /// [`crate::Registry::register`] calls it only with a version it has just allocated and not
    /// committed, so a replaced object is one whose registration never completed.
    pub async fn put(&self, name: &str, version: u32, bytes: &[u8]) -> Result<ArtifactRef, RegistryError> {
        validate_model_name(name)?;
        let key = format!("{name}/v{version}/model.json");
        let path = self.path(&key);
        self.store
            .put(&path, PutPayload::from(Bytes::copy_from_slice(bytes)))
            .await
            .map_err(|source| self.failed(source))?;
        Ok(ArtifactRef {
            location: format!("{}/{key}", self.root),
            sha256: sm_models::sha256_hex(bytes),
            size: bytes.len() as u64,
        })
    }

    /// The artifact's bytes, after checking their size and SHA-256 against `artifact`.
    pub async fn get(&self, artifact: &ArtifactRef) -> Result<Bytes, RegistryError> {
        let key = self.key(&artifact.location)?;
        let result = match self.store.get(&self.path(key)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RegistryError::ArtifactMissing { location: artifact.location.clone() });
            }
            Err(source) => return Err(self.failed(source)),
        };
        let bytes = result.bytes().await.map_err(|source| self.failed(source))?;
        let actual = sm_models::sha256_hex(&bytes);
        if bytes.len() as u64 != artifact.size || !actual.eq_ignore_ascii_case(&artifact.sha256) {
            return Err(RegistryError::ArtifactAltered {
                location: artifact.location.clone(),
                expected: artifact.sha256.clone(),
                actual,
                expected_size: artifact.size,
                actual_size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// The key of `location` inside this store, refusing locations of other stores.
    fn key<'a>(&self, location: &'a str) -> Result<&'a str, RegistryError> {
        location
            .strip_prefix(self.root.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|key| !key.is_empty() && key.split('/').all(|part| !part.is_empty() && part != ".." && part != "."))
            .ok_or_else(|| RegistryError::ForeignArtifact { location: location.to_owned(), store: self.root.clone() })
    }

    fn path(&self, key: &str) -> Path {
        Path::from_iter(self.prefix.iter().map(String::as_str).chain(key.split('/')))
    }

    fn failed(&self, source: object_store::Error) -> RegistryError {
        RegistryError::ObjectStore { store: self.root.clone(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_store(directory: &std::path::Path) -> ArtifactStore {
        let config = ArtifactStoreConfig { url: format!("file://{}", directory.display()), ..Default::default() };
        config.build().unwrap()
    }

    #[tokio::test]
    async fn round_trips_bytes_with_their_hash_and_size() {
        let directory = tempfile::tempdir().unwrap();
        let store = local_store(directory.path());
        let bytes = br#"{"format_version":1}"#;
        let artifact = store.put("milling-failure", 3, bytes).await.unwrap();
        assert_eq!(artifact.location, format!("file://{}/milling-failure/v3/model.json", directory.path().display()));
        assert_eq!(artifact.sha256, sm_models::sha256_hex(bytes));
        assert_eq!(artifact.size, bytes.len() as u64);
        assert!(directory.path().join("milling-failure/v3/model.json").is_file());
        assert_eq!(&store.get(&artifact).await.unwrap()[..], bytes);

        // The same directory configured again (with a trailing slash) reads the same record.
        let again =
            ArtifactStoreConfig { url: format!("file://{}/", directory.path().display()), ..Default::default() };
        assert_eq!(&again.build().unwrap().get(&artifact).await.unwrap()[..], bytes);
    }

    #[tokio::test]
    async fn refuses_altered_bytes_saying_what_to_do() {
        let directory = tempfile::tempdir().unwrap();
        let store = local_store(directory.path());
        let artifact = store.put("milling-failure", 1, b"the model as trained").await.unwrap();
        let file = directory.path().join("milling-failure/v1/model.json");

        std::fs::write(&file, b"the model as tampered").unwrap(); // same length, other bytes
        let error = store.get(&artifact).await.unwrap_err();
        assert!(matches!(error, RegistryError::ArtifactAltered { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("altered") && message.contains("do not serve"), "{message}");
        assert!(message.contains(&artifact.location) && message.contains(&artifact.sha256), "{message}");

        std::fs::write(&file, b"the model").unwrap(); // truncated
        assert!(matches!(store.get(&artifact).await, Err(RegistryError::ArtifactAltered { actual_size: 9, .. })));
    }

    #[tokio::test]
    async fn reports_a_missing_object_and_refuses_other_stores() {
        let directory = tempfile::tempdir().unwrap();
        let store = local_store(directory.path());
        let artifact = store.put("milling-failure", 1, b"model").await.unwrap();
        std::fs::remove_file(directory.path().join("milling-failure/v1/model.json")).unwrap();
        let error = store.get(&artifact).await.unwrap_err();
        assert!(matches!(error, RegistryError::ArtifactMissing { .. }), "{error:?}");
        assert!(error.to_string().contains("does not exist") && error.to_string().contains("restore"), "{error}");

        for location in [
            "s3://models/milling-failure/v1/model.json".to_owned(),
            format!("file://{}/../escape/model.json", directory.path().display()),
            format!("file://{}/", directory.path().display()),
        ] {
            let foreign = ArtifactRef { location, ..artifact.clone() };
            assert!(
                matches!(store.get(&foreign).await, Err(RegistryError::ForeignArtifact { .. })),
                "{}",
                foreign.location
            );
        }
        assert!(matches!(store.put("Not A Name", 1, b"").await, Err(RegistryError::InvalidName(_))));
    }
}
