//! The one seam between an agent and the runtime. The runtime owns Kafka, transactions,
//! retries, dead letters and telemetry; the agent owns one decision per input.

use sm_domain::{AssetId, Codec, CodecError, Decode, DomainEvent, Envelope, EnvelopeHeader, TenantId, Timestamp};
use std::future::Future;
use std::time::Duration;

/// An agent's logic.
pub trait Handler: Send + 'static {
    /// Decoded input (e.g. `SensorReading`, or an enum of the types a topic carries);
    /// undecodable bytes never reach the handler, they go to the dead-letter topic.
    type Input: Decode;

    /// Called with records about to be handled (already fetched, in order), before `handle`
    /// sees each of them: a handler that needs an outside store per record (a cache, a
    /// database) can look many up in one round trip and keep the answers for `handle`. It is
    /// a hint: `handle` must still be right if `prepare` was not called or failed, and a
    /// record prepared may not be handled yet (after a rebalance it comes again).
    fn prepare(&mut self, _inputs: &[(&Envelope<Self::Input>, Source<'_>)]) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called once per input, in partition order. Outputs join the same Kafka transaction as
    /// this input's offset. May be called again with the same input after a transient error
    /// or after an aborted transaction: state changes must be safe to redo (or be derived
    /// from the inputs alone).
    fn handle(
        &mut self,
        input: &Envelope<Self::Input>,
        source: &Source<'_>,
    ) -> impl Future<Output = Result<Outputs, HandleError>> + Send;

    /// The compacted topic this handler's state is checkpointed to, if it keeps state that
    /// must survive a restart (detector baselines, windows). The runtime then calls
    /// [`Handler::restore`] before handling, [`Handler::checkpoint`] before every commit (its
    /// records join the transaction, so state and offsets always agree), and
    /// [`Handler::committed`] / [`Handler::rolled_back`] after. [`crate::StateStore`] does
    /// the bookkeeping.
    fn state_topic(&self) -> Option<&'static str> {
        None
    }

    /// One committed changelog record (oldest first; `None`: the key was deleted). Called for
    /// the whole changelog at start and again when partitions are assigned.
    fn restore(&mut self, _key: &[u8], _value: Option<&[u8]>) {}

    /// State changed since the last commit: `(key, value)` records for the changelog.
    fn checkpoint(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        Vec::new()
    }

    /// The transaction holding the last checkpoint committed.
    fn committed(&mut self) {}

    /// The open transaction was abandoned (its inputs come again): forget what it changed.
    fn rolled_back(&mut self) {}

    /// Partitions (topic, partition) this instance now owns, before any of their records is
    /// handled. For work a handler does on its own (in [`Handler::tick`]) for what a
    /// partition holds: only the owner may do it.
    fn assigned(&mut self, _partitions: &[(String, i32)]) {}

    /// Partitions this instance no longer owns; their next owner takes over from the
    /// committed offsets and state.
    fn revoked(&mut self, _partitions: &[(String, i32)]) {}

    /// How often [`Handler::tick`] runs; `None`: never. For what depends on wall-clock time
    /// rather than on inputs (a sensor that went silent).
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Wall-clock work: its outputs join the open transaction (see [`Outputs::push_origin`]).
    fn tick(&mut self, _now: Timestamp) -> Outputs {
        Outputs::none()
    }
}

/// Where an input record sits in Kafka. The same record handled again (after a retry or an
/// aborted transaction) has the same source; a duplicate sent twice by a gateway does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka key (the asset id on asset topics), if it has one.
    pub key: Option<&'a [u8]>,
}

/// A handler whose results become durable outside Kafka, together with the input offsets:
/// a projection into PostgreSQL. Run with [`crate::Runtime::run_projection`].
///
/// `handle` only buffers; `commit` writes everything buffered since the last commit and the
/// offsets in one database transaction, which is what makes a projection effectively-once.
pub trait ExternalCheckpoint: Handler {
    /// Makes everything handled since the last commit durable together with `offsets`
    /// (next offset to read per partition). All or nothing: on error nothing was written.
    fn commit(&mut self, offsets: &[PartitionOffset]) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Forgets what was handled since the last commit (the runtime rewinds to the stored offsets).
    fn rollback(&mut self);
    /// Next offset to read for each partition, as last committed; absent: from the start.
    fn stored_offsets(
        &mut self,
        partitions: &[(String, i32)],
    ) -> impl Future<Output = Result<Vec<PartitionOffset>, BoxError>> + Send;
}

/// The next offset to read in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// Why a handler refused an input: it goes to the dead-letter topic and the partition moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable, low-cardinality code (`unknown_sensor`, `out_of_range`, ...): a metric label.
    pub reason_code: &'static str,
    /// What exactly was wrong, for the person reading the dead letter.
    pub detail: String,
}

impl Rejection {
    pub fn new(reason_code: &'static str, detail: impl Into<String>) -> Self {
        Self { reason_code, detail: detail.into() }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason_code, self.detail)
    }
}

/// Boxed source of a transient error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A handler failure.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The input is bad: dead-lettered, never retried.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// Something outside the input failed (database, cache): retried with capped backoff;
    /// the input is never skipped.
    #[error("transient: {0}")]
    Transient(#[source] BoxError),
}

impl From<Rejection> for HandleError {
    fn from(rejection: Rejection) -> Self {
        HandleError::Rejected(rejection)
    }
}

/// Events a handler emits for one input. The runtime wraps each payload in an envelope
/// caused by the input (same correlation, tenant, event time), keys it by asset id and adds
/// `traceparent`.
#[derive(Default)]
pub struct Outputs {
    pub(crate) items: Vec<(&'static str, Box<dyn PendingOutput>)>,
}

impl Outputs {
    /// No output (the input is consumed and its offset committed).
    pub fn none() -> Self {
        Self::default()
    }

    /// One event to `topic`.
    pub fn one<T: DomainEvent>(topic: &'static str, payload: T) -> Self {
        let mut outputs = Self::default();
        outputs.push(topic, payload);
        outputs
    }

    /// Adds an event about the input's asset.
    pub fn push<T: DomainEvent>(&mut self, topic: &'static str, payload: T) {
        self.items.push((topic, Box::new(Pending { payload, asset_id: None, origin: None, key: None })));
    }

    /// Adds an event about the input's asset, keyed by `key` instead of the asset id: for a
    /// topic partitioned by something else (the site, on `sm.commands.v1`).
    pub fn push_keyed<T: DomainEvent>(&mut self, topic: &'static str, key: String, payload: T) {
        self.items.push((topic, Box::new(Pending { payload, asset_id: None, origin: None, key: Some(key) })));
    }

    /// Adds an event about another asset than the input's.
    pub fn push_for_asset<T: DomainEvent>(&mut self, topic: &'static str, asset_id: AssetId, payload: T) {
        self.items.push((topic, Box::new(Pending { payload, asset_id: Some(asset_id), origin: None, key: None })));
    }

    /// Adds an event that no input caused (from [`Handler::tick`]): it starts its own causal
    /// chain.
    pub fn push_origin<T: DomainEvent>(
        &mut self,
        topic: &'static str,
        tenant_id: TenantId,
        asset_id: AssetId,
        occurred_at: Timestamp,
        payload: T,
    ) {
        let origin = Some((tenant_id, occurred_at));
        self.items.push((topic, Box::new(Pending { payload, asset_id: Some(asset_id), origin, key: None })));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Every output as the runtime would write it, `(topic, key, bytes)`, caused by `cause`
    /// (`None`: origin events only): for testing a handler without a broker.
    pub fn encode_all(
        &self,
        cause: Option<&EnvelopeHeader>,
        producer: &str,
        codec: &Codec,
    ) -> Result<Vec<EncodedOutput>, CodecError> {
        self.items
            .iter()
            .map(|(topic, pending)| pending.encode(cause, producer, codec).map(|(key, bytes)| (*topic, key.0, bytes)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// An output as written: topic, key, bytes.
pub type EncodedOutput = (&'static str, String, Vec<u8>);

/// A payload waiting for its envelope; erases the event type so one output list can hold
/// several.
pub(crate) trait PendingOutput: Send {
    /// Kafka key (the asset id unless overridden) and encoded bytes of the event caused by `cause` (`None` only for origin events).
    fn encode(
        &self,
        cause: Option<&EnvelopeHeader>,
        producer: &str,
        codec: &Codec,
    ) -> Result<(AssetId, Vec<u8>), CodecError>;
}

struct Pending<T> {
    payload: T,
    asset_id: Option<AssetId>,
    /// Tenant and event time of an event no input caused.
    origin: Option<(TenantId, Timestamp)>,
    /// The Kafka key, when it is not the asset id.
    key: Option<String>,
}

impl<T: DomainEvent> PendingOutput for Pending<T> {
    fn encode(
        &self,
        cause: Option<&EnvelopeHeader>,
        producer: &str,
        codec: &Codec,
    ) -> Result<(AssetId, Vec<u8>), CodecError> {
        let mut header = match (&self.origin, cause) {
            (Some((tenant_id, occurred_at)), _) => EnvelopeHeader::origin(
                T::EVENT_TYPE,
                tenant_id.clone(),
                self.asset_id.clone().unwrap_or_else(|| AssetId("unknown".into())),
                *occurred_at,
                producer,
            ),
            (None, Some(cause)) => cause.caused_by(T::EVENT_TYPE, producer),
            (None, None) => return Err(CodecError::NoSchema("an output without a cause needs Outputs::push_origin")),
        };
        if let Some(asset_id) = &self.asset_id {
            header.asset_id = asset_id.clone();
        }
        // Serialising from a borrowed payload keeps retries and re-encodes allocation-free.
        let event = EnvelopeRef { header: &header, payload: &self.payload };
        let bytes = codec.encode_ref::<T, _>(&event)?;
        Ok((self.key.clone().map(AssetId).unwrap_or(header.asset_id), bytes))
    }
}

/// `Envelope` with borrowed parts; serialises exactly like [`Envelope`].
#[derive(serde::Serialize)]
pub(crate) struct EnvelopeRef<'a, T> {
    pub header: &'a EnvelopeHeader,
    pub payload: &'a T,
}
