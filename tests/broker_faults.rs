//! Nothing lost, nothing doubled, while the Kafka broker itself crashes: the stack's broker
//! is killed with SIGKILL three times at random points while a fleet streams through
//! ingestion, the projector, the anomaly agent (state in a changelog) and the pass-through,
//! and restarted after a random outage. Afterwards, under `read_committed`:
//! - every valid reading is in PostgreSQL exactly once, and on the validated topic once;
//! - every invalid one is on the dead-letter topic, under its reason;
//! - the pass-through's outputs plus its dead letters are exactly the run's raw records;
//! - the anomalies are exactly those one uninterrupted pass of the detector finds;
//! - then every agent's and projection's lag metric reads 0 within one interval.
//!
//! The broker is shared by the whole stack, so this is the only test in its binary (cargo
//! runs test binaries one at a time) and a guard brings the broker back even if it fails.
//! The binaries are taken from the target directory (`make test` builds them first).

use rand::{Rng, SeedableRng};
use sm_anomaly::AnomalySettings;
use sm_domain::{Codec, Envelope, RejectedReading, SensorReading, ValidatedReading, topics};
use sm_system_tests::{
    committed_anomalies, end_offsets, projected_readings, read_after, read_records_after, replayed_anomalies,
    validated_readings_of,
};
use sm_testkit::process::{Service, binary, scrape, smctl};
use sm_testkit::{create_topic, stack_from_env_file, unique};
use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const READINGS: u64 = 80_000;
const RATE: u64 = 2_000;
const KILLS: usize = 3;

/// `deploy/local/stack COMMAND kafka` on the stack the tests use.
fn stack_kafka(stack: &sm_testkit::Stack, command: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/stack");
    let mut run = Command::new(script);
    if let Some(dir) = stack.vars.get("SM_STACK_DIR") {
        run.env("SM_STACK_DIR", dir);
    }
    let status = run.args([command, "kafka"]).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "stack {command} kafka failed: {status}");
}

/// Starts the broker again when dropped, whatever happened.
struct BrokerBack<'s>(&'s sm_testkit::Stack);

impl Drop for BrokerBack<'_> {
    fn drop(&mut self) {
        stack_kafka(self.0, "start");
    }
}

fn anomaly_settings() -> AnomalySettings {
    let mut settings = AnomalySettings { bucket_ms: 250, ..AnomalySettings::default() };
    settings.asset.warmup_buckets = 20;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_or_doubled_across_broker_sigkills() {
    let stack = stack_from_env_file();
    smctl(&stack, &["topics", "create"]);
    let _broker_back = BrokerBack(&stack);
    let raw_from = end_offsets(&stack.kafka, topics::READINGS_RAW);
    let validated_from = end_offsets(&stack.kafka, topics::READINGS_VALIDATED);
    let rejected_from = end_offsets(&stack.kafka, topics::READINGS_REJECTED);
    let anomalies_from = end_offsets(&stack.kafka, topics::ANOMALIES);
    let (pass_out, pass_dead) = (unique("faults-pass-out"), unique("faults-pass-dlq"));
    create_topic(&stack.kafka, &pass_out, 6).await;
    create_topic(&stack.kafka, &pass_dead, 6).await;

    // One-second statistics so that the lag check below can ask for "within one interval".
    let stats = ("SM_KAFKA__STATISTICS_INTERVAL_MS", "1000".to_owned());
    let ingestion = Service::start("ingestion", &stack, std::slice::from_ref(&stats));
    let projector = Service::start("projector", &stack, std::slice::from_ref(&stats));
    let anomaly = Service::start(
        "anomaly",
        &stack,
        &[
            stats.clone(),
            ("SM_ANOMALY__BUCKET_MS", "250".to_owned()),
            ("SM_ANOMALY__ASSET__WARMUP_BUCKETS", "20".to_owned()),
            ("SM_KAFKA__COMMIT_INTERVAL_MS", "200".to_owned()),
        ],
    );
    // The pass-through reads the raw readings (its group resumes where it last stopped) into
    // topics of this run.
    let passthrough = Service::start(
        "passthrough",
        &stack,
        &[
            stats.clone(),
            ("SM_PASSTHROUGH__INPUT_TOPIC", topics::READINGS_RAW.to_owned()),
            ("SM_PASSTHROUGH__OUTPUT_TOPIC", pass_out.clone()),
            ("SM_PASSTHROUGH__DEAD_LETTER_TOPIC", pass_dead.clone()),
        ],
    );

    let tenant = unique("faults");
    let summary_path = std::env::temp_dir().join(format!("{tenant}.json"));
    let mut simulate = Command::new(binary("smctl"))
        .envs(&stack.vars)
        .args(["simulate", "--count", &READINGS.to_string(), "--rate", &RATE.to_string(), "--assets", "8"])
        .args(["--scenario", "anomaly", "--seed", "11", "--quiet"])
        .args(["--tenant", &tenant, "--fleet-prefix", &tenant, "--summary-json", summary_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // Three crashes of the broker at random points, each down for a random while.
    let seed: u64 = rand::rng().random();
    eprintln!("broker kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    for kill in 0..KILLS {
        let before = Duration::from_millis(rng.random_range(2_000..8_000));
        let outage = Duration::from_millis(rng.random_range(2_000..10_000));
        tokio::time::sleep(before).await;
        eprintln!("kill {} of {KILLS} at {:?}, down for {outage:?}", kill + 1, started.elapsed());
        stack_kafka(&stack, "kill");
        tokio::time::sleep(outage).await;
        stack_kafka(&stack, "start");
    }
    assert!(simulate.wait().unwrap().success(), "simulate failed");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["sent"].as_u64().unwrap(), READINGS);
    let valid = summary["valid"].as_i64().unwrap();
    let invalid: BTreeMap<String, u64> = serde_json::from_value(summary["invalid_by_reason"].clone()).unwrap();
    let invalid: BTreeMap<String, u64> = invalid.into_iter().filter(|(_, n)| *n > 0).collect();
    eprintln!("sent {READINGS}: {valid} valid, invalid {invalid:?}; faults over after {:?}", started.elapsed());

    // PostgreSQL: exactly the valid readings.
    let projected = projected_readings(&stack.postgres_url, &tenant, valid, Duration::from_secs(300)).await;
    assert_eq!(projected, valid, "every valid reading in PostgreSQL exactly once");

    // The validated topic: each valid reading once.
    let (kafka, run) = (stack.kafka.clone(), tenant.clone());
    let readings: Vec<Envelope<ValidatedReading>> = tokio::task::spawn_blocking(move || {
        validated_readings_of(&kafka, &validated_from, &run, valid as usize, Duration::from_secs(2))
    })
    .await
    .unwrap();
    assert_eq!(readings.len() as i64, valid, "validated readings under read_committed");
    let ids: HashSet<_> = readings.iter().map(|r| r.header.event_id).collect();
    assert_eq!(ids.len(), readings.len(), "no validated reading twice");

    // Every invalid reading dead-lettered under its reason, once.
    let expected_dead: u64 = invalid.values().sum();
    let (kafka, run) = (stack.kafka.clone(), tenant.clone());
    let letters: Vec<RejectedReading> = tokio::task::spawn_blocking(move || {
        let codec = Codec::embedded().unwrap();
        read_after(
            &kafka,
            topics::READINGS_REJECTED,
            &rejected_from,
            expected_dead as usize,
            Duration::from_secs(2),
            |b| {
                let letter = codec.decode::<RejectedReading>(b, None).ok()?.payload;
                let key = String::from_utf8_lossy(letter.original_key.as_deref().unwrap_or_default()).into_owned();
                (key.starts_with(&run) && letter.agent == "ingestion").then_some(letter)
            },
        )
    })
    .await
    .unwrap();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for letter in &letters {
        *reasons.entry(letter.reason_code.clone()).or_default() += 1;
    }
    assert_eq!(reasons, invalid, "dead letters by reason");
    let positions: HashSet<_> = letters.iter().map(|l| (l.source_partition, l.source_offset)).collect();
    assert_eq!(positions.len(), letters.len(), "no raw record dead-lettered twice");

    // The pass-through: outputs plus dead letters are exactly the run's raw records.
    let (kafka, run) = (stack.kafka.clone(), tenant.clone());
    let raw_positions = tokio::task::spawn_blocking(move || raw_records_of(&kafka, &raw_from, &run)).await.unwrap();
    assert_eq!(raw_positions.len() as u64, READINGS, "the run's raw records");
    let (kafka, run) = (stack.kafka.clone(), tenant.clone());
    let (outputs, pass_letters) = tokio::task::spawn_blocking(move || {
        let codec = Codec::embedded().unwrap();
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let from = end_offsets_at_start(&kafka, &pass_out);
            let outputs = read_after(&kafka, &pass_out, &from, 0, Duration::from_secs(1), |b| {
                let event = codec.decode::<SensorReading>(b, None).ok()?;
                (event.header.tenant_id.as_str() == run).then_some(())
            })
            .len() as u64;
            let from = end_offsets_at_start(&kafka, &pass_dead);
            let letters = read_after(&kafka, &pass_dead, &from, 0, Duration::from_secs(1), |b| {
                let letter = codec.decode::<RejectedReading>(b, None).ok()?.payload;
                let key = String::from_utf8_lossy(letter.original_key.as_deref().unwrap_or_default()).into_owned();
                key.starts_with(&run).then_some((letter.source_partition, letter.source_offset))
            });
            if outputs + letters.len() as u64 >= READINGS || Instant::now() > deadline {
                return (outputs, letters);
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    })
    .await
    .unwrap();
    let letter_positions: HashSet<_> = pass_letters.iter().copied().collect();
    assert_eq!(letter_positions.len(), pass_letters.len(), "no pass-through dead letter twice");
    assert!(letter_positions.is_subset(&raw_positions), "pass-through dead letters name the run's raw records");
    assert_eq!(
        outputs + pass_letters.len() as u64,
        READINGS,
        "pass-through: {outputs} outputs + {} dead letters for {READINGS} raw records",
        pass_letters.len()
    );

    // The anomaly agent: exactly what one uninterrupted pass finds, each once.
    let expected = replayed_anomalies(&readings, anomaly_settings());
    assert!(!expected.is_empty(), "the anomaly scenario has anomalies to find");
    let (kafka, run, count) = (stack.kafka.clone(), tenant.clone(), expected.values().sum::<usize>());
    let actual =
        tokio::task::spawn_blocking(move || committed_anomalies(&kafka, &anomalies_from, &run, count)).await.unwrap();
    let doubled: Vec<_> = actual.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "anomalies reported twice: {doubled:?}");
    let missed = expected.keys().filter(|k| !actual.contains_key(*k)).count();
    let extra = actual.keys().filter(|k| !expected.contains_key(*k)).count();
    assert!(missed == 0 && extra == 0, "{missed} anomalies missed, {extra} not in the replay");

    // Fully consumed: every agent's and projection's lag is 0 within one interval (1 s of
    // statistics plus the watchdog's second, with margin).
    for service in [&ingestion, &projector, &anomaly, &passthrough] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lag = scrape(service.http_port, "sm_runtime_consumer_lag_records");
            let behind: Vec<_> = lag.iter().filter(|(_, v)| *v != 0.0).collect();
            if !lag.is_empty() && behind.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{} lag after the stream was consumed: {lag:?}", service.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let agents: HashSet<String> = scrape(projector.http_port, "sm_runtime_consumer_lag_records")
        .into_iter()
        .filter_map(|(labels, _)| labels.split("agent=\"").nth(1).map(|a| a.split('"').next().unwrap().to_owned()))
        .collect();
    for projection in ["projector-readings", "projector-assets", "projector-alerts", "projector-predictions"] {
        assert!(agents.contains(projection), "{projection} exports its lag: {agents:?}");
    }
}

/// The start of every partition of `topic` (a topic created for this run).
fn end_offsets_at_start(bootstrap: &str, topic: &str) -> Vec<(i32, i64)> {
    end_offsets(bootstrap, topic).into_iter().map(|(p, _)| (p, 0)).collect()
}

/// Positions of the raw records this run sent (keyed by its assets), under `read_committed`.
fn raw_records_of(bootstrap: &str, from: &[(i32, i64)], run: &str) -> HashSet<(i32, i64)> {
    use rdkafka::Message;
    read_records_after(bootstrap, topics::READINGS_RAW, from, READINGS as usize, Duration::from_secs(2), |message| {
        message.key().is_some_and(|k| k.starts_with(run.as_bytes())).then(|| (message.partition(), message.offset()))
    })
    .into_iter()
    .collect()
}
