//! Duplicate suppression across ingestion instances: the first record of a (sensor,
//! timestamp, sequence) claims the key in Redis for the dedup window; later ones are
//! duplicates. The claim stores the record's Kafka position, so the *same* record handled
//! again (after an aborted transaction or a restart) is recognised as itself, not as a
//! duplicate of itself, which is what keeps duplicate suppression exactly-once too.

use sm_domain::{SensorId, Timestamp};
use sm_kafka::Source;

/// Redis-backed duplicate detector.
#[derive(Clone)]
pub struct Deduplicator {
    connection: redis::aio::ConnectionManager,
    window_secs: u64,
}

/// The identity of one reading, and where its record sits in Kafka.
#[derive(Debug, Clone)]
pub struct Claim {
    pub sensor_id: SensorId,
    pub occurred_at: Timestamp,
    pub sequence: i64,
    /// `topic/partition/offset` of the record.
    pub claimant: String,
}

impl Claim {
    pub fn new(sensor_id: &SensorId, occurred_at: Timestamp, sequence: i64, source: &Source<'_>) -> Self {
        Self {
            sensor_id: sensor_id.clone(),
            occurred_at,
            sequence,
            claimant: format!("{}/{}/{}", source.topic, source.partition, source.offset),
        }
    }

    fn key(&self) -> String {
        format!("sm:dedup:{}:{}:{}", self.sensor_id, self.occurred_at.as_micros(), self.sequence)
    }
}

impl Deduplicator {
    /// Connects (and reconnects by itself later) to `url`.
    pub async fn connect(url: &str, window_secs: u64) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let connection = client.get_connection_manager().await?;
        Ok(Self { connection, window_secs })
    }

    /// One round trip (`PING`): the readiness probe.
    pub async fn ping(&mut self) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query_async::<String>(&mut self.connection).await.map(|_| ())
    }

    /// True when this record is the first with its identity inside the window (or is that
    /// first record, handled again).
    pub async fn first_seen(
        &mut self,
        sensor_id: &SensorId,
        occurred_at: Timestamp,
        sequence: i64,
        source: &Source<'_>,
    ) -> Result<bool, redis::RedisError> {
        let claim = Claim::new(sensor_id, occurred_at, sequence, source);
        Ok(self.claim_many(std::slice::from_ref(&claim)).await?[0])
    }

    /// [`Deduplicator::first_seen`] for many readings in one round trip: per claim,
    /// `SET key claimant NX EX window` then `GET key`; the claim holds when the key names
    /// this record.
    pub async fn claim_many(&mut self, claims: &[Claim]) -> Result<Vec<bool>, redis::RedisError> {
        let mut pipe = redis::pipe();
        for claim in claims {
            let key = claim.key();
            pipe.cmd("SET").arg(&key).arg(&claim.claimant).arg("NX").arg("EX").arg(self.window_secs).ignore();
            pipe.cmd("GET").arg(&key);
        }
        let holders: Vec<Option<String>> = pipe.query_async(&mut self.connection).await?;
        Ok(holders
            .iter()
            .zip(claims)
            .map(|(holder, claim)| holder.as_deref() == Some(claim.claimant.as_str()))
            .collect())
    }
}
