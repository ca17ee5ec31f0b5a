//! The service's one error type, and the one place it becomes a gRPC [`Status`].
//!
//! Few codes, each telling the client what to do: `INVALID_ARGUMENT` (fix the request; the
//! message names the field), `NOT_FOUND`, `FAILED_PRECONDITION` (the data or state needed is
//! not there: change the window, or fix the model version first), `DATA_LOSS` (a stored model
//! artifact does not match its recorded SHA-256: it must not be served), `UNAVAILABLE` (retry
//! with backoff), `RESOURCE_EXHAUSTED` (an alert stream fell behind: reconnect) and, for bugs
//! only, `INTERNAL`. Database, object-store and broker errors are logged in full here and reach
//! the client as a short message: their text can hold table names, addresses or SQL.
//!
//! What the client sent (an id, a name, a selector) is quoted with [`sm_domain::quote`]: at
//! most [`QUOTE_MAX_CHARS`] characters of it, so a 100 kB id is not echoed back whole.

use crate::cursor::CursorError;
use sm_domain::{QUOTE_MAX_CHARS, quote};
use sm_registry::RegistryError;
use tonic::Status;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No principal on the request: the auth layer is missing (a bug), never a client's doing.
    #[error("the request carries no authenticated principal")]
    Unauthenticated,
    /// The principal may not do this (another tenant, a platform-wide change).
    #[error("{0}")]
    PermissionDenied(String),
    /// A request field is missing or wrong.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The page token cannot be used (damaged, from another method, other filters).
    #[error("page_token {0}")]
    InvalidCursor(#[from] CursorError),
    #[error(
        "asset {} not found; it may be registered but not projected yet (reads are eventually consistent)",
        quote(.0, QUOTE_MAX_CHARS)
    )]
    AssetNotFound(String),
    #[error(
        "sensor {} has no readings and is not registered; check sensor_id (GetAsset lists an asset's sensors)",
        quote(.0, QUOTE_MAX_CHARS)
    )]
    SensorNotFound(String),
    #[error("API key {} not found in your tenant; ListKeys shows them", quote(.0, QUOTE_MAX_CHARS))]
    KeyNotFound(String),
    /// A time window of an on-demand check holds no readings of the sensor.
    #[error(
        "the {window} window [{from}, {to}) holds no readings of sensor {sensor}; move or widen it ({window}_from, {window}_to)",
        from = crate::args::display_time(*.from_micros),
        to = crate::args::display_time(*.to_micros),
        sensor = quote(.sensor_id, QUOTE_MAX_CHARS)
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
    /// The model registry refused a request or could not be read (unknown model, archived
    /// version, altered artifact, database or object store down, ...).
    #[error("model registry: {0}")]
    Registry(#[from] RegistryError),
    /// A version's artifact bytes were fetched but `sm_models::load` refused them.
    #[error("the artifact of {name} version {version}: {source}")]
    UnreadableArtifact {
        name: String,
        version: u32,
        #[source]
        source: sm_models::ModelError,
    },
    /// A registry command was written, but its event was not acknowledged by the broker.
    #[error("announcing a registry change: {0}")]
    Announce(#[from] sm_kafka::AnnounceError),
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
            QueryError::AssetNotFound(_) | QueryError::SensorNotFound(_) | QueryError::KeyNotFound(_) => {
                Status::not_found(error.to_string())
            }
            QueryError::Unauthenticated => Status::unauthenticated(error.to_string()),
            QueryError::PermissionDenied(_) => Status::permission_denied(error.to_string()),
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
            QueryError::Registry(source) => registry_status(source),
            QueryError::UnreadableArtifact { name, version, source } => match source {
                sm_models::ModelError::ChecksumMismatch { .. } => {
                    tracing::error!(model = %name, version, error = %source, "model artifact altered; not served");
                    Status::data_loss(format!(
                        "the artifact of {name} version {version} does not match its recorded SHA-256: {source}"
                    ))
                }
                source => {
                    tracing::error!(model = %name, version, error = %source, "model artifact unreadable");
                    Status::failed_precondition(format!(
                        "the artifact of {name} version {version} cannot be read by this build ({source}); \
                         upgrade the service, or archive this version and register a new one"
                    ))
                }
            },
            QueryError::Announce(source) => {
                tracing::error!(error = %source, "registry change written but not announced");
                Status::unavailable(
                    "event store unavailable: the registry was updated but its event may not have been published; \
                     retrying is safe (the command is idempotent and publishes the event again)",
                )
            }
        }
    }
}

/// Why `name` is not a model name. The registry's own message says the same but quotes the
/// name whole.
pub(crate) fn invalid_model_name(name: &str) -> String {
    format!(
        "model name {} is not valid: use 1 to 100 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        quote(name, QUOTE_MAX_CHARS)
    )
}

/// Why `text` is not a version selector (the registry's message quotes it whole).
pub(crate) fn invalid_selector(text: &str) -> String {
    format!(
        "invalid version selector {}: use auto, production, staging or a version number (1, 2, ...)",
        quote(text, QUOTE_MAX_CHARS)
    )
}

/// The registry's errors: the client's mistakes with the registry's own message (it says
/// what to do), infrastructure with a short one.
fn registry_status(error: RegistryError) -> Status {
    match error {
        // The client's own text: quoted short here, as the registry's message has it whole.
        RegistryError::InvalidName(name) => Status::invalid_argument(invalid_model_name(&name)),
        RegistryError::InvalidSelector(text) => Status::invalid_argument(invalid_selector(&text)),
        RegistryError::UnknownModel(_) | RegistryError::UnknownVersion { .. } | RegistryError::NoVersion { .. } => {
            Status::not_found(error.to_string())
        }
        RegistryError::Archived { .. }
        | RegistryError::KindMismatch { .. }
        | RegistryError::VersionConflict { .. }
        | RegistryError::ArtifactMissing { .. }
        | RegistryError::ForeignArtifact { .. } => Status::failed_precondition(error.to_string()),
        RegistryError::ArtifactAltered { .. } => {
            tracing::error!(error = %error, "model artifact altered; not served");
            Status::data_loss(format!("the model artifact does not match its recorded SHA-256: {error}"))
        }
        RegistryError::ObjectStore { .. } => {
            tracing::error!(error = %error, "artifact store request failed");
            Status::unavailable("artifact store unavailable; retry later")
        }
        RegistryError::NotMigrated(_) => {
            tracing::error!(error = %error, "model registry not migrated");
            Status::unavailable(error.to_string())
        }
        RegistryError::Storage(_) => {
            tracing::error!(error = %error, "model registry query failed");
            Status::unavailable("model registry unavailable; retry later")
        }
        RegistryError::InvalidConfig(_) | RegistryError::InvalidVersion(_) => {
            tracing::error!(error = %error, "model registry record unusable");
            Status::internal("the model registry holds a record this build cannot use")
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
    fn registry_errors_map_to_what_the_client_should_do() {
        let cases = [
            (RegistryError::InvalidSelector("latest".into()), Code::InvalidArgument),
            (RegistryError::InvalidName("Bad Name".into()), Code::InvalidArgument),
            (RegistryError::UnknownModel("m".into()), Code::NotFound),
            (RegistryError::UnknownVersion { name: "m".into(), version: 9 }, Code::NotFound),
            (RegistryError::Archived { name: "m".into(), version: 1 }, Code::FailedPrecondition),
            (RegistryError::ArtifactMissing { location: "file:///x/m/v1/model.json".into() }, Code::FailedPrecondition),
            (RegistryError::Storage(sm_storage::StorageError::Pool("10.1.2.3".into())), Code::Unavailable),
        ];
        for (error, code) in cases {
            let status = Status::from(QueryError::from(error));
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(!status.message().contains("10.1.2.3"));
        }
        let altered = RegistryError::ArtifactAltered {
            location: "file:///x/m/v1/model.json".into(),
            expected: "aa".into(),
            actual: "bb".into(),
            expected_size: 3,
            actual_size: 3,
        };
        let status = Status::from(QueryError::from(altered));
        assert_eq!(status.code(), Code::DataLoss);
        assert!(status.message().contains("does not match its recorded SHA-256"), "{}", status.message());
    }

    #[test]
    fn an_artifact_that_fails_its_checksum_is_data_loss_and_says_so() {
        let source = sm_models::ModelError::ChecksumMismatch { expected: "aa".into(), actual: "bb".into() };
        let status = Status::from(QueryError::UnreadableArtifact { name: "m".into(), version: 2, source });
        assert_eq!(status.code(), Code::DataLoss);
        assert!(status.message().contains("m version 2 does not match its recorded SHA-256"), "{}", status.message());
        let source = sm_models::ModelError::UnsupportedFormat { found: 2, supported: 1 };
        let status = Status::from(QueryError::UnreadableArtifact { name: "m".into(), version: 2, source });
        assert_eq!(status.code(), Code::FailedPrecondition);
    }

    #[test]
    fn ids_the_client_sent_are_quoted_short() {
        let status = Status::from(QueryError::AssetNotFound("p-1".into()));
        assert!(status.message().starts_with("asset \"p-1\" not found"), "{}", status.message());
        let huge = "x".repeat(100_000);
        let statuses = [
            Status::from(QueryError::AssetNotFound(huge.clone())),
            Status::from(QueryError::SensorNotFound(huge.clone())),
            Status::from(QueryError::EmptyWindow { window: "current", sensor_id: huge, from_micros: 1, to_micros: 2 }),
        ];
        for status in statuses {
            assert!(status.message().len() < 400, "{} bytes", status.message().len());
            assert!(status.message().contains("99936 bytes cut"), "{}", status.message());
        }
    }

    #[test]
    fn a_lagging_stream_ends_with_resource_exhausted() {
        let status = Status::from(QueryError::StreamLagged { skipped: 7 });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("behind by 7"), "{}", status.message());
    }
}
