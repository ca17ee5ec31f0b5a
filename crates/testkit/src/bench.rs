//! Pieces the throughput benchmarks share: the raw librdkafka baseline every agent is
//! measured against, and a watch on a group's committed offsets (how an exactly-once run
//! shows it is done: outputs commit in the same transactions as those offsets).

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Consumes `total` records of `input` and produces their bytes unchanged to `output`, with
/// no decoding and no transactions: the ceiling for one instance. Returns seconds from the
/// first record received to the last one acknowledged.
pub async fn raw_copy_loop(bootstrap: &str, input: &str, output: &str, total: usize) -> f64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", crate::unique("bench-raw"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[input]).expect("subscribe");
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut started = None;
    for _ in 0..total {
        let message = consumer.recv().await.expect("recv");
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
    producer.flush(Duration::from_secs(60)).expect("flush");
    started.expect("at least one record").elapsed().as_secs_f64()
}

/// Waits until `group` has committed offsets covering `total` records of `topic`; returns
/// seconds since `started`. Panics after `limit`.
pub async fn wait_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    total: usize,
    started: Instant,
    limit: Duration,
) -> f64 {
    let watcher: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().expect("watcher");
    let metadata = watcher.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        partitions.add_partition(topic, partition.id());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A slow broker answer is not a failure of the run under test: ask again.
        let Ok(committed) = watcher.committed_offsets(partitions.clone(), Duration::from_secs(5)) else { continue };
        let done: i64 =
            committed.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum();
        if done as usize >= total {
            return started.elapsed().as_secs_f64();
        }
        assert!(started.elapsed() < limit, "run stalled at {done} of {total}");
    }
}

/// The machine, for benchmark reports: cores and CPU model.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{} cores, {cpu}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0))
}

/// Peak resident memory of this process (MiB).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .unwrap_or(0.0)
        / 1024.0
}
