//! Throughput of the exactly-once pass-through agent against a raw librdkafka
//! consume-and-produce loop (no decoding, no transactions), on the same broker in the same
//! run, reported as a ratio because these machines are noisy.
//!
//! Needs the local stack (`deploy/local/stack up`). `SM_BENCH_RECORDS` sets the record count
//! (default 200,000). Run with `cargo bench -p sm-passthrough --bench throughput`.

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sm_domain::{AssetId, Codec, Envelope, SensorReading, TenantId, Timestamp};
use sm_testkit::{Record, create_topic, produce, stack_from_env_file, unique};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("SM_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let input = unique("bench-in");
    let (raw_out, eos_out) = (unique("bench-raw-out"), unique("bench-eos-out"));
    for topic in [&input, &raw_out, &eos_out] {
        create_topic(&stack.kafka, topic, 6).await;
    }
    let records: Vec<Record> = (0..total as i64)
        .map(|i| {
            let asset = format!("asset-{}", i % 200);
            let event = Envelope::origin(
                TenantId::from("bench"),
                AssetId(asset.clone()),
                Timestamp(1_764_000_000_000_000 + i),
                "bench",
                SensorReading {
                    sensor_id: format!("{asset}.vibration").into(),
                    value: i as f64,
                    unit: "mm/s".into(),
                    sequence: i,
                    backfill: false,
                },
            );
            Record { key: asset.into_bytes(), value: codec.encode(&event).unwrap(), headers: vec![] }
        })
        .collect();
    let mean_size = records.iter().map(|r| r.value.len()).sum::<usize>() as f64 / total as f64;
    produce(&stack.kafka, &input, records);

    let raw = raw_loop(&stack.kafka, &input, &raw_out, total).await;
    let eos = exactly_once(&stack.kafka, &input, &eos_out, total).await;

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let peak_rss_mib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0) / 1024.0)
        })
        .unwrap_or(0.0);
    println!("machine: {} cores, {cpu}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("records: {total}, mean value size {mean_size:.0} bytes, 6 partitions, one local KRaft broker");
    println!(
        "raw librdkafka consume+produce (no decode, no transactions): {:>9.0} records/s ({:.2} s)",
        total as f64 / raw,
        raw
    );
    println!(
        "exactly-once pass-through agent (Avro decode+encode, txns):  {:>9.0} records/s ({:.2} s)",
        total as f64 / eos,
        eos
    );
    println!("ratio exactly-once / raw: {:.2}", raw / eos);
    println!("peak RSS of the bench process (input generation + both loops): {peak_rss_mib:.0} MiB");
}

/// Consume and produce bytes as they are, auto-committing: the ceiling for one instance.
async fn raw_loop(bootstrap: &str, input: &str, output: &str, total: usize) -> f64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("bench-raw"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut started = None;
    for _ in 0..total {
        let message = consumer.recv().await.unwrap();
        started.get_or_insert_with(Instant::now);
        let mut record = BaseRecord::to(output)
            .key(message.key().unwrap_or_default())
            .payload(message.payload().unwrap_or_default());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    started.unwrap().elapsed().as_secs_f64()
}

/// The pass-through agent on the runtime; done when its committed input offsets cover
/// every record (outputs are then committed too, in the same transactions).
async fn exactly_once(bootstrap: &str, input: &str, output: &str, total: usize) -> f64 {
    let group = unique("bench-eos");
    let config = sm_kafka::KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        group_id: group.clone(),
        instance_id: unique("bench"),
        statistics_interval_ms: 0,
        ..Default::default()
    };
    let runtime = sm_kafka::Runtime::new(config, "passthrough", &[input], &unique("bench-dlq")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let output = output.to_owned();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        runtime
            .run(sm_passthrough::Passthrough::new(&output), async {
                let _ = stopped.await;
            })
            .await
    });
    let watcher: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", &group).create().unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..6 {
        partitions.add_partition(input, p);
    }
    let elapsed = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let committed = watcher.committed_offsets(partitions.clone(), Duration::from_secs(5)).unwrap();
        let done: i64 =
            committed.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum();
        if done as usize >= total {
            break started.elapsed().as_secs_f64();
        }
        assert!(started.elapsed() < Duration::from_secs(600), "exactly-once run stalled at {done}");
    };
    let _ = stop.send(());
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.produced as usize, total);
    elapsed
}
