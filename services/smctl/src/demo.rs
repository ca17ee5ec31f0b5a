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

/// Settings of `smctl demo readings`.
#[derive(Debug, clap::Args)]
pub struct ReadingsDemoArgs {
    /// Seconds of simulated traffic.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Readings per second, all sensors together.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Assets in the simulated fleet.
    #[arg(long, default_value_t = 12)]
    pub assets: usize,
    /// Give up waiting for the projection after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub endpoint: crate::query::Endpoint,
}

/// `smctl demo readings`: simulates a small fleet through the running ingestion agent and
/// projector, reads the result back over gRPC, and checks every reading is accounted for.
pub async fn readings(
    kafka: &KafkaConfig,
    postgres: &sm_storage::PostgresConfig,
    args: ReadingsDemoArgs,
) -> anyhow::Result<()> {
    use clap::Parser;
    #[derive(Parser)]
    struct Simulate {
        #[command(flatten)]
        args: crate::simulate::SimulateArgs,
    }
    sm_kafka::ensure_topics(kafka, topics::ALL).await.context("creating topics")?;
    let run = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dead_letters_from = end_offsets(kafka, topics::READINGS_REJECTED)?;
    let simulate = Simulate::try_parse_from([
        "simulate".to_owned(),
        format!("--duration={}", args.duration),
        format!("--rate={}", args.rate),
        format!("--assets={}", args.assets),
        format!("--tenant={run}"),
        format!("--fleet-prefix={run}"),
        "--quiet".to_owned(),
    ])
    .context("building the simulation")?;
    println!("== simulating {} assets for {} s at {} readings/s (tenant {run})", args.assets, args.duration, args.rate);
    let summary = crate::simulate::run(kafka, simulate.args).await?;
    let tally = &summary.tally;

    println!("== waiting for the projection");
    let pool = sm_storage::connect(postgres).context("SM_POSTGRES__URL")?;
    let client = pool.get().await.context("connecting to PostgreSQL (SM_POSTGRES__URL)")?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut last = (-1i64, Instant::now());
    let projected = loop {
        let n: i64 = client.query_one("SELECT count(*) FROM readings WHERE tenant_id = $1", &[&run]).await?.get(0);
        if n != last.0 {
            last = (n, Instant::now());
        }
        if (n as u64 >= tally.valid && last.1.elapsed() > Duration::from_secs(1)) || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let latency = client
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM projected_at - occurred_at)),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM projected_at - occurred_at))
             FROM readings WHERE tenant_id = $1",
            &[&run],
        )
        .await?;
    let (p50, p99): (Option<f64>, Option<f64>) = (latency.get(0), latency.get(1));

    // Dead letters of this run: its records are keyed by its own asset ids.
    let codec = Codec::embedded()?;
    let expected_dead: u64 = tally.invalid_by_reason.values().sum();
    let mut reasons = BTreeMap::<String, u64>::new();
    read_tenant(kafka, topics::READINGS_REJECTED, &dead_letters_from, expected_dead, deadline, |bytes| {
        let letter = codec.decode::<RejectedReading>(bytes, None).ok()?;
        let key = String::from_utf8_lossy(letter.payload.original_key.as_deref().unwrap_or_default()).into_owned();
        key.starts_with(&run).then(|| {
            *reasons.entry(letter.payload.reason_code.clone()).or_default() += 1;
            (run.clone(), 0)
        })
    })?;

    // Read everything back over gRPC: page through each asset's readings.
    let mut grpc = crate::query::connect(&args.endpoint).await?;
    let assets: Vec<String> = client
        .query("SELECT DISTINCT asset_id FROM readings WHERE tenant_id = $1 ORDER BY 1", &[&run])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut paged = 0usize;
    let mut pages = 0usize;
    for asset in &assets {
        let mut token = String::new();
        loop {
            let page = grpc
                .list_readings(sm_proto::v1::ListReadingsRequest {
                    asset_id: asset.clone(),
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .context("ListReadings")?
                .into_inner();
            pages += 1;
            paged += page.readings.iter().filter(|r| r.tenant_id == run).count();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }

    println!();
    println!(
        "readings sent:            {} ({} as JSON, {} in non-canonical units)",
        tally.sent, tally.json, tally.non_canonical_units
    );
    println!("  valid and unique:       {}", tally.valid);
    println!("  duplicates (suppressed): {}", tally.duplicates);
    println!("  invalid (dead-lettered): {}", expected_dead);
    println!("dead letters by reason:   {reasons:?}");
    println!("rows projected:           {projected}");
    println!(
        "read back over gRPC:      {paged} readings in {pages} pages of ListReadings over {} assets",
        assets.len()
    );
    if let (Some(p50), Some(p99)) = (p50, p99) {
        println!("publish → projection:     p50 {:.0} ms, p99 {:.0} ms", p50 * 1000.0, p99 * 1000.0);
    }
    if let Some(asset) = assets.first() {
        println!("\nLatest of {asset}:");
        let latest =
            grpc.latest(sm_proto::v1::LatestRequest { asset_id: asset.clone() }).await.context("Latest")?.into_inner();
        crate::query::print_table(&latest.readings);
    }
    let expected_reasons: BTreeMap<String, u64> =
        tally.invalid_by_reason.iter().filter(|(_, n)| **n > 0).map(|(k, n)| ((*k).to_owned(), *n)).collect();
    anyhow::ensure!(projected as u64 == tally.valid, "expected {} projected readings, found {projected}", tally.valid);
    anyhow::ensure!(paged as u64 == tally.valid, "expected {} readings over gRPC, paged {paged}", tally.valid);
    anyhow::ensure!(
        reasons == expected_reasons,
        "dead letters {reasons:?} differ from what was sent {expected_reasons:?}"
    );
    println!("\nok: every reading accounted for: projected once if valid, dead-lettered with its reason if not");
    Ok(())
}
