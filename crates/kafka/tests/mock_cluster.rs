//! Hermetic tests of the runtime's routing and recovery on librdkafka's mock cluster: no
//! broker needed. The mock does not hide aborted records from `read_committed` readers, so
//! these tests assert on what is never lost and on where records go; the exactly-once
//! assertions run against the real broker (services/passthrough/tests).

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use sm_domain::{AssetId, Codec, Envelope, RejectedReading, SensorReading, TenantId, Timestamp};
use sm_kafka::{HandleError, Handler, KafkaConfig, Outputs, Rejection, RunSummary, Runtime, Source};
use sm_testkit::{Record, produce, read_uncommitted};
use std::collections::HashMap;
use std::time::Duration;

const OUTPUT: &str = "out";
const DEAD_LETTERS: &str = "dlq";

/// Forwards readings; rejects every tenth; fails transiently on chosen sequences a few times.
struct Scripted {
    transient_failures: HashMap<i64, u32>,
}

impl Handler for Scripted {
    type Input = SensorReading;

    async fn handle(&mut self, input: &Envelope<SensorReading>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        let sequence = input.payload.sequence;
        if let Some(left) = self.transient_failures.get_mut(&sequence)
            && *left > 0
        {
            *left -= 1;
            return Err(HandleError::Transient("database unavailable".into()));
        }
        if sequence % 10 == 0 {
            return Err(Rejection::new("test_reject", format!("sequence {sequence} is a multiple of ten")).into());
        }
        Ok(Outputs::one(OUTPUT, input.payload.clone()))
    }
}

fn records(codec: &Codec, count: i64) -> Vec<Record> {
    (0..count)
        .map(|sequence| {
            let event = Envelope::origin(
                TenantId::from("t"),
                AssetId::from("pump-1"),
                Timestamp(sequence),
                "test",
                SensorReading {
                    sensor_id: "pump-1.temp".into(),
                    value: 1.0,
                    unit: "degC".into(),
                    sequence,
                    backfill: false,
                },
            );
            Record { key: b"pump-1".to_vec(), value: codec.encode(&event).unwrap(), headers: vec![] }
        })
        .collect()
}

/// A one-broker mock cluster with topics `in`, `out` and `dlq` (one partition each, so order is
/// observable), and `count` readings in `in`.
fn cluster_with_input(count: i64) -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, Codec) {
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["in", OUTPUT, DEAD_LETTERS] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let codec = Codec::embedded().unwrap();
    produce(&cluster.bootstrap_servers(), "in", records(&codec, count));
    (cluster, codec)
}

/// Runs the runtime on `input` until `expected_outputs` reached the output topic.
async fn run(bootstrap: &str, input: &str, handler: Scripted, expected_outputs: usize) -> (RunSummary, Vec<i64>) {
    let runtime = Runtime::new(mock_config(bootstrap), "mock-test", &[input], DEAD_LETTERS).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(handler, async {
        let _ = stopped.await;
    }));
    let bootstrap = bootstrap.to_owned();
    let outputs = tokio::task::spawn_blocking(move || {
        read_uncommitted(&bootstrap, OUTPUT, expected_outputs, Duration::from_millis(500), Duration::from_secs(60))
    })
    .await
    .unwrap();
    let _ = stop.send(());
    let summary = task.await.unwrap().unwrap();
    let codec = Codec::embedded().unwrap();
    let sequences =
        outputs.iter().map(|r| codec.decode::<SensorReading>(&r.value, None).unwrap().payload.sequence).collect();
    (summary, sequences)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_are_dead_lettered_and_the_partition_moves_on() {
    let (cluster, codec) = cluster_with_input(200);

    let (summary, sequences) =
        run(&cluster.bootstrap_servers(), "in", Scripted { transient_failures: HashMap::new() }, 180).await;
    let expected: Vec<i64> = (0..200).filter(|s| s % 10 != 0).collect();
    assert_eq!(sequences, expected, "every accepted record, in partition order");
    let dead = read_uncommitted(
        &cluster.bootstrap_servers(),
        DEAD_LETTERS,
        20,
        Duration::from_millis(300),
        Duration::from_secs(20),
    );
    assert_eq!(dead.len(), 20);
    for record in dead {
        let letter = codec.decode::<RejectedReading>(&record.value, None).unwrap();
        assert_eq!(letter.payload.reason_code, "test_reject");
        assert_eq!(letter.payload.source_offset % 10, 0);
        assert_eq!(
            letter.header.causation_id,
            Some(codec.decode::<SensorReading>(&letter.payload.original, None).unwrap().header.event_id)
        );
    }
    assert_eq!((summary.consumed, summary.produced, summary.rejected), (200, 180, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_never_skip_a_record() {
    let (cluster, _) = cluster_with_input(50);

    let failures = HashMap::from([(7, 3), (31, 2)]);
    let (summary, sequences) =
        run(&cluster.bootstrap_servers(), "in", Scripted { transient_failures: failures }, 45).await;
    let expected: Vec<i64> = (0..50).filter(|s| s % 10 != 0).collect();
    assert_eq!(sequences, expected, "retried records keep their place; none skipped");
    assert_eq!(summary.retried, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_aborts_rewinds_and_loses_nothing() {
    let (cluster, _) = cluster_with_input(300);
    // The first offset commit inside a transaction fails as after a rebalance.
    cluster.request_errors(RDKafkaApiKey::TxnOffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION]);

    let (summary, sequences) =
        run(&cluster.bootstrap_servers(), "in", Scripted { transient_failures: HashMap::new() }, 270).await;
    assert!(summary.aborted_transactions >= 1, "{summary:?}");
    // The mock shows aborted records too, so some may repeat; none may be missing.
    let mut seen: Vec<i64> = sequences.clone();
    seen.sort_unstable();
    seen.dedup();
    let expected: Vec<i64> = (0..300).filter(|s| s % 10 != 0).collect();
    assert_eq!(seen, expected);
    assert!(summary.consumed > 300, "the aborted batch was consumed again: {summary:?}");
}

/// A projection whose store is down for good: commits always fail.
struct StoreDown {
    inner: Scripted,
    attempts: u32,
}

impl Handler for StoreDown {
    type Input = SensorReading;

    async fn handle(&mut self, input: &Envelope<SensorReading>, source: &Source<'_>) -> Result<Outputs, HandleError> {
        self.inner.handle(input, source).await.map(|_| Outputs::none())
    }
}

impl sm_kafka::ExternalCheckpoint for StoreDown {
    async fn commit(&mut self, _: &[sm_kafka::PartitionOffset]) -> Result<(), sm_kafka::BoxError> {
        self.attempts += 1;
        Err("database unavailable".into())
    }

    fn rollback(&mut self) {}

    async fn stored_offsets(
        &mut self,
        _: &[(String, i32)],
    ) -> Result<Vec<sm_kafka::PartitionOffset>, sm_kafka::BoxError> {
        Ok(vec![])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_retrying_stops_cleanly_without_committing() {
    let (cluster, _) = cluster_with_input(20);
    let config = mock_config(&cluster.bootstrap_servers());
    let runtime = Runtime::new(config, "mock-test", &["in"], DEAD_LETTERS).unwrap();
    let handler = StoreDown { inner: Scripted { transient_failures: HashMap::new() }, attempts: 0 };
    // An `async` block panics if polled again after completing: the loop must remember it fired.
    let stop = async { tokio::time::sleep(Duration::from_secs(8)).await };
    let summary = runtime.run_projection(handler, stop).await.unwrap();
    assert!(summary.retried > 5, "the failing store was retried: {summary:?}");
    assert_eq!(summary.committed_transactions, 0);
}

/// Sum of `sm_runtime_rebalances_total{agent, kind}` in this process.
fn rebalances(agent: &str, kind: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == "sm_runtime_rebalances_total")
        .flat_map(|family| family.get_metric().iter())
        .filter(|metric| {
            let labels: Vec<_> = metric.get_label().iter().map(|l| (l.name(), l.value())).collect();
            labels.contains(&("agent", agent)) && labels.contains(&("kind", kind))
        })
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

/// Fast commits and retries against the mock cluster; no statistics unless a test asks.
fn mock_config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        group_id: "g".into(),
        commit_interval_ms: 20,
        retry_initial_backoff_ms: 5,
        retry_max_backoff_ms: 20,
        statistics_interval_ms: 0,
        session_timeout_ms: 6_000,
        ..Default::default()
    }
}

/// The broker-restart loss (issue #10): the group coordinator asks the member to rejoin
/// while it is idle between transactions; it is revoked and assigned the same partition inside
/// one `recv`. Records fetched for the new assignment used to be dropped as "fetched before
/// the revocation" while the fetch position had moved past them: up to a whole drain lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_fetched_after_a_rejoin_are_handled_not_dropped() {
    let (cluster, codec) = cluster_with_input(100);
    let bootstrap = cluster.bootstrap_servers();
    let agent = "mock-rejoin";
    let runtime = Runtime::new(mock_config(&bootstrap), agent, &["in"], DEAD_LETTERS).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(Scripted { transient_failures: HashMap::new() }, async {
        let _ = stopped.await;
    }));
    let reader = bootstrap.clone();
    let first = tokio::task::spawn_blocking(move || {
        read_uncommitted(&reader, OUTPUT, 90, Duration::from_millis(300), Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert_eq!(first.len(), 90);
    // Idle, caught up: make the coordinator demand a rejoin on the next heartbeats.
    let assigned_before = rebalances(agent, "assigned");
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        ],
    );
    let started = std::time::Instant::now();
    while rebalances(agent, "assigned") == assigned_before {
        assert!(started.elapsed() < Duration::from_secs(30), "the member never rejoined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rebalances(agent, "revoked") >= 1, "a rejoin revokes first");
    // The next records arrive after the revoke-and-assign.
    let more: Vec<Record> = records(&codec, 1_100).into_iter().skip(100).collect();
    produce(&bootstrap, "in", more);
    // The mock shows aborted records too: wait for distinct sequences, not for a count.
    let reader = bootstrap.clone();
    let decoder = codec.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            let outputs = read_uncommitted(&reader, OUTPUT, 990, Duration::from_millis(500), Duration::from_secs(30));
            let mut seen: Vec<i64> = outputs
                .iter()
                .map(|r| decoder.decode::<SensorReading>(&r.value, None).unwrap().payload.sequence)
                .collect();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() >= 990 || started.elapsed() > Duration::from_secs(30) {
                return seen;
            }
        }
    })
    .await
    .unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let expected: Vec<i64> = (0..1_100).filter(|s| s % 10 != 0).collect();
    let missing: Vec<i64> = expected.iter().filter(|s| seen.binary_search(s).is_err()).copied().collect();
    assert!(missing.is_empty(), "{} records lost after the rejoin, first {:?}", missing.len(), missing.first());
}

/// Forwards readings with a padded sensor id when asked to, making an output larger than any
/// record the producer may send.
struct Inflating {
    pad: usize,
}

impl Handler for Inflating {
    type Input = SensorReading;

    async fn handle(&mut self, input: &Envelope<SensorReading>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        let mut reading = input.payload.clone();
        if reading.sequence == 3 {
            reading.sensor_id = format!("{}{}", reading.sensor_id, "x".repeat(self.pad)).into();
        }
        Ok(Outputs::one(OUTPUT, reading))
    }
}

/// A record that cannot be carried, plain or gzip-compressed, and an output larger than the
/// producer's limit: each ends in one dead letter (capped, with size and hash) and every
/// record behind it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_records_are_dead_lettered_truncated_and_the_partition_moves_on() {
    use sha2::Digest;
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["in", OUTPUT, DEAD_LETTERS] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let codec = Codec::embedded().unwrap();
    let mut input = records(&codec, 6);
    // Offset 1: 300 kB of JSON that is no reading; offset 2: 3 MB of it, sent compressed.
    let plain = format!("{{\"junk\": \"{}\"}}", "a".repeat(300_000)).into_bytes();
    let compressed = format!("{{\"junk\": \"{}\"}}", "b".repeat(3_000_000)).into_bytes();
    let json = vec![("content-type".to_owned(), "application/json".to_owned())];
    input[1] = Record { key: b"pump-1".to_vec(), value: plain.clone(), headers: json.clone() };
    produce(&bootstrap, "in", input[..2].to_vec());
    let gzip: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("compression.type", "gzip")
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header { key: "content-type", value: Some("application/json") });
    gzip.send(rdkafka::producer::BaseRecord::to("in").key("pump-1").payload(&compressed).headers(headers)).unwrap();
    rdkafka::producer::Producer::flush(&gzip, Duration::from_secs(10)).unwrap();
    produce(&bootstrap, "in", input[3..].to_vec());

    // The agent's producer may send at most 200 kB per record.
    let mut config = mock_config(&bootstrap);
    config.librdkafka.insert("message.max.bytes".into(), "200000".into());
    let runtime = Runtime::new(config, "mock-oversized", &["in"], DEAD_LETTERS).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run(Inflating { pad: 250_000 }, async {
        let _ = stopped.await;
    }));
    let reader = bootstrap.clone();
    let (outputs, dead) = tokio::task::spawn_blocking(move || {
        let outputs = read_uncommitted(&reader, OUTPUT, 3, Duration::from_millis(300), Duration::from_secs(60));
        let dead = read_uncommitted(&reader, DEAD_LETTERS, 3, Duration::from_millis(300), Duration::from_secs(30));
        (outputs, dead)
    })
    .await
    .unwrap();
    let _ = stop.send(());
    let summary = task.await.unwrap().unwrap();

    let mut passed: Vec<i64> =
        outputs.iter().map(|r| codec.decode::<SensorReading>(&r.value, None).unwrap().payload.sequence).collect();
    passed.sort_unstable();
    passed.dedup();
    assert_eq!(passed, vec![0, 4, 5], "the records behind the oversized ones pass");
    let mut letters: Vec<RejectedReading> =
        dead.iter().map(|r| codec.decode::<RejectedReading>(&r.value, None).unwrap().payload).collect();
    letters.sort_by_key(|l| l.source_offset);
    letters.dedup_by_key(|l| l.source_offset);
    let offsets: Vec<i64> = letters.iter().map(|l| l.source_offset).collect();
    assert_eq!(offsets, vec![1, 2, 3], "{letters:?}");
    for (letter, whole) in letters[..2].iter().zip([&plain, &compressed]) {
        assert_eq!(letter.original_size, whole.len() as i64);
        assert!(letter.is_truncated() && letter.original.len() <= 64 * 1024, "{} bytes kept", letter.original.len());
        assert_eq!(&whole[..letter.original.len()], &letter.original[..], "a prefix of the original");
        assert_eq!(letter.original_sha256, format!("{:x}", sha2::Sha256::digest(whole)));
    }
    assert_eq!(letters[2].reason_code, sm_kafka::OUTPUT_TOO_LARGE);
    assert!(letters[2].detail.contains("more than the"), "{}", letters[2].detail);
    assert!(!letters[2].is_truncated(), "the input itself was small");
    assert_eq!(summary.aborted_transactions, 0, "no transaction was retried: {summary:?}");
}

/// Hangs for good on one record: a wedged partition.
struct Wedged;

impl Handler for Wedged {
    type Input = SensorReading;

    async fn handle(&mut self, input: &Envelope<SensorReading>, _: &Source<'_>) -> Result<Outputs, HandleError> {
        if input.payload.sequence == 25 {
            std::future::pending::<()>().await;
        }
        Ok(Outputs::one(OUTPUT, input.payload.clone()))
    }
}

/// Runs `handler` on `in` until aborted, reporting readiness on the returned `Health`.
fn run_watched<H: Handler>(
    config: KafkaConfig,
    agent: &'static str,
    handler: H,
) -> (sm_telemetry::Health, tokio::task::JoinHandle<Result<RunSummary, sm_kafka::RuntimeError>>) {
    let health = sm_telemetry::Health::new();
    let runtime = Runtime::new(config, agent, &["in"], DEAD_LETTERS).unwrap().with_health(health.clone());
    (health, tokio::spawn(runtime.run(handler, std::future::pending())))
}

/// Readiness means progress: a partition stuck inside one record fails `/readyz` after the
/// stall timeout, naming it, though no error was ever raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_partition_makes_the_agent_unready() {
    let (cluster, _) = cluster_with_input(60);
    let mut config = mock_config(&cluster.bootstrap_servers());
    config.stall_timeout_ms = 1_000;
    config.statistics_interval_ms = 200;
    let (health, task) = run_watched(config, "mock-wedged", Wedged);
    let started = std::time::Instant::now();
    let report = loop {
        let report = health.report();
        if report.contains("has not advanced") {
            break report;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    task.abort();
    assert!(!health.is_ready());
    assert!(report.contains("mock-wedged: unavailable: in/0 has not advanced for"), "{report}");
    assert!(report.contains("records waiting"), "{report}");
}

/// Readiness names a record being retried after transient errors, and comes back after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_record_makes_the_agent_unready_until_it_passes() {
    let (cluster, _) = cluster_with_input(20);
    let mut config = mock_config(&cluster.bootstrap_servers());
    config.retry_initial_backoff_ms = 500;
    config.retry_max_backoff_ms = 500;
    let (health, task) = run_watched(config, "mock-retrying", Scripted { transient_failures: HashMap::from([(7, 6)]) });
    let started = std::time::Instant::now();
    while !health.report().contains("retrying in/0@7") {
        assert!(started.elapsed() < Duration::from_secs(20), "{}", health.report());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health.report().contains("database unavailable"), "{}", health.report());
    while !health.is_ready() {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", health.report());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
}
