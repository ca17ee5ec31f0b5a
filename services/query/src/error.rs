//! The service's one error type, and the one place it becomes a gRPC [`Status`].
//!
//! Few codes, each telling the client what to do: `INVALID_ARGUMENT` (fix the request; the
//! message names the field), `NOT_FOUND`, `FAILED_PRECONDITION` (the data needed is not there:
//! change the window), `UNAVAILABLE` (retry with backoff), `RESOURCE_EXHAUSTED` (an alert
//! stream fell behind: reconnect) and, for bugs only, `INTERNAL`. Database and broker errors are logged in full here and reach the client
//! as a short message: their text can hold table names, addresses or SQL.

use crate::cursor::CursorError;
use tonic::Status;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A request field is missing or wrong.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The page token cannot be used (damaged, from another method, other filters).
    #[error("page_token {0}")]
    InvalidCursor(#[from] CursorError),
    #[error("asset {0:?} not found; it may be registered but not projected yet (reads are eventually consistent)")]
    AssetNotFound(String),
    #[error("sensor {0:?} has no readings and is not registered; check sensor_id (GetAsset lists an asset's sensors)")]
    SensorNotFound(String),
    /// A time window of an on-demand check holds no readings of the sensor.
    #[error(
        "the {window} window [{from}, {to}) holds no readings of sensor {sensor_id:?}; move or widen it ({window}_from, {window}_to)",
        from = crate::args::display_time(*.from_micros),
        to = crate::args::display_time(*.to_micros)
    )]
    EmptyWindow { window: &'static str, sensor_id: String, from_micros: i64, to_micros: i64 },
    /// The alert feed (the Kafka consumer behind `StreamAlerts`) is not live.
    #[error("alert feed {0}; reconnect with backoff")]
    AlertFeedUnavailable(&'static str),
    /// A `StreamAlerts` subscriber fell further behind than the buffer holds.
    #[error(
        "alert stream fell behind by {skipped} alerts and was ended; reconnect, and fill the gap with ListAnomalies and ListDrift"
    )]
    StreamLagged { skipped: u64 },
    /// A projection row holds what the projector never writes: a bug, or a hand-edited row.
    #[error("corrupt row in {table}: {reason}")]
    CorruptRow { table: &'static str, reason: String },
    /// A blocking analysis task panicked or was cancelled: a bug.
    #[error("analysis task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// PostgreSQL unreachable, or a query failed.
    #[error("projection store: {0}")]
    Database(#[from] sm_storage::StorageError),
    /// The broker did not acknowledge an event in time.
    #[error("publishing to {topic}: {source}")]
    Publish {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// An event could not be encoded: a bug (the codec accepts every valid payload).
    #[error("encoding the event: {0}")]
    Encode(#[from] sm_domain::CodecError),
}

impl QueryError {
    /// Shorthand for [`QueryError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Database(error.into())
    }
}

impl From<deadpool_postgres::PoolError> for QueryError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Database(error.into())
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Status {
        match error {
            QueryError::InvalidArgument { .. } | QueryError::InvalidCursor(_) => {
                Status::invalid_argument(error.to_string())
            }
            QueryError::AssetNotFound(_) | QueryError::SensorNotFound(_) => Status::not_found(error.to_string()),
            QueryError::EmptyWindow { .. } => Status::failed_precondition(error.to_string()),
            QueryError::AlertFeedUnavailable(_) => Status::unavailable(error.to_string()),
            QueryError::StreamLagged { .. } => Status::resource_exhausted(error.to_string()),
            QueryError::CorruptRow { table, reason } => {
                tracing::error!(table, error = %reason, "cannot read a projection row");
                Status::internal("a stored row could not be read")
            }
            QueryError::Task(source) => {
                tracing::error!(error = %source, "analysis task failed");
                Status::internal("the analysis failed")
            }
            QueryError::Database(source) => {
                tracing::error!(error = %source, "projection query failed");
                Status::unavailable("projection store unavailable; retry later")
            }
            QueryError::Publish { topic, source } => {
                tracing::error!(topic, error = %source, "event not acknowledged by the broker");
                Status::unavailable(
                    "event store unavailable: the registration may or may not have been published; retrying is safe",
                )
            }
            QueryError::Encode(source) => {
                tracing::error!(error = %source, "cannot encode event");
                Status::internal("cannot encode the event")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn invalid_arguments_name_the_field() {
        let status = Status::from(QueryError::invalid("page_size", "at most 1000"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "page_size: at most 1000");
        let status = Status::from(QueryError::from(CursorError::Checksum));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("page_token is damaged"), "{}", status.message());
    }

    #[test]
    fn database_errors_are_unavailable_without_details() {
        let source = sm_storage::StorageError::Pool("secret host 10.1.2.3 refused".into());
        let status = Status::from(QueryError::Database(source));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.1.2.3"));
    }

    #[test]
    fn unknown_assets_are_not_found() {
        assert_eq!(Status::from(QueryError::AssetNotFound("p-1".into())).code(), Code::NotFound);
        assert_eq!(Status::from(QueryError::SensorNotFound("p-1.t".into())).code(), Code::NotFound);
    }

    #[test]
    fn empty_windows_fail_a_precondition_and_say_which_fields_to_change() {
        let error = QueryError::EmptyWindow { window: "current", sensor_id: "s".into(), from_micros: 1, to_micros: 2 };
        let status = Status::from(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("current_from, current_to"), "{}", status.message());
    }

    #[test]
    fn a_lagging_stream_ends_with_resource_exhausted() {
        let status = Status::from(QueryError::StreamLagged { skipped: 7 });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("behind by 7"), "{}", status.message());
    }
}
