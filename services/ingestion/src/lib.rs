//! Ingestion agent: every raw reading becomes a validated reading (canonical unit, quality
//! flags) or a dead letter with a stable reason, exactly once, on the shared runtime.
//!
//! Layout:
//! - [`validate`]: the rules, pure (no I/O), unit-tested;
//! - [`registry`]: the asset registry, followed from the compacted `sm.assets.v1` topic;
//! - [`dedup`]: duplicate suppression across instances in Redis;
//! - [`Ingestion`]: the handler tying them together.

pub mod dedup;
pub mod registry;
pub mod validate;

use dedup::Deduplicator;
use registry::AssetRegistry;
use serde::{Deserialize, Serialize};
use sm_domain::{Envelope, SensorReading, Timestamp, topics};
use sm_kafka::{HandleError, Handler, KafkaConfig, Outputs, Source};
use sm_telemetry::TelemetryConfig;
use validate::{Policy, Verdict};

/// Settings of the ingestion agent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestionConfig {
    pub kafka: KafkaConfig,
    pub telemetry: TelemetryConfig,
    pub redis: RedisConfig,
    pub ingestion: Policy,
}

/// Redis settings (`SM_REDIS__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`; `rediss://` for TLS.
    pub url: sm_telemetry::Secret,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: sm_telemetry::Secret("redis://127.0.0.1:16379".to_owned()) }
    }
}

impl IngestionConfig {
    /// Loads from the process environment (and `SM_CONFIG`), then validates.
    pub fn load() -> Result<Self, sm_telemetry::ConfigError> {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let config: Self = sm_telemetry::load_config(&env)?;
        config.kafka.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        config.ingestion.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        Ok(config)
    }
}

/// Validates, normalises and de-duplicates readings.
pub struct Ingestion {
    output_topic: &'static str,
    /// Dedup answers fetched by `prepare` for the records about to be handled, by position.
    prepared: std::collections::HashMap<(i32, i64), bool>,
    registry: AssetRegistry,
    dedup: Deduplicator,
    policy: Policy,
    metrics: IngestionMetrics,
}

impl Ingestion {
    pub fn new(registry: AssetRegistry, dedup: Deduplicator, policy: Policy) -> Self {
        Self {
            output_topic: topics::READINGS_VALIDATED,
            prepared: std::collections::HashMap::new(),
            registry,
            dedup,
            policy,
            metrics: IngestionMetrics::new(),
        }
    }

    /// Writes validated readings to `topic` instead of `sm.readings.validated.v1` (tests).
    pub fn with_output_topic(mut self, topic: &str) -> Self {
        self.output_topic = Box::leak(topic.to_owned().into_boxed_str());
        self
    }
}

impl Handler for Ingestion {
    type Input = SensorReading;

    /// Claims the identities of the readings about to be handled in one Redis round trip,
    /// instead of one per reading. If Redis fails here, `handle` asks again per reading and
    /// turns the failure into a retry.
    async fn prepare(&mut self, inputs: &[(&Envelope<SensorReading>, Source<'_>)]) {
        let now = Timestamp::now();
        let mut positions = Vec::with_capacity(inputs.len());
        let mut claims = Vec::with_capacity(inputs.len());
        for (input, source) in inputs {
            let sensor = self.registry.sensor(&input.payload.sensor_id);
            if let Verdict::Valid(_) = validate::validate(input, source.key, sensor.as_deref(), now, &self.policy) {
                positions.push((source.partition, source.offset));
                let p = &input.payload;
                claims.push(dedup::Claim::new(&p.sensor_id, input.header.occurred_at, p.sequence, source));
            }
        }
        self.prepared.clear();
        match self.dedup.claim_many(&claims).await {
            Ok(first) => self.prepared.extend(positions.into_iter().zip(first)),
            Err(error) => tracing::warn!(error = %error, "batched duplicate check failed; checking one by one"),
        }
    }

    async fn handle(&mut self, input: &Envelope<SensorReading>, source: &Source<'_>) -> Result<Outputs, HandleError> {
        let sensor = self.registry.sensor(&input.payload.sensor_id);
        let verdict = validate::validate(input, source.key, sensor.as_deref(), Timestamp::now(), &self.policy);
        let validated = match verdict {
            Verdict::Valid(validated) => validated,
            Verdict::Rejected(rejection) => return Err(rejection.into()),
        };
        let first = match self.prepared.remove(&(source.partition, source.offset)) {
            Some(first) => first,
            None => self
                .dedup
                .first_seen(&input.payload.sensor_id, input.header.occurred_at, input.payload.sequence, source)
                .await
                .map_err(|e| HandleError::Transient(Box::new(e)))?,
        };
        if !first {
            self.metrics.duplicate();
            return Ok(Outputs::none());
        }
        for flag in &validated.quality_flags {
            self.metrics.flagged(flag);
        }
        Ok(Outputs::one(self.output_topic, validated))
    }
}

/// What only ingestion measures (the runtime counts consumed, produced and rejected).
struct IngestionMetrics {
    duplicates: prometheus::IntCounter,
    flags: prometheus::IntCounterVec,
}

impl IngestionMetrics {
    fn new() -> Self {
        let duplicates = prometheus::IntCounter::new(
            "sm_ingestion_duplicates_total",
            "Readings suppressed as duplicates of one already accepted",
        )
        .expect("valid metric");
        let flags = prometheus::IntCounterVec::new(
            prometheus::Opts::new("sm_ingestion_quality_flags_total", "Accepted readings by quality flag"),
            &["flag"],
        )
        .expect("valid metric");
        let _ = prometheus::register(Box::new(duplicates.clone()));
        let _ = prometheus::register(Box::new(flags.clone()));
        Self { duplicates, flags }
    }

    fn duplicate(&self) {
        tracing::debug!("duplicate reading suppressed");
        self.duplicates.inc();
    }

    fn flagged(&self, flag: &str) {
        self.flags.with_label_values(&[flag]).inc();
    }
}
