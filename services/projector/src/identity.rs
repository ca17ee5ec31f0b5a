//! API key events into `api_keys`. A creation replaces what a key id held (ids are random:
//! a second creation of one id is a replay); a revocation marks the row, creating a revoked
//! row when the creation was compacted away.

use sm_domain::{Envelope, IdentityEvent};
use sm_storage::Projection;

/// The API key projection.
pub struct IdentityProjection;

impl Projection for IdentityProjection {
    type Event = IdentityEvent;

    fn name(&self) -> &'static str {
        "identity"
    }

    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[Envelope<IdentityEvent>],
    ) -> Result<(), tokio_postgres::Error> {
        for event in events {
            let h = &event.header;
            let at = h.recorded_at.as_micros();
            match &event.payload {
                IdentityEvent::Created(k) => {
                    let expires = k.expires_at.map(|t| t.as_micros());
                    tx.execute(
                        "INSERT INTO api_keys (key_id, tenant_id, name, roles, secret_sha256, created_by, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6, timestamptz 'epoch' + $7::bigint * interval '1 microsecond',
                                 timestamptz 'epoch' + $8::bigint * interval '1 microsecond')
                         ON CONFLICT (key_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name,
                             roles = EXCLUDED.roles, secret_sha256 = EXCLUDED.secret_sha256,
                             created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at,
                             expires_at = EXCLUDED.expires_at",
                        &[&k.key_id, &h.tenant_id.0, &k.name, &k.roles, &k.secret_sha256, &k.created_by, &at, &expires],
                    )
                    .await?;
                }
                IdentityEvent::Revoked(r) => {
                    tx.execute(
                        "INSERT INTO api_keys (key_id, tenant_id, revoked_at, revoked_by, revoke_reason)
                         VALUES ($1, $2, timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4, $5)
                         ON CONFLICT (key_id) DO UPDATE SET
                             revoked_at = coalesce(api_keys.revoked_at, EXCLUDED.revoked_at),
                             revoked_by = coalesce(api_keys.revoked_by, EXCLUDED.revoked_by),
                             revoke_reason = coalesce(api_keys.revoke_reason, EXCLUDED.revoke_reason)",
                        &[&r.key_id, &h.tenant_id.0, &at, &r.revoked_by, &r.reason],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn clear(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("TRUNCATE api_keys").await
    }
}
