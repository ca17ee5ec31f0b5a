//! Readings/s through the ingestion agent (decode, registry lookup, validation, unit
//! normalisation, Redis dedup, exactly-once produce) against the foundation's baselines on the
//! same broker in the same run: the exactly-once pass-through agent, and a raw librdkafka
//! consume-and-produce loop. Needs the local stack. `SM_BENCH_RECORDS` (default 100,000).
//! Run with `cargo bench -p sm-ingestion --bench throughput`.

use sm_domain::{AssetId, AssetRegistered, Codec, Envelope, SensorReading, SensorSpec, TenantId, Timestamp};
use sm_ingestion::{Ingestion, dedup::Deduplicator, registry, validate::Policy};
use sm_kafka::{Handler, KafkaConfig, Runtime};
use sm_testkit::bench::{machine, peak_rss_mib, raw_copy_loop, wait_committed};
use sm_testkit::{Record, Stack, create_topic, produce, stack_from_env_file, unique};
use std::time::{Duration, Instant};

const ASSETS: usize = 50;
const SENSORS: [(&str, &str, &str); 4] = [
    ("temperature", "temperature", "degC"),
    ("vibration", "vibration_rms", "mm/s"),
    ("pressure", "pressure", "kPa"),
    ("current", "current", "A"),
];

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("SM_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let prefix = unique("bench");
    let (input, assets_topic) = (unique("bench-raw"), unique("bench-assets"));
    create_topic(&stack.kafka, &input, 6).await;
    create_topic(&stack.kafka, &assets_topic, 1).await;
    let registrations = (0..ASSETS).map(|a| {
        let asset = format!("{prefix}-pump-{a}");
        let sensors = SENSORS
            .iter()
            .map(|(suffix, sensor_type, unit)| SensorSpec {
                sensor_id: format!("{asset}.{suffix}").into(),
                sensor_type: (*sensor_type).into(),
                unit: (*unit).into(),
                min_value: -100.0,
                max_value: 10_000.0,
                expected_interval_ms: 1000,
            })
            .collect();
        let event = Envelope::origin(
            TenantId::from("bench"),
            AssetId(asset.clone()),
            Timestamp::now(),
            "bench",
            AssetRegistered { name: asset.clone(), asset_type: "pump".into(), site: "bench".into(), sensors },
        );
        Record { key: asset.into_bytes(), value: codec.encode(&event).unwrap(), headers: vec![] }
    });
    produce(&stack.kafka, &assets_topic, registrations);
    let now = Timestamp::now().0;
    let records: Vec<Record> = (0..total)
        .map(|i| {
            let asset = format!("{prefix}-pump-{}", i % ASSETS);
            let (suffix, _, unit) = SENSORS[(i / ASSETS) % SENSORS.len()];
            let event = Envelope::origin(
                TenantId::from("bench"),
                AssetId(asset.clone()),
                Timestamp(now - (total - i) as i64 * 10),
                "bench",
                SensorReading {
                    sensor_id: format!("{asset}.{suffix}").into(),
                    value: (i % 500) as f64,
                    unit: unit.into(),
                    sequence: i as i64,
                    backfill: false,
                },
            );
            Record { key: asset.into_bytes(), value: codec.encode(&event).unwrap(), headers: vec![] }
        })
        .collect();
    produce(&stack.kafka, &input, records);

    let (raw_out, passthrough_out, validated) =
        (unique("bench-raw-out"), unique("bench-pt-out"), unique("bench-valid"));
    for topic in [&raw_out, &passthrough_out, &validated] {
        create_topic(&stack.kafka, topic, 6).await;
    }
    let raw = raw_copy_loop(&stack.kafka, &input, &raw_out, total).await;
    let passthrough = run(&stack, &input, sm_passthrough::Passthrough::new(&passthrough_out), total).await;
    let config = KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..Default::default() };
    let (registry, follower) = registry::follow(&config, &assets_topic).await.unwrap();
    let dedup = Deduplicator::connect(&stack.redis_url, 600).await.unwrap();
    let ingestion = Ingestion::new(registry, dedup, Policy::default()).with_output_topic(&validated);
    let ingestion = run(&stack, &input, ingestion, total).await;
    follower.abort();

    println!("machine: {}", machine());
    println!(
        "records: {total} valid readings of {} sensors, 6 partitions, one local KRaft broker, local Redis",
        ASSETS * SENSORS.len()
    );
    println!("raw librdkafka consume+produce:           {:>8.0} readings/s", total as f64 / raw);
    println!("exactly-once pass-through agent:         {:>8.0} readings/s", total as f64 / passthrough);
    println!("ingestion agent (validate+dedup, EOS):   {:>8.0} readings/s", total as f64 / ingestion);
    println!("ratio ingestion / pass-through: {:.2}; ingestion / raw: {:.2}", passthrough / ingestion, raw / ingestion);
    println!("peak RSS of the bench process: {:.0} MiB", peak_rss_mib());
}

/// Runs `handler` on the exactly-once runtime until it has committed all `total` inputs.
async fn run<H: Handler>(stack: &Stack, input: &str, handler: H, total: usize) -> f64 {
    let group = unique("bench-group");
    let config = KafkaConfig {
        bootstrap_servers: stack.kafka.clone(),
        group_id: group.clone(),
        instance_id: unique("bench"),
        statistics_interval_ms: 0,
        ..Default::default()
    };
    let runtime = Runtime::new(config, "bench", &[input], &unique("bench-dlq")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(runtime.run(handler, async {
        let _ = stopped.await;
    }));
    let elapsed = wait_committed(&stack.kafka, &group, input, total, started, Duration::from_secs(900)).await;
    let _ = stop.send(());
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.rejected, 0, "bench input must be valid: {summary:?}");
    elapsed
}
