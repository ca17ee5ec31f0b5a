//! Throughput of the anomaly agent on the exactly-once runtime (decode, per-sensor and
//! per-asset detection, anomalies and the state checkpoint in each transaction), against two
//! baselines measured on the same broker in the same run: a raw librdkafka consume+produce
//! loop, and the runtime with a handler that decodes and does nothing (so the difference is
//! what detection and checkpointing cost).
//!
//! Needs the local stack (`deploy/local/stack up`). `SM_BENCH_RECORDS` sets the record count
//! (default 200,000; 100 assets × 4 sensors). Run with `cargo bench -p sm-anomaly --bench agent`.

use sm_anomaly::{AnomalyAgent, AnomalySettings};
use sm_domain::{AssetId, Codec, Envelope, TenantId, Timestamp, ValidatedReading};
use sm_kafka::{HandleError, Handler, Outputs, Source};
use sm_testkit::bench::{machine, peak_rss_mib, raw_copy_loop, wait_committed};
use sm_testkit::{Record, create_topic, produce, stack_from_env_file, unique};
use std::time::{Duration, Instant};

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
    let group = unique("bench-anomaly");
    let config = sm_kafka::KafkaConfig {
        bootstrap_servers: stack.kafka.clone(),
        group_id: group.clone(),
        instance_id: unique("bench"),
        statistics_interval_ms: 0,
        // The agent's own default (checkpoints ride on every commit); the same for both runs.
        commit_interval_ms: sm_anomaly::DEFAULT_COMMIT_INTERVAL_MS,
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

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("SM_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let run = unique("bench-anomaly");
    let input = format!("{run}-in");
    let raw_out = format!("{run}-raw-out");
    for topic in [&input, &raw_out] {
        create_topic(&stack.kafka, topic, 6).await;
    }
    // 100 assets × 4 sensors, one reading per sensor per second of event time, Gaussian-ish
    // noise with a spike now and then.
    let records: Vec<Record> = (0..total as i64)
        .map(|i| {
            let (asset, sensor, step) = (i % 100, (i / 100) % 4, i / 400);
            let asset_id = format!("{run}-asset-{asset}");
            let noise = ((i as f64) * 12.9898).sin() * 43_758.545 % 1.0;
            let spike = if step % 500 == 499 && sensor == 0 { 30.0 } else { 0.0 };
            let event = Envelope::origin(
                TenantId::from("bench"),
                AssetId(asset_id.clone()),
                Timestamp(1_764_000_000_000_000 + step * 1_000_000 + sensor * 1_000),
                "bench",
                ValidatedReading {
                    sensor_id: format!("{asset_id}.s{sensor}").into(),
                    sensor_type: "temperature".into(),
                    value: 50.0 + 10.0 * sensor as f64 + noise + spike,
                    unit: "degC".into(),
                    sequence: step,
                    quality_flags: Vec::new(),
                    backfill: false,
                },
            );
            Record { key: asset_id.into_bytes(), value: codec.encode(&event).unwrap(), headers: vec![] }
        })
        .collect();
    // The agent's decision alone, in process: no Kafka, no checkpoint.
    let settings = AnomalySettings { bucket_ms: 1_000, ..AnomalySettings::default() };
    let decoded_inputs: Vec<Envelope<ValidatedReading>> =
        records.iter().map(|r| codec.decode(&r.value, None).unwrap()).collect();
    let mut pure = AnomalyAgent::new(settings.clone());
    let started = Instant::now();
    let found: usize = decoded_inputs.iter().map(|r| pure.detect(r, 0).len()).sum();
    let pure_secs = started.elapsed().as_secs_f64();
    let checkpoint_started = Instant::now();
    let checkpoint: usize =
        sm_kafka::Handler::checkpoint(&mut pure).iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
    let checkpoint_secs = checkpoint_started.elapsed().as_secs_f64();
    drop(decoded_inputs);
    produce(&stack.kafka, &input, records);

    let raw = raw_copy_loop(&stack.kafka, &input, &raw_out, total).await;
    let (decoded, _) = run_agent(&stack, &input, total, "bench-decoded", Decoded).await;
    let (agent, summary) = run_agent(&stack, &input, total, "anomaly", AnomalyAgent::new(settings)).await;

    println!("machine: {}", machine());
    println!("records: {total} validated readings, 100 assets x 4 sensors, 6 partitions, one local KRaft broker");
    println!(
        "AnomalyAgent::detect alone (one core, no Kafka):       {:>9.0} readings/s ({found} anomalies)",
        total as f64 / pure_secs
    );
    println!(
        "one full checkpoint (400 sensors + 100 assets): {:.1} MiB in {:.1} ms",
        checkpoint as f64 / 1_048_576.0,
        checkpoint_secs * 1e3
    );
    println!(
        "raw librdkafka consume+produce (no decode, no txns):   {:>9.0} readings/s ({raw:.2} s)",
        total as f64 / raw
    );
    println!(
        "runtime, decode only (EOS txns, no output):            {:>9.0} readings/s ({decoded:.2} s)",
        total as f64 / decoded
    );
    println!(
        "anomaly agent (detect + anomalies + state checkpoint): {:>9.0} readings/s ({agent:.2} s), {} anomalies",
        total as f64 / agent,
        summary.produced
    );
    println!("ratio anomaly agent / raw: {:.2}; / decode-only runtime: {:.2}", raw / agent, decoded / agent);
    println!("peak RSS of the bench process: {:.0} MiB", peak_rss_mib());
}
