//! Producing for smctl's bulk commands (`simulate`, `ingest-file`): one idempotent producer
//! whose delivery callbacks are counted, so a command can say at the end how many records the
//! broker acknowledged and fail loudly if any was lost.
//!
//! Idempotence (`enable.idempotence=true`) makes librdkafka's retries safe: a record is
//! written once and in order per partition even when an acknowledgement is lost
//! (<https://kafka.apache.org/documentation/#producerconfigs_enable.idempotence>). It is not a
//! transaction; these commands stand in for gateways, which do not use transactions either.
//!
//! `assets apply` uses rdkafka's `FutureProducer` instead, since it reports the partition and
//! offset of each of its few records.

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use sm_domain::codec::CONTENT_TYPE_JSON;
use sm_kafka::KafkaConfig;
use sm_kafka::trace::TRACEPARENT;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts delivery reports; librdkafka calls it from the producer's polling thread.
#[derive(Default)]
pub struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// The first failure, to show the operator why (later ones are usually the same).
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// What the broker acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliveries {
    pub delivered: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

/// An idempotent producer with counted deliveries.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryCounter>,
}

/// How long to wait before retrying when librdkafka's queue is full: long enough for the
/// polling thread to drain some deliveries, short enough not to stall a rate-controlled run.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

impl Publisher {
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer = config.idempotent_producer_config().create_with_context(DeliveryCounter::default())?;
        Ok(Self { producer })
    }

    /// Queues one record, waiting (asynchronously) while the local queue is full.
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8], headers: OwnedHeaders) -> Result<(), KafkaError> {
        let record = BaseRecord::to(topic).key(key).payload(payload).headers(headers);
        sm_kafka::produce::send_waiting(&self.producer, record).await
    }

    /// As [`Publisher::send`], blocking the thread while the queue is full (for callers that
    /// run on a blocking thread).
    pub fn send_blocking(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload).headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(QUEUE_FULL_BACKOFF);
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Waits until every queued record is acknowledged or failed (blocking, up to `timeout`),
    /// then reports the counts.
    pub fn finish(&self, timeout: Duration) -> Result<Deliveries, KafkaError> {
        self.producer.flush(timeout)?;
        let context = self.producer.context();
        let first_error = context.first_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        Ok(Deliveries {
            delivered: context.delivered.load(Ordering::Relaxed),
            failed: context.failed.load(Ordering::Relaxed),
            first_error,
        })
    }
}

/// Headers of a reading: its `traceparent`, and the content type when it is JSON.
pub fn reading_headers(traceparent: &str, json: bool) -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(2).insert(Header { key: TRACEPARENT, value: Some(traceparent) });
    if json { headers.insert(Header { key: "content-type", value: Some(CONTENT_TYPE_JSON) }) } else { headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    #[test]
    fn json_readings_carry_the_content_type_header() {
        let headers = reading_headers("00-0000000000000000000000000000000a-000000000000000b-00", true);
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
            .collect();
        assert_eq!(pairs[1], ("content-type".to_owned(), "application/json".to_owned()));
        assert_eq!(pairs[0].0, "traceparent");
        assert_eq!(reading_headers("x", false).count(), 1);
    }
}
