//! Test fixtures for tests that run against the real local stack (`deploy/local/stack up`).
//!
//! [`stack_from_env_file`] reads the addresses `up` wrote; a missing file is a panic, never a
//! skip, so a test can not pass by not running. Every test gets its own topics, group and
//! `transactional.id` from [`unique`], so tests never see each other's records.

pub mod bench;
pub mod postgres;
pub mod process;
pub mod proxy;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where the env file is when `SM_STACK_ENV` is not set.
pub fn default_stack_env() -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    format!("{home}/.cache/sm-stack/stack.env")
}

/// The running local stack, as `deploy/local/stack up` described it.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kafka: String,
    /// As the tables' owner: migrations, projectors, test fixtures.
    pub postgres_url: String,
    /// As the query service logs in (`sm_query`): a member of the reader role that owns
    /// nothing, so row-level security applies to every statement.
    pub query_postgres_url: String,
    pub redis_url: String,
    /// Every variable of the env file, to pass on to service processes.
    pub vars: HashMap<String, String>,
}

/// Reads the stack's env file. Panics (never skips) when it is missing.
pub fn stack_from_env_file() -> Stack {
    let path = std::env::var("SM_STACK_ENV").unwrap_or_else(|_| default_stack_env());
    let vars: HashMap<String, String> =
        dotenvy::from_path_iter(&path).and_then(|lines| lines.collect()).unwrap_or_else(|e| {
            panic!("stack env {path}: {e}; start the stack with `deploy/local/stack up` (make test does)")
        });
    let get = |key: &str| vars.get(key).cloned().unwrap_or_else(|| panic!("{key} not in {path}"));
    Stack {
        kafka: get("SM_KAFKA__BOOTSTRAP_SERVERS"),
        postgres_url: get("SM_POSTGRES__URL"),
        query_postgres_url: get("SM_QUERY_POSTGRES_URL"),
        redis_url: get("SM_REDIS__URL"),
        vars,
    }
}

impl Stack {
    /// The local stack's admin key of every tenant (`SM_API_KEY`, also the query service's
    /// `SM_AUTH__BOOTSTRAP_KEY`).
    pub fn api_key(&self) -> String {
        self.vars.get("SM_API_KEY").cloned().unwrap_or_else(|| {
            panic!("SM_API_KEY is not in the stack env file: restart the stack with `deploy/local/stack up`")
        })
    }

    /// The settings that make a service connect to the secured listener as `principal` of
    /// `deploy/kafka/access`: SASL_SSL, SCRAM-SHA-512, the stack's CA.
    pub fn kafka_as(&self, principal: &str) -> Vec<(&'static str, String)> {
        let get = |key: &str| {
            self.vars.get(key).cloned().unwrap_or_else(|| {
                panic!("{key} is not in the stack env file: restart the stack with `deploy/local/stack up`")
            })
        };
        vec![
            ("SM_KAFKA__BOOTSTRAP_SERVERS", get("SM_KAFKA_SECURE_BOOTSTRAP")),
            ("SM_KAFKA__SECURITY_PROTOCOL", "sasl_ssl".into()),
            ("SM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512".into()),
            ("SM_KAFKA__SASL_USERNAME", principal.into()),
            ("SM_KAFKA__SASL_PASSWORD", get(&format!("SM_KAFKA_SASL_PASSWORD_{}", principal.to_ascii_uppercase()))),
            ("SM_KAFKA__SSL_CA_LOCATION", get("SM_TLS_CA_FILE")),
        ]
    }
}

/// `prefix-<random>`: a name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Creates `topic` with `partitions` partitions (replication 1).
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let results = admin
        .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create topics");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code}"));
    }
}

/// One record to publish.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Publishes `records` (idempotent producer, acks=all) and waits until all are acknowledged.
pub fn produce(bootstrap: &str, topic: &str, records: impl IntoIterator<Item = Record>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for record in records {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
        }
        let mut base = BaseRecord::to(topic).key(&record.key).payload(&record.value).headers(headers);
        loop {
            match producer.send(base) {
                Ok(()) => break,
                Err((_, returned)) => {
                    base = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// A consumed record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Reads every partition of `topic` from the beginning with `isolation.level=read_committed`
/// until `expected` records arrived and nothing more came for `quiet`, or `deadline` passed.
/// Returns what it read; the caller asserts on it.
pub fn read_committed(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    quiet: Duration,
    deadline: Duration,
) -> Vec<Consumed> {
    read_topic(bootstrap, topic, "read_committed", expected, quiet, deadline)
}

/// As [`read_committed`], also returning records of aborted or open transactions.
pub fn read_uncommitted(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    quiet: Duration,
    deadline: Duration,
) -> Vec<Consumed> {
    read_topic(bootstrap, topic, "read_uncommitted", expected, quiet, deadline)
}

fn read_topic(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    expected: usize,
    quiet: Duration,
    deadline: Duration,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let started = Instant::now();
    let mut last = Instant::now();
    let mut records = Vec::new();
    while started.elapsed() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last = Instant::now();
                let headers = message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Consumed {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().unwrap_or_default().to_vec(),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None if records.len() >= expected && last.elapsed() >= quiet => break,
            None => {}
        }
    }
    records
}
