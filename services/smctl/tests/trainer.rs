//! `smctl train` and `smctl train serve` against the real stack: PostgreSQL (registry and
//! projections in a scratch schema of the test's own), the S3 server (artifacts under a
//! prefix of the test's own), Kafka (`sm.drift.v1` in, `sm.models.v1` out, a group of the
//! test's own).
//!
//! The projected history is written straight into the scratch schema's `assets` and
//! `readings` tables (the projector's columns): two healthy pumps running 8 °C warmer than the
//! catalog's 55 °C, and one wearing pump. A champion trained on the catalog's baseline reads
//! the warmer pumps as worn, so the challenger the trainer trains on the re-based baseline
//! must win and be promoted; a second request for the same asset type is debounced.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use sm_domain::{
    AssetId, Codec, Decode, Envelope, ModelEvent, ModelRetrainRequested, SensorId, TenantId, Timestamp, topics,
};
use sm_kafka::{Announcer, KafkaConfig};
use sm_registry::{ArtifactStoreConfig, Registry, Selector, Stage};
use sm_storage::PostgresConfig;
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::process::{free_port, http_ok};
use sm_testkit::{Stack, stack_from_env_file, unique};

/// The projector's `assets` and `readings` columns (services/projector/src/schema.rs).
const PROJECTED_TABLES: &str = "
CREATE TABLE assets (
    asset_id text PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL, asset_type text NOT NULL,
    site text NOT NULL, registered_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE readings (
    tenant_id text NOT NULL, asset_id text NOT NULL, sensor_id text NOT NULL, sensor_type text NOT NULL,
    occurred_at timestamptz NOT NULL, value double precision NOT NULL, unit text NOT NULL, sequence bigint NOT NULL,
    quality_flags text[] NOT NULL DEFAULT '{}', backfill boolean NOT NULL DEFAULT false, event_id text NOT NULL,
    recorded_at timestamptz NOT NULL, projected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, occurred_at, sequence));";

/// One reading a second for the last 20 minutes: `mean + ramp × (elapsed share) + noise`.
const READINGS: &str = "
INSERT INTO readings (tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence, event_id,
                      recorded_at)
SELECT 'default', $1, $1 || '.' || $2, $2, now() - make_interval(secs => g),
       $3::float8 + $5::float8 * ((1200 - g) / 1200.0)
           + $4::float8 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()),
       $6, 1200 - g, gen_random_uuid()::text, now()
FROM generate_series(1, 1200) AS g";

#[derive(Debug, Default, serde::Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    artifacts: ArtifactStoreConfig,
}

/// A `smctl train serve` process, stopped with SIGTERM when dropped.
struct Trainer(Child);

impl Drop for Trainer {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn smctl(env: &HashMap<String, String>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_smctl"));
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(env);
    command
}

async fn write_history(schema: &ScratchSchema, prefix: &str) {
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(PROJECTED_TABLES).await.unwrap();
    // (sensor type, unit, catalog mean, noise, rise over the window when wearing)
    let sensors = [
        ("temperature", "degC", 55.0, 0.8, 30.0),
        ("vibration_rms", "mm/s", 2.5, 0.25, 10.0),
        ("current", "A", 62.0, 1.2, 15.0),
        ("pressure", "kPa", 650.0, 8.0, 0.0),
        ("flow", "L/min", 1800.0, 30.0, 0.0),
    ];
    for (asset, wearing) in [("a", false), ("b", false), ("c", true)] {
        let asset_id = format!("{prefix}-pump-{asset}");
        client
            .execute("INSERT INTO assets VALUES ($1, 'default', $1, 'pump', 'test', now(), now())", &[&asset_id])
            .await
            .unwrap();
        for (sensor_type, unit, mean, noise, rise) in sensors {
            // The healthy pumps run 8 °C (10 noise std) warmer than the catalog says.
            let mean = if sensor_type == "temperature" && !wearing { mean + 8.0 } else { mean };
            let rise = if wearing { rise } else { 0.0 };
            client.execute(READINGS, &[&asset_id, &sensor_type, &mean, &noise, &rise, &unit]).await.unwrap();
        }
    }
}

fn retrain_request(prefix: &str) -> Envelope<ModelRetrainRequested> {
    let now = Timestamp::now();
    let asset = format!("{prefix}-pump-a");
    Envelope::origin(
        TenantId::from("default"),
        AssetId::from(asset.as_str()),
        now,
        "drift",
        ModelRetrainRequested {
            sensor_id: SensorId(format!("{asset}.temperature")),
            sensor_type: "temperature".into(),
            reason: "drift:ks_psi".into(),
            history_from: Timestamp(now.as_micros() - 600_000_000),
            history_to: now,
        },
    )
}

/// The group's committed offset of `partition` of `sm.drift.v1` (-1 when none).
fn committed(stack: &Stack, group: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &stack.kafka).set("group.id", group).create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition(topics::DRIFT, partition);
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    match committed.find_partition(topics::DRIFT, partition).map(|p| p.offset()) {
        Some(Offset::Offset(offset)) => offset,
        _ => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrain_request_promotes_a_challenger_that_beats_the_champion_once_per_interval() {
    let stack = stack_from_env_file();
    let schema = ScratchSchema::create(&stack, "trainer").await;
    let prefix = unique("trainer-it");
    let model = format!("{prefix}-rul-pump");
    let group = unique("sm-trainer-it");
    let http_port = free_port();
    let mut env = stack.vars.clone();
    let store_url = format!("{}/{prefix}", env["SM_ARTIFACTS__URL"].trim_end_matches('/'));
    env.insert("SM_ARTIFACTS__URL".into(), store_url.clone());
    env.insert("SM_POSTGRES__URL".into(), schema.url.clone());
    env.insert("SM_KAFKA__GROUP_ID".into(), group.clone());
    env.insert("SM_TELEMETRY__HTTP_ADDR".into(), format!("127.0.0.1:{http_port}"));
    env.insert("SM_TELEMETRY__LOG_FILTER".into(), "warn,smctl=info".into());
    write_history(&schema, &prefix).await;

    // The champion: trained on the catalog's pumps, promoted.
    let status = smctl(&env)
        .args(["train", "rul", "--simulated", "--runs", "16", "--folds", "0", "--promote", "--name", &model])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "smctl train rul: {status}");

    let child = smctl(&env)
        .args(["train", "serve", "--name-prefix", &format!("{prefix}-"), "--runs", "16", "--eval-runs", "8"])
        .args(["--history", "1800", "--min-interval", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut trainer = Trainer(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_ok(http_port, "/readyz") {
        assert!(Instant::now() < deadline, "trainer not ready within 60 s");
        assert!(trainer.0.try_wait().unwrap().is_none(), "trainer exited during start");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Two requests for the same asset type: the second is debounced.
    let announcer =
        Announcer::new(&KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..Default::default() }).unwrap();
    let first = retrain_request(&prefix);
    let key = first.header.asset_id.as_str().to_owned();
    announcer.announce(topics::DRIFT, &key, &first).await.unwrap();
    let (partition, second_offset) = announcer.announce(topics::DRIFT, &key, &retrain_request(&prefix)).await.unwrap();

    let pool =
        sm_storage::connect(&PostgresConfig { url: Secret(schema.url.clone()), pool_size: 2, ..Default::default() })
            .unwrap();
    let registry = Registry::open(pool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while committed(&stack, &group, partition) <= second_offset {
        assert!(Instant::now() < deadline, "the trainer did not handle both requests within 180 s");
        assert!(trainer.0.try_wait().unwrap().is_none(), "trainer exited");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let versions = registry.list_versions(&model).await.unwrap();
    assert_eq!(versions.len(), 2, "one champion, one challenger (the second request was debounced): {versions:#?}");
    let (champion, challenger) = (&versions[0], &versions[1]);
    assert_eq!(champion.stage, Stage::Archived);
    assert_eq!(challenger.stage, Stage::Production);
    assert_eq!(registry.resolve(&model, Selector::Auto).await.unwrap().version, 2);
    assert_eq!(challenger.asset_type, "pump");
    let comparison = challenger.comparison.as_ref().expect("the challenger records its comparison");
    assert_eq!(comparison["champion_version"], 1);
    assert_eq!(comparison["decision"], "promote");
    let (champion_rmse, challenger_rmse) =
        (comparison["champion_rmse"].as_f64().unwrap(), comparison["challenger_rmse"].as_f64().unwrap());
    assert!(challenger_rmse < champion_rmse, "{comparison}");
    // The baseline came from the two healthy pumps: 63 °C, not the wearing pump's ramp.
    let temperature = challenger.metrics["baseline_temperature_mean"];
    assert!((temperature - 63.0).abs() < 0.5, "{:?}", challenger.metrics);
    assert!(challenger.training.from.is_some() && challenger.training.to.is_some());
    assert!(challenger.artifact.location.starts_with(&store_url), "{}", challenger.artifact.location);

    // The artifact is on the S3 server, checked against the registry's SHA-256.
    let settings: Settings = sm_telemetry::config::load_from(None, &env).unwrap();
    let store = settings.artifacts.build().unwrap();
    let bytes = store.get(&challenger.artifact).await.unwrap();
    let loaded = sm_models::load(&bytes, &challenger.artifact.sha256).unwrap();
    assert_eq!(loaded.card.name, model);

    // sm.models.v1 has the whole story, in order, keyed by the model name; the trainer's
    // events are caused by the first request.
    let codec = Codec::embedded().unwrap();
    let records =
        sm_testkit::read_committed(&stack.kafka, topics::MODELS, 4, Duration::from_secs(3), Duration::from_secs(60));
    let events: Vec<Envelope<ModelEvent>> = records
        .iter()
        .filter(|r| r.key == model.as_bytes())
        .map(|r| ModelEvent::decode(&codec, &r.value, None).unwrap())
        .collect();
    let summary: Vec<(&str, i32, Option<i32>)> = events
        .iter()
        .map(|e| match &e.payload {
            ModelEvent::Registered(r) => ("registered", r.version, None),
            ModelEvent::Promoted(p) => ("promoted", p.version, p.previous_version),
            ModelEvent::Archived(a) => ("archived", a.version, None),
        })
        .collect();
    assert_eq!(
        summary,
        [("registered", 1, None), ("promoted", 1, None), ("registered", 2, None), ("promoted", 2, Some(1))]
    );
    for event in &events[2..] {
        assert_eq!(event.header.causation_id, Some(first.header.event_id));
        assert_eq!(event.header.correlation_id, first.header.correlation_id);
        assert_eq!(event.header.producer, "smctl-trainer");
    }
    let ModelEvent::Promoted(promoted) = &events[3].payload else { unreachable!() };
    assert_eq!(promoted.comparison["challenger_rmse"], challenger_rmse);
    assert_eq!(promoted.comparison["champion_rmse"], champion_rmse);
    assert!(promoted.reason.contains("drift:ks_psi"), "{}", promoted.reason);
    drop(trainer);
}
