//! The alert feed behind `StreamAlerts`: ONE Kafka consumer per server that follows
//! `sm.anomalies.v1` and `sm.drift.v1` from their end, decodes each record once, and fans the
//! alert out to every open stream through a `tokio::sync::broadcast` channel.
//!
//! - **Outside any consumer group, never committing.** Each server assigns itself every
//!   partition of both topics (`assign`, not `subscribe`), so every instance of the service
//!   sees every alert, and no offset is ever stored: a restarted server starts at the end
//!   again. Partitions added to the topics later are followed after a restart.
//! - **"From the end" has a precise moment.** At start the feed asks the brokers for each
//!   partition's end offset (`fetch_watermarks`; with `isolation.level=read_committed` the
//!   brokers answer with the last stable offset) and assigns exactly those offsets, rather than
//!   the symbolic `Offset::End`, which librdkafka resolves later, at a moment nobody can
//!   observe. The feed is *live* from then on (see [`FeedState`]): every alert committed after
//!   that point reaches the streams, and `StreamAlerts` refuses to open before it, so a client
//!   never mistakes "not connected yet" for "no alerts".
//! - **Committed alerts only** (`read_committed`): the agents publish inside Kafka
//!   transactions, and an aborted transaction's alerts never happened.
//! - **Backfill is dropped here:** anomalies and drift found in imported history are not live
//!   alerts, and a large import would otherwise push every stream past its buffer.
//! - **A slow stream ends; it never skips silently.** The channel holds the last
//!   `alert_stream_buffer` alerts; a stream further behind than that ends with
//!   `RESOURCE_EXHAUSTED` ([`QueryError::StreamLagged`]), so the client knows it has a gap to
//!   fill with `ListAnomalies`/`ListDrift`. The feed itself never waits for a stream.
//!
//! Not here: filtering per stream (`alerts.rs`) and history (the projector's tables).

use crate::QuerySettings;
use crate::error::QueryError;
use crate::metrics::{AlertFeedMetrics, OpenStream};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use sm_domain::{AlertEvent, Codec, Decode, topics};
use sm_proto::v1;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The topics the feed follows.
pub const TOPICS: [&str; 2] = [topics::ANOMALIES, topics::DRIFT];
/// Consumer `group.id`. librdkafka wants one, but an assigned consumer that never commits
/// never joins the group, so every instance can share it.
const GROUP: &str = "sm-query-alerts";
/// How long one metadata or watermark request may take at start.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// First and largest wait between attempts to start (brokers down, topics not created yet).
const START_BACKOFF_MIN: Duration = Duration::from_millis(500);
const START_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Pause after a consumer error, so a broker outage does not become a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Where the feed is in its life. Only `Live` serves streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedState {
    /// Not assigned yet: the brokers or the topics are not reachable (retrying).
    Starting,
    /// Assigned at the end of every partition: every alert from now on reaches the streams.
    Live,
    /// The server is shutting down: streams end, new ones are refused.
    Stopped,
}

/// The fan-out side of the feed, shared by the consumer task and the `AlertService`.
#[derive(Clone)]
pub struct AlertFeed {
    alerts: broadcast::Sender<Arc<v1::Alert>>,
    state: Arc<watch::Sender<FeedState>>,
}

impl AlertFeed {
    /// A feed whose streams may fall `buffer` alerts behind (at least 1; see
    /// `SM_QUERY__ALERT_STREAM_BUFFER`).
    pub fn new(buffer: usize) -> Self {
        let (alerts, _) = broadcast::channel(buffer.max(1));
        let (state, _) = watch::channel(FeedState::Starting);
        Self { alerts, state: Arc::new(state) }
    }

    /// The current state.
    pub fn state(&self) -> FeedState {
        *self.state.borrow()
    }

    /// Follows state changes (readiness reporting).
    pub fn watch_state(&self) -> watch::Receiver<FeedState> {
        self.state.subscribe()
    }

    /// A stream's view of the feed from now on. Refused unless the feed is live.
    pub fn subscribe(&self) -> Result<Subscription, QueryError> {
        // Subscribe before checking the state: a stop in between is then seen by `next`.
        let subscription = Subscription {
            alerts: self.alerts.subscribe(),
            state: self.state.subscribe(),
            _open: AlertFeedMetrics::stream_opened(),
        };
        match self.state() {
            FeedState::Live => Ok(subscription),
            FeedState::Starting => Err(QueryError::AlertFeedUnavailable("is not connected to Kafka yet")),
            FeedState::Stopped => Err(QueryError::AlertFeedUnavailable("has stopped: the server is shutting down")),
        }
    }

    /// Passes a live alert on to every open stream. Never waits: a stream that is full
    /// finds out on its next read.
    pub fn publish(&self, alert: v1::Alert) {
        // An error only means that no stream is open right now.
        let _ = self.alerts.send(Arc::new(alert));
    }

    /// Marks the feed live: the consumer is assigned.
    fn set_live(&self) {
        self.set(FeedState::Live);
    }

    /// Ends every stream and refuses new ones: called when the server starts shutting down,
    /// because a graceful shutdown waits for open requests, and a stream never ends by itself.
    pub fn stop(&self) {
        self.set(FeedState::Stopped);
    }

    fn set(&self, state: FeedState) {
        self.state.send_if_modified(|current| {
            // Stopped is final: a late "live" from the consumer task must not reopen the feed.
            let changed = *current != state && *current != FeedState::Stopped;
            if changed {
                *current = state;
            }
            changed
        });
    }
}

/// One stream's position in the feed.
pub struct Subscription {
    alerts: broadcast::Receiver<Arc<v1::Alert>>,
    state: watch::Receiver<FeedState>,
    _open: OpenStream,
}

impl Subscription {
    /// The next alert, in the order the feed received them. Errors end the stream: the
    /// client fell behind ([`QueryError::StreamLagged`]) or the feed stopped.
    pub async fn next(&mut self) -> Result<Arc<v1::Alert>, QueryError> {
        let stopped = || QueryError::AlertFeedUnavailable("has stopped: the server is shutting down");
        loop {
            if *self.state.borrow_and_update() == FeedState::Stopped {
                return Err(stopped());
            }
            tokio::select! {
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return Err(stopped());
                    }
                }
                received = self.alerts.recv() => {
                    return match received {
                        Ok(alert) => Ok(alert),
                        Err(broadcast::error::RecvError::Lagged(skipped)) => {
                            AlertFeedMetrics::stream_lagged(skipped);
                            Err(QueryError::StreamLagged { skipped })
                        }
                        Err(broadcast::error::RecvError::Closed) => Err(stopped()),
                    };
                }
            }
        }
    }
}

/// The consuming side: one `StreamConsumer` feeding an [`AlertFeed`].
pub struct FeedConsumer {
    consumer: Arc<StreamConsumer>,
    codec: Codec,
    feed: AlertFeed,
}

impl FeedConsumer {
    /// Creates the consumer (nothing connects until [`FeedConsumer::run`]).
    pub fn new(kafka: &sm_kafka::KafkaConfig, feed: AlertFeed) -> Result<Self, crate::ServeError> {
        let consumer: StreamConsumer = kafka
            .consumer_config(GROUP)
            // If an assigned offset is ever out of range (retention deleted it), jump to the
            // end: replaying old alerts as if they were new would be worse than a gap.
            .set("auto.offset.reset", "latest")
            // Statistics only feed the agents' lag metric; the default context would log them.
            .set("statistics.interval.ms", "0")
            .create()
            .map_err(crate::ServeError::Consumer)?;
        Ok(Self { consumer: Arc::new(consumer), codec: Codec::embedded()?, feed })
    }

    /// Assigns at the end of both topics (retrying with backoff until the brokers and topics
    /// are there), marks the feed live, then passes every new alert on. Runs until the task
    /// is aborted (the server does that when it stops).
    pub async fn run(self) {
        let mut backoff = START_BACKOFF_MIN;
        loop {
            match assign_at_end(self.consumer.clone()).await {
                Ok(partitions) => {
                    tracing::info!(partitions, topics = ?TOPICS, "alert feed live");
                    break;
                }
                Err(error) => {
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "alert feed not started");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(START_BACKOFF_MAX);
                }
            }
        }
        self.feed.set_live();
        loop {
            match self.consumer.recv().await {
                Ok(message) => self.pass_on(&message),
                Err(error) => {
                    AlertFeedMetrics::consumer_error(&error);
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Decodes one record and hands a live alert to the streams.
    fn pass_on(&self, message: &BorrowedMessage<'_>) {
        let Some(payload) = message.payload() else { return };
        let event = match AlertEvent::decode(&self.codec, payload, None) {
            Ok(event) => event,
            Err(error) => {
                AlertFeedMetrics::record_undecodable(message.topic(), message.partition(), message.offset(), &error);
                return;
            }
        };
        let (kind, backfill) = match &event.payload {
            AlertEvent::Anomaly(a) => ("anomaly", a.backfill),
            AlertEvent::Drift(d) => ("drift", d.backfill),
            AlertEvent::Stale(_) => ("sensor_stale", false),
            AlertEvent::Retrain(_) => ("retrain_request", false),
        };
        if backfill {
            return;
        }
        AlertFeedMetrics::alert_passed_on(kind);
        self.feed.publish(v1::Alert::from(event));
    }
}

/// Why the feed could not start yet.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("topic {0} does not exist yet (the agents or `smctl` create it)")]
    MissingTopic(&'static str),
    #[error("{0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("start task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Assigns every partition of [`TOPICS`] at its current end offset; returns how many.
async fn assign_at_end(consumer: Arc<StreamConsumer>) -> Result<usize, StartError> {
    // Metadata and watermark requests block the calling thread.
    tokio::task::spawn_blocking(move || {
        let mut assignment = TopicPartitionList::new();
        for topic in TOPICS {
            let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if partitions.is_empty() {
                return Err(StartError::MissingTopic(topic));
            }
            for partition in partitions {
                let (_, end) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
                assignment.add_partition_offset(topic, partition, Offset::Offset(end))?;
            }
        }
        consumer.assign(&assignment)?;
        Ok(assignment.count())
    })
    .await?
}

/// The feed and its consumer, as [`crate::QueryServer`] holds them.
pub fn build(
    kafka: &sm_kafka::KafkaConfig,
    settings: &QuerySettings,
) -> Result<(AlertFeed, FeedConsumer), crate::ServeError> {
    let feed = AlertFeed::new(settings.alert_stream_buffer);
    let consumer = FeedConsumer::new(kafka, feed.clone())?;
    Ok((feed, consumer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(n: i64) -> v1::Alert {
        v1::Alert {
            kind: Some(v1::alert::Kind::SensorStale(v1::SensorStale { silent_for_ms: n, ..Default::default() })),
        }
    }

    fn silent_for(alert: &v1::Alert) -> i64 {
        match &alert.kind {
            Some(v1::alert::Kind::SensorStale(s)) => s.silent_for_ms,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn streams_open_only_while_the_feed_is_live() {
        let feed = AlertFeed::new(8);
        let refused = feed.subscribe().err().unwrap();
        assert!(matches!(refused, QueryError::AlertFeedUnavailable(reason) if reason.contains("not connected")));
        feed.set_live();
        let mut subscription = feed.subscribe().unwrap();
        feed.publish(alert(1));
        feed.publish(alert(2));
        assert_eq!(silent_for(&subscription.next().await.unwrap()), 1);
        assert_eq!(silent_for(&subscription.next().await.unwrap()), 2);

        feed.stop();
        assert!(matches!(subscription.next().await, Err(QueryError::AlertFeedUnavailable(_))));
        assert!(feed.subscribe().is_err(), "no new stream once stopping");
        feed.set_live();
        assert_eq!(feed.state(), FeedState::Stopped, "stopped is final");
    }

    #[tokio::test]
    async fn a_stream_waiting_for_alerts_ends_when_the_feed_stops() {
        let feed = AlertFeed::new(8);
        feed.set_live();
        let mut subscription = feed.subscribe().unwrap();
        let waiting = tokio::spawn(async move { subscription.next().await });
        tokio::task::yield_now().await;
        feed.stop();
        let result = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(matches!(result, Err(QueryError::AlertFeedUnavailable(_))));
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_the_buffer_ends_instead_of_skipping() {
        let feed = AlertFeed::new(4);
        feed.set_live();
        let mut slow = feed.subscribe().unwrap();
        let mut fast = feed.subscribe().unwrap();
        for n in 0..6 {
            feed.publish(alert(n));
            assert_eq!(silent_for(&fast.next().await.unwrap()), n, "a reader that keeps up sees every alert");
        }
        match slow.next().await {
            Err(QueryError::StreamLagged { skipped }) => assert_eq!(skipped, 2),
            other => panic!("expected a lag error, got {:?}", other.map(|a| silent_for(&a))),
        }
    }
}
