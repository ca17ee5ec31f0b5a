//! Event payloads. Each mirrors one schema folder under `schemas/`; the codec tests fail if a
//! field here and the schema drift apart.

use crate::{AssetId, Codec, CodecError, Envelope, TenantId, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An event payload with its wire identity.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Written into `EnvelopeHeader::event_type`.
    const EVENT_TYPE: &'static str;
    /// The schema folder under `schemas/` that describes the payload.
    const SCHEMA: &'static str;

    /// Decodes the plain-JSON form some producers send (header `content-type:
    /// application/json`). Types without a JSON form return `None`.
    fn from_json(_bytes: &[u8]) -> Option<Result<Envelope<Self>, String>> {
        None
    }
}

/// Decodes `bytes` as `T` and wraps the payload as `variant`: how each enum of a topic's event
/// types ([`crate::AlertEvent`], [`crate::ModelEvent`], ...) decodes the type its schema names.
pub(crate) fn decode_variant<T: DomainEvent, E>(
    codec: &Codec,
    bytes: &[u8],
    content_type: Option<&str>,
    variant: fn(T) -> E,
) -> Result<Envelope<E>, CodecError> {
    let event = codec.decode::<T>(bytes, content_type)?;
    Ok(Envelope { header: event.header, payload: variant(event.payload) })
}

/// What a consumer can read from a topic: one event type (every [`DomainEvent`]), or a set
/// of types sharing a topic (an enum that dispatches on the schema, like
/// [`crate::AlertEvent`]).
pub trait Decode: Sized + Clone + Send + Sync + 'static {
    fn decode(
        codec: &crate::Codec,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<Envelope<Self>, crate::CodecError>;
}

impl<T: DomainEvent> Decode for T {
    fn decode(
        codec: &crate::Codec,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<Envelope<T>, crate::CodecError> {
        codec.decode::<T>(bytes, content_type)
    }
}

/// A raw reading as a gateway sent it: nothing checked yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    pub sensor_id: crate::SensorId,
    pub value: f64,
    /// Unit as sent (`degF`, `psi`, ...); ingestion normalises it.
    pub unit: String,
    /// Gateway sequence number; with sensor and timestamp it identifies a duplicate.
    pub sequence: i64,
    /// Historical import: stored and analysed, never raises live alarms.
    pub backfill: bool,
}

impl DomainEvent for SensorReading {
    const EVENT_TYPE: &'static str = "SensorReading";
    const SCHEMA: &'static str = "sensor_reading";

    fn from_json(bytes: &[u8]) -> Option<Result<Envelope<Self>, String>> {
        Some(parse_gateway_json(bytes))
    }
}

/// The JSON a simple gateway may publish instead of Avro: one flat object per reading.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayJsonReading {
    #[serde(default = "default_tenant")]
    tenant_id: String,
    asset_id: String,
    sensor_id: String,
    /// Event time in milliseconds since the Unix epoch.
    timestamp_ms: i64,
    value: f64,
    unit: String,
    #[serde(default)]
    sequence: i64,
    #[serde(default)]
    backfill: bool,
    #[serde(default = "default_gateway")]
    producer: String,
}

fn default_tenant() -> String {
    "default".to_owned()
}

fn default_gateway() -> String {
    "json-gateway".to_owned()
}

fn parse_gateway_json(bytes: &[u8]) -> Result<Envelope<SensorReading>, String> {
    let json: GatewayJsonReading = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(Envelope::origin(
        TenantId(json.tenant_id),
        AssetId(json.asset_id),
        Timestamp::from_millis(json.timestamp_ms),
        &json.producer,
        SensorReading {
            sensor_id: json.sensor_id.into(),
            value: json.value,
            unit: json.unit,
            sequence: json.sequence,
            backfill: json.backfill,
        },
    ))
}

/// A reading that passed ingestion, in its sensor's canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedReading {
    pub sensor_id: crate::SensorId,
    /// `temperature`, `vibration_rms`, `pressure`, `current`, `flow`, `speed`.
    pub sensor_type: String,
    pub value: f64,
    /// Canonical unit of the sensor type.
    pub unit: String,
    pub sequence: i64,
    /// `clamped`, `late`, `backfill`, ...
    pub quality_flags: Vec<String>,
    pub backfill: bool,
}

impl DomainEvent for ValidatedReading {
    const EVENT_TYPE: &'static str = "ValidatedReading";
    const SCHEMA: &'static str = "validated_reading";
}

/// A dead letter: a record an agent could not decode or refused, kept with the reason and
/// its origin so that nothing disappears silently and it can be replayed after a fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedReading {
    /// The record value as consumed: whole, or its first bytes when it is too large to carry
    /// (a dead letter must always fit the producer's limit, or it would block its partition).
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub original: Vec<u8>,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub original_key: Option<Vec<u8>>,
    /// Size of the whole record value in bytes (-1: written before v2).
    #[serde(default = "unknown_size")]
    pub original_size: i64,
    /// Lowercase hex SHA-256 of the whole record value (empty: written before v2).
    #[serde(default)]
    pub original_sha256: String,
    /// Stable, low-cardinality code (`undecodable`, `unknown_sensor`, ...).
    pub reason_code: String,
    /// What exactly was wrong, for a person.
    pub detail: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// The agent that rejected it.
    pub agent: String,
}

fn unknown_size() -> i64 {
    -1
}

impl RejectedReading {
    /// True when `original` holds only a prefix of the record value.
    pub fn is_truncated(&self) -> bool {
        self.original_size > self.original.len() as i64
    }
}

impl DomainEvent for RejectedReading {
    const EVENT_TYPE: &'static str = "RejectedReading";
    const SCHEMA: &'static str = "rejected_reading";
}

/// An asset and its sensors, as registered. Latest wins: `sm.assets.v1` is compacted by asset
/// id, so replaying it from the start yields the current registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetRegistered {
    pub name: String,
    /// `pump`, `motor`, `compressor`, `bearing`, ...
    pub asset_type: String,
    pub site: String,
    pub sensors: Vec<SensorSpec>,
}

impl DomainEvent for AssetRegistered {
    const EVENT_TYPE: &'static str = "AssetRegistered";
    const SCHEMA: &'static str = "asset_registered";
}

/// One sensor of an asset: what it measures, in which unit, within which physical limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorSpec {
    pub sensor_id: crate::SensorId,
    /// One of [`crate::units::SENSOR_TYPES`].
    pub sensor_type: String,
    /// Canonical unit of the sensor type (readings are normalised to it).
    pub unit: String,
    /// Physical minimum and maximum, canonical unit: outside means a broken sensor.
    pub min_value: f64,
    pub max_value: f64,
    /// How often the sensor reports (ms): the basis of staleness and duplicate windows.
    pub expected_interval_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_json_becomes_an_origin_event() {
        let json = br#"{"asset_id":"pump-1","sensor_id":"pump-1.temp","timestamp_ms":1700000000123,
                        "value":71.5,"unit":"degF","sequence":7}"#;
        let event = SensorReading::from_json(json).unwrap().unwrap();
        assert_eq!(event.header.asset_id.as_str(), "pump-1");
        assert_eq!(event.header.tenant_id.as_str(), "default");
        assert_eq!(event.header.occurred_at, Timestamp(1_700_000_000_123_000));
        assert_eq!(event.header.causation_id, None);
        assert_eq!(event.payload.unit, "degF");
        assert_eq!(event.payload.sequence, 7);
    }

    #[test]
    fn gateway_json_with_missing_field_is_an_error_naming_it() {
        let json = br#"{"asset_id":"pump-1","value":1.0,"unit":"degC","timestamp_ms":1}"#;
        let error = SensorReading::from_json(json).unwrap().unwrap_err();
        assert!(error.contains("sensor_id"), "{error}");
    }
}
