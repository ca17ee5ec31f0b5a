//! Throughput of the exactly-once pass-through agent against a raw librdkafka
//! consume-and-produce loop (no decoding, no transactions), on the same broker in the same
//! run, reported as a ratio because these machines are noisy.
//!
//! Needs the local stack (`deploy/local/stack up`). `SM_BENCH_RECORDS` sets the record count
//! (default 200,000). Run with `cargo bench -p sm-passthrough --bench throughput`.

use sm_domain::{AssetId, Codec, Envelope, SensorReading, TenantId, Timestamp};
use sm_testkit::bench::{machine, peak_rss_mib, raw_copy_loop, wait_committed};
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

    let raw = raw_copy_loop(&stack.kafka, &input, &raw_out, total).await;

    let group = unique("bench-eos");
    let config = sm_kafka::KafkaConfig {
        bootstrap_servers: stack.kafka.clone(),
        group_id: group.clone(),
        instance_id: unique("bench"),
        statistics_interval_ms: 0,
        ..Default::default()
    };
    let runtime = sm_kafka::Runtime::new(config, "passthrough", &[&input], &unique("bench-dlq")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let handler = sm_passthrough::Passthrough::new(&eos_out);
    let task = tokio::spawn(runtime.run(handler, async {
        let _ = stopped.await;
    }));
    let eos = wait_committed(&stack.kafka, &group, &input, total, started, Duration::from_secs(600)).await;
    let _ = stop.send(());
    assert_eq!(task.await.unwrap().unwrap().produced as usize, total);

    println!("machine: {}", machine());
    println!("records: {total}, mean value size {mean_size:.0} bytes, 6 partitions, one local KRaft broker");
    println!(
        "raw librdkafka consume+produce (no decode, no transactions): {:>9.0} records/s ({raw:.2} s)",
        total as f64 / raw
    );
    println!(
        "exactly-once pass-through agent (Avro decode+encode, txns):  {:>9.0} records/s ({eos:.2} s)",
        total as f64 / eos
    );
    println!("ratio exactly-once / raw: {:.2}", raw / eos);
    println!("peak RSS of the bench process (input generation + both loops): {:.0} MiB", peak_rss_mib());
}
