//! The service's one error type, and the one place it becomes a gRPC [`Status`].
//!
//! Few codes, each telling the client what to do: `INVALID_ARGUMENT` (fix the request; the
//! message names the field), `NOT_FOUND`, `UNAVAILABLE` (retry with backoff) and, for bugs
//! only, `INTERNAL`. Database and broker errors are logged in full here and reach the client
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
            QueryError::AssetNotFound(_) => Status::not_found(error.to_string()),
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
    }
}
