//! The tests in this package exercise the platform across services (the readings path and
//! the analytics agents end to end, with the binaries as processes) and check the deployment
//! descriptions (`docker-compose.yml`, `k8s/`, `Dockerfile`) against the configuration types.
//! This library holds what the end-to-end tests share: reading a topic from where a run began.

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sm_testkit::unique;
use std::time::{Duration, Instant};

/// The end offset of every partition of `topic`: where a run's records will start. A topic
/// created a moment ago may have no leader yet (a fresh broker elects them): asked again
/// for up to 30 s.
pub fn end_offsets(bootstrap: &str, topic: &str) -> Vec<(i32, i64)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let started = Instant::now();
    loop {
        let attempt = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).and_then(|metadata| {
            metadata.topics()[0]
                .partitions()
                .iter()
                .map(|p| Ok((p.id(), consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?.1)))
                .collect::<Result<Vec<_>, rdkafka::error::KafkaError>>()
        });
        match attempt {
            Ok(ends) if !ends.is_empty() => return ends,
            Ok(_) if started.elapsed() < Duration::from_secs(30) => {}
            Err(_) if started.elapsed() < Duration::from_secs(30) => {}
            Ok(_) => panic!("{topic} has no partitions"),
            Err(error) => panic!("end offsets of {topic}: {error}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Committed records of `topic` after `from` that `keep` decodes, until `expected` of them
/// arrived and `quiet` passed without more (or 240 s).
pub fn read_after<T>(
    bootstrap: &str,
    topic: &str,
    from: &[(i32, i64)],
    expected: usize,
    quiet: Duration,
    mut keep: impl FnMut(&[u8]) -> Option<T>,
) -> Vec<T> {
    read_records_after(bootstrap, topic, from, expected, quiet, |message| keep(message.payload().unwrap_or_default()))
}

/// As [`read_after`], with the whole record (key, partition, offset) for `keep` to look at.
pub fn read_records_after<T>(
    bootstrap: &str,
    topic: &str,
    from: &[(i32, i64)],
    expected: usize,
    quiet: Duration,
    mut keep: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Option<T>,
) -> Vec<T> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("e2e-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for (partition, offset) in from {
        assignment.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset)).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let (started, mut last) = (Instant::now(), Instant::now());
    let mut kept = Vec::new();
    while started.elapsed() < Duration::from_secs(240) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if let Some(value) = keep(&message) {
                    kept.push(value);
                    last = Instant::now();
                }
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None if kept.len() >= expected && last.elapsed() > quiet => break,
            None => {}
        }
    }
    kept
}

/// What identifies one anomaly finding regardless of its event id: which detector, about
/// what (sensor or scope), triggered by which reading, on which asset.
pub type Finding = (String, String, String, String);

/// The anomalies one uninterrupted pass of the anomaly agent's own code finds in `readings`.
pub fn replayed_anomalies(
    readings: &[sm_domain::Envelope<sm_domain::ValidatedReading>],
    settings: sm_anomaly::AnomalySettings,
) -> std::collections::BTreeMap<Finding, usize> {
    let mut expected = std::collections::BTreeMap::new();
    let mut replay = sm_anomaly::AnomalyAgent::new(settings);
    for reading in readings {
        let trigger = reading.header.event_id.to_string();
        for a in replay.detect(reading, 0) {
            let about = a.sensor_id.as_ref().map(|s| s.as_str().to_owned()).unwrap_or_else(|| a.scope.clone());
            *expected.entry((a.detector, about, trigger.clone(), reading.header.asset_id.0.clone())).or_default() += 1;
        }
    }
    expected
}

/// The anomalies of `tenant` committed to `sm.anomalies.v1` after `from`, counted.
pub fn committed_anomalies(
    bootstrap: &str,
    from: &[(i32, i64)],
    tenant: &str,
    expected: usize,
) -> std::collections::BTreeMap<Finding, usize> {
    use sm_domain::Decode;
    let codec = sm_domain::Codec::embedded().unwrap();
    let found = read_after(bootstrap, sm_domain::topics::ANOMALIES, from, expected, Duration::from_secs(5), |b| {
        let event = sm_domain::AlertEvent::decode(&codec, b, None).ok()?;
        let sm_domain::AlertEvent::Anomaly(a) = event.payload else { return None };
        (event.header.tenant_id.as_str() == tenant).then(|| {
            let about = a.sensor_id.as_ref().map(|s| s.as_str().to_owned()).unwrap_or_else(|| a.scope.clone());
            (a.detector, about, a.triggered_by[0].clone(), event.header.asset_id.0)
        })
    });
    let mut counted = std::collections::BTreeMap::new();
    for finding in found {
        *counted.entry(finding).or_default() += 1;
    }
    counted
}

/// Waits until PostgreSQL holds at least `expected` readings of `tenant` and the count has
/// not moved for 3 s (or `within` passed), and returns the count: the caller asserts on it.
pub async fn projected_readings(postgres_url: &str, tenant: &str, expected: i64, within: Duration) -> i64 {
    let (client, connection) = tokio_postgres::connect(postgres_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + within;
    let mut last = (-1i64, Instant::now());
    loop {
        let n: i64 =
            client.query_one("SELECT count(*) FROM readings WHERE tenant_id = $1", &[&tenant]).await.unwrap().get(0);
        if n != last.0 {
            last = (n, Instant::now());
        }
        if n >= expected && last.1.elapsed() > Duration::from_secs(3) {
            return n;
        }
        assert!(Instant::now() < deadline, "only {n} of {expected} readings of {tenant} projected");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The validated readings of `tenant` committed after `from`, in partition order: what the
/// downstream agents consumed.
pub fn validated_readings_of(
    bootstrap: &str,
    from: &[(i32, i64)],
    tenant: &str,
    expected: usize,
    quiet: Duration,
) -> Vec<sm_domain::Envelope<sm_domain::ValidatedReading>> {
    let codec = sm_domain::Codec::embedded().unwrap();
    read_after(bootstrap, sm_domain::topics::READINGS_VALIDATED, from, expected, quiet, |b| {
        let event = codec.decode::<sm_domain::ValidatedReading>(b, None).ok()?;
        (event.header.tenant_id.as_str() == tenant).then_some(event)
    })
}
