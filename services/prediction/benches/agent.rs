//! Throughput of the prediction agent: readings/s and predictions/s, in process and on the
//! exactly-once runtime, against baselines measured in the same run: the bare model
//! (`RulRegressor::predict` on ready histories), a raw librdkafka consume+produce loop, and
//! the runtime with a handler that decodes and does nothing.
//!
//! Needs the local stack (`deploy/local/stack up`). `SM_BENCH_ASSETS` sets the asset count
//! (default 200); each asset sends 4 sensor types × 3 readings per one-second cycle for 120
//! cycles. Run with `cargo bench -p sm-prediction --bench agent`.

use sm_domain::{AssetId, Codec, Envelope, TenantId, Timestamp, ValidatedReading};
use sm_kafka::{HandleError, Handler, Outputs, Source};
use sm_models::CycleBuilder;
use sm_prediction::models::{ModelShelf, ServedModel};
use sm_prediction::{AssetTypes, PredictionAgent, PredictionSettings, fixtures};
use sm_testkit::bench::{machine, peak_rss_mib, raw_copy_loop, wait_committed};
use sm_testkit::{Record, create_topic, produce, stack_from_env_file, unique};
use std::time::{Duration, Instant};

const CYCLES: i64 = 120;

/// Decodes and does nothing: the runtime's own cost.
struct Decoded;

impl Handler for Decoded {
    type Input = ValidatedReading;

    async fn handle(&mut self, _: &Envelope<ValidatedReading>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        Ok(Outputs::none())
    }
}

async fn run_agent<H: Handler>(
    stack: &sm_testkit::Stack,
    input: &str,
    total: usize,
    agent: &'static str,
    handler: H,
) -> (f64, sm_kafka::RunSummary) {
    let group = unique("bench-prediction");
    let config = sm_kafka::KafkaConfig {
        bootstrap_servers: stack.kafka.clone(),
        group_id: group.clone(),
        instance_id: unique("bench"),
        statistics_interval_ms: 0,
        commit_interval_ms: sm_prediction::DEFAULT_COMMIT_INTERVAL_MS,
        ..Default::default()
    };
    let runtime = sm_kafka::Runtime::new(config, agent, &[input], &unique("bench-dlq")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(runtime.run(handler, async {
        let _ = stopped.await;
    }));
    let seconds = wait_committed(&stack.kafka, &group, input, total, started, Duration::from_secs(900)).await;
    let _ = stop.send(());
    (seconds, task.await.unwrap().unwrap())
}

fn agent(assets: &[AssetId]) -> PredictionAgent {
    let (shelf, types) = (ModelShelf::default(), AssetTypes::default());
    let regressor = fixtures::stream_model(24, 1_000);
    shelf.put(ServedModel {
        name: "rul-pump".into(),
        version: 1,
        asset_type: "pump".into(),
        layout: regressor.stream_layout().unwrap(),
        regressor,
    });
    for asset in assets {
        types.set(asset.clone(), Some("pump".into()));
    }
    PredictionAgent::new(PredictionSettings::default(), shelf, types)
}

#[tokio::main]
async fn main() {
    let asset_count: i64 = std::env::var("SM_BENCH_ASSETS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let _telemetry = if std::env::var("RUST_LOG").is_ok() {
        Some(sm_telemetry::init("bench", &sm_telemetry::TelemetryConfig::default()).unwrap())
    } else {
        None
    };
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let run = unique("bench-prediction");
    let assets: Vec<AssetId> = (0..asset_count).map(|a| AssetId(format!("pump-{a:04}"))).collect();
    // Every asset wears out over the run (life = CYCLES), with 1 % noise.
    let mut state = 11u64;
    let mut inputs = Vec::new();
    for cycle in 0..CYCLES {
        let x = (cycle as f64 - CYCLES as f64 / 4.0).max(0.0) / (0.75 * CYCLES as f64);
        for k in 0..3 {
            for asset in &assets {
                for (i, channel) in fixtures::CHANNELS.iter().enumerate() {
                    let value = fixtures::expected(channel, x) * (1.0 + 0.01 * fixtures::noise(&mut state));
                    inputs.push(Envelope::origin(
                        TenantId::from("bench"),
                        asset.clone(),
                        Timestamp::from_millis(1_764_000_000_000 + cycle * 1_000 + k * 300 + i as i64),
                        "bench",
                        ValidatedReading {
                            sensor_id: format!("{asset}.{channel}").into(),
                            sensor_type: (*channel).into(),
                            value,
                            unit: String::new(),
                            sequence: cycle * 3 + k,
                            quality_flags: Vec::new(),
                            backfill: false,
                        },
                    ));
                }
            }
        }
    }
    let total = inputs.len();

    // The agent's decision alone, in process: no Kafka, no checkpoint.
    let mut pure = agent(&assets);
    let started = Instant::now();
    let predictions = inputs.iter().filter(|r| pure.observe(r).is_some()).count();
    let pure_secs = started.elapsed().as_secs_f64();
    let checkpoint: usize =
        Handler::checkpoint(&mut pure).iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();

    // Baseline: the bare model on the same histories, built beforehand.
    let model = fixtures::stream_model(24, 1_000);
    let layout = model.stream_layout().unwrap();
    let mut histories = Vec::new();
    let mut builders: Vec<CycleBuilder> =
        assets.iter().map(|_| CycleBuilder::new(&layout, model.window_cycles())).collect();
    for reading in &inputs {
        let a = assets.iter().position(|a| *a == reading.header.asset_id).unwrap();
        let at = reading.header.occurred_at.as_micros() / 1000;
        if builders[a].push(&reading.payload.sensor_type, at, reading.payload.value) == sm_models::Pushed::Closed
            && builders[a].history().len() >= PredictionSettings::default().min_cycles
        {
            histories.push(builders[a].history().to_vec());
        }
    }
    let started = Instant::now();
    let bare: f64 = histories.iter().map(|h| model.predict(h).unwrap().rul_cycles).sum();
    let bare_secs = started.elapsed().as_secs_f64();
    assert!(bare.is_finite());

    let records: Vec<Record> = inputs
        .iter()
        .map(|event| Record {
            key: event.header.asset_id.0.clone().into_bytes(),
            value: codec.encode(event).unwrap(),
            headers: vec![],
        })
        .collect();
    drop(inputs);
    let input = format!("{run}-in");
    let raw_out = format!("{run}-raw-out");
    for topic in [&input, &raw_out] {
        create_topic(&stack.kafka, topic, 6).await;
    }
    let kafka = sm_kafka::KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..Default::default() };
    sm_kafka::ensure_topics(
        &kafka,
        &[(sm_domain::topics::PREDICTIONS, false), (sm_domain::topics::PREDICTION_STATE, true)],
    )
    .await
    .unwrap();
    produce(&stack.kafka, &input, records);
    let raw = raw_copy_loop(&stack.kafka, &input, &raw_out, total).await;
    let (decoded, _) = run_agent(&stack, &input, total, "bench-decoded", Decoded).await;
    let (on_broker, summary) = run_agent(&stack, &input, total, "prediction", agent(&assets)).await;

    println!("machine: {}", machine());
    println!(
        "records: {total} validated readings, {asset_count} assets x 4 sensor types x 3 per 1 s cycle x {CYCLES} cycles, 6 partitions"
    );
    println!(
        "bare model (RulRegressor::predict on ready histories): {:>9.0} predictions/s ({} histories)",
        histories.len() as f64 / bare_secs,
        histories.len()
    );
    println!(
        "PredictionAgent::observe alone (one core, no Kafka):   {:>9.0} readings/s, {:>7.0} predictions/s ({predictions} predictions)",
        total as f64 / pure_secs,
        predictions as f64 / pure_secs
    );
    println!("one full checkpoint ({asset_count} assets): {:.1} KiB", checkpoint as f64 / 1024.0);
    println!(
        "raw librdkafka consume+produce (no decode, no txns):   {:>9.0} readings/s ({raw:.2} s)",
        total as f64 / raw
    );
    println!(
        "runtime, decode only (EOS txns, no output):            {:>9.0} readings/s ({decoded:.2} s)",
        total as f64 / decoded
    );
    println!(
        "prediction agent (cycles + model + checkpoint):        {:>9.0} readings/s, {:>7.0} predictions/s ({on_broker:.2} s, {} produced)",
        total as f64 / on_broker,
        summary.produced as f64 / on_broker,
        summary.produced
    );
    println!(
        "ratios: agent in process / bare model (predictions/s): {:.2}; on broker vs raw: {:.2}x slower; vs decode-only runtime: {:.2}x slower",
        (predictions as f64 / pure_secs) / (histories.len() as f64 / bare_secs),
        on_broker / raw,
        on_broker / decoded
    );
    println!("peak RSS of the bench process: {:.0} MiB", peak_rss_mib());
}
