//! Latency at a steady 5,000 readings/s, with the ingestion agent, the anomaly agent and the
//! projector as processes (release build) and `smctl simulate --scenario anomaly` publishing:
//! - publish → projection: PostgreSQL's `projected_at - occurred_at` per reading (event time
//!   is the gateway's send time);
//! - reading → anomaly: when a `read_committed` consumer of `sm.anomalies.v1` receives each
//!   anomaly, minus the triggering reading's event time (ingestion and the anomaly agent, two
//!   exactly-once hops).
//!
//! The baseline in the same run is Kafka's own publish-to-consume latency on the raw topic,
//! seen by a plain consumer.
//!
//! Needs the local stack and the release binaries: `make bench` (or `cargo build --release
//! --bins` then `cargo bench -p sm-system-tests --bench latency`). `SM_BENCH_RATE` (default
//! 5000) and `SM_BENCH_SECS` (default 30).

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sm_domain::{AlertEvent, Codec, Decode, Envelope, SensorReading, Timestamp, topics};
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
    let mut anomaly = Service::start("anomaly", &stack, &[]);
    let run = unique("lat");

    // Reading → anomaly: a read_committed consumer of the anomalies, from their current end.
    let kafka = stack.kafka.clone();
    let tenant = run.clone();
    let (stop_anomalies, anomalies_stopped) = std::sync::mpsc::channel::<()>();
    let anomalies = std::thread::spawn(move || {
        let consumer = from_end(&kafka, topics::ANOMALIES);
        let codec = Codec::embedded().unwrap();
        let mut latencies = Vec::new();
        while anomalies_stopped.try_recv().is_err() {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                let received = Timestamp::now().0;
                let Ok(event) = AlertEvent::decode(&codec, message.payload().unwrap_or_default(), None) else {
                    continue;
                };
                if event.header.tenant_id.as_str() == tenant && matches!(event.payload, AlertEvent::Anomaly(_)) {
                    latencies.push((received - event.header.occurred_at.0) as f64 / 1000.0);
                }
            }
        }
        latencies
    });

    // Baseline: a plain consumer of the raw topic, from its current end.
    let kafka = stack.kafka.clone();
    let prefix = run.clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let baseline = std::thread::spawn(move || {
        let consumer = from_end(&kafka, topics::READINGS_RAW);
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
        .args(["--scenario", "anomaly"])
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
    tokio::time::sleep(Duration::from_secs(3)).await; // the last anomalies' transactions
    let _ = stop_tx.send(());
    let _ = stop_anomalies.send(());
    let mut raw = baseline.join().unwrap();
    raw.sort_by(f64::total_cmp);
    let mut to_anomaly = anomalies.join().unwrap();
    to_anomaly.sort_by(f64::total_cmp);
    anomaly.stop();
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
    assert!(!to_anomaly.is_empty(), "the anomaly scenario raised no anomaly");
    println!(
        "reading published -> ingestion (EOS) -> anomaly agent (EOS) -> anomaly visible: p50 {:.1} ms, p99 {:.1} ms ({} anomalies)",
        percentile(&to_anomaly, 0.5),
        percentile(&to_anomaly, 0.99),
        to_anomaly.len()
    );
    println!("ratio p99 reading-to-anomaly / raw Kafka: {:.1}", percentile(&to_anomaly, 0.99) / percentile(&raw, 0.99));
}

/// A `read_committed` consumer of every partition of `topic` from its current end.
fn from_end(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("lat-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
        assignment.add_partition_offset(topic, p.id(), rdkafka::Offset::Offset(high)).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}
