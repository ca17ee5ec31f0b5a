//! The wire format of every event: Confluent framing (magic byte 0, 4-byte big-endian schema
//! id, Avro binary body) over schemas loaded from `schemas/`.
//!
//! Schema ids come from a [`SchemaRegistry`]. The built-in [`EmbeddedRegistry`] compiles
//! `schemas/` into the binary and derives each id from the schema's Avro Parsing Canonical
//! Form fingerprint (CRC-64-AVRO, lower 31 bits), so every build and every service agrees on
//! the ids without a registry server. A remote Confluent-compatible registry can implement the
//! same trait later.
//!
//! On the wire an event is one Avro record `{header: EnvelopeHeader, payload: <Payload>}`: the
//! envelope schema and each payload schema are separate files, composed here.
//!
//! The record's `content-type` header picks the form: none is Confluent Avro,
//! `application/json` the JSON form of the few types that have one (gateway readings); any
//! other value is refused (`unsupported_content_type`) rather than guessed at.

use crate::text::{QUOTE_MAX_CHARS, quote, shorten};
use crate::{DomainEvent, Envelope};
use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::schema_compatibility::SchemaCompatibility;
use std::collections::HashMap;
use std::sync::Arc;

/// Header value marking the plain-JSON form of an event.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The `content-type` values a record may carry, as error messages name them.
pub const SUPPORTED_CONTENT_TYPES: &str =
    "no content-type header (Confluent Avro), or application/json (the gateway JSON form of SensorReading)";

/// How much of a JSON parser's message a dead letter keeps (it can quote the input).
const JSON_ERROR_MAX_CHARS: usize = 200;

/// Every schema file, by folder and version. `schemas/` is the source of truth; a test fails if
/// a file there is missing from this list.
pub const SCHEMA_FILES: &[SchemaFile] = &[
    SchemaFile::new("envelope", 1, include_str!("../../../schemas/envelope/v1.avsc")),
    SchemaFile::new("sensor_reading", 1, include_str!("../../../schemas/sensor_reading/v1.avsc")),
    SchemaFile::new("validated_reading", 1, include_str!("../../../schemas/validated_reading/v1.avsc")),
    SchemaFile::new("rejected_reading", 1, include_str!("../../../schemas/rejected_reading/v1.avsc")),
    SchemaFile::new("rejected_reading", 2, include_str!("../../../schemas/rejected_reading/v2.avsc")),
    SchemaFile::new("asset_registered", 1, include_str!("../../../schemas/asset_registered/v1.avsc")),
    SchemaFile::new("anomaly_detected", 1, include_str!("../../../schemas/anomaly_detected/v1.avsc")),
    SchemaFile::new("sensor_stale", 1, include_str!("../../../schemas/sensor_stale/v1.avsc")),
    SchemaFile::new("drift_detected", 1, include_str!("../../../schemas/drift_detected/v1.avsc")),
    SchemaFile::new("model_retrain_requested", 1, include_str!("../../../schemas/model_retrain_requested/v1.avsc")),
    SchemaFile::new("model_registered", 1, include_str!("../../../schemas/model_registered/v1.avsc")),
    SchemaFile::new("model_promoted", 1, include_str!("../../../schemas/model_promoted/v1.avsc")),
    SchemaFile::new("model_archived", 1, include_str!("../../../schemas/model_archived/v1.avsc")),
    SchemaFile::new("failure_predicted", 1, include_str!("../../../schemas/failure_predicted/v1.avsc")),
    SchemaFile::new("api_key_created", 1, include_str!("../../../schemas/api_key_created/v1.avsc")),
    SchemaFile::new("api_key_revoked", 1, include_str!("../../../schemas/api_key_revoked/v1.avsc")),
    SchemaFile::new("work_order_proposed", 1, include_str!("../../../schemas/work_order_proposed/v1.avsc")),
    SchemaFile::new("work_order_updated", 1, include_str!("../../../schemas/work_order_updated/v1.avsc")),
    SchemaFile::new("work_order_approved", 1, include_str!("../../../schemas/work_order_approved/v1.avsc")),
    SchemaFile::new("work_order_rejected", 1, include_str!("../../../schemas/work_order_rejected/v1.avsc")),
    SchemaFile::new("work_order_deferred", 1, include_str!("../../../schemas/work_order_deferred/v1.avsc")),
    SchemaFile::new("work_order_scheduled", 1, include_str!("../../../schemas/work_order_scheduled/v1.avsc")),
    SchemaFile::new("work_order_rescheduled", 1, include_str!("../../../schemas/work_order_rescheduled/v1.avsc")),
    SchemaFile::new("work_order_started", 1, include_str!("../../../schemas/work_order_started/v1.avsc")),
    SchemaFile::new("work_order_completed", 1, include_str!("../../../schemas/work_order_completed/v1.avsc")),
    SchemaFile::new("work_order_cancelled", 1, include_str!("../../../schemas/work_order_cancelled/v1.avsc")),
    SchemaFile::new("work_order_superseded", 1, include_str!("../../../schemas/work_order_superseded/v1.avsc")),
    SchemaFile::new("command_rejected", 1, include_str!("../../../schemas/command_rejected/v1.avsc")),
    SchemaFile::new("work_order_command", 1, include_str!("../../../schemas/work_order_command/v1.avsc")),
    SchemaFile::new("technician_registered", 1, include_str!("../../../schemas/technician_registered/v1.avsc")),
];

/// The folder holding the envelope header schema.
pub const ENVELOPE_SCHEMA: &str = "envelope";

/// One committed schema version (`schemas/<folder>/v<version>.avsc`).
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    pub folder: &'static str,
    pub version: u32,
    pub text: &'static str,
}

impl SchemaFile {
    const fn new(folder: &'static str, version: u32, text: &'static str) -> Self {
        Self { folder, version, text }
    }
}

/// A Confluent schema id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaId(pub u32);

/// A full event schema (envelope header + one payload version) known to the registry.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    pub id: SchemaId,
    /// The payload's schema folder, e.g. `sensor_reading`.
    pub subject: &'static str,
    pub envelope_version: u32,
    pub payload_version: u32,
    pub schema: Schema,
}

/// Errors of encoding and decoding. Each has a stable [`CodecError::reason_code`] used as the
/// dead-letter reason.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "the record has no value (0 bytes): a tombstone or an empty message, not an event; send a Confluent Avro record"
    )]
    EmptyRecord,
    #[error(
        "record is not in the Confluent Avro wire format (expected magic byte 0 and a 4-byte schema id, got {len} bytes starting with {first:#04x})"
    )]
    NotConfluentAvro { len: usize, first: u8 },
    /// `found` is the header value, already quoted and shortened.
    #[error("content-type {found} is not supported; send {SUPPORTED_CONTENT_TYPES}")]
    UnsupportedContentType { found: String },
    #[error("schema id {0} is not in the registry; is the producer newer than this service? deploy the schema first")]
    UnknownSchemaId(u32),
    #[error("record has schema `{found}` but `{expected}` was expected on this topic")]
    WrongEventType { expected: &'static str, found: &'static str },
    /// The schema fits, but the envelope names another event type. `found` is quoted.
    #[error(
        "the envelope's event_type is {found} but the record is a `{expected}`; the producer mislabelled it, or sent it to the wrong topic"
    )]
    HeaderEventType { expected: &'static str, found: String },
    #[error("avro body does not match schema id {id}: {source}")]
    MalformedAvro {
        id: u32,
        #[source]
        source: apache_avro::Error,
    },
    #[error("{extra} bytes left after the avro record of schema id {id}: wrong schema id or corrupted record")]
    TrailingBytes { id: u32, extra: usize },
    #[error("invalid json reading: {0}")]
    InvalidJson(String),
    #[error(
        "content-type application/json is not supported here: {0} has no JSON form; send Confluent Avro with no content-type header"
    )]
    NoJsonForm(&'static str),
    #[error("no schema for `{0}` in schemas/: add schemas/{0}/v1.avsc")]
    NoSchema(&'static str),
    #[error("schema file schemas/{folder}/v{version}.avsc is invalid: {detail}")]
    InvalidSchemaFile { folder: &'static str, version: u32, detail: String },
    #[error("event does not fit its schema `{subject}`: {source}")]
    Encode {
        subject: &'static str,
        #[source]
        source: apache_avro::Error,
    },
}

impl CodecError {
    /// Low-cardinality code for metrics and dead letters.
    pub fn reason_code(&self) -> &'static str {
        match self {
            CodecError::EmptyRecord => "empty_record",
            CodecError::NotConfluentAvro { .. } => "not_avro",
            CodecError::UnknownSchemaId(_) => "unknown_schema",
            CodecError::WrongEventType { .. } | CodecError::HeaderEventType { .. } => "wrong_event_type",
            CodecError::MalformedAvro { .. } | CodecError::TrailingBytes { .. } => "malformed_avro",
            CodecError::InvalidJson(_) => "invalid_json",
            CodecError::UnsupportedContentType { .. } | CodecError::NoJsonForm(_) => "unsupported_content_type",
            CodecError::NoSchema(_) | CodecError::InvalidSchemaFile { .. } => "schema_error",
            CodecError::Encode { .. } => "encode_failed",
        }
    }
}

/// Where schema ids come from.
pub trait SchemaRegistry: Send + Sync {
    /// The schema new events of `subject` are written with (the newest version).
    fn writer(&self, subject: &'static str) -> Result<&RegisteredSchema, CodecError>;
    /// Any registered schema, to read records written with older versions.
    fn by_id(&self, id: SchemaId) -> Result<&RegisteredSchema, CodecError>;
}

/// The registry compiled from `schemas/`: deterministic ids, no server.
#[derive(Debug)]
pub struct EmbeddedRegistry {
    by_id: HashMap<SchemaId, RegisteredSchema>,
    writer: HashMap<&'static str, SchemaId>,
}

impl EmbeddedRegistry {
    /// Composes every envelope version with every payload version. The newest of each is the
    /// writer schema; the others stay readable.
    pub fn load() -> Result<Self, CodecError> {
        Self::from_files(SCHEMA_FILES)
    }

    /// As [`EmbeddedRegistry::load`], from an explicit list (tests use this).
    pub fn from_files(files: &[SchemaFile]) -> Result<Self, CodecError> {
        let parse_json = |f: &SchemaFile| {
            serde_json::from_str::<serde_json::Value>(f.text).map_err(|e| CodecError::InvalidSchemaFile {
                folder: f.folder,
                version: f.version,
                detail: e.to_string(),
            })
        };
        let envelopes: Vec<_> = files.iter().filter(|f| f.folder == ENVELOPE_SCHEMA).collect();
        let newest_envelope = envelopes.iter().map(|f| f.version).max().ok_or(CodecError::NoSchema(ENVELOPE_SCHEMA))?;
        let mut registry = Self { by_id: HashMap::new(), writer: HashMap::new() };
        let mut newest_payload: HashMap<&'static str, u32> = HashMap::new();
        for payload in files.iter().filter(|f| f.folder != ENVELOPE_SCHEMA) {
            let entry = newest_payload.entry(payload.folder).or_insert(payload.version);
            *entry = (*entry).max(payload.version);
        }
        for payload in files.iter().filter(|f| f.folder != ENVELOPE_SCHEMA) {
            let payload_json = parse_json(payload)?;
            for envelope in &envelopes {
                let composed = compose(&parse_json(envelope)?, &payload_json);
                let schema = Schema::parse_str(&composed).map_err(|e| CodecError::InvalidSchemaFile {
                    folder: payload.folder,
                    version: payload.version,
                    detail: e.to_string(),
                })?;
                let id = schema_id(&schema);
                if let Some(other) = registry.by_id.get(&id)
                    && other.schema.canonical_form() != schema.canonical_form()
                {
                    return Err(CodecError::InvalidSchemaFile {
                        folder: payload.folder,
                        version: payload.version,
                        detail: format!("schema id {} collides with {}", id.0, other.subject),
                    });
                }
                if envelope.version == newest_envelope && newest_payload[payload.folder] == payload.version {
                    registry.writer.insert(payload.folder, id);
                }
                registry.by_id.insert(
                    id,
                    RegisteredSchema {
                        id,
                        subject: payload.folder,
                        envelope_version: envelope.version,
                        payload_version: payload.version,
                        schema,
                    },
                );
            }
        }
        Ok(registry)
    }

    /// Every registered schema (for tests and `smctl`).
    pub fn schemas(&self) -> impl Iterator<Item = &RegisteredSchema> {
        self.by_id.values()
    }
}

impl SchemaRegistry for EmbeddedRegistry {
    fn writer(&self, subject: &'static str) -> Result<&RegisteredSchema, CodecError> {
        let id = self.writer.get(subject).ok_or(CodecError::NoSchema(subject))?;
        Ok(&self.by_id[id])
    }

    fn by_id(&self, id: SchemaId) -> Result<&RegisteredSchema, CodecError> {
        self.by_id.get(&id).ok_or(CodecError::UnknownSchemaId(id.0))
    }
}

/// `{header: <envelope>, payload: <payload>}` as one named record.
fn compose(envelope: &serde_json::Value, payload: &serde_json::Value) -> String {
    let name = payload.get("name").and_then(|n| n.as_str()).unwrap_or("Payload");
    serde_json::json!({
        "type": "record",
        "name": format!("{name}Event"),
        "namespace": "sm.v1.event",
        "fields": [
            {"name": "header", "type": envelope},
            {"name": "payload", "type": payload},
        ]
    })
    .to_string()
}

/// Lower 31 bits of the CRC-64-AVRO fingerprint of the Parsing Canonical Form: stable across
/// builds and positive, as Confluent ids are.
fn schema_id(schema: &Schema) -> SchemaId {
    let fingerprint = schema.fingerprint::<Rabin>().bytes;
    let mut low = [0u8; 4];
    low.copy_from_slice(&fingerprint[..4]); // little-endian: the low-order bytes come first
    SchemaId(u32::from_le_bytes(low) & 0x7fff_ffff)
}

/// Checks that data written with `older` can be read with `newer` (Avro backward
/// compatibility), as schema evolution inside one topic version requires.
pub fn backward_compatible(older: &Schema, newer: &Schema) -> Result<(), String> {
    SchemaCompatibility::can_read(older, newer).map_err(|e| e.to_string())
}

/// Encodes and decodes events in the Confluent wire format.
#[derive(Clone)]
pub struct Codec {
    registry: Arc<dyn SchemaRegistry>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

impl Codec {
    pub fn new(registry: Arc<dyn SchemaRegistry>) -> Self {
        Self { registry }
    }

    /// A codec over the schemas compiled into this binary.
    pub fn embedded() -> Result<Self, CodecError> {
        Ok(Self::new(Arc::new(EmbeddedRegistry::load()?)))
    }

    /// Confluent-framed Avro bytes of `event`.
    pub fn encode<T: DomainEvent>(&self, event: &Envelope<T>) -> Result<Vec<u8>, CodecError> {
        self.encode_ref::<T, _>(event)
    }

    /// As [`Codec::encode`], for anything that serialises like an `Envelope<T>` (e.g. one
    /// holding borrowed parts).
    pub fn encode_ref<T: DomainEvent, E: serde::Serialize>(&self, event: &E) -> Result<Vec<u8>, CodecError> {
        let registered = self.registry.writer(T::SCHEMA)?;
        let mut bytes = Vec::with_capacity(160);
        bytes.push(0);
        bytes.extend_from_slice(&registered.id.0.to_be_bytes());
        apache_avro::write_avro_datum_ref(&registered.schema, event, &mut bytes)
            .map_err(|source| CodecError::Encode { subject: T::SCHEMA, source })?;
        Ok(bytes)
    }

    /// The schema folder (`anomaly_detected`, ...) an Avro record was written with: what a
    /// topic carrying several event types dispatches on. `content_type` is the record's
    /// header, as for [`Codec::decode`]; `expected` names what the topic carries (`an
    /// anomaly or drift event`), for the error when it asks for JSON.
    pub fn subject_of(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
        expected: &'static str,
    ) -> Result<&'static str, CodecError> {
        if bytes.is_empty() {
            return Err(CodecError::EmptyRecord);
        }
        match wire_form(content_type)? {
            WireForm::Json => Err(CodecError::NoJsonForm(expected)),
            WireForm::Avro => Ok(self.registry.by_id(confluent_schema_id(bytes)?)?.subject),
        }
    }

    /// Decodes an event of type `T`. `content_type` is the record's `content-type` header:
    /// none (or an empty one) is Confluent Avro, `application/json` (parameters such as
    /// `charset` ignored) the JSON form; anything else is `unsupported_content_type`.
    ///
    /// The envelope's `event_type` must be `T`'s: a record labelled as another type is
    /// refused (`wrong_event_type`) even when its bytes fit `T`'s schema.
    pub fn decode<T: DomainEvent>(&self, bytes: &[u8], content_type: Option<&str>) -> Result<Envelope<T>, CodecError> {
        // Checked first: an empty value is a tombstone or a producer bug whatever the header says.
        if bytes.is_empty() {
            return Err(CodecError::EmptyRecord);
        }
        let event: Envelope<T> = match wire_form(content_type)? {
            WireForm::Json => match T::from_json(bytes) {
                Some(result) => result.map_err(|e| CodecError::InvalidJson(shorten(&e, JSON_ERROR_MAX_CHARS)))?,
                None => return Err(CodecError::NoJsonForm(T::EVENT_TYPE)),
            },
            WireForm::Avro => self.decode_avro(bytes)?,
        };
        if event.header.event_type != T::EVENT_TYPE {
            return Err(CodecError::HeaderEventType {
                expected: T::EVENT_TYPE,
                found: quote(&event.header.event_type, QUOTE_MAX_CHARS),
            });
        }
        Ok(event)
    }

    fn decode_avro<T: DomainEvent>(&self, bytes: &[u8]) -> Result<Envelope<T>, CodecError> {
        let id = confluent_schema_id(bytes)?;
        let written = self.registry.by_id(id)?;
        if written.subject != T::SCHEMA {
            return Err(CodecError::WrongEventType { expected: T::SCHEMA, found: written.subject });
        }
        let current = self.registry.writer(T::SCHEMA)?;
        let reader_schema = (current.id != id).then_some(&current.schema);
        let malformed = |source| CodecError::MalformedAvro { id: id.0, source };
        let mut body = &bytes[5..];
        let value = apache_avro::from_avro_datum(&written.schema, &mut body, reader_schema).map_err(malformed)?;
        if !body.is_empty() {
            return Err(CodecError::TrailingBytes { id: id.0, extra: body.len() });
        }
        apache_avro::from_value(&value).map_err(malformed)
    }
}

/// The two forms an event travels in.
enum WireForm {
    Avro,
    Json,
}

/// The form a record's `content-type` header asks for.
fn wire_form(content_type: Option<&str>) -> Result<WireForm, CodecError> {
    // `type/subtype; parameter=value`: only the media type decides, case-insensitively.
    let media_type = content_type.map_or("", |value| value.split(';').next().unwrap_or_default().trim());
    if media_type.is_empty() {
        Ok(WireForm::Avro)
    } else if media_type.eq_ignore_ascii_case(CONTENT_TYPE_JSON) {
        Ok(WireForm::Json)
    } else {
        Err(CodecError::UnsupportedContentType { found: quote(content_type.unwrap_or_default(), QUOTE_MAX_CHARS) })
    }
}

/// The schema id of a Confluent-framed record: magic byte 0, then 4 bytes big-endian.
fn confluent_schema_id(bytes: &[u8]) -> Result<SchemaId, CodecError> {
    match bytes {
        [0, a, b, c, d, ..] => Ok(SchemaId(u32::from_be_bytes([*a, *b, *c, *d]))),
        _ => Err(CodecError::NotConfluentAvro { len: bytes.len(), first: bytes.first().copied().unwrap_or(0) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        AssetId, EnvelopeHeader, EventId, RejectedReading, SensorReading, TenantId, Timestamp, ValidatedReading,
    };
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn schemas_dir() -> PathBuf {
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test")).join("../../schemas")
    }

    fn header(event_type: &str) -> EnvelopeHeader {
        let mut header = EnvelopeHeader::origin(
            event_type,
            TenantId::from("acme"),
            AssetId::from("pump-7"),
            Timestamp(1_764_000_000_123_456),
            "test",
        );
        header.causation_id = Some(EventId::new());
        header
    }

    fn round_trip<T: DomainEvent + PartialEq + std::fmt::Debug>(payload: T) {
        let codec = Codec::embedded().unwrap();
        let event = Envelope { header: header(T::EVENT_TYPE), payload };
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(bytes[0], 0, "confluent magic byte");
        let back: Envelope<T> = codec.decode(&bytes, None).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn every_event_type_round_trips_through_its_schema() {
        round_trip(SensorReading {
            sensor_id: "pump-7.temp".into(),
            value: -12.25,
            unit: "degF".into(),
            sequence: 42,
            backfill: true,
        });
        round_trip(ValidatedReading {
            sensor_id: "pump-7.temp".into(),
            sensor_type: "temperature".into(),
            value: 21.5,
            unit: "degC".into(),
            sequence: 42,
            quality_flags: vec!["late".into(), "clamped".into()],
            backfill: false,
        });
        round_trip(RejectedReading {
            original: vec![0, 159, 146, 150, 255],
            original_key: Some(b"pump-7".to_vec()),
            original_size: 5,
            original_sha256: "0".repeat(64),
            reason_code: "undecodable".into(),
            detail: "not avro".into(),
            source_topic: "sm.readings.raw.v1".into(),
            source_partition: 3,
            source_offset: 1234,
            agent: "ingestion".into(),
        });
        round_trip(crate::AssetRegistered {
            name: "Feed pump 7".into(),
            asset_type: "pump".into(),
            site: "plant-a".into(),
            sensors: vec![crate::SensorSpec {
                sensor_id: "pump-7.temperature".into(),
                sensor_type: "temperature".into(),
                unit: "degC".into(),
                min_value: -40.0,
                max_value: 150.0,
                expected_interval_ms: 1000,
            }],
        });
        round_trip(RejectedReading {
            original: vec![],
            original_key: None,
            original_size: -1,
            original_sha256: String::new(),
            reason_code: "x".into(),
            detail: String::new(),
            source_topic: "t".into(),
            source_partition: 0,
            source_offset: 0,
            agent: "a".into(),
        });
    }

    #[test]
    fn rejects_bytes_that_are_not_confluent_avro() {
        let codec = Codec::embedded().unwrap();
        let error = codec.decode::<SensorReading>(b"hello world", None).unwrap_err();
        assert_eq!(error.reason_code(), "not_avro");
        let error = codec.decode::<SensorReading>(&[0, 0, 0, 0, 1, 2], None).unwrap_err();
        assert_eq!(error.reason_code(), "unknown_schema");
    }

    /// A minimal valid reading.
    fn small_reading() -> Envelope<SensorReading> {
        Envelope::origin(
            TenantId::from("t"),
            AssetId::from("a"),
            Timestamp(1),
            "test",
            SensorReading { sensor_id: "s".into(), value: 1.0, unit: "degC".into(), sequence: 1, backfill: false },
        )
    }

    #[test]
    fn rejects_a_truncated_or_padded_record() {
        let codec = Codec::embedded().unwrap();
        let event = small_reading();
        let bytes = codec.encode(&event).unwrap();
        let error = codec.decode::<SensorReading>(&bytes[..bytes.len() - 3], None).unwrap_err();
        assert_eq!(error.reason_code(), "malformed_avro", "{error}");
        let mut padded = bytes.clone();
        padded.push(7);
        let error = codec.decode::<SensorReading>(&padded, None).unwrap_err();
        assert_eq!(error.reason_code(), "malformed_avro", "{error}");
    }

    #[test]
    fn rejects_an_event_of_another_type() {
        let codec = Codec::embedded().unwrap();
        let event = small_reading();
        let bytes = codec.encode(&event).unwrap();
        let error = codec.decode::<ValidatedReading>(&bytes, None).unwrap_err();
        assert_eq!(error.reason_code(), "wrong_event_type");
    }

    #[test]
    fn json_readings_decode_by_content_type() {
        let codec = Codec::embedded().unwrap();
        let json = br#"{"asset_id":"a","sensor_id":"s","timestamp_ms":5,"value":1.5,"unit":"psi"}"#;
        let event: Envelope<SensorReading> = codec.decode(json, Some("application/json")).unwrap();
        assert_eq!(event.payload.value, 1.5);
        let error = codec.decode::<SensorReading>(b"{not json", Some("application/json")).unwrap_err();
        assert_eq!(error.reason_code(), "invalid_json");
        let error = codec.decode::<ValidatedReading>(json, Some("application/json")).unwrap_err();
        assert_eq!(error.reason_code(), "unsupported_content_type");
    }

    #[test]
    fn an_empty_record_says_it_is_empty_whatever_its_content_type() {
        let codec = Codec::embedded().unwrap();
        for content_type in [None, Some("application/json"), Some("text/plain")] {
            let error = codec.decode::<SensorReading>(b"", content_type).unwrap_err();
            assert_eq!(error.reason_code(), "empty_record", "{content_type:?}");
            assert!(error.to_string().starts_with("the record has no value (0 bytes)"), "{error}");
        }
        let error = codec.subject_of(b"", None, "an alert").unwrap_err();
        assert_eq!(error.reason_code(), "empty_record");
        // One byte is not empty: it is just not Avro.
        assert_eq!(codec.decode::<SensorReading>(&[0], None).unwrap_err().reason_code(), "not_avro");
    }

    #[test]
    fn a_content_type_we_do_not_read_is_refused_naming_the_ones_we_do() {
        let codec = Codec::embedded().unwrap();
        let event = small_reading();
        let avro = codec.encode(&event).unwrap();
        for content_type in ["text/plain", "application/jsonx", "application/avro", "application/xml; charset=utf-8"] {
            let error = codec.decode::<SensorReading>(&avro, Some(content_type)).unwrap_err();
            assert_eq!(error.reason_code(), "unsupported_content_type", "{content_type}: {error}");
            let message = error.to_string();
            assert!(message.contains(&format!("{content_type:?}")), "{message}");
            assert!(message.contains("no content-type header (Confluent Avro)"), "{message}");
            assert!(message.contains("application/json"), "{message}");
        }
        // The same record without a header, or with an empty one, is Avro.
        assert_eq!(codec.decode::<SensorReading>(&avro, None).unwrap(), event);
        assert_eq!(codec.decode::<SensorReading>(&avro, Some("")).unwrap(), event);
        // A huge header value is quoted, not echoed.
        let huge = "x".repeat(100_000);
        let error = codec.decode::<SensorReading>(&avro, Some(&huge)).unwrap_err();
        assert!(error.to_string().len() < 400 && error.to_string().contains("bytes cut"), "{error}");
    }

    #[test]
    fn json_media_type_is_matched_case_insensitively_with_parameters() {
        let codec = Codec::embedded().unwrap();
        let json = br#"{"asset_id":"a","sensor_id":"s","timestamp_ms":5,"value":1.5,"unit":"psi"}"#;
        for content_type in ["application/json", "Application/JSON", "application/json; charset=utf-8"] {
            let event: Envelope<SensorReading> = codec.decode(json, Some(content_type)).unwrap();
            assert_eq!(event.payload.value, 1.5, "{content_type}");
        }
    }

    #[test]
    fn a_json_error_is_shortened() {
        let codec = Codec::embedded().unwrap();
        let field = "f".repeat(100_000);
        let json = format!(r#"{{"{field}":1}}"#);
        let error = codec.decode::<SensorReading>(json.as_bytes(), Some("application/json")).unwrap_err();
        assert_eq!(error.reason_code(), "invalid_json");
        let message = error.to_string();
        assert!(message.len() < 400 && message.contains("bytes cut"), "{message}");
    }

    #[test]
    fn refuses_an_envelope_labelled_as_another_event_type() {
        let codec = Codec::embedded().unwrap();
        let mut event = Envelope::origin(
            TenantId::from("t"),
            AssetId::from("a"),
            Timestamp(1),
            "test",
            SensorReading { sensor_id: "s".into(), value: 1.0, unit: "degC".into(), sequence: 1, backfill: false },
        );
        event.header.event_type = "AnomalyDetected".into();
        let bytes = codec.encode(&event).unwrap();
        let error = codec.decode::<SensorReading>(&bytes, None).unwrap_err();
        assert_eq!(error.reason_code(), "wrong_event_type");
        let message = error.to_string();
        assert!(message.contains("\"AnomalyDetected\"") && message.contains("`SensorReading`"), "{message}");
        event.header.event_type = "A".repeat(100_000);
        let error = codec.decode::<SensorReading>(&codec.encode(&event).unwrap(), None).unwrap_err();
        assert!(error.to_string().len() < 400, "{error}");
    }

    #[test]
    fn schema_ids_are_deterministic_and_distinct() {
        let a = EmbeddedRegistry::load().unwrap();
        let b = EmbeddedRegistry::load().unwrap();
        for subject in ["sensor_reading", "validated_reading", "rejected_reading", "asset_registered"] {
            assert_eq!(a.writer(subject).unwrap().id, b.writer(subject).unwrap().id);
        }
        let ids: std::collections::HashSet<_> = a.schemas().map(|s| s.id).collect();
        assert_eq!(ids.len(), a.schemas().count());
    }

    /// Every file in `schemas/` must be compiled in, or services would not know it.
    #[test]
    fn every_schema_file_is_compiled_in() {
        let mut on_disk = Vec::new();
        for folder in std::fs::read_dir(schemas_dir()).unwrap() {
            let folder = folder.unwrap();
            if !folder.file_type().unwrap().is_dir() {
                continue;
            }
            for file in std::fs::read_dir(folder.path()).unwrap() {
                let name = file.unwrap().file_name().into_string().unwrap();
                on_disk.push(format!("{}/{}", folder.file_name().into_string().unwrap(), name));
            }
        }
        on_disk.sort();
        let mut compiled: Vec<_> = SCHEMA_FILES.iter().map(|f| format!("{}/v{}.avsc", f.folder, f.version)).collect();
        compiled.sort();
        assert_eq!(on_disk, compiled, "add new schema files to SCHEMA_FILES in crates/domain/src/codec.rs");
        for file in SCHEMA_FILES {
            let on_disk =
                std::fs::read_to_string(schemas_dir().join(file.folder).join(format!("v{}.avsc", file.version)))
                    .unwrap();
            assert_eq!(on_disk, file.text);
        }
    }

    /// Schema evolution inside a topic version: each version must read data written with the
    /// previous one, and a committed version never changes (`schemas/fingerprints.lock`).
    #[test]
    fn each_schema_version_is_backward_compatible_with_the_previous_one() {
        let mut by_folder: BTreeMap<&str, Vec<&SchemaFile>> = BTreeMap::new();
        for file in SCHEMA_FILES {
            by_folder.entry(file.folder).or_default().push(file);
        }
        for (folder, mut versions) in by_folder {
            versions.sort_by_key(|f| f.version);
            for (i, file) in versions.iter().enumerate() {
                assert_eq!(file.version as usize, i + 1, "{folder}: versions must be v1, v2, ... without gaps");
            }
            for pair in versions.windows(2) {
                let older = Schema::parse_str(pair[0].text).unwrap();
                let newer = Schema::parse_str(pair[1].text).unwrap();
                backward_compatible(&older, &newer).unwrap_or_else(|e| {
                    panic!("schemas/{folder}/v{} cannot read v{} data: {e}", pair[1].version, pair[0].version)
                });
            }
        }
        let lock = std::fs::read_to_string(schemas_dir().join("fingerprints.lock")).unwrap_or_default();
        let locked: BTreeMap<String, String> = lock
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_owned(), v.trim().to_owned())))
            .collect();
        let mut expected = Vec::new();
        for file in SCHEMA_FILES {
            let fingerprint: String = Schema::parse_str(file.text)
                .unwrap()
                .fingerprint::<Rabin>()
                .bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            expected.push((format!("{}/v{}", file.folder, file.version), fingerprint));
        }
        let listing: String = expected.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        for (key, fingerprint) in &expected {
            match locked.get(key) {
                Some(value) => assert_eq!(
                    value, fingerprint,
                    "schemas/{key}.avsc changed after it was committed: restore it and add a new version instead"
                ),
                None => panic!("schemas/fingerprints.lock lacks {key}; with the current files it reads:\n{listing}"),
            }
        }
    }

    #[test]
    fn a_breaking_change_is_detected() {
        let older = Schema::parse_str(SCHEMA_FILES[1].text).unwrap();
        // A new required field without a default cannot read old data.
        let mut json: serde_json::Value = serde_json::from_str(SCHEMA_FILES[1].text).unwrap();
        json["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "site", "type": "string"}));
        let newer = Schema::parse_str(&json.to_string()).unwrap();
        assert!(backward_compatible(&older, &newer).is_err());
        // With a default it can.
        json["fields"].as_array_mut().unwrap().pop();
        json["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "site", "type": "string", "default": ""}));
        let newer = Schema::parse_str(&json.to_string()).unwrap();
        backward_compatible(&older, &newer).unwrap();
    }
}
