//! `sm.models.v1` events rebuild the registry: a version registered in one registry, announced
//! as `ModelRegistered` (encoded and decoded as on the wire), and applied to another gives the
//! same row; the promotion and archival events that follow give the same stages and times.
//! Each registry lives in a scratch schema of its own on the stack's PostgreSQL.

use std::collections::BTreeMap;

use sm_domain::{AssetId, Codec, Decode, DomainEvent, Envelope, ModelEvent, TenantId, Timestamp, rfc3339};
use sm_models::{ModelKind, TrainingData};
use sm_registry::{ArtifactStoreConfig, Change, NewVersion, Registry, Stage, events};
use sm_storage::PostgresConfig;
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::{stack_from_env_file, unique};

/// 2026-01-01T00:00:00Z, in µs.
const JAN_1: i64 = 1_767_225_600_000_000;

async fn registry(schema: &ScratchSchema) -> Registry {
    let pool =
        sm_storage::connect(&PostgresConfig { url: Secret(schema.url.clone()), pool_size: 2, ..Default::default() })
            .unwrap();
    Registry::open(pool).await.unwrap()
}

/// `payload` as the command side announces it, through the Avro codec and back.
fn over_the_wire<T: DomainEvent>(codec: &Codec, name: &str, at: Timestamp, payload: T) -> Envelope<ModelEvent> {
    let event = Envelope::origin(TenantId::from("default"), AssetId::from(name), at, "test", payload);
    ModelEvent::decode(codec, &codec.encode(&event).unwrap(), None).unwrap()
}

// Multi-threaded: the scratch schemas are dropped (blocking) while a pooled connection may
// still owe the server the rollback of a refused write; its task must be able to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_promoted_and_archived_events_rebuild_the_same_rows() {
    let stack = stack_from_env_file();
    let (source_schema, replica_schema) = (
        ScratchSchema::create(&stack, "registry_events").await,
        ScratchSchema::create(&stack, "registry_replica").await,
    );
    let (source, replica) = (registry(&source_schema).await, registry(&replica_schema).await);
    let directory = tempfile::tempdir().unwrap();
    let store = ArtifactStoreConfig { url: format!("file://{}", directory.path().display()), ..Default::default() }
        .build()
        .unwrap();
    let codec = Codec::embedded().unwrap();
    let name = unique("rul-pump");

    let new = |rmse: f64, minutes: i64| NewVersion {
        name: name.clone(),
        kind: ModelKind::RemainingUsefulLife,
        asset_type: "pump".into(),
        features: vec!["temperature_last".into(), "vibration_rms_slope60".into()],
        training: TrainingData {
            source: "simulated".into(),
            from: Some("2025-12-01T00:00:00Z".into()),
            to: Some("2025-12-01T01:00:00.25Z".into()),
            rows: 2_070,
            units: 23,
        },
        metrics: BTreeMap::from([("all_cycles_rmse".into(), rmse), ("eval_trajectories".into(), 9.0)]),
        comparison: Some(serde_json::json!({"champion_version": 1, "decision": "promote"})),
        registered_at: Timestamp(JAN_1 + minutes * 60_000_000),
    };

    // The command side: register two versions and promote each in turn, announcing each write.
    let mut announced = Vec::new();
    for (rmse, minutes, bytes) in [(4.2, 0, &b"model one"[..]), (3.1, 10, &b"model two"[..])] {
        let version = source.register(&store, &new(rmse, minutes), bytes).await.unwrap();
        announced.push(over_the_wire(&codec, &name, version.created_at, events::registered(&version)));
        let at = Timestamp(version.created_at.as_micros() + 60_000_000);
        let promotion = source.promote(&name, version.version, at).await.unwrap();
        let event = events::promoted(&name, version.version, promotion.archived, "test", BTreeMap::new());
        announced.push(over_the_wire(&codec, &name, at, event));
    }
    let at = Timestamp(JAN_1 + 3_600_000_000);
    source.archive(&name, 2, at).await.unwrap();
    announced.push(over_the_wire(&codec, &name, at, events::archived(&name, 2, "retired")));

    // A follower: every event applied in order; then the registrations and the archival
    // again, as a redelivery would (each reports `Unchanged`).
    for event in &announced {
        let at = event.header.occurred_at;
        let change = match &event.payload {
            ModelEvent::Registered(registered) => {
                let (new, version, artifact) = events::from_registered(registered, at).unwrap();
                replica.apply_registered(&new, version, &artifact).await.unwrap()
            }
            ModelEvent::Promoted(promoted) => {
                replica.promote(&promoted.name, u32::try_from(promoted.version).unwrap(), at).await.unwrap().change
            }
            ModelEvent::Archived(archived) => {
                replica.archive(&archived.name, u32::try_from(archived.version).unwrap(), at).await.unwrap()
            }
        };
        assert_eq!(change, Change::Applied);
    }
    for event in &announced {
        let at = event.header.occurred_at;
        match &event.payload {
            ModelEvent::Registered(registered) => {
                let (new, version, artifact) = events::from_registered(registered, at).unwrap();
                assert_eq!(replica.apply_registered(&new, version, &artifact).await.unwrap(), Change::Unchanged);
            }
            ModelEvent::Archived(archived) => {
                let version = u32::try_from(archived.version).unwrap();
                assert_eq!(replica.archive(&archived.name, version, at).await.unwrap(), Change::Unchanged);
            }
            // Promoting a version a later promotion archived is refused (archived stays
            // archived), so promotions are not re-applied here.
            ModelEvent::Promoted(_) => {}
        }
    }

    let (written, rebuilt) = (source.list_versions(&name).await.unwrap(), replica.list_versions(&name).await.unwrap());
    assert_eq!(written.len(), 2);
    assert_eq!(rebuilt.iter().map(|v| v.stage).collect::<Vec<_>>(), [Stage::Archived, Stage::Archived]);
    for (written, rebuilt) in written.iter().zip(&rebuilt) {
        // The event does not carry the unit count nor the trainer's comparison record; all the
        // rest comes back exactly, times included.
        assert_eq!(rebuilt.training.units, 0);
        assert_eq!(rebuilt.comparison, None);
        let mut expected = written.clone();
        expected.training.units = 0;
        expected.comparison = None;
        assert_eq!(rebuilt, &expected);
    }
    assert_eq!(rebuilt[0].archived_at, Some(Timestamp(JAN_1 + 11 * 60_000_000)), "archived by v2's promotion");
    assert_eq!(rebuilt[1].archived_at, Some(at));
    assert_eq!(rebuilt[1].training.to.as_deref(), Some("2025-12-01T01:00:00.25Z"));
    assert_eq!(
        rfc3339::parse(rebuilt[1].training.from.as_deref().unwrap()).unwrap().as_micros(),
        JAN_1 - 31 * 86_400_000_000
    );

    // A registration under the same number with another artifact is a conflict.
    let ModelEvent::Registered(first) = &announced[0].payload else { unreachable!() };
    let mut other = first.clone();
    other.artifact_sha256 = sm_models::sha256_hex(b"another model");
    let (new, version, artifact) = events::from_registered(&other, announced[0].header.occurred_at).unwrap();
    assert!(replica.apply_registered(&new, version, &artifact).await.is_err());

    // A kind this build does not know is refused before anything is written.
    let mut unknown = first.clone();
    unknown.kind = "anomaly_forest".into();
    let error = events::from_registered(&unknown, Timestamp(JAN_1)).unwrap_err();
    assert!(error.to_string().contains("upgrade"), "{error}");
}
