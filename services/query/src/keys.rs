//! `sm.v1.KeyService`: API keys for services, gateways and scripts.
//!
//! A key is created here, shown once, and becomes an `ApiKeyCreated` event (with only the
//! SHA-256 of its secret) on `sm.identity.v1`; the projector writes `api_keys`, which every
//! query instance reads (see `auth`). Creating and revoking wait, bounded, until the
//! projection shows the change, so the key answered is usable (or refused) at once.

use crate::assets::{PRODUCER, check_id};
use crate::auth::Authenticator;
use crate::db::PgTimestamp;
use crate::error::QueryError;
use crate::metrics::observe;
use sm_domain::{ApiKeyCreated, ApiKeyRevoked, AssetId, DomainEvent, Envelope, TenantId, Timestamp};
use sm_identity::{ApiKey, Principal, Role, TenantScope};
use sm_kafka::Announcer;
use sm_proto::convert::{from_timestamp, to_timestamp};
use sm_proto::v1::{self, key_service_server::KeyService};
use sm_storage::Pool;
use std::time::{Duration, Instant};
use tokio_postgres::Row;
use tonic::{Request, Response, Status};

/// How long a command waits for the projection to show it before answering anyway.
const PROJECTION_WAIT: Duration = Duration::from_secs(10);
/// Longest key name.
const NAME_MAX_CHARS: usize = 200;

const COLUMNS: &str = "key_id, tenant_id, name, roles, created_by, created_at, expires_at, revoked_at, revoked_by";

/// The `KeyService` implementation.
pub struct Keys {
    pool: Pool,
    announcer: Announcer,
    topic: String,
    auth: Authenticator,
}

impl Keys {
    pub fn new(pool: Pool, announcer: Announcer, topic: String, auth: Authenticator) -> Self {
        Self { pool, announcer, topic, auth }
    }

    async fn publish<T: DomainEvent>(&self, tenant: &str, key_id: &str, payload: T) -> Result<String, QueryError> {
        let event =
            Envelope::origin(TenantId::from(tenant), AssetId::from(key_id), Timestamp::now(), PRODUCER, payload);
        self.announcer.announce(&self.topic, key_id, &event).await?;
        tracing::info!(key_id, tenant, event_type = T::EVENT_TYPE, event_id = %event.header.event_id, "API key change published");
        Ok(event.header.event_id.to_string())
    }

    /// Waits until `api_keys` shows `key_id` (revoked when `revoked`), at most
    /// [`PROJECTION_WAIT`]; then forgets this instance's cached copy either way.
    async fn await_projection(&self, key_id: &str, revoked: bool) -> Result<(), QueryError> {
        let started = Instant::now();
        loop {
            let mut connection = self.pool.get().await?;
            let client = crate::db::scoped(&mut connection, &TenantScope::All).await?;
            let shown = client
                .query_opt(
                    "SELECT 1 FROM api_keys WHERE key_id = $1 AND (revoked_at IS NOT NULL) = $2",
                    &[&key_id, &revoked],
                )
                .await?
                .is_some();
            drop(client);
            drop(connection);
            if shown || started.elapsed() > PROJECTION_WAIT {
                if !shown {
                    tracing::warn!(
                        key_id,
                        "the key change was published but is not projected yet; is the projector running?"
                    );
                }
                self.auth.forget_key(key_id);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn create(
        &self,
        principal: &Principal,
        request: v1::CreateKeyRequest,
    ) -> Result<v1::CreateKeyResponse, QueryError> {
        let tenant = match (&principal.tenants, request.tenant_id.as_str()) {
            (TenantScope::All, "") => {
                return Err(QueryError::invalid("tenant_id", "name the key's tenant (or * for every tenant)"));
            }
            (TenantScope::All, "*") => "*".to_owned(),
            (_, requested) => match crate::auth::scope(principal, requested)? {
                TenantScope::One(tenant) => tenant.0,
                TenantScope::All => "*".to_owned(),
            },
        };
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > NAME_MAX_CHARS || name.chars().any(char::is_control) {
            return Err(QueryError::invalid(
                "name",
                format!("say what the key is for, in 1 to {NAME_MAX_CHARS} characters"),
            ));
        }
        if request.roles.is_empty() {
            return Err(QueryError::invalid("roles", "give at least one: viewer, operator, planner, admin or service"));
        }
        let mut roles = Vec::with_capacity(request.roles.len());
        for (i, role) in request.roles.iter().enumerate() {
            let role: Role = role
                .parse()
                .map_err(|e: sm_identity::RoleError| QueryError::invalid(format!("roles[{i}]"), e.to_string()))?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let expires_at = match &request.expires_at {
            None => None,
            Some(at) => {
                let at = from_timestamp(at).ok_or_else(|| QueryError::invalid("expires_at", "is not a valid time"))?;
                if at <= Timestamp::now() {
                    return Err(QueryError::invalid("expires_at", "is in the past: give a future time or none"));
                }
                Some(at)
            }
        };

        let key = ApiKey::generate();
        let payload = ApiKeyCreated {
            key_id: key.id().to_owned(),
            name: name.to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            secret_sha256: key.hash().to_hex(),
            created_by: principal.subject.clone(),
            expires_at,
        };
        self.publish(&tenant, key.id(), payload).await?;
        self.await_projection(key.id(), false).await?;
        let now = Some(to_timestamp(Timestamp::now()));
        Ok(v1::CreateKeyResponse {
            api_key: key.reveal(),
            key: Some(v1::ApiKeyInfo {
                key_id: key.id().to_owned(),
                tenant_id: tenant,
                name: name.to_owned(),
                roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
                created_by: principal.subject.clone(),
                created_at: now,
                expires_at: expires_at.map(to_timestamp),
                revoked_at: None,
                revoked_by: String::new(),
            }),
        })
    }

    async fn list(
        &self,
        principal: &Principal,
        request: v1::ListKeysRequest,
    ) -> Result<v1::ListKeysResponse, QueryError> {
        let scope = crate::auth::scope(principal, &request.tenant_id)?;
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, &scope).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM api_keys WHERE ($1 OR revoked_at IS NULL) ORDER BY created_at DESC NULLS LAST, key_id"
                ),
                &[&request.include_revoked],
            )
            .await?;
        drop(client);
        drop(connection);
        Ok(v1::ListKeysResponse { keys: rows.iter().map(key_info).collect::<Result<_, _>>()? })
    }

    async fn revoke(
        &self,
        principal: &Principal,
        request: v1::RevokeKeyRequest,
    ) -> Result<v1::RevokeKeyResponse, QueryError> {
        check_id("key_id", &request.key_id)?;
        let reason = request.reason.trim();
        if reason.is_empty() {
            return Err(QueryError::invalid("reason", "say why the key is revoked"));
        }
        // Through the caller's tenants: another tenant's key is not found.
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, &principal.tenants).await?;
        let row = client.query_opt("SELECT tenant_id FROM api_keys WHERE key_id = $1", &[&request.key_id]).await?;
        drop(client);
        drop(connection);
        let Some(row) = row else {
            return Err(QueryError::KeyNotFound(request.key_id));
        };
        let tenant: String = row.try_get(0)?;
        let payload = ApiKeyRevoked {
            key_id: request.key_id.clone(),
            revoked_by: principal.subject.clone(),
            reason: reason.to_owned(),
        };
        let event_id = self.publish(&tenant, &request.key_id, payload).await?;
        self.await_projection(&request.key_id, true).await?;
        Ok(v1::RevokeKeyResponse { event_id })
    }
}

fn key_info(row: &Row) -> Result<v1::ApiKeyInfo, tokio_postgres::Error> {
    let time = |column: &str| -> Result<_, tokio_postgres::Error> {
        Ok(row.try_get::<_, Option<PgTimestamp>>(column)?.map(|t| to_timestamp(Timestamp(t.0))))
    };
    Ok(v1::ApiKeyInfo {
        key_id: row.try_get("key_id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        roles: row.try_get("roles")?,
        created_by: row.try_get("created_by")?,
        created_at: time("created_at")?,
        expires_at: time("expires_at")?,
        revoked_at: time("revoked_at")?,
        revoked_by: row.try_get::<_, Option<String>>("revoked_by")?.unwrap_or_default(),
    })
}

#[tonic::async_trait]
impl KeyService for Keys {
    async fn create_key(
        &self,
        request: Request<v1::CreateKeyRequest>,
    ) -> Result<Response<v1::CreateKeyResponse>, Status> {
        observe("CreateKey", async move {
            let principal = crate::auth::principal(&request)?.clone();
            self.create(&principal, request.into_inner()).await
        })
        .await
    }

    async fn list_keys(&self, request: Request<v1::ListKeysRequest>) -> Result<Response<v1::ListKeysResponse>, Status> {
        observe("ListKeys", async move {
            let principal = crate::auth::principal(&request)?.clone();
            self.list(&principal, request.into_inner()).await
        })
        .await
    }

    async fn revoke_key(
        &self,
        request: Request<v1::RevokeKeyRequest>,
    ) -> Result<Response<v1::RevokeKeyResponse>, Status> {
        observe("RevokeKey", async move {
            let principal = crate::auth::principal(&request)?.clone();
            self.revoke(&principal, request.into_inner()).await
        })
        .await
    }
}
