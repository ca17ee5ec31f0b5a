//! What the query service measures: requests by method and outcome, and their latency; and
//! the alert feed behind `StreamAlerts` (alerts received by kind, errors by code, open
//! streams, streams ended for lagging). Labels are bounded (method names, gRPC codes, alert
//! kinds, error codes), never an asset or sensor id.
//!
//! Every handler runs inside [`observe`], which also turns its [`QueryError`] into a
//! `Status` (logging it there), so a request is counted exactly once with the code the client
//! saw. A `StreamAlerts` call is counted when the stream opens (or is refused); how it ends is
//! counted by [`AlertFeedMetrics`].

use crate::error::QueryError;
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;
use tonic::{Response, Status};

struct Families {
    requests: IntCounterVec,
    refused: IntCounterVec,
    duration: HistogramVec,
    feed_alerts: IntCounterVec,
    feed_errors: IntCounterVec,
    streams_open: IntGauge,
    streams_lagged: IntCounter,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let requests = IntCounterVec::new(
            prometheus::Opts::new("sm_query_requests_total", "gRPC requests by method and status code"),
            &["method", "code"],
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            prometheus::Opts::new(
                "sm_query_requests_refused_total",
                "gRPC calls refused before reaching a handler (missing or bad credentials, missing permission), by method and code",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            prometheus::HistogramOpts::new("sm_query_request_duration_seconds", "Time to answer a gRPC request")
                .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 14).expect("valid buckets")),
            &["method"],
        )
        .expect("valid metric");
        let feed_alerts = IntCounterVec::new(
            prometheus::Opts::new(
                "sm_query_alert_feed_alerts_total",
                "Live alerts the alert feed passed on to StreamAlerts, by kind (backfill is never passed on)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let feed_errors = IntCounterVec::new(
            prometheus::Opts::new("sm_query_alert_feed_errors_total", "Records the alert feed could not use, by cause"),
            &["error_code"],
        )
        .expect("valid metric");
        let streams_open =
            IntGauge::new("sm_query_alert_streams", "StreamAlerts streams open now").expect("valid metric");
        let streams_lagged = IntCounter::new(
            "sm_query_alert_streams_lagged_total",
            "StreamAlerts streams ended with RESOURCE_EXHAUSTED because the client fell behind",
        )
        .expect("valid metric");
        // Registering twice (several servers in one test process) only fails the second time;
        // the families are process-wide either way.
        let _ = prometheus::register(Box::new(requests.clone()));
        let _ = prometheus::register(Box::new(refused.clone()));
        let _ = prometheus::register(Box::new(duration.clone()));
        let _ = prometheus::register(Box::new(feed_alerts.clone()));
        let _ = prometheus::register(Box::new(feed_errors.clone()));
        let _ = prometheus::register(Box::new(streams_open.clone()));
        let _ = prometheus::register(Box::new(streams_lagged.clone()));
        Families { requests, refused, duration, feed_alerts, feed_errors, streams_open, streams_lagged }
    })
}

/// Counts a call the auth layer refused. The method label is the RPC's name when it is one
/// of ours, else `other`, so made-up paths cannot grow the label set.
pub fn refused(path: &str, code: tonic::Code) {
    let method = match crate::auth::PERMISSIONS.iter().find(|(p, _)| *p == path) {
        Some((p, _)) => p.rsplit('/').next().unwrap_or("other"),
        None => "other",
    };
    families().refused.with_label_values(&[method, code_label(code)]).inc();
}

/// Runs one request handler, counts and times it, and converts its error.
pub async fn observe<T>(
    method: &'static str,
    handler: impl Future<Output = Result<T, QueryError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = handler.await.map(Response::new).map_err(Status::from);
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    let families = families();
    families.duration.with_label_values(&[method]).observe(started.elapsed().as_secs_f64());
    families.requests.with_label_values(&[method, code_label(code)]).inc();
    result
}

/// What happens to the alert feed and its streams: each method logs (where worth a line) and
/// counts together, so a log line and its counter never disagree.
pub struct AlertFeedMetrics;

impl AlertFeedMetrics {
    /// A live alert went out to the streams.
    pub fn alert_passed_on(kind: &'static str) {
        families().feed_alerts.with_label_values(&[kind]).inc();
    }

    /// A record of an alert topic could not be decoded; the feed skips it (the projector
    /// dead-letters the same record, so it is not lost).
    pub fn record_undecodable(topic: &str, partition: i32, offset: i64, error: &sm_domain::CodecError) {
        tracing::warn!(topic, partition, offset, reason_code = error.reason_code(), error = %error, "alert record undecodable; skipped");
        families().feed_errors.with_label_values(&[error.reason_code()]).inc();
    }

    /// The consumer reported an error; librdkafka retries by itself.
    pub fn consumer_error(error: &rdkafka::error::KafkaError) {
        tracing::warn!(error = %error, "alert feed consumer error");
        families().feed_errors.with_label_values(&["consumer"]).inc();
    }

    /// A stream opened; the returned guard counts it as open until dropped.
    pub fn stream_opened() -> OpenStream {
        families().streams_open.inc();
        OpenStream(())
    }

    /// A client fell `skipped` alerts behind and its stream was ended.
    pub fn stream_lagged(skipped: u64) {
        tracing::warn!(skipped, "alert stream fell behind; ended with resource_exhausted");
        families().streams_lagged.inc();
    }
}

/// Counts one open `StreamAlerts` stream in `sm_query_alert_streams` while it lives.
#[derive(Debug)]
pub struct OpenStream(());

impl Drop for OpenStream {
    fn drop(&mut self) {
        families().streams_open.dec();
    }
}

/// Lower-case code names, as the gRPC spec spells them.
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        InvalidArgument => "invalid_argument",
        NotFound => "not_found",
        FailedPrecondition => "failed_precondition",
        DataLoss => "data_loss",
        ResourceExhausted => "resource_exhausted",
        Unavailable => "unavailable",
        Internal => "internal",
        Cancelled => "cancelled",
        DeadlineExceeded => "deadline_exceeded",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_each_request_once_with_its_code() {
        let before = families().requests.with_label_values(&["Test", "invalid_argument"]).get();
        let result = observe::<()>("Test", async { Err(QueryError::invalid("f", "bad")) }).await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(families().requests.with_label_values(&["Test", "invalid_argument"]).get(), before + 1);
        assert!(observe("Test", async { Ok(5) }).await.is_ok());
    }

    #[test]
    fn open_streams_are_counted_while_their_guard_lives() {
        let guard = AlertFeedMetrics::stream_opened();
        let during = families().streams_open.get();
        assert!(during >= 1);
        drop(guard);
        // Other tests may open streams meanwhile; this guard's own count is gone.
        assert!(families().streams_open.get() <= during);
    }
}
