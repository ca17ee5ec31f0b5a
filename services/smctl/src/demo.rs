//! `smctl demo passthrough`: the foundation's end-to-end demo. Readings of this run carry a
//! fresh tenant id, so results are told apart from earlier runs on the same topics.

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sm_domain::{AssetId, Codec, Envelope, RejectedReading, SensorReading, TenantId, Timestamp, topics};
use sm_kafka::KafkaConfig;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub async fn passthrough(
    config: &KafkaConfig,
    readings: u64,
    bad_fraction: f64,
    timeout: Duration,
) -> anyhow::Result<()> {
    sm_kafka::ensure_topics(config, topics::ALL).await.context("creating topics")?;
    let codec = Codec::embedded()?;
    let tenant = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let start_out = end_offsets(config, topics::READINGS_PASSTHROUGH)?;
    let start_dlq = end_offsets(config, topics::READINGS_REJECTED)?;

    let producer: ThreadedProducer<DefaultProducerContext> =
        config.client_config().set("enable.idempotence", "true").set("linger.ms", "5").create()?;
    let every_bad = if bad_fraction > 0.0 { (1.0 / bad_fraction).round() as u64 } else { u64::MAX };
    let started = Instant::now();
    let mut bad = 0u64;
    for i in 0..readings {
        let asset = format!("{tenant}-pump-{}", i % 20);
        let value = if i % every_bad == every_bad / 2 {
            bad += 1;
            // An undecodable reading: what a misconfigured gateway sends.
            format!("{{\"broken\": {i}").into_bytes()
        } else {
            let event = Envelope::origin(
                TenantId(tenant.clone()),
                AssetId(asset.clone()),
                Timestamp::now(),
                "smctl-demo",
                SensorReading {
                    sensor_id: format!("{asset}.temperature").into(),
                    value: 60.0 + (i % 17) as f64,
                    unit: "degC".into(),
                    sequence: i as i64,
                    backfill: false,
                },
            );
            codec.encode(&event)?
        };
        let mut record = BaseRecord::to(topics::READINGS_RAW).key(asset.as_bytes()).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).context("publishing readings")?;
    let published = started.elapsed();
    let good = readings - bad;
    println!(
        "sent {readings} readings to {} ({good} valid, {bad} undecodable) in {:.2} s",
        topics::READINGS_RAW,
        published.as_secs_f64()
    );

    let deadline = Instant::now() + timeout;
    let (forwarded, last_forwarded) =
        read_tenant(config, topics::READINGS_PASSTHROUGH, &start_out, good, deadline, |bytes| {
            let event = codec.decode::<SensorReading>(bytes, None).ok()?;
            (event.header.tenant_id.0 == tenant)
                .then(|| (event.header.event_id.to_string(), event.header.recorded_at.0))
        })?;
    let mut reasons = BTreeMap::<String, u64>::new();
    let (dead, _) = read_tenant(config, topics::READINGS_REJECTED, &start_dlq, bad, deadline, |bytes| {
        let letter = codec.decode::<RejectedReading>(bytes, None).ok()?;
        let key = String::from_utf8_lossy(letter.payload.original_key.as_deref().unwrap_or_default()).into_owned();
        key.starts_with(&tenant).then(|| {
            *reasons.entry(letter.payload.reason_code.clone()).or_default() += 1;
            (tenant.clone(), 0)
        })
    })?;
    println!("forwarded exactly once to {}: {} of {good}", topics::READINGS_PASSTHROUGH, forwarded.len());
    println!("dead-lettered to {}: {} of {bad}, by reason: {reasons:?}", topics::READINGS_REJECTED, dead.len());
    let moved = last_forwarded.duration_since(started);
    println!(
        "last forwarded reading visible (read_committed) {:.2} s after the first send: {:.0} readings/s end to end",
        moved.as_secs_f64(),
        good as f64 / moved.as_secs_f64()
    );
    anyhow::ensure!(forwarded.len() as u64 == good, "expected {good} forwarded readings, saw {}", forwarded.len());
    anyhow::ensure!(dead.len() as u64 == bad, "expected {bad} dead letters, saw {}", dead.len());
    println!("ok: every reading accounted for, none lost, none doubled");
    Ok(())
}

fn end_offsets(config: &KafkaConfig, topic: &str) -> anyhow::Result<Vec<(i32, i64)>> {
    let consumer: BaseConsumer = config.client_config().create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends = Vec::new();
    for partition in metadata.topics().first().map(|t| t.partitions()).unwrap_or_default() {
        let (_, high) = consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
        ends.push((partition.id(), high));
    }
    Ok(ends)
}

/// Reads `topic` (read_committed) from `start` until `expected` records of this run were
/// seen and nothing more arrived for a second, or the deadline passed. `select` returns
/// `Some` for records of this run. Also returns when the last of them was read.
fn read_tenant(
    config: &KafkaConfig,
    topic: &str,
    start: &[(i32, i64)],
    expected: u64,
    deadline: Instant,
    mut select: impl FnMut(&[u8]) -> Option<(String, i64)>,
) -> anyhow::Result<(Vec<(String, i64)>, Instant)> {
    let consumer: BaseConsumer = config
        .client_config()
        .set("group.id", format!("smctl-demo-{}", uuid::Uuid::new_v4().simple()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in start {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.assign(&assignment)?;
    let mut seen = Vec::new();
    let mut last = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if let Some(found) = select(message.payload().unwrap_or_default()) {
                    seen.push(found);
                    last = Instant::now();
                }
            }
            Some(Err(error)) => return Err(error).context(format!("reading {topic}")),
            None if seen.len() as u64 >= expected && last.elapsed() > Duration::from_secs(1) => break,
            None => {}
        }
    }
    Ok((seen, last))
}
