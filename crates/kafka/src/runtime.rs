//! The exactly-once loop. One instance consumes the agent's input topics as a member of its
//! consumer group and runs:
//!
//! ```text
//! recv ─► decode ─► handler ─► produce outputs ┐   (all inside one Kafka transaction)
//!   │        └ undecodable ─► dead-letter topic ┤
//!   │                  rejected ─► dead-letter ─┤
//!   └─ every commit_interval_ms or max_batch_records:
//!        send_offsets_to_transaction(last processed + 1) + commit_transaction
//! ```
//!
//! Failure rules:
//! - an abortable transaction error aborts, then seeks every partition of the batch back to
//!   its committed offset: the batch is redone and the aborted outputs are invisible to
//!   `read_committed` readers;
//! - a fatal producer error (e.g. fenced by a newer instance) replaces the producer, whose
//!   `init_transactions` aborts whatever the old one left open, then rewinds likewise;
//! - a transient handler error first commits the records done so far, then retries the same
//!   record with capped exponential backoff, never skipping it;
//! - a revoked partition aborts a transaction that holds it (KIP-447 fencing would refuse the
//!   commit anyway), so the next owner starts from the committed offset. Records fetched before
//!   the revocation are dropped, and only those: each record is tagged with the rebalance
//!   epoch it was received in, because one drain of the fetch queue can hold records from both
//!   sides of a revoke-and-assign (a broker restart does exactly that);
//! - a record the runtime cannot produce (its outputs exceed the producer's limit) is
//!   dead-lettered with a reason, never retried forever; a dead letter always fits, because it
//!   carries at most a prefix of the original value with its size and SHA-256.
//!
//! A watchdog turns the loop's progress into the lag metric (committed offsets against the
//! partitions' stable end) and into the agent's `/readyz` check, which fails with the reason
//! while a record is being retried, while no broker is reachable, or while a partition with
//! records waiting has not advanced for `stall_timeout_ms`.
//!
//! Memory is bounded by librdkafka's fetch and produce queue limits (see [`KafkaConfig`]) and
//! by processing one record at a time per instance.
//!
//! Projections into PostgreSQL run the same loop with [`Runtime::run_projection`]: only the
//! commit differs. Instead of a Kafka transaction, the handler ([`ExternalCheckpoint`]) writes
//! its buffered rows and the offsets in one database transaction, and newly assigned
//! partitions start from the offsets stored there. Their dead letters are flushed before that
//! commit, so they are at-least-once (a crash between the two repeats a dead letter, never
//! loses one).

use crate::KafkaConfig;
use crate::handler::{BoxError, ExternalCheckpoint, HandleError, Handler, Outputs, PartitionOffset, Source};
use crate::metrics::RuntimeMetrics;
use crate::progress::{EndOffsets, Progress};
use crate::trace::{self, TRACEPARENT, TraceParent};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sm_domain::{AssetId, Codec, Decode, DomainEvent, Envelope, EnvelopeHeader, RejectedReading, TenantId, Timestamp};
use sm_telemetry::Health;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// At most this many already-fetched records are decoded and offered to `Handler::prepare`
/// together.
const PREPARE_MAX: usize = 500;

/// Transactional calls wait at most this long for the broker.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// A dead letter carries at most this much of the original value (and its full size and
/// SHA-256), of its key and of the reason's detail, so that it always fits the producer's
/// `message.max.bytes`.
const DEAD_LETTER_ORIGINAL_MAX: usize = 64 * 1024;
const DEAD_LETTER_KEY_MAX: usize = 1024;
/// Characters kept of a detail, and of an id copied into a dead letter's header.
const DEAD_LETTER_DETAIL_CHARS: usize = 4 * 1024;
const DEAD_LETTER_ID_CHARS: usize = 1024;

/// Room for the envelope's headers and librdkafka's record overhead beside key and value.
const RECORD_OVERHEAD: usize = 1024;

/// Waiting for the brokers (producer re-init, state restore), retries come at least this often.
const BROKER_PROBE_MAX_MS: u64 = 5_000;

/// An idle loop takes in assignments and revocations at least this often.
const IDLE_HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How often the watchdog refreshes the lag metric and the readiness check.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(1);

type TxnProducer = ThreadedProducer<TxnContext>;

/// Errors that stop the runtime. Everything else (bad records, transient handler errors,
/// aborted transactions) is handled inside the loop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid kafka configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka: {0}")]
    Topics(#[from] crate::admin::TopicsError),
    #[error("cannot encode a dead letter: {0}")]
    Codec(#[from] sm_domain::CodecError),
    #[error("cannot restore the agent's state: {0}")]
    State(#[from] crate::changelog::ChangelogError),
    #[error("consumer has no group metadata; is group.id set?")]
    NoGroupMetadata,
    #[error("blocking kafka call panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What one run did, for tests, benchmarks and the shutdown log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub consumed: u64,
    pub produced: u64,
    pub rejected: u64,
    pub retried: u64,
    pub committed_transactions: u64,
    pub aborted_transactions: u64,
}

/// An agent's connection to Kafka: which topics it reads, where its dead letters go.
pub struct Runtime {
    config: KafkaConfig,
    agent: &'static str,
    inputs: Vec<String>,
    dead_letter_topic: String,
    codec: Codec,
    health: Health,
}

impl Runtime {
    /// A runtime for `agent` reading `inputs`; records it cannot decode or its handler rejects
    /// go to `dead_letter_topic`.
    pub fn new(
        config: KafkaConfig,
        agent: &'static str,
        inputs: &[&str],
        dead_letter_topic: &str,
    ) -> Result<Self, RuntimeError> {
        config.validate().map_err(RuntimeError::Config)?;
        if inputs.is_empty() {
            return Err(RuntimeError::Config(format!("agent {agent} has no input topic")));
        }
        Ok(Self {
            config,
            agent,
            inputs: inputs.iter().map(|t| (*t).to_owned()).collect(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            codec: Codec::embedded()?,
            health: Health::new(),
        })
    }

    /// Reports Kafka readiness on `health` (`/readyz`).
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Runs `handler` until `shutdown` completes, then commits the open transaction and
    /// leaves the group. Exactly-once: outputs and offsets commit in one Kafka transaction.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, RuntimeError> {
        self.run_with::<H, KafkaTransactions>(handler, shutdown).await
    }

    /// Runs a projection: the handler's rows and the offsets commit in one external
    /// (PostgreSQL) transaction, and partitions resume from the offsets stored there.
    pub async fn run_projection<H: ExternalCheckpoint>(
        self,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, RuntimeError> {
        self.run_with::<H, External>(handler, shutdown).await
    }

    async fn run_with<H: Handler, C: Committer<H>>(
        self,
        mut handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, RuntimeError> {
        self.health.set("kafka", false);
        self.health.set_unavailable(self.agent, "starting");
        let metrics = RuntimeMetrics::new(self.agent);
        let progress = Arc::new(Mutex::new(Progress::default()));
        let context = RuntimeContext {
            metrics: metrics.clone(),
            progress: progress.clone(),
            epoch: AtomicU64::new(0),
            revoked: Mutex::default(),
            assigned: Mutex::default(),
        };
        let group = self.config.group_for(self.agent);
        let consumer: StreamConsumer<RuntimeContext> =
            self.config.consumer_config(&group).create_with_context(context)?;
        let inputs: Vec<&str> = self.inputs.iter().map(String::as_str).collect();
        consumer.subscribe(&inputs)?;
        let mut worker = Worker::<C> {
            producer: new_producer(&self.config, self.agent, C::IS_TRANSACTIONAL).await?,
            runtime: &self,
            metrics: metrics.clone(),
            summary: RunSummary::default(),
            batch: Batch::default(),
            skip_below: HashMap::new(),
            sought: Vec::new(),
            unproducible: HashMap::new(),
            progress: progress.clone(),
            max_record_bytes: self.config.message_max_bytes().unwrap_or(1_000_000),
            aborts_in_a_row: 0,
            abort_backoff: Backoff::new(&self.config).at_most(ABORT_BACKOFF_MAX_MS),
            committer: std::marker::PhantomData,
        };
        let _watchdog = Watchdog::spawn(
            self.agent,
            progress,
            self.health.clone(),
            metrics.clone(),
            Duration::from_millis(self.config.stall_timeout_ms),
        );
        // Checkpointed state is restored when partitions are assigned (`seek_assigned`), which
        // always happens before the first record is handled.
        self.health.set("kafka", true);
        tracing::info!(agent = self.agent, group, inputs = ?self.inputs, transactional = C::IS_TRANSACTIONAL, "runtime started");
        let mut stop = Stop::new(shutdown);
        let commit_interval = Duration::from_millis(self.config.commit_interval_ms);
        let tick_interval = handler.tick_interval();
        let mut ticks = tokio::time::interval(tick_interval.unwrap_or(Duration::from_secs(3600)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let tick = async {
                match tick_interval {
                    Some(_) => ticks.tick().await,
                    None => std::future::pending().await,
                }
            };
            let received = if worker.batch.open {
                let deadline = tokio::time::Instant::from_std(worker.batch.started + commit_interval);
                tokio::select! {
                    biased;
                    () = stop.requested() => break,
                    () = tokio::time::sleep_until(deadline) => {
                        worker.commit(&consumer, &mut handler, &mut stop).await?;
                        continue;
                    }
                    _ = tick => {
                        worker.tick(&consumer, &mut handler).await?;
                        continue;
                    }
                    received = consumer.recv() => received,
                }
            } else {
                tokio::select! {
                    biased;
                    () = stop.requested() => break,
                    _ = tick => {
                        worker.tick(&consumer, &mut handler).await?;
                        continue;
                    }
                    // Idle: take in rebalances that `recv` served without a record to return,
                    // so an empty partition's position (and lag) is known too.
                    () = tokio::time::sleep(IDLE_HOUSEKEEPING) => {
                        worker.sought.clear();
                        worker.drop_revoked(&consumer, &mut handler).await?;
                        worker.seek_assigned(&consumer, &mut handler).await?;
                        continue;
                    }
                    received = consumer.recv() => received,
                }
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    // librdkafka reconnects by itself; readiness says so until it has.
                    tracing::warn!(error = %error, "consumer error");
                    worker.lock_progress().kafka_error(Some(error.to_string()));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Take whatever else is already fetched (without waiting), so the handler can
            // prepare many records in one round trip (`Handler::prepare`). Each record keeps
            // the rebalance epoch it was received in: rebalance callbacks run inside `recv`.
            let mut messages = vec![(message, consumer.context().epoch())];
            while messages.len() < PREPARE_MAX {
                match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                    Ok(Ok(message)) => messages.push((message, consumer.context().epoch())),
                    _ => break,
                }
            }
            // Records of a partition revoked after they were received, or sought back after
            // this drain, must not be handled (they come again, or belong to another instance
            // now). Records received after a revoke-and-assign are the new assignment's: kept.
            worker.sought.clear();
            worker.drop_revoked(&consumer, &mut handler).await?;
            worker.seek_assigned(&consumer, &mut handler).await?;
            let mut batch = Vec::with_capacity(messages.len());
            {
                let mut progress = worker.lock_progress();
                progress.kafka_error(None);
                for (message, epoch) in messages {
                    if worker.was_sought(&message, epoch) || worker.is_stale(&message) {
                        continue;
                    }
                    progress.received(message.topic(), message.partition(), message.offset());
                    let payload = message.payload().unwrap_or_default();
                    let decoded = H::Input::decode(&self.codec, payload, header(&message, "content-type"));
                    batch.push((message, epoch, decoded));
                }
            }
            let ready: Vec<(&Envelope<H::Input>, Source<'_>)> = batch
                .iter()
                .filter_map(|(m, _, decoded)| {
                    let source =
                        Source { topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key() };
                    decoded.as_ref().ok().map(|input| (input, source))
                })
                .collect();
            if !ready.is_empty() {
                handler.prepare(&ready).await;
            }
            drop(ready);
            let mut stopping = false;
            for (message, epoch, decoded) in batch {
                // A commit below may have taken in a revocation: this partition is gone.
                if worker.was_sought(&message, epoch) {
                    continue;
                }
                match worker.process(&consumer, &mut handler, &message, decoded, &mut stop).await? {
                    Flow::Continue => {}
                    // The consumer was sought back: the rest of this batch comes again.
                    Flow::Rewound => break,
                    Flow::Shutdown => {
                        stopping = true;
                        break;
                    }
                }
                if (worker.batch.records >= self.config.max_batch_records
                    || worker.batch.started.elapsed() >= commit_interval)
                    && !worker.commit(&consumer, &mut handler, &mut stop).await?
                {
                    break; // abandoned and rewound: the rest of this batch comes again
                }
            }
            if stopping {
                break;
            }
        }
        worker.drop_revoked(&consumer, &mut handler).await?;
        worker.commit(&consumer, &mut handler, &mut stop).await?;
        self.health.set("kafka", false);
        let summary = worker.summary;
        tracing::info!(agent = self.agent, ?summary, "runtime stopped");
        Ok(summary)
    }
}

/// The one difference between an agent and a projection: where a batch becomes durable.
trait Committer<H: Handler>: CommitterKind + Send {
    fn commit(handler: &mut H, offsets: &[PartitionOffset]) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn rollback(handler: &mut H);
    /// Stored offsets, or `None` when Kafka's committed offsets are the truth.
    fn stored_offsets(
        handler: &mut H,
        partitions: &[(String, i32)],
    ) -> impl Future<Output = Result<Option<Vec<PartitionOffset>>, BoxError>> + Send;
}

struct KafkaTransactions;

impl<H: Handler> Committer<H> for KafkaTransactions {
    async fn commit(_: &mut H, _: &[PartitionOffset]) -> Result<(), BoxError> {
        Ok(()) // the Kafka transaction itself is the commit
    }
    fn rollback(_: &mut H) {}
    async fn stored_offsets(_: &mut H, _: &[(String, i32)]) -> Result<Option<Vec<PartitionOffset>>, BoxError> {
        Ok(None)
    }
}

struct External;

impl<H: ExternalCheckpoint> Committer<H> for External {
    async fn commit(handler: &mut H, offsets: &[PartitionOffset]) -> Result<(), BoxError> {
        handler.commit(offsets).await
    }
    fn rollback(handler: &mut H) {
        handler.rollback();
    }
    async fn stored_offsets(
        handler: &mut H,
        partitions: &[(String, i32)],
    ) -> Result<Option<Vec<PartitionOffset>>, BoxError> {
        handler.stored_offsets(partitions).await.map(Some)
    }
}

/// The shutdown signal, safe to wait for many times: once it has fired, every later wait
/// returns at once (a completed future must never be polled again).
struct Stop<F> {
    signal: Pin<Box<F>>,
    requested: bool,
}

impl<F: Future<Output = ()>> Stop<F> {
    fn new(signal: F) -> Self {
        Self { signal: Box::pin(signal), requested: false }
    }

    async fn requested(&mut self) {
        if !self.requested {
            self.signal.as_mut().await;
            self.requested = true;
        }
    }
}

/// What the loop does after a record.
enum Flow {
    Continue,
    /// The transaction was aborted and the consumer rewound: the record comes again.
    Rewound,
    Shutdown,
}

/// The open transaction's input positions.
struct Batch {
    open: bool,
    started: Instant,
    records: usize,
    /// Next offset to consume (last processed + 1) per partition. A batch touches a handful
    /// of partitions, so a vector searched by `&str` beats a map keyed by owned strings on
    /// the per-record path.
    next_offsets: Vec<((String, i32), i64)>,
}

impl Default for Batch {
    fn default() -> Self {
        Self { open: false, started: Instant::now(), records: 0, next_offsets: Vec::new() }
    }
}

impl Batch {
    fn done(&mut self, topic: &str, partition: i32, offset: i64) {
        self.records += 1;
        match self.next_offsets.iter_mut().find(|((t, p), _)| *p == partition && t == topic) {
            Some((_, next)) => *next = offset + 1,
            None => self.next_offsets.push(((topic.to_owned(), partition), offset + 1)),
        }
    }

    fn holds(&self, topic: &str, partition: i32) -> bool {
        self.next_offsets.iter().any(|((t, p), _)| *p == partition && t == topic)
    }

    fn partitions(&self) -> Vec<(String, i32)> {
        self.next_offsets.iter().map(|(tp, _)| tp.clone()).collect()
    }

    fn offsets(&self) -> Result<TopicPartitionList, KafkaError> {
        let mut list = TopicPartitionList::with_capacity(self.next_offsets.len());
        for ((topic, partition), next) in &self.next_offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        Ok(list)
    }

    fn partition_offsets(&self) -> Vec<PartitionOffset> {
        self.next_offsets
            .iter()
            .map(|((topic, partition), next)| PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next,
            })
            .collect()
    }

    fn reset(&mut self) {
        *self = Batch::default();
    }
}

struct Worker<'r, C> {
    runtime: &'r Runtime,
    /// Transactional for agents; idempotent only (dead letters) for projections.
    producer: Arc<TxnProducer>,
    metrics: RuntimeMetrics,
    summary: RunSummary,
    batch: Batch,
    /// After a seek, records below these offsets may still arrive from before it: skip them.
    skip_below: HashMap<(String, i32), i64>,
    /// Partitions sought back or revoked since the current batch of records was fetched, with
    /// the epoch from which their records are valid again (`u64::MAX`: none of this batch).
    sought: Vec<((String, i32), u64)>,
    /// Records whose outputs could not be produced: dead-lettered when they come again.
    unproducible: HashMap<(String, i32, i64), String>,
    progress: Arc<Mutex<Progress>>,
    /// The producer's `message.max.bytes`.
    max_record_bytes: usize,
    /// Batches abandoned since the last commit. From the second on, the redo waits
    /// `abort_backoff`: an abort that keeps coming back (a refused write, say) must not spin.
    aborts_in_a_row: u32,
    abort_backoff: Backoff,
    committer: std::marker::PhantomData<C>,
}

impl<C> Worker<'_, C> {
    fn begin(&mut self) -> Result<(), KafkaError>
    where
        C: CommitterKind,
    {
        if !self.batch.open {
            if C::IS_TRANSACTIONAL {
                self.producer.begin_transaction()?;
            }
            self.batch.open = true;
            self.batch.started = Instant::now();
        }
        Ok(())
    }

    /// True when `message` (received in rebalance `epoch`) was fetched before its partition
    /// was sought back or revoked.
    fn was_sought(&self, message: &BorrowedMessage<'_>, epoch: u64) -> bool {
        !self.sought.is_empty()
            && self
                .sought
                .iter()
                .any(|((t, p), valid_from)| *p == message.partition() && epoch < *valid_from && t == message.topic())
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `what` failed transiently and will be tried again after `backoff`: logged, counted,
    /// and shown by `/readyz` until it goes through.
    fn note_retry(&self, what: String, error: &dyn std::error::Error, backoff: &Backoff) {
        self.metrics.retried(error, backoff.ms());
        self.lock_progress().retrying(what, error.to_string(), Instant::now());
    }

    /// Where an output or dead letter of `message` may carry a value of at most this size.
    fn max_value_bytes(&self, key_len: usize) -> usize {
        self.max_record_bytes.saturating_sub(RECORD_OVERHEAD + key_len)
    }

    /// True when `message` predates a seek of its partition.
    fn is_stale(&self, message: &BorrowedMessage<'_>) -> bool {
        !self.skip_below.is_empty()
            && self
                .skip_below
                .get(&(message.topic().to_owned(), message.partition()))
                .is_some_and(|next| message.offset() < *next)
    }
}

/// Whether a batch commits as a Kafka transaction (agents) or in the handler's store
/// (projections); separate from [`Committer`] so code without the handler type can ask.
trait CommitterKind {
    const IS_TRANSACTIONAL: bool;
}

impl CommitterKind for KafkaTransactions {
    const IS_TRANSACTIONAL: bool = true;
}

impl CommitterKind for External {
    const IS_TRANSACTIONAL: bool = false;
}

impl<C: CommitterKind> Worker<'_, C> {
    async fn process<H: Handler, S: Future<Output = ()>>(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
        handler: &mut H,
        message: &BorrowedMessage<'_>,
        decoded: Result<Envelope<H::Input>, sm_domain::CodecError>,
        stop: &mut Stop<S>,
    ) -> Result<Flow, RuntimeError>
    where
        C: Committer<H>,
    {
        let started = Instant::now();
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        self.metrics.consumed(topic);
        self.summary.consumed += 1;
        self.begin()?;
        let span = tracing::info_span!(
            "record",
            topic,
            partition,
            offset,
            event_id = tracing::field::Empty,
            asset_id = tracing::field::Empty
        );
        let incoming = header(message, TRACEPARENT).and_then(TraceParent::parse);
        let traceparent = trace::continue_trace(&span, incoming);
        let input: Envelope<H::Input> = match decoded {
            Ok(input) => input,
            Err(error) => {
                let sent = self.dead_letter(message, None, error.reason_code(), &error.to_string(), traceparent).await;
                return self.finish(consumer, handler, sent, message, started).await;
            }
        };
        if let Some(detail) = self.unproducible.remove(&(topic.to_owned(), partition, offset)) {
            let sent = self.dead_letter(message, Some(&input.header), OUTPUT_TOO_LARGE, &detail, traceparent).await;
            return self.finish(consumer, handler, sent, message, started).await;
        }
        span.record("event_id", tracing::field::display(input.header.event_id));
        span.record("asset_id", tracing::field::display(&input.header.asset_id));
        let mut backoff = Backoff::new(&self.runtime.config);
        let source = Source { topic, partition, offset, key: message.key() };
        let mut retrying = false;
        let outcome = loop {
            let handled = handler.handle(&input, &source).instrument(span.clone()).await;
            if retrying && !matches!(handled, Err(HandleError::Transient(_))) {
                self.lock_progress().retried();
            }
            match handled {
                Ok(outputs) => {
                    match self.produce(Some(&input.header), outputs, traceparent).instrument(span.clone()).await {
                        Ok(Ok(())) => break Ok(()),
                        Ok(Err(too_large)) => {
                            break self
                                .dead_letter(message, Some(&input.header), OUTPUT_TOO_LARGE, &too_large, traceparent)
                                .await;
                        }
                        Err(error) => {
                            if is_unproducible(&error) {
                                // Something of this record's was queued already: abort, and
                                // dead-letter it when it comes again.
                                let detail = format!("an output of this record cannot be produced: {error}");
                                self.unproducible.insert((topic.to_owned(), partition, offset), detail);
                            }
                            break Err(error);
                        }
                    }
                }
                Err(HandleError::Rejected(rejection)) => {
                    break self
                        .dead_letter(
                            message,
                            Some(&input.header),
                            rejection.reason_code,
                            &rejection.detail,
                            traceparent,
                        )
                        .await;
                }
                Err(HandleError::Transient(error)) => {
                    self.summary.retried += 1;
                    retrying = true;
                    self.note_retry(format!("{topic}/{partition}@{offset}"), &*error, &backoff);
                    // Commit what is done, so a long outage neither holds a transaction open
                    // past its timeout nor redoes finished records. This record stays unmarked.
                    if self.batch.records > 0 && !self.commit(consumer, handler, stop).await? {
                        return Ok(Flow::Rewound);
                    }
                    tokio::select! {
                        biased;
                        () = stop.requested() => return Ok(Flow::Shutdown),
                        () = backoff.wait() => {}
                    }
                    self.begin()?;
                }
            }
        };
        self.finish(consumer, handler, outcome, message, started).await
    }

    /// Marks the record done, or recovers if producing its results failed.
    async fn finish<H: Handler>(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
        handler: &mut H,
        outcome: Result<(), KafkaError>,
        message: &BorrowedMessage<'_>,
        started: Instant,
    ) -> Result<Flow, RuntimeError>
    where
        C: Committer<H>,
    {
        match outcome {
            Ok(()) => {
                self.batch.done(message.topic(), message.partition(), message.offset());
                self.metrics.handled(started.elapsed().as_secs_f64());
                Ok(Flow::Continue)
            }
            Err(error) => {
                self.recover(consumer, handler, &error).await?;
                Ok(Flow::Rewound)
            }
        }
    }

    /// Queues a record's outputs. `Ok(Err(why))`: one of them is larger than the producer
    /// accepts, so none was queued and the record is to be dead-lettered.
    async fn produce(
        &mut self,
        cause: Option<&EnvelopeHeader>,
        outputs: Outputs,
        traceparent: TraceParent,
    ) -> Result<Result<(), String>, KafkaError> {
        let mut encoded = Vec::with_capacity(outputs.items.len());
        for (topic, pending) in outputs.items {
            match pending.encode(cause, self.runtime.agent, &self.runtime.codec) {
                Ok((key, bytes)) => {
                    let limit = self.max_value_bytes(key.as_str().len());
                    if bytes.len() > limit {
                        return Ok(Err(format!(
                            "its output to {topic} is {} bytes, more than the {limit} bytes a record may carry \
                             (message.max.bytes {} less overhead)",
                            bytes.len(),
                            self.max_record_bytes
                        )));
                    }
                    encoded.push((topic, key, bytes));
                }
                Err(error) => {
                    // The agent built an event its own schema refuses: a bug, loud but not fatal.
                    tracing::error!(topic, error = %error, "handler output does not fit its schema; dropped");
                }
            }
        }
        for (topic, key, bytes) in encoded {
            self.send(topic, key.as_str().as_bytes(), &bytes, traceparent).await?;
            self.metrics.produced(topic);
            self.summary.produced += 1;
        }
        Ok(Ok(()))
    }

    async fn dead_letter(
        &mut self,
        message: &BorrowedMessage<'_>,
        cause: Option<&EnvelopeHeader>,
        reason_code: &str,
        detail: &str,
        traceparent: TraceParent,
    ) -> Result<(), KafkaError> {
        let agent = self.runtime.agent;
        let value = message.payload().unwrap_or_default();
        let key = message.key().map(|k| &k[..k.len().min(DEAD_LETTER_KEY_MAX)]);
        let kept = value.len().min(DEAD_LETTER_ORIGINAL_MAX).min(self.max_value_bytes(0) / 2);
        let payload = RejectedReading {
            original: value[..kept].to_vec(),
            original_key: key.map(<[u8]>::to_vec),
            original_size: value.len() as i64,
            original_sha256: sha256_hex(value),
            reason_code: reason_code.to_owned(),
            detail: sm_domain::shorten(detail, DEAD_LETTER_DETAIL_CHARS),
            source_topic: message.topic().to_owned(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            agent: agent.to_owned(),
        };
        let mut header = match cause {
            Some(cause) => cause.caused_by(RejectedReading::EVENT_TYPE, agent),
            None => {
                let asset = key.map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_else(|| "unknown".into());
                let occurred_at =
                    message.timestamp().to_millis().map(Timestamp::from_millis).unwrap_or_else(Timestamp::now);
                EnvelopeHeader::origin(
                    RejectedReading::EVENT_TYPE,
                    TenantId::from("unknown"),
                    AssetId(asset),
                    occurred_at,
                    agent,
                )
            }
        };
        // Ids copied from the rejected record are the sender's and may be huge: a dead letter
        // must still fit.
        header.asset_id.0 = sm_domain::shorten(&header.asset_id.0, DEAD_LETTER_ID_CHARS);
        header.tenant_id.0 = sm_domain::shorten(&header.tenant_id.0, DEAD_LETTER_ID_CHARS);
        // The rejected record's own time may be absurd (that may be why it was rejected); the
        // dead letter's must be one every Avro reader can represent.
        if !header.occurred_at.in_range() {
            header.occurred_at =
                message.timestamp().to_millis().map(Timestamp::from_millis).unwrap_or_else(Timestamp::now);
        }
        if !header.occurred_at.in_range() {
            header.occurred_at = Timestamp::now();
        }
        let bytes = match self.runtime.codec.encode(&Envelope { header, payload }) {
            Ok(bytes) => bytes,
            Err(error) => unreachable_dead_letter(error),
        };
        self.send(&self.runtime.dead_letter_topic, key.unwrap_or_default(), &bytes, traceparent).await?;
        self.metrics.rejected(message.topic(), message.partition(), message.offset(), reason_code, detail);
        self.summary.rejected += 1;
        Ok(())
    }

    /// Runs the handler's wall-clock work inside the open transaction (opening one if needed).
    async fn tick<H: Handler>(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
        handler: &mut H,
    ) -> Result<(), RuntimeError>
    where
        C: Committer<H>,
    {
        self.begin()?;
        let outputs = handler.tick(Timestamp::now());
        if outputs.is_empty() {
            return Ok(());
        }
        match self.produce(None, outputs, TraceParent::new_root()).await {
            Ok(Ok(())) => {}
            Ok(Err(too_large)) => tracing::error!(reason = too_large, "a timed output cannot be produced; dropped"),
            Err(error) => self.recover(consumer, handler, &error).await?,
        }
        Ok(())
    }

    /// Writes the handler's changed state to its changelog topic, inside the transaction
    /// about to commit.
    async fn checkpoint<H: Handler>(&mut self, handler: &mut H) -> Result<(), KafkaError> {
        let Some(topic) = handler.state_topic() else {
            return Ok(());
        };
        for (key, value) in handler.checkpoint() {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key.as_bytes());
            if let Some(value) = &value {
                record = record.payload(value.as_slice());
            }
            crate::produce::send_waiting(&self.producer, record).await?;
            self.metrics.produced(topic);
        }
        Ok(())
    }

    /// Queues one record, waiting while librdkafka's produce queue is full (backpressure).
    async fn send(&self, topic: &str, key: &[u8], payload: &[u8], traceparent: TraceParent) -> Result<(), KafkaError> {
        let value = traceparent.header_value();
        let headers =
            OwnedHeaders::new_with_capacity(1).insert(Header { key: TRACEPARENT, value: Some(value.as_str()) });
        let record = BaseRecord::to(topic).key(key).payload(payload).headers(headers);
        crate::produce::send_waiting(&self.producer, record).await
    }

    /// Commits the open batch with its offsets. Returns false if it had to be abandoned (the
    /// consumer is then rewound and the batch will be redone).
    async fn commit<H: Handler, S: Future<Output = ()>>(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
        handler: &mut H,
        stop: &mut Stop<S>,
    ) -> Result<bool, RuntimeError>
    where
        C: Committer<H>,
    {
        if !self.batch.open {
            return Ok(true);
        }
        // A revocation taken in by `recv` since the loop last looked: never commit offsets of
        // a partition that is no longer ours.
        self.drop_revoked(consumer, handler).await?;
        if !self.batch.open {
            return Ok(false);
        }
        let result = if C::IS_TRANSACTIONAL {
            match self.checkpoint(handler).await {
                Ok(()) => self.commit_transaction(consumer).await?,
                Err(error) => Err(error),
            }
        } else {
            self.commit_external(handler, stop).await?
        };
        match result {
            Ok(()) => {
                handler.committed();
                self.metrics.committed();
                self.summary.committed_transactions += 1;
                {
                    let now = Instant::now();
                    let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                    for ((topic, partition), next) in &self.batch.next_offsets {
                        progress.committed(topic, *partition, *next, now);
                    }
                }
                self.batch.reset();
                if self.aborts_in_a_row > 0 {
                    self.aborts_in_a_row = 0;
                    self.abort_backoff = Backoff::new(&self.runtime.config).at_most(ABORT_BACKOFF_MAX_MS);
                    self.lock_progress().retried();
                }
                Ok(true)
            }
            Err(error) => {
                self.recover(consumer, handler, &error).await?;
                Ok(false)
            }
        }
    }

    async fn commit_transaction(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
    ) -> Result<Result<(), KafkaError>, RuntimeError> {
        let metadata = consumer.group_metadata().ok_or(RuntimeError::NoGroupMetadata)?;
        let offsets = self.batch.offsets()?;
        let producer = self.producer.clone();
        Ok(tokio::task::spawn_blocking(move || {
            if offsets.count() > 0 {
                retry_retriable(|| producer.send_offsets_to_transaction(&offsets, &metadata, TXN_TIMEOUT))?;
            }
            retry_retriable(|| producer.commit_transaction(TXN_TIMEOUT))
        })
        .await?)
    }

    /// Dead letters first (flushed), then rows and offsets in the handler's store. A store
    /// failure is transient: retried with backoff until it succeeds or shutdown is asked.
    async fn commit_external<H: Handler, S: Future<Output = ()>>(
        &mut self,
        handler: &mut H,
        stop: &mut Stop<S>,
    ) -> Result<Result<(), KafkaError>, RuntimeError>
    where
        C: Committer<H>,
    {
        let producer = self.producer.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || producer.flush(TXN_TIMEOUT)).await? {
            return Ok(Err(error));
        }
        let offsets = self.batch.partition_offsets();
        let mut backoff = Backoff::new(&self.runtime.config);
        let mut retrying = false;
        loop {
            match C::commit(handler, &offsets).await {
                Ok(()) => {
                    if retrying {
                        self.lock_progress().retried();
                    }
                    return Ok(Ok(()));
                }
                Err(error) => {
                    self.summary.retried += 1;
                    retrying = true;
                    self.note_retry("the commit of a batch to the projection's store".to_owned(), &*error, &backoff);
                    tokio::select! {
                        biased;
                        () = stop.requested() => {
                            return Ok(Err(KafkaError::Canceled));
                        }
                        () = backoff.wait() => {}
                    }
                }
            }
        }
    }

    /// Abandons the open batch (aborting its transaction, or replacing a fenced producer) and
    /// seeks its partitions back to their committed offsets.
    async fn recover<H: Handler>(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
        handler: &mut H,
        error: &KafkaError,
    ) -> Result<(), RuntimeError>
    where
        C: Committer<H>,
    {
        let cause = match self.producer.context().take_failure() {
            Some(failure) => format!("{error}: {failure}"),
            None => error.to_string(),
        };
        if C::IS_TRANSACTIONAL {
            let fatal = matches!(error, KafkaError::Transaction(e) if e.is_fatal());
            if !fatal {
                let producer = self.producer.clone();
                let aborted = tokio::task::spawn_blocking(move || producer.abort_transaction(TXN_TIMEOUT)).await?;
                if let Err(abort_error) = aborted {
                    tracing::warn!(error = %abort_error, "abort failed; replacing the producer");
                    self.replace_producer().await;
                }
            } else {
                tracing::warn!(error = %error, "fatal producer error; replacing the producer");
                self.replace_producer().await;
            }
        }
        C::rollback(handler);
        handler.rolled_back();
        self.metrics.aborted(&cause);
        self.summary.aborted_transactions += 1;
        let partitions = self.batch.partitions();
        self.batch.reset();
        self.rewind(consumer, handler, &partitions).await?;
        // Readiness says why until a batch commits again (a refused write names the topic's
        // authorization failure here, not only a stalled partition). After the rewind, which
        // ends any retry it took over.
        let what = format!("the batch of {} partition(s) after an abort", partitions.len());
        self.lock_progress().retrying(what, cause.clone(), Instant::now());
        self.aborts_in_a_row += 1;
        if self.aborts_in_a_row > 1 {
            tracing::warn!(error = %cause, aborts = self.aborts_in_a_row, backoff_ms = self.abort_backoff.ms(), "batch aborted again; waiting before the redo");
            self.abort_backoff.wait().await;
        }
        Ok(())
    }

    /// A new transactional producer, whose `init_transactions` fences the old one and aborts
    /// what it left open. While the brokers are unreachable this waits (with backoff) rather
    /// than stopping the agent: a broker restart is an outage to ride out, not a crash.
    async fn replace_producer(&mut self) {
        let mut backoff = Backoff::new(&self.runtime.config).at_most(BROKER_PROBE_MAX_MS);
        loop {
            match new_producer(&self.runtime.config, self.runtime.agent, true).await {
                Ok(producer) => {
                    self.producer = producer;
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %error, backoff_ms = backoff.ms(), "cannot start a transactional producer yet");
                    self.lock_progress().kafka_error(Some(format!("cannot start a transactional producer: {error}")));
                    backoff.wait().await;
                }
            }
        }
    }

    /// Abandons the open batch if it holds a partition taken away by a rebalance; the next
    /// owner starts from the committed offset.
    async fn drop_revoked<H: Handler>(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
        handler: &mut H,
    ) -> Result<(), RuntimeError>
    where
        C: Committer<H>,
    {
        let revoked = std::mem::take(&mut *consumer.context().revoked.lock().unwrap_or_else(|e| e.into_inner()));
        if !revoked.is_empty() {
            handler.revoked(&revoked.iter().map(|(partition, _)| partition.clone()).collect::<Vec<_>>());
        }
        for (partition, _) in &revoked {
            self.skip_below.remove(partition);
            self.unproducible.retain(|(t, p, _), _| !(*p == partition.1 && *t == partition.0));
        }
        self.sought.extend(revoked.iter().cloned());
        if revoked.is_empty() || !self.batch.open {
            return Ok(());
        }
        if revoked.iter().any(|((topic, partition), _)| self.batch.holds(topic, *partition)) {
            let error = KafkaError::Rebalance(RDKafkaErrorCode::RevokePartitions);
            self.recover(consumer, handler, &error).await?;
        }
        Ok(())
    }

    /// Projections: newly assigned partitions resume at the offsets stored with the rows.
    async fn seek_assigned<H: Handler>(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
        handler: &mut H,
    ) -> Result<(), RuntimeError>
    where
        C: Committer<H>,
    {
        let assigned = std::mem::take(&mut *consumer.context().assigned.lock().unwrap_or_else(|e| e.into_inner()));
        if !assigned.is_empty() {
            handler.assigned(&assigned);
        }
        if C::IS_TRANSACTIONAL {
            // Kafka's committed offsets already are the start positions. The handler's state
            // is (re)loaded: at start, and after a rebalance, when another instance may have
            // checkpointed the keys of the partitions this one now owns.
            if let (false, Some(state_topic)) = (assigned.is_empty(), handler.state_topic()) {
                let mut backoff = Backoff::new(&self.runtime.config).at_most(BROKER_PROBE_MAX_MS);
                while let Err(error) =
                    restore_state(&self.runtime.config, self.runtime.agent, state_topic, handler).await
                {
                    // No record may be handled without the state: wait for the brokers.
                    tracing::warn!(error = %error, backoff_ms = backoff.ms(), "cannot restore the agent's state yet");
                    self.lock_progress().retrying(
                        format!("restoring state from {state_topic}"),
                        error.to_string(),
                        Instant::now(),
                    );
                    backoff.wait().await;
                }
                self.lock_progress().retried();
            }
            return Ok(());
        }
        self.rewind(consumer, handler, &assigned).await
    }

    /// Seeks each partition back to its committed offset (the start if none was committed).
    /// Partitions no longer assigned are skipped: their next owner starts from the committed
    /// offset anyway.
    async fn rewind<H: Handler>(
        &mut self,
        consumer: &StreamConsumer<RuntimeContext>,
        handler: &mut H,
        partitions: &[(String, i32)],
    ) -> Result<(), RuntimeError>
    where
        C: Committer<H>,
    {
        if partitions.is_empty() {
            return Ok(());
        }
        let mut positions: Vec<(String, i32, Offset)> = Vec::with_capacity(partitions.len());
        let mut backoff = Backoff::new(&self.runtime.config);
        let stored = loop {
            match C::stored_offsets(handler, partitions).await {
                Ok(stored) => break stored,
                Err(error) => {
                    // Without the stored offsets no record may be processed: wait for the store.
                    self.note_retry("reading the projection's stored offsets".to_owned(), &*error, &backoff);
                    backoff.wait().await;
                }
            }
        };
        match stored {
            Some(stored) => {
                for (topic, partition) in partitions {
                    let next = stored.iter().find(|s| &s.topic == topic && s.partition == *partition);
                    let offset = next.map(|s| Offset::Offset(s.next_offset)).unwrap_or(Offset::Beginning);
                    positions.push((topic.clone(), *partition, offset));
                }
            }
            None => {
                let mut list = TopicPartitionList::with_capacity(partitions.len());
                for (topic, partition) in partitions {
                    list.add_partition(topic, *partition);
                }
                let committed = loop {
                    match consumer.committed_offsets(list.clone(), TXN_TIMEOUT) {
                        Ok(committed) => break committed,
                        Err(error) => {
                            // Without the committed offsets no record may be processed.
                            self.note_retry("reading the committed offsets".to_owned(), &error, &backoff);
                            backoff.wait().await;
                        }
                    }
                };
                for element in committed.elements() {
                    let offset = match element.offset() {
                        Offset::Offset(offset) => Offset::Offset(offset),
                        _ => Offset::Beginning,
                    };
                    positions.push((element.topic().to_owned(), element.partition(), offset));
                }
            }
        }
        self.lock_progress().retried();
        self.sought.extend(partitions.iter().map(|tp| (tp.clone(), u64::MAX)));
        for (topic, partition, offset) in positions {
            let floor = if let Offset::Offset(next) = offset { next } else { 0 };
            let tp = (topic, partition);
            if !self.lock_progress().is_assigned(&tp) {
                continue; // its next owner starts from the committed offset anyway
            }
            self.lock_progress().committed(&tp.0, partition, floor, Instant::now());
            // Records below the floor are skipped even if the seek does not take (a partition
            // whose fetcher has not started yet refuses seeks for a moment): retried briefly.
            self.skip_below.insert(tp.clone(), floor);
            let mut attempts = 0;
            while let Err(error) = consumer.seek(&tp.0, partition, offset, TXN_TIMEOUT) {
                attempts += 1;
                if attempts >= 50 || !self.lock_progress().is_assigned(&tp) {
                    tracing::warn!(topic = tp.0, partition, error = %error, "seek failed; records below {floor} are skipped");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// Loads the handler's checkpointed state: every committed record of `state_topic`.
async fn restore_state<H: Handler>(
    config: &KafkaConfig,
    agent: &str,
    state_topic: &str,
    handler: &mut H,
) -> Result<(), RuntimeError> {
    let started = Instant::now();
    crate::admin::ensure_topics(config, &[(state_topic, true)]).await?;
    let group = format!("{}-state-restore", config.group_for(agent));
    let consumer = crate::changelog::assign_from_start(config, state_topic, &group)?;
    let records = crate::changelog::read_to_end(&consumer, state_topic, |message| {
        if let Some(key) = message.key() {
            handler.restore(key, message.payload());
        }
    })
    .await?;
    tracing::info!(agent, state_topic, records, elapsed_ms = started.elapsed().as_millis() as u64, "state restored");
    Ok(())
}

/// The longest wait before redoing a batch that keeps aborting: short enough that a fixed
/// cause (an ACL granted, a broker back) is picked up quickly.
const ABORT_BACKOFF_MAX_MS: u64 = 5_000;

/// Capped exponential backoff between attempts at what must eventually succeed.
struct Backoff {
    next_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// From `retry_initial_backoff_ms`, doubling up to `retry_max_backoff_ms`.
    fn new(config: &KafkaConfig) -> Self {
        Self { next_ms: config.retry_initial_backoff_ms, max_ms: config.retry_max_backoff_ms }
    }

    fn at_most(mut self, max_ms: u64) -> Self {
        self.max_ms = self.max_ms.min(max_ms);
        self
    }

    /// The coming wait.
    fn ms(&self) -> u64 {
        self.next_ms
    }

    /// Waits the coming wait; the next one is twice as long, up to the cap.
    async fn wait(&mut self) {
        tokio::time::sleep(Duration::from_millis(self.next_ms)).await;
        self.next_ms = (self.next_ms * 2).min(self.max_ms);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The reason code of a record whose outputs exceed what the producer may send.
pub const OUTPUT_TOO_LARGE: &str = "output_too_large";

/// Produce errors that retrying the same record can never fix.
fn is_unproducible(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

/// A dead letter always fits its own schema; failing here means the embedded schemas are broken.
fn unreachable_dead_letter(error: sm_domain::CodecError) -> ! {
    panic!("dead letter does not fit schemas/rejected_reading: {error}")
}

fn retry_retriable(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    for _ in 0..5 {
        match call() {
            Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                tracing::debug!(error = %error, "retriable transaction error");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
    call()
}

async fn new_producer(
    config: &KafkaConfig,
    agent: &str,
    transactional: bool,
) -> Result<Arc<TxnProducer>, RuntimeError> {
    if !transactional {
        let producer: TxnProducer = config.idempotent_producer_config().create_with_context(TxnContext::default())?;
        return Ok(Arc::new(producer));
    }
    let producer: TxnProducer =
        config.producer_config(&config.transactional_id_for(agent)).create_with_context(TxnContext::default())?;
    let producer = Arc::new(producer);
    let initialising = producer.clone();
    // Fences any earlier producer with the same transactional.id and aborts what it left open.
    tokio::task::spawn_blocking(move || initialising.init_transactions(TXN_TIMEOUT)).await??;
    Ok(producer)
}

fn header<'m>(message: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The producer's callbacks. librdkafka logs why a transaction failed (`TXNERR`: a partition
/// the principal may not write, ...) but the produce or commit that follows returns only
/// "Erroneous state", so the first such reason since the last abort is kept for it.
#[derive(Default)]
struct TxnContext {
    failure: Mutex<Option<String>>,
}

impl TxnContext {
    fn take_failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl ClientContext for TxnContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // ADDPARTS names the partition refused; TXNERR what that did to the transaction.
        if crate::is_error(level) && (fac == "ADDPARTS" || fac == "TXNERR") {
            self.failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| message.to_owned());
        }
        crate::forward_log(level, fac, message);
    }
}

impl ProducerContext for TxnContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Callbacks librdkafka runs inside `recv`: rebalances and statistics.
struct RuntimeContext {
    metrics: RuntimeMetrics,
    progress: Arc<Mutex<Progress>>,
    /// Counts rebalance callbacks: a record received after the count moved was fetched for
    /// the new assignment.
    epoch: AtomicU64,
    /// Partitions revoked since the loop last looked, with the epoch of the revocation.
    revoked: Mutex<Vec<((String, i32), u64)>>,
    /// Partitions assigned since the loop last looked (projections seek them).
    assigned: Mutex<Vec<(String, i32)>>,
}

impl RuntimeContext {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

impl ClientContext for RuntimeContext {
    /// End offsets for the lag metric, and whether any broker is reachable.
    fn stats(&self, statistics: Statistics) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, stats) in &statistics.topics {
            for (partition, stats) in &stats.partitions {
                if *partition >= 0 {
                    progress.end_offsets(
                        topic,
                        *partition,
                        EndOffsets {
                            stable: stats.ls_offset,
                            fetch_next: stats.next_offset,
                            queued: stats.fetchq_cnt,
                            kafka_committed: stats.committed_offset,
                        },
                    );
                }
            }
        }
        // Learned brokers have a node id; bootstrap entries (-1) do not count.
        let brokers: Vec<_> = statistics.brokers.values().filter(|b| b.nodeid >= 0).collect();
        if !brokers.is_empty() {
            if brokers.iter().any(|b| b.state == "UP") {
                progress.kafka_error(None);
            } else {
                progress.kafka_error(Some(format!("none of the {} known brokers is reachable", brokers.len())));
            }
        }
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
                tracing::info!(partitions = list.count(), epoch, "partitions revoked");
                self.metrics.rebalanced("revoked", list.count());
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                for element in list.elements() {
                    let partition = (element.topic().to_owned(), element.partition());
                    progress.revoked(&partition);
                    revoked.push((partition, epoch));
                }
            }
            Rebalance::Assign(list) => {
                let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
                tracing::info!(partitions = list.count(), epoch, "partitions assigned");
                self.metrics.rebalanced("assigned", list.count());
                let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
                let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                for element in list.elements() {
                    let partition = (element.topic().to_owned(), element.partition());
                    progress.assigned(partition.clone(), Instant::now());
                    assigned.push(partition);
                }
            }
            Rebalance::Error(error) => tracing::warn!(error = %error, "rebalance error"),
        }
    }
}

/// Refreshes the lag metric and the agent's readiness check from [`Progress`] every second,
/// on its own task, so that both stay true while the loop is blocked in a retry.
struct Watchdog(tokio::task::JoinHandle<()>);

impl Watchdog {
    fn spawn(
        agent: &'static str,
        progress: Arc<Mutex<Progress>>,
        health: Health,
        metrics: RuntimeMetrics,
        stall_after: Duration,
    ) -> Self {
        Self(tokio::spawn(async move {
            let mut reported: Vec<(String, i32)> = Vec::new();
            let mut ticks = tokio::time::interval(WATCHDOG_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let report = progress.lock().unwrap_or_else(|e| e.into_inner()).report(Instant::now(), stall_after);
                for tp in &reported {
                    if !report.lag.iter().any(|(reported, _)| reported == tp) {
                        metrics.forget_partition(&tp.0, tp.1);
                    }
                }
                for ((topic, partition), records) in &report.lag {
                    let stalled = report.stalled.iter().any(|((t, p), _, _)| p == partition && t == topic);
                    metrics.lag(topic, *partition, *records, stalled);
                }
                reported = report.lag.into_iter().map(|(tp, _)| tp).collect();
                match report.unready {
                    None => health.set(agent, true),
                    Some(reason) => health.set_unavailable(agent, reason),
                }
            }
        }))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}
