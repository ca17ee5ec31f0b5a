//! The platform's vocabulary: ids, the event envelope, event types, topic names and
//! the Avro codec that puts events on the wire.
//!
//! Layout:
//! - [`ids`]: newtypes for asset, sensor, tenant and event ids;
//! - [`time`]: event-time timestamps (microseconds since the Unix epoch, UTC);
//! - [`envelope`]: the header every event carries, and [`Envelope`] pairing it with a payload;
//! - [`alerts`]: what the analytics agents find (anomalies, stale sensors, drift, retrain requests);
//! - [`events`]: the event payloads and the [`DomainEvent`] trait that ties each to its schema;
//! - [`models`]: the model registry's events;
//! - [`identity`]: API key events (no secrets);
//! - [`topics`]: every topic name, defined once;
//! - [`codec`]: the Confluent wire format over schemas loaded from `schemas/`;
//! - [`text`]: [`quote`], to echo what someone sent inside a message without echoing 100 kB;
//! - [`units`]: sensor types, their canonical units and conversions to them.
//!
//! This crate does no I/O and knows nothing of Kafka or PostgreSQL.

pub mod alerts;
pub mod codec;
pub mod envelope;
pub mod events;
pub mod identity;
pub mod ids;
pub mod models;
pub mod predictions;
pub mod rfc3339;
pub mod roster;
pub mod text;
pub mod time;
pub mod topics;
pub mod units;
pub mod work_orders;

pub use alerts::{AlertEvent, AnomalyDetected, Contribution, DriftDetected, ModelRetrainRequested, SensorStale};
pub use codec::{Codec, CodecError, EmbeddedRegistry, SchemaId, SchemaRegistry};
pub use envelope::{Envelope, EnvelopeHeader};
pub use events::{AssetRegistered, Decode, DomainEvent, RejectedReading, SensorReading, SensorSpec, ValidatedReading};
pub use identity::{ApiKeyCreated, ApiKeyRevoked, IdentityEvent};
pub use ids::{AssetId, EventId, SensorId, TenantId};
pub use models::{ModelArchived, ModelEvent, ModelPromoted, ModelRegistered};
pub use predictions::{FailurePredicted, FeatureContribution};
pub use roster::TechnicianRegistered;
pub use text::{QUOTE_MAX_CHARS, quote, shorten};
pub use time::Timestamp;
