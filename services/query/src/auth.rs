//! Every call authenticated, every RPC behind one permission (architecture §9).
//!
//! [`PERMISSIONS`] is the one table mapping each RPC to the [`Permission`] it needs; an RPC
//! missing from it is refused (and a test over the descriptors fails). [`AuthLayer`] is the
//! tower layer in front of every service: it reads `authorization: Bearer <credential>` (an
//! API key `smk_...` or an OIDC token), resolves it to a [`Principal`], checks the
//! permission and hands the principal to the handler in the request's extensions. gRPC
//! health is open; so is reflection when it is served (`SM_AUTH__REFLECTION`).
//!
//! Missing or bad credentials are `UNAUTHENTICATED`; a principal without the permission is
//! `PERMISSION_DENIED`, naming the permission and the roles that grant it.

use crate::error::QueryError;
use serde::{Deserialize, Serialize};
use sm_identity::jwt::{IssuerConfig, TokenVerifier};
use sm_identity::{ApiKey, Permission, Principal, PrincipalKind, Role, SecretHash, TenantScope};
use sm_storage::Pool;
use sm_telemetry::Secret;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Every RPC and the permission it needs. Keep it next to the protos: a new RPC without a
/// line here is refused at run time and fails `every_rpc_has_exactly_one_permission`.
pub const PERMISSIONS: &[(&str, Permission)] = &[
    ("/sm.v1.ReadingService/ListReadings", Permission::Read),
    ("/sm.v1.ReadingService/Aggregate", Permission::Read),
    ("/sm.v1.ReadingService/Latest", Permission::Read),
    ("/sm.v1.AssetService/ListAssets", Permission::Read),
    ("/sm.v1.AssetService/GetAsset", Permission::Read),
    ("/sm.v1.AssetService/RegisterAsset", Permission::ManageAssets),
    ("/sm.v1.AlertService/ListAnomalies", Permission::Read),
    ("/sm.v1.AlertService/ListDrift", Permission::Read),
    ("/sm.v1.AlertService/StreamAlerts", Permission::Read),
    ("/sm.v1.DriftService/CheckDrift", Permission::Analyze),
    ("/sm.v1.AnomalyService/ScoreReadings", Permission::Analyze),
    ("/sm.v1.ModelService/ListModels", Permission::Read),
    ("/sm.v1.ModelService/ListVersions", Permission::Read),
    ("/sm.v1.ModelService/GetVersion", Permission::Read),
    ("/sm.v1.ModelService/Resolve", Permission::Read),
    ("/sm.v1.ModelService/Promote", Permission::ManageModels),
    ("/sm.v1.ModelService/Archive", Permission::ManageModels),
    ("/sm.v1.PredictionService/ListPredictions", Permission::Read),
    ("/sm.v1.PredictionService/Latest", Permission::Read),
    ("/sm.v1.PredictionService/Predict", Permission::Analyze),
    ("/sm.v1.KeyService/CreateKey", Permission::ManageKeys),
    ("/sm.v1.KeyService/ListKeys", Permission::ManageKeys),
    ("/sm.v1.KeyService/RevokeKey", Permission::ManageKeys),
];

/// Paths served without credentials: health always, reflection when it is served at all.
const OPEN: &[&str] =
    &["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"];

/// The permission an RPC path needs; `None` for a path the table lacks.
pub fn permission_of(path: &str) -> Option<Permission> {
    PERMISSIONS.iter().find(|(p, _)| *p == path).map(|(_, permission)| *permission)
}

/// Identity settings (`SM_AUTH__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// An admin key of every tenant, from the environment (the local stack generates one):
    /// how the first keys are created. Empty: none; then only stored keys and tokens work.
    pub bootstrap_key: Secret,
    /// OIDC issuers whose tokens are accepted (a TOML `[[auth.issuers]]` list).
    pub issuers: Vec<IssuerConfig>,
    /// How long a looked-up key is trusted before it is read again: a revocation reaches
    /// this instance within this plus the projection's lag.
    pub key_cache_ms: u64,
    /// Serve gRPC reflection (open, like health): on for the local stack, off by default.
    pub reflection: bool,
    /// Where `KeyService` publishes `ApiKeyCreated` and `ApiKeyRevoked`. Only tests change it.
    pub identity_topic: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            bootstrap_key: Secret::default(),
            issuers: Vec::new(),
            key_cache_ms: 1_000,
            reflection: false,
            identity_topic: sm_domain::topics::IDENTITY.to_owned(),
        }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.bootstrap_key.0.is_empty() {
            ApiKey::parse(&self.bootstrap_key.0).map_err(|e| {
                format!("SM_AUTH__BOOTSTRAP_KEY: {e}; generate one with `smctl keys generate` or leave it unset")
            })?;
        }
        if self.key_cache_ms > 60_000 {
            return Err("SM_AUTH__KEY_CACHE_MS must be at most 60000: a revoked key would live that long".into());
        }
        if self.identity_topic.trim().is_empty() {
            return Err("SM_AUTH__IDENTITY_TOPIC is empty: leave it unset for sm.identity.v1".into());
        }
        for issuer in &self.issuers {
            issuer.validate().map_err(|e| format!("auth.issuers ({}): {e}", issuer.issuer))?;
        }
        Ok(())
    }
}

/// A stored key, as the projection holds it.
#[derive(Debug, Clone)]
struct StoredKey {
    tenant: String,
    roles: Vec<String>,
    hash: Option<SecretHash>,
    expires_at_micros: Option<i64>,
    revoked: bool,
}

/// Reads keys from the `api_keys` projection, each trusted for `ttl`.
struct KeyStore {
    pool: Pool,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Option<StoredKey>)>>,
}

/// Bounds the cache against a flood of made-up key ids: past this it starts over.
const KEY_CACHE_MAX: usize = 10_000;

impl KeyStore {
    async fn lookup(&self, key_id: &str) -> Result<Option<StoredKey>, QueryError> {
        if let Some((at, key)) = self.cache.lock().unwrap().get(key_id)
            && at.elapsed() < self.ttl
        {
            return Ok(key.clone());
        }
        let mut client = self.pool.get().await?;
        let tx = crate::db::scoped(&mut client, &TenantScope::All).await?;
        let row = tx
            .query_opt(
                "SELECT tenant_id, roles, secret_sha256,
                        (extract(epoch FROM expires_at) * 1000000)::bigint AS expires_at,
                        revoked_at IS NOT NULL AS revoked
                 FROM api_keys WHERE key_id = $1",
                &[&key_id],
            )
            .await?;
        drop(tx);
        let key = match row {
            None => None,
            Some(row) => Some(StoredKey {
                tenant: row.try_get("tenant_id")?,
                roles: row.try_get("roles")?,
                hash: SecretHash::from_hex(row.try_get::<_, &str>("secret_sha256")?),
                expires_at_micros: row.try_get("expires_at")?,
                revoked: row.try_get("revoked")?,
            }),
        };
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key_id.to_owned(), (Instant::now(), key.clone()));
        Ok(key)
    }

    /// Forgets a key, so this instance sees its creation or revocation at once.
    fn forget(&self, key_id: &str) {
        self.cache.lock().unwrap().remove(key_id);
    }
}

/// Resolves credentials to principals. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    bootstrap: Option<ApiKey>,
    keys: KeyStore,
    tokens: Option<TokenVerifier>,
    reflection: bool,
}

impl Authenticator {
    /// Loads the issuers' keys (a JWKS file or URL each) and starts refreshing them.
    pub async fn new(config: &AuthConfig, pool: Pool) -> Result<Self, sm_identity::jwt::JwtConfigError> {
        let bootstrap = match config.bootstrap_key.0.as_str() {
            "" => None,
            key => ApiKey::parse(key).ok(),
        };
        let tokens = if config.issuers.is_empty() {
            None
        } else {
            let verifier = TokenVerifier::new(&config.issuers).await?;
            verifier.spawn_refresh();
            Some(verifier)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                bootstrap,
                keys: KeyStore {
                    pool,
                    ttl: Duration::from_millis(config.key_cache_ms),
                    cache: Mutex::new(HashMap::new()),
                },
                tokens,
                reflection: config.reflection,
            }),
        })
    }

    /// Whether reflection is served.
    pub fn reflection(&self) -> bool {
        self.inner.reflection
    }

    /// Forgets what this instance cached of a key.
    pub fn forget_key(&self, key_id: &str) {
        self.inner.keys.forget(key_id);
    }

    /// The principal behind an `authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, Status> {
        let Some(value) = authorization else {
            return Err(Status::unauthenticated(
                "no credentials: send `authorization: Bearer <API key or OIDC token>` (smctl: --api-key or SM_API_KEY)",
            ));
        };
        let credential = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <API key or OIDC token>`")
            })?;
        if ApiKey::is_api_key(credential) {
            self.api_key(credential).await
        } else {
            match &self.inner.tokens {
                None => Err(Status::unauthenticated(
                    "not an API key (smk_...), and no OIDC issuer is configured for tokens (auth.issuers)",
                )),
                Some(verifier) => verifier.verify(credential).map_err(|e| Status::unauthenticated(e.to_string())),
            }
        }
    }

    async fn api_key(&self, credential: &str) -> Result<Principal, Status> {
        let key = ApiKey::parse(credential).map_err(|e| Status::unauthenticated(e.to_string()))?;
        if let Some(bootstrap) = &self.inner.bootstrap
            && key.id() == bootstrap.id()
        {
            // Same id: the secret must match too (compared as hashes, in constant time).
            if !bootstrap.hash().verifies(&key) {
                return Err(Status::unauthenticated(format!("API key {} is not valid", key.id())));
            }
            return Ok(Principal {
                subject: format!("key:{}", key.id()),
                kind: PrincipalKind::Bootstrap,
                tenants: TenantScope::All,
                roles: vec![Role::Admin],
            });
        }
        let stored = self.inner.keys.lookup(key.id()).await.map_err(Status::from)?;
        let refused = |why: &str| Err(Status::unauthenticated(format!("API key {} {why}", key.id())));
        let Some(stored) = stored else {
            return refused("is not known (a key just created may take a second to be usable)");
        };
        if stored.revoked {
            return refused("was revoked: ask an admin for a new one");
        }
        if !stored.hash.is_some_and(|hash| hash.verifies(&key)) {
            return refused("is not valid");
        }
        if stored.expires_at_micros.is_some_and(|at| at <= sm_domain::Timestamp::now().as_micros()) {
            return refused("has expired: ask an admin for a new one");
        }
        let roles = stored.roles.iter().filter_map(|r| r.parse::<Role>().ok()).collect();
        Ok(Principal {
            subject: format!("key:{}", key.id()),
            kind: PrincipalKind::ApiKey { key_id: key.id().to_owned() },
            tenants: TenantScope::parse(&stored.tenant),
            roles,
        })
    }

    /// Authenticates and authorizes one call to `path`. `peer_certificate` is the client
    /// certificate rustls verified (mutual TLS only); it names the caller only when the call
    /// has no `authorization` header, so a key or token always wins over the connection's
    /// certificate.
    async fn authorize(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        peer_certificate: Option<&[u8]>,
    ) -> Result<Option<Principal>, Status> {
        if OPEN.iter().any(|open| path.starts_with(open)) {
            return Ok(None);
        }
        let principal = match (authorization, peer_certificate) {
            (None, Some(der)) => crate::tls::certificate_principal(der).ok_or_else(|| {
                Status::unauthenticated(
                    "the client certificate's subject CN is not `<tenant>/<name>`: send `authorization: Bearer <API key or OIDC token>`",
                )
            })?,
            _ => self.authenticate(authorization).await?,
        };
        let Some(permission) = permission_of(path) else {
            return Err(Status::permission_denied(format!("{path} has no permission defined: it is not served")));
        };
        if !principal.may(permission) {
            let granting: Vec<&str> = Role::granting(permission).iter().map(|r| r.as_str()).collect();
            let held: Vec<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "{path} needs permission {permission} (role {}); {principal} has {}",
                granting.join(" or "),
                if held.is_empty() { "no role".to_owned() } else { format!("role {}", held.join(", ")) }
            )));
        }
        Ok(Some(principal))
    }
}

/// The tower layer that puts [`Authenticator`] in front of every service.
#[derive(Clone)]
pub struct AuthLayer(pub Authenticator);

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize { inner, auth: self.0.clone() }
    }
}

/// One service behind [`AuthLayer`].
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    auth: Authenticator,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Authorize<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The clone is the one polled ready: take it, leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let authorization = request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
            // Present only with mutual TLS: tonic records the verified chain, leaf first.
            let peer_certificates =
                request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(TlsConnectInfo::peer_certs);
            let leaf = peer_certificates.as_deref().and_then(|chain| chain.first()).map(|der| der.as_ref());
            match auth.authorize(&path, authorization.as_deref(), leaf).await {
                Ok(principal) => {
                    if let Some(principal) = principal {
                        request.extensions_mut().insert(principal);
                    }
                    inner.call(request).await
                }
                Err(status) => {
                    crate::metrics::refused(&path, status.code());
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The authenticated caller of a request that passed [`AuthLayer`].
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, QueryError> {
    request.extensions().get::<Principal>().ok_or(QueryError::Unauthenticated)
}

/// Which tenants a request reads: the caller's; a cross-tenant caller may narrow it with the
/// request's `tenant_id`. A single-tenant caller naming another tenant is refused.
pub fn scope(principal: &Principal, requested: &str) -> Result<TenantScope, QueryError> {
    match (&principal.tenants, requested) {
        (scope, "") => Ok(scope.clone()),
        (TenantScope::All, tenant) => {
            crate::assets::check_id("tenant_id", tenant)?;
            Ok(TenantScope::parse(tenant))
        }
        (TenantScope::One(own), tenant) if own.as_str() == tenant => Ok(TenantScope::One(own.clone())),
        (TenantScope::One(own), _) => Err(QueryError::PermissionDenied(format!(
            "tenant_id: {principal} acts for tenant {own} only; leave tenant_id empty"
        ))),
    }
}

/// The tenants of a request without a tenant field: the caller's.
pub fn tenants<T>(request: &tonic::Request<T>) -> Result<TenantScope, QueryError> {
    Ok(principal(request)?.tenants.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::BTreeSet;

    /// Every method of every `sm.v1` service, as `/package.Service/Method`.
    fn served_methods() -> BTreeSet<String> {
        let set = prost_types::FileDescriptorSet::decode(sm_proto::FILE_DESCRIPTOR_SET).unwrap();
        set.file
            .iter()
            .filter(|f| f.package() == "sm.v1")
            .flat_map(|f| {
                f.service.iter().flat_map(|s| s.method.iter().map(move |m| format!("/sm.v1.{}/{}", s.name(), m.name())))
            })
            .collect()
    }

    #[test]
    fn every_rpc_has_exactly_one_permission() {
        let table: Vec<&str> = PERMISSIONS.iter().map(|(path, _)| *path).collect();
        let unique: BTreeSet<String> = table.iter().map(|p| p.to_string()).collect();
        assert_eq!(unique.len(), table.len(), "a path is listed twice");
        assert_eq!(unique, served_methods(), "PERMISSIONS and the protos disagree");
    }

    #[test]
    fn a_tenant_principal_reads_its_own_tenant_and_an_all_tenant_one_narrows() {
        let of =
            |tenants| Principal { subject: "key:x".into(), kind: PrincipalKind::Bootstrap, tenants, roles: vec![] };
        let acme = of(TenantScope::parse("acme"));
        assert_eq!(scope(&acme, "").unwrap(), TenantScope::parse("acme"));
        assert_eq!(scope(&acme, "acme").unwrap(), TenantScope::parse("acme"));
        assert!(matches!(scope(&acme, "globex"), Err(QueryError::PermissionDenied(_))));
        let admin = of(TenantScope::All);
        assert_eq!(scope(&admin, "").unwrap(), TenantScope::All);
        assert_eq!(scope(&admin, "globex").unwrap(), TenantScope::parse("globex"));
        assert!(matches!(scope(&admin, " globex"), Err(QueryError::InvalidArgument { .. })));
    }
}
