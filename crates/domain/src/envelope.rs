//! The envelope: what every event carries besides its payload. Agents never fill in
//! causality by hand; the runtime derives it from the input (see [`EnvelopeHeader::caused_by`]).

use crate::{AssetId, EventId, TenantId, Timestamp};
use serde::{Deserialize, Serialize};

/// Identity, time, ownership and causality of one event. Mirrors `schemas/envelope/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    pub event_id: EventId,
    /// The payload's [`crate::DomainEvent::EVENT_TYPE`].
    pub event_type: String,
    /// Event time: when the thing happened (for a reading, when it was measured).
    pub occurred_at: Timestamp,
    /// When the producer wrote the event.
    pub recorded_at: Timestamp,
    pub tenant_id: TenantId,
    /// The asset the event is about; also its Kafka key, so an asset's events stay ordered.
    pub asset_id: AssetId,
    /// Shared by every event of one causal chain (the first event's id).
    pub correlation_id: EventId,
    /// The event this one was derived from; `None` for events from outside (gateways).
    pub causation_id: Option<EventId>,
    /// The agent or gateway that wrote it.
    pub producer: String,
}

impl EnvelopeHeader {
    /// A header for an event that starts a causal chain (e.g. a gateway reading).
    pub fn origin(
        event_type: &str,
        tenant_id: TenantId,
        asset_id: AssetId,
        occurred_at: Timestamp,
        producer: &str,
    ) -> Self {
        let event_id = EventId::new();
        Self {
            event_id,
            event_type: event_type.to_owned(),
            occurred_at,
            recorded_at: Timestamp::now(),
            tenant_id,
            asset_id,
            correlation_id: event_id,
            causation_id: None,
            producer: producer.to_owned(),
        }
    }

    /// The header of an event derived from `self`: same tenant, asset, event time and
    /// correlation; caused by `self`.
    pub fn caused_by(&self, event_type: &str, producer: &str) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: event_type.to_owned(),
            occurred_at: self.occurred_at,
            recorded_at: Timestamp::now(),
            tenant_id: self.tenant_id.clone(),
            asset_id: self.asset_id.clone(),
            correlation_id: self.correlation_id,
            causation_id: Some(self.event_id),
            producer: producer.to_owned(),
        }
    }
}

/// One event: header plus payload. The Avro record is `{header, payload}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub header: EnvelopeHeader,
    pub payload: T,
}

impl<T: crate::DomainEvent> Envelope<T> {
    /// A new event starting a causal chain.
    pub fn origin(tenant_id: TenantId, asset_id: AssetId, occurred_at: Timestamp, producer: &str, payload: T) -> Self {
        Self { header: EnvelopeHeader::origin(T::EVENT_TYPE, tenant_id, asset_id, occurred_at, producer), payload }
    }

    /// An event derived from `cause`.
    pub fn caused_by(cause: &EnvelopeHeader, producer: &str, payload: T) -> Self {
        Self { header: cause.caused_by(T::EVENT_TYPE, producer), payload }
    }
}
