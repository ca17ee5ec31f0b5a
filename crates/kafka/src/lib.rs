//! The Kafka runtime: the one consume → handle → produce loop every agent runs on.
//!
//! Guarantee: **exactly-once** from input topics to output topics. Outputs of a batch and the
//! batch's input offsets (last processed + 1) are committed in one Kafka transaction
//! (`send_offsets_to_transaction` with the consumer's group metadata, KIP-447), and inputs are
//! read with `isolation.level=read_committed`. Any failure before the commit aborts the
//! transaction and rewinds the consumer to the committed offsets, so the batch is redone and
//! its first attempt is never visible downstream.
//!
//! Layout:
//! - [`config`]: [`KafkaConfig`], from `SM_KAFKA__*`, and the librdkafka settings it implies;
//! - [`handler`]: [`Handler`], the seam between an agent and the runtime;
//! - [`runtime`]: [`Runtime`], the loop itself (batches, transactions, retries, dead letters,
//!   rebalances, shutdown);
//! - [`state`]: [`StateStore`], keyed agent state checkpointed to a changelog topic;
//! - [`produce`]: queueing records with backpressure;
//! - [`changelog`]: loading a (compacted) topic from start to end before handling inputs;
//! - [`admin`]: topic creation (the platform never relies on broker auto-creation);
//! - [`trace`]: W3C `traceparent` through Kafka headers;
//! - [`metrics`]: what the runtime counts, with one name for every agent;
//! - [`progress`]: lag and readiness from what the runtime committed (the watchdog's input).

pub mod admin;
pub mod changelog;
pub mod config;
pub mod handler;
pub mod metrics;
pub mod produce;
pub mod progress;
pub mod runtime;
pub mod state;
pub mod trace;

pub use admin::ensure_topics;
pub use config::KafkaConfig;
pub use handler::{BoxError, ExternalCheckpoint, HandleError, Handler, Outputs, PartitionOffset, Rejection, Source};
pub use produce::{AnnounceError, Announcer};
pub use runtime::{OUTPUT_TOO_LARGE, RunSummary, Runtime, RuntimeError};
pub use state::StateStore;

/// librdkafka's log line as a tracing event of the same level, under target `librdkafka`:
/// what every client context of ours does after looking at the line.
pub(crate) fn forward_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}"),
        Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
        Notice | Info => tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}"),
        Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
    }
}

/// An error or worse: what our contexts keep as the cause of a failure.
pub(crate) fn is_error(level: rdkafka::config::RDKafkaLogLevel) -> bool {
    use rdkafka::config::RDKafkaLogLevel::*;
    matches!(level, Emerg | Alert | Critical | Error)
}
