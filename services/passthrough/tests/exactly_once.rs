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
    create_topics(
        stack,
        Topics { input: unique("in"), output: unique("out"), dead_letters: unique("dlq"), group: unique("group") },
    )
    .await
}

/// Per-run topics and group under the names `deploy/kafka/access` grants the `passthrough`
/// principal (prefixed patterns), with `output` as the output topic's base name.
async fn passthrough_topics(stack: &Stack, output: &str) -> Topics {
    let run = unique("run");
    create_topics(
        stack,
        Topics {
            input: format!("{}-{run}", sm_domain::topics::READINGS_RAW),
            output: format!("{output}-{run}"),
            dead_letters: format!("{}-{run}", sm_domain::topics::READINGS_REJECTED),
            group: format!("sm-passthrough-{run}"),
        },
    )
    .await
}

async fn create_topics(stack: &Stack, t: Topics) -> Topics {
    for topic in [&t.input, &t.output, &t.dead_letters] {
        create_topic(&stack.kafka, topic, 6).await;
    }
    t
}

/// Starts the pass-through binary as its own process, as it runs in production; `extra`
/// settings win over the defaults.
fn spawn_agent(stack: &Stack, topics: &Topics, instance: &str, extra: &[(&str, String)]) -> Child {
    agent_command(stack, topics, instance, extra).stderr(Stdio::inherit()).spawn().expect("spawn passthrough")
}

fn agent_command(stack: &Stack, topics: &Topics, instance: &str, extra: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_passthrough"));
    command
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
        .envs(extra.iter().map(|(k, v)| (*k, v)))
        .stdout(Stdio::null());
    command
}

/// Sum of the high watermarks of `topic`: records written, committed or not.
fn written(bootstrap: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    (0..6).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap().1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_200k_records_exactly_once_across_a_sigkill() {
    let stack = stack_from_env_file();
    let topics = topics(&stack).await;
    exactly_once_across_a_sigkill(&stack, &topics, 200_000, &[]).await;
}

/// The same over the secured listener: SASL_SSL, SCRAM-SHA-512, as the `passthrough`
/// principal, whose ACLs allow exactly its topics, group and transactional ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_records_exactly_once_across_a_sigkill_over_sasl_ssl() {
    let stack = stack_from_env_file();
    let topics = passthrough_topics(&stack, sm_domain::topics::READINGS_PASSTHROUGH).await;
    exactly_once_across_a_sigkill(&stack, &topics, 100_000, &stack.kafka_as("passthrough")).await;
}

/// Topics the principal may not use. With no ACL at all on its output topic the agent stops at
/// start, naming the topic and what the principal lacks. With an output topic it may create
/// but not write, it runs, says so on `/readyz`, writes and commits nothing, so the records are
/// all still there for an agent that may write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_an_acl_is_refused_clearly_and_nothing_is_dropped() {
    const TOTAL: i64 = 2_000;
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let secured = stack.kafka_as("passthrough");

    // No ACL: the validated-readings topic is the ingestion agent's.
    let topics = passthrough_topics(&stack, sm_domain::topics::READINGS_VALIDATED).await;
    let mut agent = agent_command(&stack, &topics, &unique("instance"), &secured)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn passthrough");
    let (status, stderr) = exit_of(&mut agent, Duration::from_secs(60));
    assert!(!status.success(), "started without the right to its output topic");
    assert!(stderr.contains("Topic authorization failed"), "{stderr}");
    assert!(stderr.contains(&topics.output), "the error names the topic: {stderr}");
    assert!(stderr.contains("deploy/kafka/access"), "the error says where access is granted: {stderr}");

    // CREATE but no WRITE: the raw-readings prefix is the pass-through's input.
    let topics = passthrough_topics(&stack, &format!("{}-out", sm_domain::topics::READINGS_RAW)).await;
    produce(&stack.kafka, &topics.input, (0..TOTAL).map(|i| avro_record(&codec, i)));
    let instance = unique("instance");
    let port = sm_testkit::process::free_port();
    let mut extra = secured.clone();
    extra.push(("SM_TELEMETRY__HTTP_ADDR", format!("127.0.0.1:{port}")));
    let mut agent = spawn_agent(&stack, &topics, &instance, &extra);
    let reason = sm_testkit::process::wait_unready_because(port, "Topic authorization failed", Duration::from_secs(60));
    eprintln!("readiness while refused: {reason}");
    assert!(reason.contains(&topics.output), "readiness names the refused topic: {reason}");
    std::thread::sleep(Duration::from_secs(3));
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(written(&stack.kafka, &topics.output), 0, "nothing reached the refused topic");
    let dead = read_committed(&stack.kafka, &topics.dead_letters, 0, Duration::from_secs(1), Duration::from_secs(5));
    assert!(dead.is_empty(), "a refused write is not a bad record: nothing is dead-lettered");

    // Same group, a connection allowed to write: every record comes through, once.
    let mut agent = spawn_agent(&stack, &topics, &instance, &[]);
    let passed =
        read_committed(&stack.kafka, &topics.output, TOTAL as usize, Duration::from_secs(3), Duration::from_secs(120));
    unsafe_terminate(&mut agent);
    let sequences: HashSet<i64> =
        passed.iter().map(|r| codec.decode::<SensorReading>(&r.value, None).unwrap().payload.sequence).collect();
    assert_eq!(passed.len(), TOTAL as usize, "no record was committed past while refused");
    assert_eq!(sequences.len(), TOTAL as usize);
}

/// Waits for `child` to exit: its status and, when piped, its stderr.
fn exit_of(child: &mut Child, within: Duration) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent kept running for {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).unwrap();
    }
    (status, stderr)
}

async fn exactly_once_across_a_sigkill(stack: &Stack, topics: &Topics, total: i64, extra: &[(&str, String)]) {
    let codec = Codec::embedded().unwrap();
    produce(&stack.kafka, &topics.input, (0..total).map(|i| avro_record(&codec, i)));

    let instance = unique("instance");
    let mut agent = spawn_agent(stack, topics, &instance, extra);
    // Kill at a random point while records are flowing.
    let kill_at = rand::rng().random_range(total / 10..total * 7 / 10);
    let started = Instant::now();
    while written(&stack.kafka, &topics.output) < kill_at {
        assert!(started.elapsed() < Duration::from_secs(180), "agent made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill().unwrap(); // SIGKILL: no commit, no abort, no goodbye
    agent.wait().unwrap();
    let written_at_kill = written(&stack.kafka, &topics.output);
    eprintln!("killed after {written_at_kill} output records were written (target {kill_at})");

    let mut agent = spawn_agent(stack, topics, &instance, extra);
    let committed =
        read_committed(&stack.kafka, &topics.output, total as usize, Duration::from_secs(3), Duration::from_secs(240));
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
    let missing: Vec<_> = (0..total).filter(|s| !sequences.contains_key(s)).take(5).collect();
    assert!(duplicated.is_empty(), "duplicated sequences, e.g. {duplicated:?}");
    assert!(missing.is_empty(), "missing sequences, e.g. {missing:?}");
    assert_eq!(committed.len(), total as usize);
    let all =
        read_uncommitted(&stack.kafka, &topics.output, total as usize, Duration::from_secs(2), Duration::from_secs(60));
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
