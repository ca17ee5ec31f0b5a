//! Publish-to-projection latency of the readings path at a steady 5,000 readings/s: the
//! ingestion agent and the projector run as processes (release build), `smctl simulate`
//! publishes, and PostgreSQL's `projected_at - occurred_at` gives each reading's latency
//! (event time is the gateway's send time). The baseline in the same run is Kafka's own
//! publish-to-consume latency on the raw topic, seen by a plain consumer.
//!
//! Needs the local stack and the release binaries: `make bench` (or `cargo build --release
//! --bins` then `cargo bench -p sm-system-tests --bench latency`). `SM_BENCH_RATE` (default
//! 5000) and `SM_BENCH_SECS` (default 30).

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sm_domain::{Codec, Envelope, SensorReading, Timestamp, topics};
use sm_testkit::process::{Service, binary, smctl};
use sm_testkit::{stack_from_env_file, unique};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() {
    let rate: f64 = std::env::var("SM_BENCH_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(5000.0);
    let secs: f64 = std::env::var("SM_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30.0);
    let stack = stack_from_env_file();
    smctl(&stack, &["topics", "create"]);
    let mut ingestion = Service::start("ingestion", &stack, &[]);
    let mut projector = Service::start("projector", &stack, &[]);
    let run = unique("lat");

    // Baseline: a plain consumer of the raw topic, from its current end.
    let kafka = stack.kafka.clone();
    let prefix = run.clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let baseline = std::thread::spawn(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &kafka)
            .set("group.id", unique("lat-baseline"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(topics::READINGS_RAW), Duration::from_secs(10)).unwrap();
        let mut assignment = rdkafka::TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            let (_, high) = consumer.fetch_watermarks(topics::READINGS_RAW, p.id(), Duration::from_secs(10)).unwrap();
            assignment.add_partition_offset(topics::READINGS_RAW, p.id(), rdkafka::Offset::Offset(high)).unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let codec = Codec::embedded().unwrap();
        let mut latencies = Vec::new();
        while stop_rx.try_recv().is_err() {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                let received = Timestamp::now().0;
                if !message.key().unwrap_or_default().starts_with(prefix.as_bytes()) {
                    continue;
                }
                if let Ok(event) = codec.decode::<SensorReading>(message.payload().unwrap_or_default(), None) {
                    let event: Envelope<SensorReading> = event;
                    latencies.push((received - event.header.occurred_at.0) as f64 / 1000.0);
                }
            }
        }
        latencies
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let status = Command::new(binary("smctl"))
        .envs(&stack.vars)
        .args(["simulate", "--rate", &rate.to_string(), "--duration", &secs.to_string(), "--assets", "100", "--quiet"])
        .args(["--bad-fraction", "0", "--duplicate-fraction", "0", "--json-fraction", "0", "--no-unit-variants"])
        .args(["--tenant", &run, "--fleet-prefix", &run])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "simulate failed");
    let expected = (rate * secs).round() as i64;
    let (client, connection) = tokio_postgres::connect(&stack.postgres_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    loop {
        let n: i64 =
            client.query_one("SELECT count(*) FROM readings WHERE tenant_id = $1", &[&run]).await.unwrap().get(0);
        if n >= expected {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(secs as u64 + 300), "projected only {n} of {expected}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let row = client
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM projected_at - occurred_at)),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM projected_at - occurred_at)),
                    max(extract(epoch FROM projected_at - occurred_at))::float8
             FROM readings WHERE tenant_id = $1",
            &[&run],
        )
        .await
        .unwrap();
    let (p50, p99, max): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
    let _ = stop_tx.send(());
    let mut raw = baseline.join().unwrap();
    raw.sort_by(f64::total_cmp);
    projector.stop();
    ingestion.stop();

    println!("machine: {}", sm_testkit::bench::machine());
    println!(
        "rate: {rate} readings/s for {secs} s over 100 assets ({expected} readings), release binaries, one local broker"
    );
    println!(
        "raw topic, publish -> plain consumer (baseline): p50 {:.1} ms, p99 {:.1} ms ({} samples)",
        percentile(&raw, 0.5),
        percentile(&raw, 0.99),
        raw.len()
    );
    println!(
        "publish -> ingestion (EOS) -> projector -> PostgreSQL row: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50 * 1000.0,
        p99 * 1000.0,
        max * 1000.0
    );
    println!("ratio p99 readings path / raw Kafka: {:.1}", p99 * 1000.0 / percentile(&raw, 0.99));
}
