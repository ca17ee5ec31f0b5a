//! The prediction path end to end, on the real stack, with the binaries as processes:
//! `smctl train rul --simulated` trains two versions of a pump RUL model and registers them
//! (artifacts on the stack's S3 server, events on a model topic of this run; v1 promoted,
//! v2 staging); `smctl simulate --scenario failure` sends a fleet of pumps, two of which wear
//! out towards failure at the end of the run, through the ingestion agent; the prediction
//! agent is killed with SIGKILL mid-stream and restarted, and v2 is promoted while it runs.
//!
//! What must hold:
//! - every closed cycle of every pump gets exactly one prediction, and each equals what the
//!   named model version says on the same readings replayed in one uninterrupted pass (so
//!   neither the restart nor the hot swap lost, doubled or corrupted anything);
//! - the promotion takes effect in the running agent within seconds: no v1 prediction about
//!   cycles well after it (cycles before it may go either way, as the agent may lag);
//! - the predicted RUL of a wearing pump falls as it degrades, and ends well below that of
//!   the healthy pumps.
//!
//! The binaries are taken from the target directory: build them first (`cargo build --bins`;
//! `make test` does). The run has its own tenant, asset ids, model name and model topic.

use sm_domain::{
    AssetId, Codec, Envelope, FailurePredicted, ModelPromoted, TenantId, Timestamp, ValidatedReading, topics,
};
use sm_models::Model;
use sm_prediction::models::{ModelShelf, ServedModel};
use sm_prediction::{AssetTypes, PredictionAgent, PredictionSettings};
use sm_registry::{ArtifactStoreConfig, Registry};
use sm_system_tests::{end_offsets, read_after};
use sm_testkit::process::{Service, binary, smctl};
use sm_testkit::{create_topic, stack_from_env_file, unique};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The run both the training simulation and the live fleet follow: 8 pumps, 400 readings/s,
/// 60 s, one-second cycles.
const ASSETS: &str = "8";
const RATE: &str = "400";
const DURATION: &str = "60";
/// The promotion must show in predictions about cycles this long after it, at the latest.
const TAKES_EFFECT_WITHIN: Duration = Duration::from_secs(8);

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Settings {
    artifacts: ArtifactStoreConfig,
    kafka: sm_kafka::KafkaConfig,
    postgres: sm_storage::PostgresConfig,
}

/// The built-in pump template alone, so every simulated asset is a pump.
fn pump_catalog(run: &str) -> String {
    let builtin = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../services/smctl/src/builtin_templates.toml");
    let text = std::fs::read_to_string(builtin).unwrap();
    let sections: Vec<&str> = text.split("[[asset_types]]").collect();
    let pump = sections.iter().find(|s| s.trim_start().starts_with("name = \"pump\"")).unwrap();
    let path = std::env::temp_dir().join(format!("{run}-pumps.toml"));
    std::fs::write(&path, format!("[[asset_types]]{pump}")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn train(stack: &sm_testkit::Stack, catalog: &str, name: &str, topic: &str, seed: &str, promote: bool) {
    let mut args = vec!["train", "rul", "--simulated", "--catalog", catalog, "--assets", ASSETS, "--rate", RATE];
    args.extend(["--duration", DURATION, "--runs", "16", "--first-seed", seed, "--name", name]);
    args.extend(["--asset-type", "pump", "--models-topic", topic]);
    if promote {
        args.push("--promote");
    }
    smctl(stack, &args);
}

async fn load(store: &sm_registry::ArtifactStore, registry: &Registry, name: &str, version: u32) -> ServedModel {
    let registered = registry.get(name, version).await.unwrap();
    let bytes = store.get(&registered.artifact).await.unwrap();
    let Model::RemainingUsefulLife(regressor) = sm_models::load(&bytes, &registered.artifact.sha256).unwrap().model
    else {
        panic!("{name} v{version} is not a RUL model")
    };
    ServedModel {
        name: name.to_owned(),
        version: version as i32,
        asset_type: "pump".into(),
        layout: regressor.stream_layout().expect("trained for streams"),
        regressor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_follow_wear_survive_sigkill_and_pick_up_a_promotion() {
    let stack = stack_from_env_file();
    let settings: Settings = sm_telemetry::config::load_from(None, &stack.vars).unwrap();
    assert!(settings.artifacts.url.starts_with("s3://"), "artifacts are served by the stack's S3 server");
    smctl(&stack, &["topics", "create"]);
    let run = unique("e2e-predict");
    let models_topic = format!("{run}-models");
    create_topic(&stack.kafka, &models_topic, 1).await;
    let catalog = pump_catalog(&run);
    let name = format!("{run}-rul");
    train(&stack, &catalog, &name, &models_topic, "1000", true);
    train(&stack, &catalog, &name, &models_topic, "5000", false);

    let validated_from = end_offsets(&stack.kafka, topics::READINGS_VALIDATED);
    let predictions_from = end_offsets(&stack.kafka, topics::PREDICTIONS);
    let _ingestion = Service::start("ingestion", &stack, &[]);
    let agent_env =
        [("SM_PREDICTION__MODELS_TOPIC", models_topic.clone()), ("SM_KAFKA__COMMIT_INTERVAL_MS", "200".to_owned())];
    let mut agent = Service::start("prediction", &stack, &agent_env);
    let summary_path = std::env::temp_dir().join(format!("{run}.json")).to_str().unwrap().to_owned();
    let mut fleet = Command::new(binary("smctl"))
        .envs(&stack.vars)
        .args(["simulate", "--catalog", &catalog, "--assets", ASSETS, "--rate", RATE, "--duration", DURATION])
        .args(["--scenario", "failure", "--seed", "11", "--quiet", "--tenant", &run, "--fleet-prefix", &run])
        .args(["--summary-json", &summary_path])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    tokio::time::sleep(Duration::from_secs(20)).await;
    agent.kill_9();
    agent.spawn();
    tokio::time::sleep(Duration::from_secs(12)).await;
    // Promote v2 the way ModelService does: the registry, then the event.
    let pool = sm_storage::connect(&settings.postgres).unwrap();
    let registry = Registry::open(pool).await.unwrap();
    let promoted_at = Timestamp::now();
    let promotion = registry.promote(&name, 2, promoted_at).await.unwrap();
    let event = Envelope::origin(
        TenantId::from("default"),
        AssetId::from(name.as_str()),
        promoted_at,
        "e2e",
        sm_registry::events::promoted(&name, 2, promotion.archived, "e2e: take over", BTreeMap::new()),
    );
    let announced: ModelPromoted = event.payload.clone();
    assert_eq!(announced.previous_version, Some(1));
    sm_kafka::Announcer::new(&settings.kafka).unwrap().announce(&models_topic, &name, &event).await.unwrap();
    let announced_at = Instant::now();
    assert!(fleet.wait().unwrap().success(), "simulate failed");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let valid = summary["valid"].as_u64().unwrap() as usize;

    // The validated readings of this run, in partition order: what the agent consumed.
    let (kafka, tenant) = (stack.kafka.clone(), run.clone());
    let readings: Vec<Envelope<ValidatedReading>> = tokio::task::spawn_blocking(move || {
        let codec = Codec::embedded().unwrap();
        read_after(&kafka, topics::READINGS_VALIDATED, &validated_from, valid, Duration::from_secs(1), |b| {
            let event = codec.decode::<ValidatedReading>(b, None).ok()?;
            (event.header.tenant_id.as_str() == tenant).then_some(event)
        })
    })
    .await
    .unwrap();
    assert_eq!(readings.len(), valid, "ingestion passed every valid reading once");

    // One uninterrupted pass with each version: what each would say about each closed cycle
    // (the cycles do not depend on the version: both read the same channels and cycle).
    let store = settings.artifacts.build().unwrap();
    let mut replays = BTreeMap::new();
    for version in [1, 2] {
        let (shelf, types) = (ModelShelf::default(), AssetTypes::default());
        shelf.put(load(&store, &registry, &name, version).await);
        for reading in &readings {
            types.set(reading.header.asset_id.clone(), Some("pump".into()));
        }
        let mut replay = PredictionAgent::new(PredictionSettings::default(), shelf, types);
        let said: BTreeMap<String, FailurePredicted> =
            readings.iter().filter_map(|r| replay.observe(r).map(|p| (r.header.event_id.to_string(), p))).collect();
        replays.insert(version as i32, said);
    }
    let expected = replays[&1].len();
    assert!(expected > 8 * 40, "every pump's cycles are predicted: {expected}");
    let time_of: BTreeMap<String, (AssetId, i64)> = readings
        .iter()
        .map(|r| (r.header.event_id.to_string(), (r.header.asset_id.clone(), r.header.occurred_at.as_micros())))
        .collect();

    // What the killed, restarted and hot-swapped agent committed.
    let (kafka, tenant) = (stack.kafka.clone(), run.clone());
    let actual: Vec<(String, FailurePredicted)> = tokio::task::spawn_blocking(move || {
        let codec = Codec::embedded().unwrap();
        read_after(&kafka, topics::PREDICTIONS, &predictions_from, expected, Duration::from_secs(3), |b| {
            let event = codec.decode::<FailurePredicted>(b, None).ok()?;
            (event.header.tenant_id.as_str() == tenant)
                .then(|| (event.header.causation_id.map(|c| c.to_string()).unwrap_or_default(), event.payload))
        })
    })
    .await
    .unwrap();
    println!("promotion announced {:?} before the last prediction was read", announced_at.elapsed());
    let causes: BTreeSet<&String> = actual.iter().map(|(cause, _)| cause).collect();
    assert_eq!(causes.len(), actual.len(), "no cycle predicted twice");
    assert_eq!(actual.len(), expected, "every closed cycle predicted once");
    let promoted_us = promoted_at.as_micros();
    let within_us = TAKES_EFFECT_WITHIN.as_micros() as i64;
    let mut by_asset: BTreeMap<AssetId, Vec<(i64, f64)>> = BTreeMap::new();
    for (cause, prediction) in &actual {
        let said = &replays[&prediction.model_version][cause];
        assert_eq!(prediction, said, "v{} said something else on the replay", prediction.model_version);
        let (asset, at_us) = time_of[cause].clone();
        match prediction.model_version {
            1 => assert!(
                at_us < promoted_us + within_us,
                "v1 still served {} ms after the promotion",
                (at_us - promoted_us) / 1000
            ),
            // A lagging agent may predict cycles from before the promotion with v2: fine.
            2 => {}
            other => panic!("version {other} was never registered"),
        }
        by_asset.entry(asset).or_default().push((at_us, prediction.rul_seconds));
    }
    let first_v2 = actual
        .iter()
        .filter(|(_, p)| p.model_version == 2)
        .map(|(cause, _)| time_of[cause].1)
        .min()
        .expect("v2 predicted after its promotion");
    println!("first v2 prediction about a cycle {} ms after the promotion", (first_v2 - promoted_us) / 1000);

    // RUL falls as a pump wears; healthy pumps end far above.
    let wearing: BTreeSet<String> = summary["injections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "wear")
        .map(|i| i["asset_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(wearing.len(), 2, "a quarter of the 8 pumps wear: {wearing:?}");
    let mean = |v: &[(i64, f64)]| v.iter().map(|(_, r)| r).sum::<f64>() / v.len() as f64;
    let (mut healthy_end, mut wearing_end) = (Vec::new(), Vec::new());
    for (asset, mut rul) in by_asset {
        rul.sort_by_key(|(at, _)| *at);
        let n = rul.len();
        let (middle, end) = (mean(&rul[n / 5..n * 2 / 5]), mean(&rul[n * 17 / 20..]));
        println!("{asset}: mean RUL {middle:.1} s at 20-40 % of the run, {end:.1} s in the last 15 %");
        if wearing.contains(asset.as_str()) {
            assert!(end < middle * 0.6, "{asset} wears but its RUL went from {middle:.1} s to {end:.1} s");
            assert!(end < 20.0, "{asset} is near failure at the end but RUL says {end:.1} s");
            wearing_end.push(end);
        } else {
            healthy_end.push(end);
        }
    }
    healthy_end.sort_by(f64::total_cmp);
    let highest_wearing = wearing_end.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert!(
        healthy_end[0] > highest_wearing + 10.0,
        "every healthy pump ends well above the wearing ones: healthy {healthy_end:?}, wearing {wearing_end:?}"
    );
    assert!(healthy_end[healthy_end.len() / 2] > 30.0, "healthy pumps end with a long RUL: {healthy_end:?}");
}
