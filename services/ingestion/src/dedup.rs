//! Duplicate suppression across ingestion instances: the first record of a (sensor,
//! timestamp, sequence) claims the key in Redis for the dedup window; later ones are
//! duplicates. The claim stores the record's Kafka position, so the *same* record handled
//! again (after an aborted transaction or a restart) is recognised as itself, not as a
//! duplicate of itself, which is what keeps duplicate suppression exactly-once too.

use sm_domain::{SensorId, Timestamp};
use sm_kafka::Source;

/// Claims the key, or finds who holds it; one round trip.
const CLAIM: &str = r"
local claimed = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
if claimed then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
";

/// Redis-backed duplicate detector.
#[derive(Clone)]
pub struct Deduplicator {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
    window_secs: u64,
}

impl Deduplicator {
    /// Connects (and reconnects by itself later) to `url`.
    pub async fn connect(url: &str, window_secs: u64) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let connection = client.get_connection_manager().await?;
        Ok(Self { connection, script: redis::Script::new(CLAIM), window_secs })
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
        let key = format!("sm:dedup:{sensor_id}:{}:{sequence}", occurred_at.as_micros());
        let claimant = format!("{}/{}/{}", source.topic, source.partition, source.offset);
        let first: i64 =
            self.script.key(key).arg(claimant).arg(self.window_secs).invoke_async(&mut self.connection).await?;
        Ok(first == 1)
    }
}
