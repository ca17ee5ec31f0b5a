//! Kafka settings shared by every agent (`SM_KAFKA__*`), and the one place that turns them
//! into librdkafka configuration. The exactly-once settings are not configurable: the
//! runtime sets them and [`KafkaConfig::validate`] refuses overrides that would break them.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use sm_telemetry::Secret;
use std::collections::BTreeMap;

/// Connection, security and batching settings of an agent's Kafka clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port]` of the brokers.
    pub bootstrap_servers: String,
    /// Consumer group; empty means `sm-<agent>`.
    pub group_id: String,
    /// Stable per instance (e.g. the pod ordinal). `transactional.id` is
    /// `sm-<agent>-<instance_id>`, so a restarted instance fences its zombie predecessor.
    pub instance_id: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` (with a `sasl_*` protocol).
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: Secret,
    /// CA bundle to verify the brokers (PEM path).
    pub ssl_ca_location: String,
    /// Client certificate and key for mutual TLS (PEM paths).
    pub ssl_certificate_location: String,
    pub ssl_key_location: String,
    pub ssl_key_password: Secret,
    /// A transaction is committed at least this often (ms). Lower: less end-to-end latency;
    /// higher: more throughput.
    pub commit_interval_ms: u64,
    /// A transaction holds at most this many input records.
    pub max_batch_records: usize,
    /// Broker aborts a transaction left open longer than this (ms).
    pub transaction_timeout_ms: u64,
    /// First and largest wait between retries of a transient handler error (ms).
    pub retry_initial_backoff_ms: u64,
    pub retry_max_backoff_ms: u64,
    /// A member that stops heartbeating loses its partitions after this long (ms).
    pub session_timeout_ms: u64,
    /// Prefetched input kept in the consumer's queue, at most (KiB): bounds consumer memory.
    pub fetch_queue_max_kbytes: u64,
    /// Produced records waiting for the broker, at most (KiB): bounds producer memory.
    pub produce_queue_max_kbytes: u64,
    /// How often librdkafka reports statistics (end offsets for the lag metric, broker
    /// reachability for `/readyz`), ms; 0 disables both.
    pub statistics_interval_ms: u64,
    /// A partition with records waiting whose committed offset has not moved for this long
    /// (ms) makes `/readyz` fail, naming it.
    pub stall_timeout_ms: u64,
    /// Partitions and replication factor of topics the platform creates.
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    /// `retention.ms` of topics the platform creates. -1 (default) keeps events forever:
    /// Kafka is the system of record and projections are rebuilt by replay.
    pub topic_retention_ms: i64,
    /// Extra librdkafka properties (`compression.type = "lz4"`, ...). Exactly-once
    /// settings cannot be overridden here.
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:19092".to_owned(),
            group_id: String::new(),
            instance_id: "0".to_owned(),
            security_protocol: "plaintext".to_owned(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: Secret::default(),
            ssl_ca_location: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            ssl_key_password: Secret::default(),
            commit_interval_ms: 100,
            max_batch_records: 10_000,
            transaction_timeout_ms: 60_000,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 30_000,
            session_timeout_ms: 10_000,
            fetch_queue_max_kbytes: 16 * 1024,
            produce_queue_max_kbytes: 32 * 1024,
            statistics_interval_ms: 5_000,
            stall_timeout_ms: 30_000,
            topic_partitions: 6,
            topic_replication_factor: 1,
            topic_retention_ms: -1,
            librdkafka: BTreeMap::new(),
        }
    }
}

/// Settings the runtime owns; overriding them would break exactly-once.
const GUARANTEE_KEYS: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "transactional.id",
    "enable.idempotence",
    "group.id",
];

impl KafkaConfig {
    /// Checks the settings before any connection; the error names the setting to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err("SM_KAFKA__BOOTSTRAP_SERVERS is empty: set it to host:port of a broker".into());
        }
        let protocol = self.security_protocol.to_ascii_lowercase();
        if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()) {
            return Err(format!(
                "SM_KAFKA__SECURITY_PROTOCOL={:?}: use plaintext, ssl, sasl_plaintext or sasl_ssl",
                self.security_protocol
            ));
        }
        if protocol.starts_with("sasl") && (self.sasl_mechanism.is_empty() || self.sasl_username.is_empty()) {
            return Err(
                "SASL needs SM_KAFKA__SASL_MECHANISM and SM_KAFKA__SASL_USERNAME (and SM_KAFKA__SASL_PASSWORD)".into(),
            );
        }
        if self.commit_interval_ms == 0 || self.max_batch_records == 0 {
            return Err("SM_KAFKA__COMMIT_INTERVAL_MS and SM_KAFKA__MAX_BATCH_RECORDS must be positive".into());
        }
        if self.commit_interval_ms >= self.transaction_timeout_ms {
            return Err("SM_KAFKA__COMMIT_INTERVAL_MS must be well below SM_KAFKA__TRANSACTION_TIMEOUT_MS".into());
        }
        if self.retry_initial_backoff_ms == 0 || self.retry_initial_backoff_ms > self.retry_max_backoff_ms {
            return Err("need 0 < SM_KAFKA__RETRY_INITIAL_BACKOFF_MS <= SM_KAFKA__RETRY_MAX_BACKOFF_MS".into());
        }
        if self.stall_timeout_ms == 0 {
            return Err("SM_KAFKA__STALL_TIMEOUT_MS must be positive".into());
        }
        if self.message_max_bytes().is_none() {
            return Err("SM_KAFKA__LIBRDKAFKA sets `message.max.bytes` to something that is not a size in bytes".into());
        }
        if self.topic_partitions < 1 || self.topic_replication_factor < 1 {
            return Err("SM_KAFKA__TOPIC_PARTITIONS and SM_KAFKA__TOPIC_REPLICATION_FACTOR must be at least 1".into());
        }
        if let Some(key) = self.librdkafka.keys().find(|k| GUARANTEE_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "SM_KAFKA__LIBRDKAFKA sets `{key}`, which the runtime owns for exactly-once: delete it"
            ));
        }
        Ok(())
    }

    /// The producer's `message.max.bytes` (librdkafka's default unless overridden).
    pub fn message_max_bytes(&self) -> Option<usize> {
        match self.librdkafka.get("message.max.bytes") {
            Some(value) => value.trim().parse().ok().filter(|bytes| *bytes >= 1_000),
            None => Some(1_000_000),
        }
    }

    /// The consumer group of `agent`.
    pub fn group_for(&self, agent: &str) -> String {
        if self.group_id.is_empty() { format!("sm-{agent}") } else { self.group_id.clone() }
    }

    /// `transactional.id` of this instance of `agent`.
    pub fn transactional_id_for(&self, agent: &str) -> String {
        format!("sm-{agent}-{}", self.instance_id)
    }

    /// Connection and security settings common to every client.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set("security.protocol", self.security_protocol.to_ascii_lowercase());
        let optional = [
            ("sasl.mechanisms", self.sasl_mechanism.as_str()),
            ("sasl.username", self.sasl_username.as_str()),
            ("sasl.password", self.sasl_password.expose()),
            ("ssl.ca.location", self.ssl_ca_location.as_str()),
            ("ssl.certificate.location", self.ssl_certificate_location.as_str()),
            ("ssl.key.location", self.ssl_key_location.as_str()),
            ("ssl.key.password", self.ssl_key_password.expose()),
        ];
        for (key, value) in optional {
            if !value.is_empty() {
                config.set(key, value);
            }
        }
        for (key, value) in &self.librdkafka {
            config.set(key, value);
        }
        config
    }

    /// A `read_committed` consumer that never commits by itself: offsets only move inside
    /// transactions (or with projection rows, for PostgreSQL writers).
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (self.session_timeout_ms / 4).max(500).to_string())
            .set("queued.max.messages.kbytes", self.fetch_queue_max_kbytes.to_string())
            .set("enable.partition.eof", "false");
        // Statistics feed the consumer-lag metric; only the runtime's consumer context reads them.
        if self.statistics_interval_ms > 0 {
            config.set("statistics.interval.ms", self.statistics_interval_ms.to_string());
        }
        config
    }

    /// An idempotent producer without transactions (dead letters of projections).
    pub fn idempotent_producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("queue.buffering.max.kbytes", self.produce_queue_max_kbytes.to_string())
            .set("linger.ms", "5");
        config
    }

    /// A transactional, idempotent producer.
    pub fn producer_config(&self, transactional_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("transaction.timeout.ms", self.transaction_timeout_ms.to_string())
            .set("queue.buffering.max.kbytes", self.produce_queue_max_kbytes.to_string())
            .set("linger.ms", "5");
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        KafkaConfig::default().validate().unwrap();
    }

    #[test]
    fn refuses_to_override_exactly_once_settings() {
        let mut config = KafkaConfig::default();
        config.librdkafka.insert("isolation.level".into(), "read_uncommitted".into());
        let error = config.validate().unwrap_err();
        assert!(error.contains("isolation.level"), "{error}");
    }

    #[test]
    fn sasl_needs_credentials() {
        let config = KafkaConfig { security_protocol: "SASL_SSL".into(), ..Default::default() };
        assert!(config.validate().unwrap_err().contains("SASL_MECHANISM"));
        let config = KafkaConfig {
            security_protocol: "SASL_SSL".into(),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: "sm".into(),
            sasl_password: Secret("pw".into()),
            ..Default::default()
        };
        config.validate().unwrap();
        let client = config.client_config();
        assert_eq!(client.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
    }

    #[test]
    fn consumers_read_committed_and_never_auto_commit() {
        let consumer = KafkaConfig::default().consumer_config("g");
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
    }
}
