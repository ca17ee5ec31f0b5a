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
