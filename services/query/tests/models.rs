//! `sm.v1.ModelService` against the real local stack: the server runs in-process on
//! 127.0.0.1:0 and the tests talk to it with the generated client.
//!
//! Each test gets its own PostgreSQL schema (the registry migrates its tables there on first
//! use), its own artifact directory and its own models topic (`SM_QUERY__MODELS_TOPIC`), so
//! the events `Promote` and `Archive` publish can be read back exactly. Versions are
//! registered with `sm_registry::Registry::register`, as the trainer does. The stack must be
//! up (`deploy/local/stack up`); a missing stack is a panic, never a skip.

mod common;

use sm_domain::{Codec, Decode, ModelEvent, Timestamp};
use sm_kafka::KafkaConfig;
use sm_models::{ModelKind, TrainingData};
use sm_proto::auth::AuthChannel as Channel;
use sm_proto::convert::to_timestamp;
use sm_proto::v1;
use sm_proto::v1::model_service_client::ModelServiceClient;
use sm_query::{QueryConfig, QuerySettings};
use sm_registry::{ArtifactStore, ArtifactStoreConfig, NewVersion, Registry};
use sm_storage::PostgresConfig;
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::{Stack, create_topic, stack_from_env_file, unique};
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::Code;

/// 2026-01-01T00:00:00Z, in µs.
const JAN_1: i64 = 1_767_225_600_000_000;

/// A running server on its own schema, artifact directory and models topic.
struct Fixture {
    stack: Stack,
    registry: Registry,
    store: ArtifactStore,
    models_topic: String,
    server: common::Server,
    _artifacts: tempfile::TempDir,
    _schema: ScratchSchema,
}

impl Fixture {
    async fn start() -> Self {
        let stack = stack_from_env_file();
        let schema = ScratchSchema::create(&stack, "sm_models_test").await;
        let artifacts = tempfile::tempdir().unwrap();
        let models_topic = unique("sm.models.test");
        create_topic(&stack.kafka, &models_topic, 1).await;
        let config = QueryConfig {
            kafka: KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..KafkaConfig::default() },
            postgres: PostgresConfig { url: Secret(schema.url.clone()), pool_size: 4, ..Default::default() },
            telemetry: Default::default(),
            auth: common::auth(&stack),
            artifacts: ArtifactStoreConfig {
                url: format!("file://{}", artifacts.path().display()),
                ..ArtifactStoreConfig::default()
            },
            query: QuerySettings {
                assets_topic: unique("sm.assets.test"),
                models_topic: models_topic.clone(),
                ..QuerySettings::default()
            },
        };
        config.validate().unwrap();
        let pool = sm_storage::connect(&config.postgres).unwrap();
        let registry = Registry::open(pool.clone()).await.unwrap();
        let store = config.artifacts.build().unwrap();

        let server = common::Server::start(&config, &schema).await;
        Self { stack, registry, store, models_topic, server, _artifacts: artifacts, _schema: schema }
    }

    async fn channel(&self) -> Channel {
        self.server.channel().await
    }

    /// The events on the test's models topic, decoded, in order (one partition).
    async fn model_events(&self, expected: usize) -> Vec<(String, sm_domain::Envelope<ModelEvent>)> {
        let (bootstrap, topic) = (self.stack.kafka.clone(), self.models_topic.clone());
        let records = tokio::task::spawn_blocking(move || {
            sm_testkit::read_committed(&bootstrap, &topic, expected, Duration::from_secs(1), Duration::from_secs(30))
        })
        .await
        .unwrap();
        let codec = Codec::embedded().unwrap();
        records
            .iter()
            .map(|r| (String::from_utf8(r.key.clone()).unwrap(), ModelEvent::decode(&codec, &r.value, None).unwrap()))
            .collect()
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn new_version(name: &str, f1: f64, minutes: i64) -> NewVersion {
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
        comparison: (f1 > 0.8).then(|| serde_json::json!({"challenger_f1": f1, "champion_f1": 0.8})),
        registered_at: Timestamp(JAN_1 + minutes * 60_000_000),
    }
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.unwrap_err().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_resolves_promotes_and_archives_publishing_each_change() {
    let fixture = Fixture::start().await;
    let name = unique("milling");
    let v1_bytes = b"the first model".to_vec();
    let registered_1 = fixture.registry.register(&fixture.store, &new_version(&name, 0.7, 0), &v1_bytes).await.unwrap();
    let registered_2 =
        fixture.registry.register(&fixture.store, &new_version(&name, 0.9, 5), b"the second").await.unwrap();
    assert_eq!((registered_1.version, registered_2.version), (1, 2));
    let mut client = ModelServiceClient::new(fixture.channel().await);

    // Reads.
    let models = client.list_models(v1::ListModelsRequest {}).await.unwrap().into_inner().models;
    let summary = models.iter().find(|m| m.name == name).expect("the model is listed");
    assert_eq!(summary.kind, "failure_classifier");
    assert_eq!((summary.versions, summary.latest_version), (2, 2));
    assert_eq!((summary.production_version, summary.newest_staging_version), (None, Some(2)));
    assert_eq!(summary.created_at, Some(to_timestamp(Timestamp(JAN_1))));

    let versions =
        client.list_versions(v1::ListVersionsRequest { name: name.clone() }).await.unwrap().into_inner().versions;
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    let first = &versions[0];
    assert_eq!(
        (first.stage.as_str(), first.kind.as_str(), first.asset_type.as_str()),
        ("staging", "failure_classifier", "mill")
    );
    assert_eq!(first.features, ["power_w", "temperature_difference_k"]);
    let training = first.training.clone().unwrap();
    assert_eq!((training.source.as_str(), training.rows, training.units), ("synthetic", 1_000, 20));
    assert_eq!(training.from, Some(prost_types::Timestamp { seconds: 1_764_547_200, nanos: 0 }));
    assert_eq!(training.to, Some(prost_types::Timestamp { seconds: 1_767_225_599, nanos: 500_000_000 }));
    assert_eq!(first.metrics.get("test_f1"), Some(&0.7));
    assert_eq!(first.comparison, "", "no comparison recorded for v1");
    let comparison: serde_json::Value = serde_json::from_str(&versions[1].comparison).unwrap();
    assert_eq!(comparison["challenger_f1"], 0.9);
    let artifact = first.artifact.clone().unwrap();
    assert_eq!(artifact.sha256, sm_models::sha256_hex(&v1_bytes));
    assert_eq!(artifact.size, v1_bytes.len() as u64);
    assert_eq!(artifact.location, registered_1.artifact.location);
    assert_eq!((first.promoted_at, first.archived_at), (None, None));

    let got = client.get_version(v1::GetVersionRequest { name: name.clone(), version: 1 }).await.unwrap().into_inner();
    assert_eq!(got.version.as_ref(), Some(first), "GetVersion equals the listed version");

    let resolve = |selector: &str| v1::ResolveRequest { name: name.clone(), selector: selector.into() };
    let resolved = |response: v1::ResolveResponse| response.version.unwrap().version;
    assert_eq!(resolved(client.resolve(resolve("")).await.unwrap().into_inner()), 2, "auto: newest staging");
    assert_eq!(resolved(client.resolve(resolve("staging")).await.unwrap().into_inner()), 2);
    assert_eq!(resolved(client.resolve(resolve("1")).await.unwrap().into_inner()), 1);
    assert_eq!(code(client.resolve(resolve("production")).await), Code::NotFound);
    assert_eq!(code(client.resolve(resolve("latest")).await), Code::InvalidArgument);

    // Promote v1: production now, and what auto resolves to.
    let promote = |version: u32, reason: &str| v1::PromoteRequest {
        name: name.clone(),
        version,
        reason: reason.into(),
        tenant_id: String::new(),
    };
    let promoted_1 = client.promote(promote(1, "ops: first release")).await.unwrap().into_inner();
    let now = promoted_1.version.clone().unwrap();
    assert_eq!((now.stage.as_str(), promoted_1.changed, promoted_1.archived_version), ("production", true, None));
    assert!(now.promoted_at.is_some());
    assert_eq!(resolved(client.resolve(resolve("auto")).await.unwrap().into_inner()), 1, "auto: production first");

    // Promote v2: v1 is archived in the same step.
    let promoted_2 = client.promote(promote(2, "trainer: better f1")).await.unwrap().into_inner();
    assert_eq!((promoted_2.changed, promoted_2.archived_version), (true, Some(1)));
    let old = client.get_version(v1::GetVersionRequest { name: name.clone(), version: 1 }).await.unwrap().into_inner();
    assert_eq!(old.version.unwrap().stage, "archived");
    // Archived stays archived; promoting production again changes nothing.
    let status = client.promote(promote(1, "rollback")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("archived"), "{}", status.message());
    let again = client.promote(promote(2, "retry")).await.unwrap().into_inner();
    assert_eq!((again.changed, again.archived_version), (false, None));

    // Archive v2: nothing left to serve.
    let archive = |version: u32, reason: &str| v1::ArchiveRequest {
        name: name.clone(),
        version,
        reason: reason.into(),
        tenant_id: "acme".into(),
    };
    let archived = client.archive(archive(2, "ops: retired")).await.unwrap().into_inner();
    assert_eq!((archived.version.unwrap().stage.as_str(), archived.changed), ("archived", true));
    assert_eq!(code(client.resolve(resolve("auto")).await), Code::NotFound);
    assert_eq!(resolved(client.resolve(resolve("2")).await.unwrap().into_inner()), 2, "a pin still resolves");
    // Archiving again changes nothing, and publishes the event again: a retry after an
    // unacknowledged publish never loses it.
    let archived_again = client.archive(archive(2, "ops: retired")).await.unwrap().into_inner();
    assert!(!archived_again.changed);

    // Every accepted command was published on the models topic, in order, keyed and
    // addressed by model name; the refused promotion published nothing.
    let events = fixture.model_events(5).await;
    let ids: Vec<String> = events.iter().map(|(_, e)| e.header.event_id.to_string()).collect();
    let expected_ids =
        [promoted_1.event_id, promoted_2.event_id, again.event_id, archived.event_id, archived_again.event_id];
    assert_eq!(ids, expected_ids, "{events:?}");
    for (key, event) in &events {
        assert_eq!(key, &name);
        assert_eq!(event.header.asset_id.as_str(), name);
        assert_eq!(event.header.producer, "query");
    }
    // The reason is recorded after the authenticated principal, not a name the request gave.
    let by = |reason: &str| format!("key:{}: {reason}", fixture.server.key_id());
    match &events[0].1.payload {
        ModelEvent::Promoted(p) => {
            assert_eq!((p.version, p.previous_version, p.reason.clone()), (1, None, by("ops: first release")));
        }
        other => panic!("not a promotion: {other:?}"),
    }
    match &events[1].1.payload {
        ModelEvent::Promoted(p) => {
            assert_eq!((p.version, p.previous_version, p.reason.clone()), (2, Some(1), by("trainer: better f1")));
            assert!(p.comparison.is_empty(), "a promotion by hand carries no comparison");
        }
        other => panic!("not a promotion: {other:?}"),
    }
    match &events[3].1.payload {
        ModelEvent::Archived(a) => assert_eq!((a.version, a.reason.clone()), (2, by("ops: retired"))),
        other => panic!("not an archival: {other:?}"),
    }
    assert_eq!(events[3].1.header.tenant_id.as_str(), "acme");
    assert_eq!(events[0].1.header.tenant_id.as_str(), "default");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_bad_requests_and_unknown_models_with_the_right_code() {
    let fixture = Fixture::start().await;
    let name = unique("pump-rul");
    fixture.registry.register(&fixture.store, &new_version(&name, 0.5, 0), b"bytes").await.unwrap();
    let mut client = ModelServiceClient::new(fixture.channel().await);
    let get = |name: &str, version: u32| v1::GetVersionRequest { name: name.into(), version };

    assert_eq!(code(client.get_version(get(&unique("ghost"), 1)).await), Code::NotFound);
    let status = client.get_version(get(&name, 9)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("has no version 9"), "{}", status.message());
    assert_eq!(code(client.list_versions(v1::ListVersionsRequest { name: unique("ghost") }).await), Code::NotFound);
    let status = client.get_version(get("Bad Name", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("name:"), "{}", status.message());
    assert_eq!(code(client.get_version(get(&name, 0)).await), Code::InvalidArgument);
    let promote = |version: u32, reason: &str| v1::PromoteRequest {
        name: name.clone(),
        version,
        reason: reason.into(),
        tenant_id: String::new(),
    };
    let status = client.promote(promote(1, " ")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("reason:"), "{}", status.message());
    assert_eq!(code(client.promote(promote(7, "why")).await), Code::NotFound);
    let archive =
        v1::ArchiveRequest { name: unique("ghost"), version: 1, reason: "why".into(), tenant_id: String::new() };
    assert_eq!(code(client.archive(archive).await), Code::NotFound);
    // Nothing was published by refused commands.
    assert!(fixture.model_events(0).await.is_empty());
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_and_prediction_services_report_health_and_appear_in_reflection() {
    let fixture = Fixture::start().await;
    common::assert_served_and_listed(
        fixture.channel().await,
        &["sm.v1.ModelService", "sm.v1.PredictionService"],
        &["sm.v1.ModelService", "sm.v1.PredictionService", "sm.v1.ReadingService"],
    )
    .await;
    fixture.stop().await;
}
