//! The crate's one error type. Parse errors name the line and column so that a bad file can be
//! fixed by hand; artifact errors say what to do next.

use thiserror::Error;

/// Everything that can go wrong in parsing, training, prediction and artifact handling.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A data file could not be read; `line` is 1-based and counts the header.
    #[error("line {line}, column {column}: {detail}")]
    Parse { line: usize, column: String, detail: String },
    /// The training set cannot support the requested model (too few units, one class only...).
    #[error("not enough data to train: {0}")]
    NotEnoughData(String),
    /// A parameter is outside its range; the message names it.
    #[error("invalid parameter {name}: {detail}")]
    InvalidParameter { name: &'static str, detail: String },
    /// An input to a prediction is not usable (not finite, negative speed, empty history...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The tree-ensemble library refused the training data.
    #[error("training failed")]
    Training(#[source] forust_ml::errors::ForustError),
    /// The artifact bytes do not hash to the SHA-256 recorded for them.
    #[error(
        "artifact sha-256 is {actual} but {expected} was expected: the bytes were altered or truncated \
         in storage or transit; do not use them — fetch the artifact again, or retrain and register a new version"
    )]
    ChecksumMismatch { expected: String, actual: String },
    /// The bytes hash correctly but are not an artifact this version understands.
    #[error("malformed model artifact")]
    MalformedArtifact(#[source] serde_json::Error),
    /// The artifact was written by a newer format than this build reads.
    #[error("artifact format {found} is not supported (this build reads format {supported}); upgrade the reader")]
    UnsupportedFormat { found: u32, supported: u32 },
    /// The card does not describe the model it travels with.
    #[error("model card does not match the model: {0}")]
    CardMismatch(String),
    /// Serialising an artifact failed (a non-finite number in the card's metrics, for instance).
    #[error("serialising the model artifact failed")]
    Serialize(#[source] serde_json::Error),
}
