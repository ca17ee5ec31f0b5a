//! The registry against the real PostgreSQL of the local stack, with artifacts in a
//! temporary directory. Every test uses its own model names, so tests share the tables
//! without seeing each other's rows.

use std::collections::BTreeMap;

use sm_domain::Timestamp;
use sm_models::failure::{FailureExample, FailureParams};
use sm_models::{Artifact, FailureClassifier, Model, ModelCard, ModelKind, TrainingData};
use sm_registry::{
    ArtifactRef, ArtifactStore, ArtifactStoreConfig, Change, NewVersion, Registry, RegistryError, Selector, Stage,
};
use sm_storage::PostgresConfig;
use sm_telemetry::Secret;
use sm_testkit::{stack_from_env_file, unique};

/// 2026-01-01T00:00:00Z, in µs.
const JAN_1: i64 = 1_767_225_600_000_000;

async fn registry() -> Registry {
    let stack = stack_from_env_file();
    let pool =
        sm_storage::connect(&PostgresConfig { url: Secret(stack.postgres_url), pool_size: 16, ..Default::default() })
            .unwrap();
    Registry::open(pool).await.unwrap()
}

fn local_store(directory: &tempfile::TempDir) -> ArtifactStore {
    ArtifactStoreConfig { url: format!("file://{}", directory.path().display()), ..Default::default() }.build().unwrap()
}

fn new_version(name: &str, f1: f64) -> NewVersion {
    NewVersion {
        name: name.to_owned(),
        kind: ModelKind::FailureClassifier,
        asset_type: "mill".into(),
        features: vec!["power_w".into(), "temperature_difference_k".into()],
        training: TrainingData {
            source: "synthetic".into(),
            from: Some("2025-12-01T00:00:00Z".into()),
            to: Some("2025-12-31T23:59:59.5Z".into()),
            rows: 1_000,
            units: 20,
        },
        metrics: BTreeMap::from([("test_f1".into(), f1)]),
        comparison: None,
        registered_at: Timestamp(JAN_1),
    }
}

fn at(minutes: i64) -> Timestamp {
    Timestamp(JAN_1 + minutes * 60_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_get_consecutive_versions() {
    let (registry, directory) = (registry().await, tempfile::tempdir().unwrap());
    let store = local_store(&directory);
    let name = unique("concurrent");
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (registry, store, new) = (registry.clone(), store.clone(), new_version(&name, 0.5));
            tokio::spawn(async move { registry.register(&store, &new, format!("model {i}").as_bytes()).await })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        let registered = task.await.unwrap().unwrap();
        assert_eq!(registered.stage, Stage::Staging);
        // Each version's artifact holds the bytes that were registered with it.
        let bytes = store.get(&registered.artifact).await.unwrap();
        assert!(bytes.starts_with(b"model "), "{bytes:?}");
        versions.push(registered.version);
    }
    versions.sort();
    assert_eq!(versions, (1..=12).collect::<Vec<u32>>());
    let listed = registry.list_versions(&name).await.unwrap();
    assert_eq!(listed.iter().map(|v| v.version).collect::<Vec<_>>(), versions);
    let summary = registry.list_models().await.unwrap().into_iter().find(|m| m.name == name).unwrap();
    assert_eq!(
        (summary.versions, summary.latest_version, summary.production, summary.newest_staging),
        (12, 12, None, Some(12))
    );
}

#[tokio::test]
async fn promoting_archives_the_previous_production_version() {
    let (registry, directory) = (registry().await, tempfile::tempdir().unwrap());
    let store = local_store(&directory);
    let name = unique("promote");
    for f1 in [0.6, 0.7, 0.8] {
        registry.register(&store, &new_version(&name, f1), b"model").await.unwrap();
    }

    let first = registry.promote(&name, 1, at(1)).await.unwrap();
    assert_eq!((first.change, first.archived), (Change::Applied, None));
    let second = registry.promote(&name, 2, at(2)).await.unwrap();
    assert_eq!((second.change, second.archived), (Change::Applied, Some(1)));

    let v1 = registry.get(&name, 1).await.unwrap();
    assert_eq!((v1.stage, v1.promoted_at, v1.archived_at), (Stage::Archived, Some(at(1)), Some(at(2))));
    let v2 = registry.get(&name, 2).await.unwrap();
    assert_eq!((v2.stage, v2.promoted_at, v2.archived_at), (Stage::Production, Some(at(2)), None));
    let stages: Vec<Stage> = registry.list_versions(&name).await.unwrap().iter().map(|v| v.stage).collect();
    assert_eq!(stages, [Stage::Archived, Stage::Production, Stage::Staging]);

    // Archived stays archived; the error says how to serve it again.
    let error = registry.promote(&name, 1, at(3)).await.unwrap_err();
    assert!(matches!(error, RegistryError::Archived { version: 1, .. }), "{error:?}");
    assert!(error.to_string().contains("register its artifact again"), "{error}");
    assert!(matches!(registry.promote(&name, 9, at(3)).await, Err(RegistryError::UnknownVersion { version: 9, .. })));
    assert!(matches!(registry.promote(&unique("nobody"), 1, at(3)).await, Err(RegistryError::UnknownModel(_))));

    // The partial unique index holds even against a write that bypasses `promote`.
    let stack = stack_from_env_file();
    let (client, connection) = tokio_postgres::connect(&stack.postgres_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let error = client
        .execute("UPDATE sm_model_versions SET stage = 'production' WHERE name = $1 AND version = 3", &[&name])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION), "{error}");
}

#[tokio::test]
async fn resolve_prefers_production_then_the_newest_staging_version() {
    let (registry, directory) = (registry().await, tempfile::tempdir().unwrap());
    let store = local_store(&directory);
    let name = unique("resolve");
    assert!(matches!(registry.resolve(&name, Selector::Auto).await, Err(RegistryError::UnknownModel(_))));
    assert!(matches!(registry.list_versions(&name).await, Err(RegistryError::UnknownModel(_))));

    for _ in 0..3 {
        registry.register(&store, &new_version(&name, 0.7), b"model").await.unwrap();
    }
    let resolve = |selector: &'static str| {
        let (registry, name) = (registry.clone(), name.clone());
        async move { registry.resolve(&name, selector.parse().unwrap()).await.map(|v| v.version) }
    };
    assert_eq!(resolve("auto").await.unwrap(), 3);
    let error = resolve("production").await.unwrap_err();
    assert!(matches!(error, RegistryError::NoVersion { selector: Selector::Production, .. }), "{error:?}");

    registry.promote(&name, 1, at(1)).await.unwrap();
    assert_eq!(resolve("auto").await.unwrap(), 1);
    assert_eq!(resolve("production").await.unwrap(), 1);
    assert_eq!(resolve("staging").await.unwrap(), 3);

    // Archiving production falls back to the newest staging version; a number pins any stage.
    registry.archive(&name, 1, at(2)).await.unwrap();
    registry.archive(&name, 3, at(2)).await.unwrap();
    assert_eq!(resolve("auto").await.unwrap(), 2);
    registry.archive(&name, 2, at(2)).await.unwrap();
    let error = resolve("auto").await.unwrap_err();
    assert!(matches!(error, RegistryError::NoVersion { selector: Selector::Auto, .. }), "{error:?}");
    assert_eq!(resolve("3").await.unwrap(), 3);
    assert!(matches!(resolve("4").await, Err(RegistryError::UnknownVersion { version: 4, .. })));
}

#[tokio::test]
async fn applying_the_same_events_twice_changes_nothing() {
    let (registry, directory) = (registry().await, tempfile::tempdir().unwrap());
    let store = local_store(&directory);
    let name = unique("replay");
    let new = NewVersion {
        comparison: Some(serde_json::json!({"champion": null, "decision": "promote"})),
        ..new_version(&name, 0.7)
    };
    let artifact = store.put(&name, 4, b"model four").await.unwrap();

    assert_eq!(registry.apply_registered(&new, 4, &artifact).await.unwrap(), Change::Applied);
    let before = registry.list_versions(&name).await.unwrap();
    assert_eq!(registry.apply_registered(&new, 4, &artifact).await.unwrap(), Change::Unchanged);
    let other = ArtifactRef { sha256: sm_models::sha256_hex(b"another model"), ..artifact.clone() };
    assert!(matches!(
        registry.apply_registered(&new, 4, &other).await,
        Err(RegistryError::VersionConflict { version: 4, .. })
    ));
    assert_eq!(registry.list_versions(&name).await.unwrap(), before);
    assert_eq!(before[0].comparison, new.comparison);

    // The counter moved past the event's number, so an allocated version never collides.
    assert_eq!(registry.register(&store, &new, b"model five").await.unwrap().version, 5);

    assert_eq!(registry.promote(&name, 4, at(1)).await.unwrap().change, Change::Applied);
    assert_eq!(registry.promote(&name, 4, at(9)).await.unwrap().change, Change::Unchanged);
    assert_eq!(registry.archive(&name, 5, at(2)).await.unwrap(), Change::Applied);
    let after_first = registry.list_versions(&name).await.unwrap();
    assert_eq!(registry.archive(&name, 5, at(9)).await.unwrap(), Change::Unchanged);
    assert_eq!(registry.list_versions(&name).await.unwrap(), after_first);
    assert_eq!(after_first[0].promoted_at, Some(at(1)));
    assert_eq!(after_first[1].archived_at, Some(at(2)));
}

#[tokio::test]
async fn refuses_another_kind_under_a_name_without_using_up_a_version() {
    let (registry, directory) = (registry().await, tempfile::tempdir().unwrap());
    let store = local_store(&directory);
    let name = unique("kind");
    registry.register(&store, &new_version(&name, 0.7), b"model").await.unwrap();
    let rul = NewVersion { kind: ModelKind::RemainingUsefulLife, ..new_version(&name, 0.7) };
    let error = registry.register(&store, &rul, b"model").await.unwrap_err();
    assert!(matches!(error, RegistryError::KindMismatch { .. }), "{error:?}");
    assert!(error.to_string().contains("another name"), "{error}");

    let bad_time = NewVersion {
        training: TrainingData { to: Some("last tuesday".into()), ..new_version(&name, 0.7).training },
        ..new_version(&name, 0.7)
    };
    let error = registry.register(&store, &bad_time, b"model").await.unwrap_err();
    assert!(matches!(error, RegistryError::InvalidVersion(_)) && error.to_string().contains("RFC 3339"), "{error}");

    assert_eq!(registry.register(&store, &new_version(&name, 0.7), b"model").await.unwrap().version, 2);
}

#[tokio::test]
async fn a_registered_artifact_loads_checked_and_altered_bytes_are_refused() {
    let (registry, directory) = (registry().await, tempfile::tempdir().unwrap());
    let store = local_store(&directory);
    let name = unique("milling-failure");

    let rows = sm_models::synthetic::ai4i_like(1_000, 7);
    let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
    let params = FailureParams {
        boost: sm_models::BoostParams { trees: 20, ..FailureParams::default().boost },
        ..FailureParams::default()
    };
    let (model, report) = FailureClassifier::train(&examples, &params).unwrap();
    let model = Model::FailureClassifier(model);
    let card = ModelCard {
        name: name.clone(),
        kind: ModelKind::FailureClassifier,
        features: model.feature_names(),
        training: TrainingData {
            source: "synthetic".into(),
            from: Some("2025-12-01T00:00:00Z".into()),
            to: Some("2025-12-31T00:00:00Z".into()),
            rows: report.rows,
            units: report.units,
        },
        metrics: BTreeMap::from([("out_of_fold_f1".to_string(), report.out_of_fold_f1)]),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    let bytes = Artifact::new(card.clone(), model).unwrap().to_bytes().unwrap();

    let registered =
        registry.register(&store, &NewVersion::from_card(&card, "pump", Timestamp(JAN_1)), &bytes).await.unwrap();
    let served = registry.resolve(&name, Selector::Auto).await.unwrap();
    assert_eq!(served, registered);
    assert_eq!(
        (served.features.clone(), served.training.clone(), served.metrics.clone()),
        (card.features.clone(), card.training.clone(), card.metrics.clone())
    );
    assert_eq!(served.created_at, Timestamp(JAN_1));

    let loaded = sm_models::load(&store.get(&served.artifact).await.unwrap(), &served.artifact.sha256).unwrap();
    assert_eq!(loaded.card, card);

    let file = served.artifact.location.strip_prefix("file://").unwrap();
    let mut altered = std::fs::read(file).unwrap();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    std::fs::write(file, &altered).unwrap();
    let error = store.get(&served.artifact).await.unwrap_err();
    assert!(matches!(error, RegistryError::ArtifactAltered { .. }), "{error:?}");
    assert!(error.to_string().contains("do not serve"), "{error}");
}
