//! What the query service measures: requests by method and outcome, and their latency.
//! Labels are bounded (method names and gRPC codes), never an asset or sensor id.
//!
//! Every handler runs inside [`observe`], which also turns its [`QueryError`] into a
//! `Status` (logging it there), so a request is counted exactly once with the code the client
//! saw.

use crate::error::QueryError;
use prometheus::{HistogramVec, IntCounterVec};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;
use tonic::{Response, Status};

struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let requests = IntCounterVec::new(
            prometheus::Opts::new("sm_query_requests_total", "gRPC requests by method and status code"),
            &["method", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            prometheus::HistogramOpts::new("sm_query_request_duration_seconds", "Time to answer a gRPC request")
                .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 14).expect("valid buckets")),
            &["method"],
        )
        .expect("valid metric");
        // Registering twice (several servers in one test process) only fails the second time;
        // the families are process-wide either way.
        let _ = prometheus::register(Box::new(requests.clone()));
        let _ = prometheus::register(Box::new(duration.clone()));
        Families { requests, duration }
    })
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

/// Lower-case code names, as the gRPC spec spells them.
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        InvalidArgument => "invalid_argument",
        NotFound => "not_found",
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
}
