//! What the runtime measures. One name for every agent, with an `agent` label, so a
//! dashboard can sum or compare agents. Each method logs and counts together.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};
use std::sync::{Arc, Mutex, OnceLock};

struct Families {
    consumed: IntCounterVec,
    produced: IntCounterVec,
    rejected: IntCounterVec,
    retried: IntCounterVec,
    transactions: IntCounterVec,
    rebalances: IntCounterVec,
    handle_seconds: HistogramVec,
    lag: IntGaugeVec,
    stalled: IntGaugeVec,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(prometheus::Opts::new(name, help), labels).expect("valid metric");
            let _ = prometheus::register(Box::new(vec.clone()));
            vec
        };
        let handle_seconds = HistogramVec::new(
            prometheus::HistogramOpts::new(
                "sm_runtime_handle_duration_seconds",
                "Time from receiving a record to having its outputs queued",
            )
            .buckets(prometheus::exponential_buckets(0.000_01, 3.0, 12).expect("valid buckets")),
            &["agent"],
        )
        .expect("valid metric");
        let _ = prometheus::register(Box::new(handle_seconds.clone()));
        let gauge = |name: &str, help: &str| {
            let vec = IntGaugeVec::new(prometheus::Opts::new(name, help), &["agent", "topic", "partition"])
                .expect("valid metric");
            let _ = prometheus::register(Box::new(vec.clone()));
            vec
        };
        let lag = gauge(
            "sm_runtime_consumer_lag_records",
            "Records of the partition not yet committed by the agent (its committed offset to the stable end)",
        );
        let stalled = gauge(
            "sm_runtime_partition_stalled",
            "1 while the partition has records waiting and its committed offset has not moved for stall_timeout_ms",
        );
        Families {
            consumed: counter("sm_runtime_consumed_total", "Records consumed", &["agent", "topic"]),
            produced: counter("sm_runtime_produced_total", "Records produced (committed or not)", &["agent", "topic"]),
            rejected: counter(
                "sm_runtime_rejected_total",
                "Records sent to the dead-letter topic",
                &["agent", "topic", "reason_code"],
            ),
            retried: counter("sm_runtime_retried_total", "Transient handler errors retried", &["agent"]),
            transactions: counter(
                "sm_runtime_transactions_total",
                "Kafka transactions by outcome",
                &["agent", "outcome"],
            ),
            rebalances: counter(
                "sm_runtime_rebalances_total",
                "Partitions assigned or revoked by consumer-group rebalances",
                &["agent", "kind"],
            ),
            handle_seconds,
            lag,
            stalled,
        }
    })
}

/// The runtime's metrics for one agent.
#[derive(Clone)]
pub struct RuntimeMetrics {
    agent: &'static str,
    handle_seconds: prometheus::Histogram,
    /// Per-topic counters resolved once: label lookup hashes and locks, and this is the
    /// per-record path.
    consumed: Arc<Mutex<Vec<(String, IntCounter)>>>,
    produced: Arc<Mutex<Vec<(String, IntCounter)>>>,
}

impl RuntimeMetrics {
    pub fn new(agent: &'static str) -> Self {
        Self {
            agent,
            handle_seconds: families().handle_seconds.with_label_values(&[agent]),
            consumed: Arc::default(),
            produced: Arc::default(),
        }
    }

    fn count(&self, cache: &Mutex<Vec<(String, IntCounter)>>, family: &IntCounterVec, topic: &str) {
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.iter().find(|(t, _)| t == topic) {
            Some((_, counter)) => counter.inc(),
            None => {
                let counter = family.with_label_values(&[self.agent, topic]);
                counter.inc();
                cache.push((topic.to_owned(), counter));
            }
        }
    }

    pub fn consumed(&self, topic: &str) {
        self.count(&self.consumed, &families().consumed, topic);
    }

    pub fn produced(&self, topic: &str) {
        self.count(&self.produced, &families().produced, topic);
    }

    pub fn handled(&self, seconds: f64) {
        self.handle_seconds.observe(seconds);
    }

    /// A record went to the dead-letter topic: one log line and one count.
    pub fn rejected(&self, topic: &str, partition: i32, offset: i64, reason_code: &str, detail: &str) {
        tracing::warn!(topic, partition, offset, reason_code, error = detail, "record dead-lettered");
        families().rejected.with_label_values(&[self.agent, topic, reason_code]).inc();
    }

    /// A transient handler error; the record will be tried again.
    pub fn retried(&self, error: &dyn std::error::Error, backoff_ms: u64) {
        tracing::warn!(error = %error, backoff_ms, "transient error, retrying record");
        families().retried.with_label_values(&[self.agent]).inc();
    }

    pub fn committed(&self) {
        families().transactions.with_label_values(&[self.agent, "committed"]).inc();
    }

    /// A transaction was aborted; its records will be processed again.
    pub fn aborted(&self, reason: &str) {
        tracing::warn!(reason, "transaction aborted, rewinding to committed offsets");
        families().transactions.with_label_values(&[self.agent, "aborted"]).inc();
    }

    /// A rebalance assigned (`kind = "assigned"`) or revoked (`"revoked"`) `partitions`.
    pub fn rebalanced(&self, kind: &str, partitions: usize) {
        families().rebalances.with_label_values(&[self.agent, kind]).inc_by(partitions as u64);
    }

    /// A partition left this instance: its lag is another instance's to report now.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let labels = [self.agent, topic, &partition.to_string()];
        let _ = families().lag.remove_label_values(&labels);
        let _ = families().stalled.remove_label_values(&labels);
    }

    pub fn lag(&self, topic: &str, partition: i32, records: i64, stalled: bool) {
        let labels = [self.agent, topic, &partition.to_string()];
        families().lag.with_label_values(&labels).set(records);
        families().stalled.with_label_values(&labels).set(i64::from(stalled));
    }
}
