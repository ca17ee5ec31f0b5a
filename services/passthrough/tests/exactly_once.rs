//! The runtime's guarantees against the real broker of the local stack: exactly-once across a
//! SIGKILL, and dead letters that never stall a partition. (librdkafka's mock cluster does not
//! hide aborted records from `read_committed` readers, so these cannot run on it.)

use rand::Rng;
use sm_domain::{AssetId, Codec, Envelope, RejectedReading, SensorReading, TenantId, Timestamp};
use sm_testkit::{Record, Stack, create_topic, produce, read_committed, read_uncommitted, stack_from_env_file, unique};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn reading(sequence: i64) -> Envelope<SensorReading> {
    let asset = format!("asset-{}", sequence % 97);
    Envelope::origin(
        TenantId::from("test"),
        AssetId(asset.clone()),
        Timestamp(1_764_000_000_000_000 + sequence * 1000),
        "test-gateway",
        SensorReading {
            sensor_id: format!("{asset}.temp").into(),
            value: sequence as f64 * 0.5,
            unit: "degC".into(),
            sequence,
            backfill: false,
        },
    )
}

fn avro_record(codec: &Codec, sequence: i64) -> Record {
    let event = reading(sequence);
    Record {
        key: event.header.asset_id.as_str().as_bytes().to_vec(),
        value: codec.encode(&event).unwrap(),
        headers: vec![],
    }
}

struct Topics {
    input: String,
    output: String,
    dead_letters: String,
    group: String,
}

async fn topics(stack: &Stack) -> Topics {
    let t = Topics { input: unique("in"), output: unique("out"), dead_letters: unique("dlq"), group: unique("group") };
    for topic in [&t.input, &t.output, &t.dead_letters] {
        create_topic(&stack.kafka, topic, 6).await;
    }
    t
}

/// Starts the pass-through binary as its own process, as it runs in production.
fn spawn_agent(stack: &Stack, topics: &Topics, instance: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_passthrough"))
        .env_clear()
        .envs(&stack.vars)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SM_PASSTHROUGH__INPUT_TOPIC", &topics.input)
        .env("SM_PASSTHROUGH__OUTPUT_TOPIC", &topics.output)
        .env("SM_PASSTHROUGH__DEAD_LETTER_TOPIC", &topics.dead_letters)
        .env("SM_KAFKA__GROUP_ID", &topics.group)
        .env("SM_KAFKA__INSTANCE_ID", instance)
        .env("SM_KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("SM_TELEMETRY__HTTP_ADDR", "127.0.0.1:0")
        .env("SM_TELEMETRY__LOG_FILTER", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn passthrough")
}

/// Sum of the high watermarks of `topic`: records written, committed or not.
fn written(bootstrap: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    (0..6).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap().1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_200k_records_exactly_once_across_a_sigkill() {
    const TOTAL: i64 = 200_000;
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let topics = topics(&stack).await;
    produce(&stack.kafka, &topics.input, (0..TOTAL).map(|i| avro_record(&codec, i)));

    let instance = unique("instance");
    let mut agent = spawn_agent(&stack, &topics, &instance);
    // Kill at a random point while records are flowing.
    let kill_at = rand::rng().random_range(TOTAL / 10..TOTAL * 7 / 10);
    let started = Instant::now();
    while written(&stack.kafka, &topics.output) < kill_at {
        assert!(started.elapsed() < Duration::from_secs(180), "agent made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill().unwrap(); // SIGKILL: no commit, no abort, no goodbye
    agent.wait().unwrap();
    let written_at_kill = written(&stack.kafka, &topics.output);
    eprintln!("killed after {written_at_kill} output records were written (target {kill_at})");

    let mut agent = spawn_agent(&stack, &topics, &instance);
    let committed =
        read_committed(&stack.kafka, &topics.output, TOTAL as usize, Duration::from_secs(3), Duration::from_secs(240));
    unsafe_terminate(&mut agent);

    let mut sequences = HashMap::<i64, usize>::new();
    for record in &committed {
        let event: Envelope<SensorReading> = codec.decode(&record.value, None).unwrap();
        assert_eq!(record.key, event.header.asset_id.as_str().as_bytes(), "outputs are keyed by asset id");
        assert!(event.header.causation_id.is_some(), "outputs are caused by their input");
        assert!(record.headers.iter().any(|(k, _)| k == "traceparent"), "outputs carry traceparent");
        *sequences.entry(event.payload.sequence).or_default() += 1;
    }
    let duplicated: Vec<_> = sequences.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).take(5).collect();
    let missing: Vec<_> = (0..TOTAL).filter(|s| !sequences.contains_key(s)).take(5).collect();
    assert!(duplicated.is_empty(), "duplicated sequences, e.g. {duplicated:?}");
    assert!(missing.is_empty(), "missing sequences, e.g. {missing:?}");
    assert_eq!(committed.len(), TOTAL as usize);
    let all =
        read_uncommitted(&stack.kafka, &topics.output, TOTAL as usize, Duration::from_secs(2), Duration::from_secs(60));
    eprintln!("read_committed saw {}, read_uncommitted saw {} (aborted work hidden)", committed.len(), all.len());
    assert!(all.len() >= committed.len());
    let dead = read_committed(&stack.kafka, &topics.dead_letters, 0, Duration::from_secs(1), Duration::from_secs(5));
    assert!(dead.is_empty(), "valid records were dead-lettered");
}

/// SIGTERM and wait: the graceful path (commit, leave the group).
fn unsafe_terminate(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "agent exited with {status} after SIGTERM");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("agent did not stop within 30 s of SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_one_percent_undecodable_and_never_stalls() {
    const TOTAL: i64 = 20_000;
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let topics = topics(&stack).await;
    let mut bad = HashMap::<Vec<u8>, &'static str>::new();
    let records: Vec<Record> = (0..TOTAL)
        .map(|i| {
            if i % 100 != 37 {
                return avro_record(&codec, i);
            }
            // Each kind of undecodable input, spread over every partition.
            let key = format!("asset-{}", i % 97).into_bytes();
            let (value, headers, reason) = match (i / 100) % 5 {
                0 => (format!("garbage {i}").into_bytes(), vec![], "not_avro"),
                1 => {
                    let mut v = avro_record(&codec, i).value;
                    v.truncate(v.len() - 4);
                    (v, vec![], "malformed_avro")
                }
                2 => {
                    let mut v = avro_record(&codec, i).value;
                    v[1..5].copy_from_slice(&(i as u32 | 0x4000_0000).to_be_bytes());
                    (v, vec![], "unknown_schema")
                }
                3 => (
                    format!(r#"{{"asset_id":"a","value":{i}}}"#).into_bytes(),
                    vec![("content-type".to_owned(), "application/json".to_owned())],
                    "invalid_json",
                ),
                _ => (vec![0, (i >> 8) as u8, i as u8], vec![], "not_avro"), // too short for a schema id
            };
            bad.insert(value.clone(), reason);
            Record { key, value, headers }
        })
        .collect();
    assert_eq!(bad.len(), TOTAL as usize / 100, "each bad record is distinct");
    let expected_good = TOTAL as usize - bad.len();
    produce(&stack.kafka, &topics.input, records);

    let mut config = sm_kafka::KafkaConfig {
        bootstrap_servers: stack.kafka.clone(),
        group_id: topics.group.clone(),
        instance_id: unique("instance"),
        ..Default::default()
    };
    config.session_timeout_ms = 6000;
    let runtime = sm_kafka::Runtime::new(config, "passthrough", &[&topics.input], &topics.dead_letters).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let output = topics.output.clone();
    let agent = tokio::spawn(async move {
        runtime
            .run(sm_passthrough::Passthrough::new(&output), async {
                let _ = stopped.await;
            })
            .await
    });

    let kafka = stack.kafka.clone();
    let (out_topic, dlq_topic) = (topics.output.clone(), topics.dead_letters.clone());
    let (passed, dead) = tokio::task::spawn_blocking(move || {
        let passed =
            read_committed(&kafka, &out_topic, expected_good, Duration::from_secs(2), Duration::from_secs(120));
        let dead = read_committed(&kafka, &dlq_topic, bad.len(), Duration::from_secs(1), Duration::from_secs(60));
        (passed, (dead, bad))
    })
    .await
    .unwrap();
    let _ = stop.send(());
    let summary = agent.await.unwrap().unwrap();
    let (dead, bad) = dead;

    assert_eq!(passed.len(), expected_good, "every decodable record passes, once");
    let sequences: HashSet<i64> =
        passed.iter().map(|r| codec.decode::<SensorReading>(&r.value, None).unwrap().payload.sequence).collect();
    assert_eq!(sequences.len(), expected_good);
    assert_eq!(dead.len(), bad.len(), "every undecodable record is dead-lettered, once");
    let mut reasons = HashMap::<String, usize>::new();
    for record in &dead {
        let letter: Envelope<RejectedReading> = codec.decode(&record.value, None).unwrap();
        let letter = letter.payload;
        let expected_reason = bad.get(&letter.original).expect("dead letter carries the original bytes");
        assert_eq!(letter.reason_code, *expected_reason, "{}", letter.detail);
        assert!(!letter.detail.is_empty());
        assert_eq!(letter.source_topic, topics.input);
        assert_eq!(letter.agent, "passthrough");
        assert!(letter.original_key.is_some());
        *reasons.entry(letter.reason_code).or_default() += 1;
    }
    eprintln!("dead letters by reason: {reasons:?}; summary {summary:?}");
    assert_eq!(summary.rejected as usize, bad.len());
    assert_eq!(summary.produced as usize, expected_good);
    assert_eq!(summary.consumed, TOTAL as u64);
}
