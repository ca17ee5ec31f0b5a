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
    let config = KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        group_id: "g".into(),
        commit_interval_ms: 20,
        retry_initial_backoff_ms: 5,
        retry_max_backoff_ms: 20,
        statistics_interval_ms: 0,
        ..Default::default()
    };
    let runtime = Runtime::new(config, "mock-test", &[input], DEAD_LETTERS).unwrap();
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
    let config = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        group_id: "g".into(),
        commit_interval_ms: 20,
        retry_initial_backoff_ms: 5,
        retry_max_backoff_ms: 20,
        statistics_interval_ms: 0,
        ..Default::default()
    };
    let runtime = Runtime::new(config, "mock-test", &["in"], DEAD_LETTERS).unwrap();
    let handler = StoreDown { inner: Scripted { transient_failures: HashMap::new() }, attempts: 0 };
    // An `async` block panics if polled again after completing: the loop must remember it fired.
    let stop = async { tokio::time::sleep(Duration::from_secs(8)).await };
    let summary = runtime.run_projection(handler, stop).await.unwrap();
    assert!(summary.retried > 5, "the failing store was retried: {summary:?}");
    assert_eq!(summary.committed_transactions, 0);
}
