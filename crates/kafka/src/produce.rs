//! Queueing a record when librdkafka's produce queue may be full: the caller waits
//! (asynchronously) for room instead of failing or dropping it. That wait is the backpressure
//! that keeps a producer's memory bounded by `produce_queue_max_kbytes`.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::util::IntoOpaque;
use std::time::Duration;

/// How long to wait before trying again when the queue is full: long enough for the polling
/// thread to drain some deliveries, short enough not to stall the caller.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

/// Queues `record`, waiting while the produce queue is full. Any other error is returned.
pub async fn send_waiting<C, K, P, D>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, P, D>,
) -> Result<(), KafkaError>
where
    C: ProducerContext<DeliveryOpaque = D> + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    D: IntoOpaque,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Publishes a few command-side events one at a time and waits for each acknowledgement:
/// what the model registry commands (`smctl train`, `ModelService.Promote`, the trainer) use
/// to announce what they wrote. Idempotent, so a retried send is written once.
pub struct Announcer {
    producer: rdkafka::producer::FutureProducer,
    codec: sm_domain::Codec,
    timeout: Duration,
}

/// Why an event was not announced.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("encoding the event: {0}")]
    Encode(#[from] sm_domain::CodecError),
    #[error("publishing to {topic}: {source}; is the broker up (SM_KAFKA__BOOTSTRAP_SERVERS)?")]
    Kafka { topic: String, source: KafkaError },
    #[error("no acknowledgement from the broker within {0:?} for {1}; is it up (SM_KAFKA__BOOTSTRAP_SERVERS)?")]
    Timeout(Duration, String),
}

impl Announcer {
    /// An idempotent producer from `config`.
    pub fn new(config: &crate::KafkaConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: config.idempotent_producer_config().create()?,
            codec: sm_domain::Codec::embedded().expect("embedded schemas are valid"),
            timeout: Duration::from_secs(30),
        })
    }

    /// Publishes `event` to `topic` under `key`; returns its partition and offset.
    pub async fn announce<T: sm_domain::DomainEvent>(
        &self,
        topic: &str,
        key: &str,
        event: &sm_domain::Envelope<T>,
    ) -> Result<(i32, i64), AnnounceError> {
        let bytes = self.codec.encode(event)?;
        let record = rdkafka::producer::FutureRecord::to(topic).key(key).payload(&bytes);
        let kafka = |source| AnnounceError::Kafka { topic: topic.to_owned(), source };
        let delivery = self.producer.send_result(record).map_err(|(error, _)| kafka(error))?;
        let delivered = tokio::time::timeout(self.timeout, delivery)
            .await
            .map_err(|_| AnnounceError::Timeout(self.timeout, format!("{topic}/{key}")))?
            .map_err(|_| AnnounceError::Timeout(self.timeout, format!("{topic}/{key} (cancelled)")))?
            .map_err(|(error, _)| kafka(error))?;
        Ok((delivered.partition, delivered.offset))
    }
}
