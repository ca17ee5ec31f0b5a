//! Artifacts on a real S3-compatible server: stored, served through the registry, and refused
//! once their bytes change. The server and bucket come from the stack's env file
//! (`SM_ARTIFACTS__URL=s3://...`, `__ENDPOINT`, `__ACCESS_KEY_ID`, `__SECRET_ACCESS_KEY`,
//! `__ALLOW_HTTP`).
//!
//! `deploy/local/stack` runs `s3s-fs` (an S3-compatible server on a directory) and writes
//! those variables, so this runs against a real S3 API on loopback.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sm_domain::Timestamp;
use sm_models::{ModelKind, TrainingData};
use sm_registry::{ArtifactRef, ArtifactStoreConfig, NewVersion, Registry, RegistryError, Selector};
use sm_storage::PostgresConfig;
use sm_telemetry::Secret;
use sm_testkit::{stack_from_env_file, unique};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    artifacts: ArtifactStoreConfig,
}

#[tokio::test]
async fn artifacts_round_trip_through_s3_and_altered_bytes_are_refused() {
    let stack = stack_from_env_file();
    let settings: Settings = sm_telemetry::config::load_from(None, &stack.vars).unwrap();
    assert!(settings.artifacts.url.starts_with("s3://"), "SM_ARTIFACTS__URL in the stack env is not s3://");
    let store = settings.artifacts.build().unwrap();
    let pool =
        sm_storage::connect(&PostgresConfig { url: Secret(stack.postgres_url), pool_size: 2, ..Default::default() })
            .unwrap();
    let registry = Registry::open(pool).await.unwrap();

    let name = unique("s3-model");
    let new = NewVersion {
        name: name.clone(),
        kind: ModelKind::RemainingUsefulLife,
        asset_type: "pump".into(),
        features: vec!["cycle".into()],
        training: TrainingData { source: "s3 test".into(), from: None, to: None, rows: 1, units: 1 },
        metrics: BTreeMap::new(),
        comparison: None,
        registered_at: Timestamp::now(),
    };
    let bytes = vec![7u8; 300_000];
    let registered = registry.register(&store, &new, &bytes).await.unwrap();
    assert!(registered.artifact.location.starts_with(store.url()), "{}", registered.artifact.location);
    let served = registry.resolve(&name, Selector::Auto).await.unwrap();
    assert_eq!(&store.get(&served.artifact).await.unwrap()[..], &bytes[..]);

    // Replace the object behind the registry's back: the recorded hash no longer matches.
    store.put(&name, served.version, b"not the model that was registered").await.unwrap();
    let error = store.get(&served.artifact).await.unwrap_err();
    assert!(matches!(error, RegistryError::ArtifactAltered { .. }), "{error:?}");
    assert!(error.to_string().contains("do not serve"), "{error}");

    let missing = ArtifactRef { location: format!("{}/{name}/v99/model.json", store.url()), ..served.artifact };
    let error = store.get(&missing).await.unwrap_err();
    assert!(matches!(error, RegistryError::ArtifactMissing { .. }), "{error:?}");
}
