//! The agent's model follower on the real stack: model events on a Kafka topic, artifacts on
//! the S3-compatible server (`SM_ARTIFACTS__*` from the stack's env file). A registered
//! version serves; a promoted one replaces it within seconds; a version whose artifact bytes
//! do not hash to what its event recorded is refused, and the previous one keeps serving.

use sm_domain::{AssetId, Envelope, ModelPromoted, ModelRegistered, TenantId, Timestamp};
use sm_models::{Artifact, Model, ModelCard, ModelKind, TrainingData};
use sm_prediction::fixtures;
use sm_prediction::models::{self, ModelShelf};
use sm_registry::{ArtifactRef, ArtifactStoreConfig};
use sm_testkit::{create_topic, stack_from_env_file, unique};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Settings {
    artifacts: ArtifactStoreConfig,
    kafka: sm_kafka::KafkaConfig,
}

fn artifact_bytes(name: &str) -> Vec<u8> {
    let model = fixtures::stream_model(12, 1_000);
    let card = ModelCard {
        name: name.to_owned(),
        kind: ModelKind::RemainingUsefulLife,
        features: model.feature_names(),
        training: TrainingData { source: "fixture".into(), from: None, to: None, rows: 1, units: 12 },
        metrics: BTreeMap::new(),
        created_at: "2026-11-26T00:00:00Z".into(),
    };
    Artifact::new(card, Model::RemainingUsefulLife(model)).unwrap().to_bytes().unwrap()
}

fn registered(name: &str, version: i32, artifact: &ArtifactRef) -> Envelope<ModelRegistered> {
    Envelope::origin(
        TenantId::from("default"),
        AssetId::from(name),
        Timestamp::now(),
        "test",
        ModelRegistered {
            name: name.to_owned(),
            version,
            kind: ModelKind::RemainingUsefulLife.as_str().into(),
            asset_type: "pump".into(),
            features: vec!["temperature_last".into()],
            training_from: None,
            training_to: None,
            training_rows: 1,
            training_source: "fixture".into(),
            metrics: BTreeMap::new(),
            artifact_location: artifact.location.clone(),
            artifact_sha256: artifact.sha256.clone(),
            artifact_size: artifact.size as i64,
        },
    )
}

fn promoted(name: &str, version: i32) -> Envelope<ModelPromoted> {
    Envelope::origin(
        TenantId::from("default"),
        AssetId::from(name),
        Timestamp::now(),
        "test",
        ModelPromoted {
            name: name.to_owned(),
            version,
            previous_version: None,
            reason: "test".into(),
            comparison: BTreeMap::new(),
        },
    )
}

async fn wait_for(shelf: &ModelShelf, version: i32, within: Duration) -> Duration {
    let started = Instant::now();
    while shelf.get("pump").map(|m| m.version) != Some(version) {
        assert!(started.elapsed() < within, "version {version} not serving after {within:?}: {:?}", shelf.serving());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_take_effect_in_seconds_and_altered_artifacts_are_refused() {
    let stack = stack_from_env_file();
    let settings: Settings = sm_telemetry::config::load_from(None, &stack.vars).unwrap();
    assert!(settings.artifacts.url.starts_with("s3://"), "the stack serves artifacts from its S3 server");
    let store = settings.artifacts.build().unwrap();
    let topic = unique("models");
    create_topic(&stack.kafka, &topic, 1).await;
    let announcer = sm_kafka::Announcer::new(&settings.kafka).unwrap();
    let name = unique("rul-pump");
    let bytes = artifact_bytes(&name);

    // Before the agent starts: v1 registered (staging serves when nothing is in production).
    let v1 = store.put(&name, 1, &bytes).await.unwrap();
    announcer.announce(&topic, &name, &registered(&name, 1, &v1)).await.unwrap();
    let shelf = ModelShelf::default();
    let follower = models::follow(&settings.kafka, &topic, store.clone(), shelf.clone()).await.unwrap();
    assert_eq!(shelf.get("pump").map(|m| m.version), Some(1), "loaded before follow returns");
    assert!(shelf.get("fan").is_none());

    // v2 registered and promoted while running: it takes over.
    let v2 = store.put(&name, 2, &bytes).await.unwrap();
    announcer.announce(&topic, &name, &registered(&name, 2, &v2)).await.unwrap();
    announcer.announce(&topic, &name, &promoted(&name, 2)).await.unwrap();
    let took = wait_for(&shelf, 2, Duration::from_secs(10)).await;
    println!("promotion took effect in {took:?}");

    // v3's bytes are altered after its SHA-256 was recorded: refused, v2 keeps serving.
    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x01;
    let stored = store.put(&name, 3, &altered).await.unwrap();
    let recorded = ArtifactRef { sha256: sm_models::sha256_hex(&bytes), ..stored };
    let error = store.get(&recorded).await.unwrap_err().to_string();
    assert!(error.contains("sha-256") && error.contains(&recorded.sha256), "a clear refusal: {error}");
    announcer.announce(&topic, &name, &registered(&name, 3, &recorded)).await.unwrap();
    announcer.announce(&topic, &name, &promoted(&name, 3)).await.unwrap();
    // A marker after it: once v4 serves, v3's events were certainly handled.
    let v4 = store.put(&name, 4, &bytes).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(shelf.get("pump").map(|m| m.version), Some(2), "the altered v3 never serves");
    announcer.announce(&topic, &name, &registered(&name, 4, &v4)).await.unwrap();
    announcer.announce(&topic, &name, &promoted(&name, 4)).await.unwrap();
    wait_for(&shelf, 4, Duration::from_secs(10)).await;
    follower.abort();
}
