//! API key events on `sm.identity.v1` (compacted, keyed by key id, with the key id as the
//! envelope's aggregate id). [`IdentityEvent`] reads either. No event carries a secret.

use crate::codec::{Codec, CodecError};
use crate::events::{Decode, DomainEvent};
use crate::{Envelope, Timestamp};
use serde::{Deserialize, Serialize};

/// An API key was issued; the envelope's tenant is the key's (`*` for every tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub key_id: String,
    pub name: String,
    pub roles: Vec<String>,
    /// Lowercase hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub created_by: String,
    pub expires_at: Option<Timestamp>,
}

impl DomainEvent for ApiKeyCreated {
    const EVENT_TYPE: &'static str = "ApiKeyCreated";
    const SCHEMA: &'static str = "api_key_created";
}

/// An API key was revoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    pub key_id: String,
    pub revoked_by: String,
    pub reason: String,
}

impl DomainEvent for ApiKeyRevoked {
    const EVENT_TYPE: &'static str = "ApiKeyRevoked";
    const SCHEMA: &'static str = "api_key_revoked";
}

/// Any event of `sm.identity.v1`.
#[derive(Debug, Clone, PartialEq)]
pub enum IdentityEvent {
    Created(ApiKeyCreated),
    Revoked(ApiKeyRevoked),
}

impl Decode for IdentityEvent {
    fn decode(codec: &Codec, bytes: &[u8], content_type: Option<&str>) -> Result<Envelope<Self>, CodecError> {
        use crate::events::decode_variant as wrap;
        const EXPECTED: &str = "an API key event";
        match codec.subject_of(bytes, content_type, EXPECTED)? {
            ApiKeyCreated::SCHEMA => wrap(codec, bytes, content_type, IdentityEvent::Created),
            ApiKeyRevoked::SCHEMA => wrap(codec, bytes, content_type, IdentityEvent::Revoked),
            other => Err(CodecError::WrongEventType { expected: EXPECTED, found: other }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AssetId, TenantId};

    #[test]
    fn key_events_round_trip_and_dispatch_on_their_schema() {
        let codec = Codec::embedded().unwrap();
        let envelope = |payload| {
            Envelope::origin(TenantId::from("acme"), AssetId::from("0123456789abcdef"), Timestamp(1), "test", payload)
        };
        let created = ApiKeyCreated {
            key_id: "0123456789abcdef".into(),
            name: "line 3 gateway".into(),
            roles: vec!["service".into()],
            secret_sha256: "ab".repeat(32),
            created_by: "key:bootstrap".into(),
            expires_at: Some(Timestamp(1_000_000)),
        };
        let revoked = ApiKeyRevoked {
            key_id: "0123456789abcdef".into(),
            revoked_by: "key:bootstrap".into(),
            reason: "leaked".into(),
        };
        let bytes = codec.encode(&envelope(created.clone())).unwrap();
        assert_eq!(IdentityEvent::decode(&codec, &bytes, None).unwrap().payload, IdentityEvent::Created(created));
        let bytes = codec
            .encode(&Envelope::origin(
                TenantId::from("acme"),
                AssetId::from("0123456789abcdef"),
                Timestamp(2),
                "test",
                revoked.clone(),
            ))
            .unwrap();
        assert_eq!(IdentityEvent::decode(&codec, &bytes, None).unwrap().payload, IdentityEvent::Revoked(revoked));
    }
}
