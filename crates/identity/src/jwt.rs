//! OIDC bearer tokens (JWTs) for people, checked against the keys (JWKS) of configured
//! issuers.
//!
//! [`TokenVerifier::verify`] is synchronous and does no I/O: each issuer's keys live in
//! memory and [`TokenVerifier::spawn_refresh`] reloads them in the background, keeping the
//! old ones when a reload fails. Only asymmetric algorithms are accepted (RSA, ECDSA,
//! EdDSA): an issuer's HMAC secret would be shared with every verifier, so any of them could
//! mint tokens.
//!
//! The checks before any signature is computed are ours, not jsonwebtoken's, so that each
//! refusal has its own message and `alg: none` or a key-type confusion (an `HS256` token
//! "signed" with an EC or RSA public key as its secret) never reaches a verifier: the header's
//! algorithm must fit the named key's type and be one the issuer is allowed, and jsonwebtoken
//! then verifies with exactly that one algorithm.
//!
//! Not here: discovery (`/.well-known/openid-configuration`; configure the JWKS location),
//! token introspection, or anything a token is not (API keys are [`crate::key`]).

use crate::principal::{Principal, PrincipalKind, TenantScope};
use crate::role::Role;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sm_domain::shorten;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
// Tokio's clock, not std's, so that tests can pause time over the rate limit.
use tokio::time::Instant;

/// The largest token looked at: real ones are a few KiB; parsing megabytes per call is a
/// denial of service.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The largest JWKS read or fetched; real ones hold a handful of keys.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The largest `leeway_secs`: a clock further off than this is broken, not skewed.
pub const MAX_LEEWAY_SECS: u64 = 3600;
/// At most one refresh per issuer this often when tokens name unknown kids, so that made-up
/// kids cannot turn into a flood of JWKS fetches.
pub const MIN_KID_REFRESH: Duration = Duration::from_secs(30);
/// How long one JWKS fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a value taken from a token a message keeps.
const SHOWN_CHARS: usize = 64;

const fn default_refresh_secs() -> u64 {
    300
}

const fn default_leeway_secs() -> u64 {
    30
}

/// The algorithms OIDC providers sign with by default: RS256 (mandatory in OIDC), ES256, EdDSA.
fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}

/// One OIDC issuer whose tokens this service accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuerConfig {
    /// The `iss` value the issuer puts in its tokens, exactly (`https://login.example.com/realms/acme`).
    pub issuer: String,
    /// The `aud` value tokens for this service must carry (the client id registered with the issuer).
    pub audience: String,
    /// A JWKS file with the issuer's public keys; empty when `jwks_url` is set.
    pub jwks_file: String,
    /// The issuer's JWKS URL (`https://…/certs`); empty when `jwks_file` is set.
    pub jwks_url: String,
    /// The claim naming the caller's tenant (`*` for every tenant).
    pub tenant_claim: String,
    /// The claim naming the caller's roles: an array of strings or one space-separated string.
    pub roles_claim: String,
    /// The algorithms the issuer signs with. `none` and the HMAC ones (`HS*`) are refused.
    pub algorithms: Vec<String>,
    /// How often the keys are reloaded, so that rotated keys are picked up.
    pub refresh_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            jwks_file: String::new(),
            jwks_url: String::new(),
            tenant_claim: "tenant".into(),
            roles_claim: "roles".into(),
            algorithms: default_algorithms(),
            refresh_secs: default_refresh_secs(),
            leeway_secs: default_leeway_secs(),
        }
    }
}

impl IssuerConfig {
    /// Checks the settings without touching the keys; [`TokenVerifier::new`] calls it.
    pub fn validate(&self) -> Result<(), JwtConfigError> {
        self.checked().map(|_| ())
    }

    /// The validated key source and allowed algorithms.
    fn checked(&self) -> Result<(JwksSource, Vec<Algorithm>), JwtConfigError> {
        if self.issuer.is_empty() {
            return Err(JwtConfigError::MissingIssuer);
        }
        let issuer = || self.issuer.clone();
        if self.audience.is_empty() {
            return Err(JwtConfigError::MissingAudience { issuer: issuer() });
        }
        let source = match (self.jwks_file.is_empty(), self.jwks_url.is_empty()) {
            (true, true) => return Err(JwtConfigError::NoKeySource { issuer: issuer() }),
            (false, false) => return Err(JwtConfigError::TwoKeySources { issuer: issuer() }),
            (false, true) => JwksSource::File(PathBuf::from(&self.jwks_file)),
            (true, false) => {
                let url = self.jwks_url.to_ascii_lowercase();
                let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
                if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
                    return Err(JwtConfigError::BadJwksUrl { issuer: issuer(), url: self.jwks_url.clone() });
                }
                JwksSource::Url(self.jwks_url.clone())
            }
        };
        for (field, claim) in [("tenant_claim", &self.tenant_claim), ("roles_claim", &self.roles_claim)] {
            if claim.is_empty() {
                return Err(JwtConfigError::EmptyClaimName { issuer: issuer(), field });
            }
        }
        if self.algorithms.is_empty() {
            return Err(JwtConfigError::NoAlgorithms { issuer: issuer() });
        }
        let mut algorithms = Vec::with_capacity(self.algorithms.len());
        for name in &self.algorithms {
            if name.eq_ignore_ascii_case("none") {
                return Err(JwtConfigError::NoneAlgorithm { issuer: issuer() });
            }
            if name.get(..2).is_some_and(|prefix| prefix.eq_ignore_ascii_case("HS")) {
                return Err(JwtConfigError::SymmetricAlgorithm { issuer: issuer(), algorithm: name.clone() });
            }
            let algorithm = Algorithm::from_str(name)
                .map_err(|_| JwtConfigError::UnknownAlgorithm { issuer: issuer(), algorithm: name.clone() })?;
            debug_assert_ne!(algorithm.family(), AlgorithmFamily::Hmac);
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        if self.refresh_secs == 0 {
            return Err(JwtConfigError::ZeroRefresh { issuer: issuer() });
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(JwtConfigError::LeewayTooLong { issuer: issuer(), leeway_secs: self.leeway_secs });
        }
        Ok((source, algorithms))
    }
}

/// Why the issuers' settings or keys cannot be used: the service should not start.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("token issuer: `issuer` is empty; set it to the exact iss value of the issuer's tokens")]
    MissingIssuer,
    #[error("token issuer {issuer:?}: `audience` is empty; set it to the aud value of tokens for this service")]
    MissingAudience { issuer: String },
    #[error("token issuer {issuer:?} is configured twice; delete one of the two entries")]
    DuplicateIssuer { issuer: String },
    #[error("token issuer {issuer:?}: set one of `jwks_file` and `jwks_url`; neither is set")]
    NoKeySource { issuer: String },
    #[error("token issuer {issuer:?}: set only one of `jwks_file` and `jwks_url`; delete the other")]
    TwoKeySources { issuer: String },
    #[error("token issuer {issuer:?}: `jwks_url` {url:?} is not an https:// or http:// URL")]
    BadJwksUrl { issuer: String, url: String },
    #[error("token issuer {issuer:?}: `{field}` is empty; name the claim that carries it")]
    EmptyClaimName { issuer: String, field: &'static str },
    #[error("token issuer {issuer:?}: `algorithms` is empty; list what the issuer signs with, e.g. [\"RS256\"]")]
    NoAlgorithms { issuer: String },
    #[error(
        "token issuer {issuer:?}: algorithm \"none\" is not allowed (tokens must be signed); remove it from `algorithms`"
    )]
    NoneAlgorithm { issuer: String },
    #[error(
        "token issuer {issuer:?}: symmetric algorithms are not allowed for issuers ({algorithm} shares one secret \
         with every verifier, so any of them could mint tokens); remove it from `algorithms`"
    )]
    SymmetricAlgorithm { issuer: String, algorithm: String },
    #[error(
        "token issuer {issuer:?}: unknown algorithm {algorithm:?} in `algorithms`; use RS256, RS384, RS512, \
         PS256, PS384, PS512, ES256, ES384 or EdDSA"
    )]
    UnknownAlgorithm { issuer: String, algorithm: String },
    #[error("token issuer {issuer:?}: `refresh_secs` is 0; it must be at least 1 (default 300)")]
    ZeroRefresh { issuer: String },
    #[error("token issuer {issuer:?}: `leeway_secs` {leeway_secs} is over {MAX_LEEWAY_SECS}; fix the clocks instead")]
    LeewayTooLong { issuer: String, leeway_secs: u64 },
    #[error("token issuer {issuer:?}: loading its keys: {source}")]
    Jwks {
        issuer: String,
        #[source]
        source: JwksError,
    },
    #[error("building the HTTP client for JWKS URLs: {reason}")]
    HttpClient { reason: String },
}

/// Why an issuer's JWKS could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url} answered HTTP {status}; expected 200 with the JWKS")]
    Status { url: String, status: u16 },
    #[error("{location} is over {MAX_JWKS_BYTES} bytes; that is not a JWKS")]
    TooLarge { location: String },
    #[error("{location} is not a JWKS ({{\"keys\": [...]}}): {reason}")]
    NotJwks { location: String, reason: String },
    #[error("{location} has no usable signing key{skipped}")]
    NoUsableKey { location: String, skipped: String },
}

/// Why a bearer token was refused. Each message is fit to send to the caller (gRPC
/// `UNAUTHENTICATED`): it says what is wrong, never repeats the token, and quotes at most a
/// short prefix of what the token claimed (issuer, kid, role).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("bearer token is over {MAX_TOKEN_BYTES} bytes; that is not an OIDC token")]
    TooLong,
    #[error("malformed bearer token: expected a JWT (three base64url parts, a JSON header and JSON claims)")]
    Malformed,
    #[error("alg none is not accepted: the token must be signed by a trusted issuer")]
    AlgNone,
    #[error("token algorithm {alg:?} is not supported; issuers sign with RS*, PS*, ES256, ES384 or EdDSA")]
    UnsupportedAlgorithm { alg: String },
    #[error("token has no iss claim (a string) naming its issuer")]
    MissingIssuer,
    #[error("token issuer {issuer:?} is not trusted by this service")]
    UnknownIssuer { issuer: String },
    #[error("token header has no kid; tokens of issuer {issuer:?} must name their signing key")]
    MissingKid { issuer: String },
    #[error(
        "no key {kid:?} in the key set of issuer {issuer:?}; if the issuer has just rotated its keys, retry in a minute"
    )]
    UnknownKid { kid: String, issuer: String },
    #[error(
        "token algorithm {alg} does not fit key {kid:?} of issuer {issuer:?}, {key}: refused as key-type confusion"
    )]
    KeyTypeConfusion { alg: String, kid: String, issuer: String, key: String },
    #[error("token algorithm {alg} is not allowed for issuer {issuer:?} (allowed: {allowed})")]
    AlgorithmNotAllowed { alg: String, issuer: String, allowed: String },
    #[error("token signature does not verify with key {kid:?} of issuer {issuer:?}")]
    BadSignature { kid: String, issuer: String },
    #[error("token has expired; get a new one from the issuer")]
    Expired,
    #[error("token is not valid yet (its nbf is in the future); check the clocks")]
    NotYetValid,
    #[error("token audience does not include {audience:?}; get a token issued for this service")]
    WrongAudience { audience: String },
    #[error("token has no {claim} claim")]
    MissingClaim { claim: String },
    #[error("token claim {claim} has the wrong type or is empty")]
    InvalidClaim { claim: String },
    #[error("token has no {claim} claim naming the tenant")]
    MissingTenant { claim: String },
    #[error("token claim {claim} names no role; the issuer must grant one of viewer, operator, planner, admin")]
    NoRoles { claim: String },
    #[error("token role {role:?} is unknown: use viewer, operator, planner, admin or service")]
    UnknownRole { role: String },
    #[error("key {kid:?} of issuer {issuer:?} cannot verify tokens; the issuer's key set is broken")]
    KeyUnusable { kid: String, issuer: String },
    #[error("token could not be verified")]
    Unverifiable,
}

/// Checks bearer tokens against the configured issuers. Cheap to clone: clones share the
/// keys, so one refresh task serves them all.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Vec<Issuer>,
    /// Present when some issuer's keys come from a URL.
    http: Option<reqwest::Client>,
}

struct Issuer {
    config: IssuerConfig,
    source: JwksSource,
    algorithms: Vec<Algorithm>,
    /// Swapped whole on refresh; `verify` clones the `Arc` and lets go of the lock at once.
    keys: RwLock<Arc<KeySet>>,
    /// Poked by `verify` on an unknown kid, so the refresh task reloads early (rate limited).
    kid_miss: Notify,
    /// When the keys were last (re)loaded or a reload was tried, for the rate limit.
    last_attempt: Mutex<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum JwksSource {
    File(PathBuf),
    Url(String),
}

impl fmt::Display for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// A token's header or claims.
type JsonObject = Map<String, Value>;

/// An issuer's usable keys by kid.
type KeySet = HashMap<String, Key>;

#[derive(Debug)]
struct Key {
    kind: KeyKind,
    /// The JWK's own `alg`, when it pins one.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

/// The key types we verify with, each with the algorithms that fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    /// With the one algorithm its curve fits: ES256 for P-256, ES384 for P-384.
    Ec(Algorithm),
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            Self::Rsa => alg.family() == AlgorithmFamily::Rsa,
            Self::Ec(curve_alg) => alg == curve_alg,
            Self::Ed25519 => alg == Algorithm::EdDSA,
        }
    }

    /// The algorithm used to check at load time that the key can verify at all.
    fn natural_alg(self) -> Algorithm {
        match self {
            Self::Rsa => Algorithm::RS256,
            Self::Ec(alg) => alg,
            Self::Ed25519 => Algorithm::EdDSA,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Rsa => "an RSA key (RS*, PS*)",
            Self::Ec(Algorithm::ES384) => "an EC P-384 key (ES384)",
            Self::Ec(_) => "an EC P-256 key (ES256)",
            Self::Ed25519 => "an OKP Ed25519 key (EdDSA)",
        }
    }
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }

    fn describe(&self) -> String {
        match self.alg {
            Some(pinned) => format!("{} for {pinned:?} only", self.kind.describe()),
            None => self.kind.describe().to_owned(),
        }
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let issuers: Vec<_> = self.inner.issuers.iter().map(|issuer| &issuer.config.issuer).collect();
        f.debug_struct("TokenVerifier").field("issuers", &issuers).finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Validates every issuer's settings and loads its keys (a file read or an HTTP GET).
    /// Fails if any issuer has no usable key: a service that cannot check its users' tokens
    /// should say so at start, not on the first call.
    pub async fn new(configs: &[IssuerConfig]) -> Result<TokenVerifier, JwtConfigError> {
        let mut issuers = Vec::with_capacity(configs.len());
        for config in configs {
            let (source, algorithms) = config.checked()?;
            if issuers.iter().any(|issuer: &Issuer| issuer.config.issuer == config.issuer) {
                return Err(JwtConfigError::DuplicateIssuer { issuer: config.issuer.clone() });
            }
            issuers.push(Issuer {
                config: config.clone(),
                source,
                algorithms,
                keys: RwLock::new(Arc::new(KeySet::new())),
                kid_miss: Notify::new(),
                last_attempt: Mutex::new(Instant::now()),
            });
        }
        let http = if issuers.iter().any(|issuer| matches!(issuer.source, JwksSource::Url(_))) {
            Some(http_client()?)
        } else {
            None
        };
        let inner = Inner { issuers, http };
        for issuer in &inner.issuers {
            let (keys, skipped) = load_jwks(&issuer.source, inner.http.as_ref())
                .await
                .map_err(|source| JwtConfigError::Jwks { issuer: issuer.config.issuer.clone(), source })?;
            for reason in &skipped {
                tracing::warn!(issuer = %issuer.config.issuer, jwks = %issuer.source, reason, "skipping a JWKS key");
            }
            tracing::info!(issuer = %issuer.config.issuer, jwks = %issuer.source, keys = keys.len(), "loaded token issuer keys");
            issuer.install(keys);
        }
        Ok(TokenVerifier { inner: Arc::new(inner) })
    }

    /// The issuers' `iss` values, in configuration order.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.inner.issuers.iter().map(|issuer| issuer.config.issuer.as_str())
    }

    /// Checks `token` (without its `Bearer ` prefix) and names who it is for. No I/O.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let (header, claims) = peek(token)?;

        let alg_name = header.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed)?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        let alg = Algorithm::from_str(alg_name)
            .map_err(|_| TokenError::UnsupportedAlgorithm { alg: shorten(alg_name, SHOWN_CHARS) })?;

        let iss = claims.get("iss").and_then(Value::as_str).ok_or(TokenError::MissingIssuer)?;
        let issuer = self
            .inner
            .issuers
            .iter()
            .find(|issuer| issuer.config.issuer == iss)
            .ok_or_else(|| TokenError::UnknownIssuer { issuer: shorten(iss, SHOWN_CHARS) })?;
        let issuer_name = || issuer.config.issuer.clone();

        let kid = match header.get("kid") {
            None | Some(Value::Null) => return Err(TokenError::MissingKid { issuer: issuer_name() }),
            Some(Value::String(kid)) => kid.as_str(),
            Some(_) => return Err(TokenError::Malformed),
        };
        let keys = issuer.current_keys();
        let Some(key) = keys.get(kid) else {
            issuer.kid_miss.notify_one();
            return Err(TokenError::UnknownKid { kid: shorten(kid, SHOWN_CHARS), issuer: issuer_name() });
        };
        // Before the allowed list: an HS256 token naming an EC or RSA key is an attack, and
        // says so, rather than a mere disallowed algorithm.
        if !key.fits(alg) {
            return Err(TokenError::KeyTypeConfusion {
                alg: format!("{alg:?}"),
                kid: kid.to_owned(),
                issuer: issuer_name(),
                key: key.describe(),
            });
        }
        if !issuer.algorithms.contains(&alg) {
            let allowed: Vec<String> = issuer.algorithms.iter().map(|a| format!("{a:?}")).collect();
            return Err(TokenError::AlgorithmNotAllowed {
                alg: format!("{alg:?}"),
                issuer: issuer_name(),
                allowed: allowed.join(", "),
            });
        }

        let mut validation = Validation::new(alg);
        validation.leeway = issuer.config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&[&issuer.config.audience]);
        let verified = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|error| token_error(error.into_kind(), kid, issuer))?;
        principal(&verified.claims, issuer)
    }

    /// Keeps every issuer's keys fresh: reloads each every `refresh_secs`, and early (at most
    /// once per [`MIN_KID_REFRESH`]) after a token named a kid it does not know. A failed
    /// reload keeps the previous keys and logs a warning. Runs until the handle is aborted;
    /// abort it at shutdown. Must be called within a Tokio runtime.
    pub fn spawn_refresh(&self) -> JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // Owned by this task: aborting the handle drops the set, which aborts each loop.
            let mut loops = JoinSet::new();
            for index in 0..inner.issuers.len() {
                let inner = Arc::clone(&inner);
                loops.spawn(async move { inner.refresh_loop(index).await });
            }
            while loops.join_next().await.is_some() {}
        })
    }

    /// Reloads every issuer's keys now. Each failure keeps that issuer's previous keys and
    /// is logged; the first one is returned, after every issuer was tried.
    pub async fn refresh_now(&self) -> Result<(), JwtConfigError> {
        let mut first_error = None;
        for issuer in &self.inner.issuers {
            if let Err(error) = self.inner.refresh(issuer).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Inner {
    async fn refresh_loop(&self, index: usize) {
        let issuer = &self.issuers[index];
        let period = Duration::from_secs(issuer.config.refresh_secs);
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = issuer.kid_miss.notified() => {
                    let since = issuer.since_last_attempt();
                    if since < MIN_KID_REFRESH {
                        tokio::time::sleep(MIN_KID_REFRESH - since).await;
                    }
                }
            }
            // Logged inside; the previous keys stay.
            let _ = self.refresh(issuer).await;
        }
    }

    async fn refresh(&self, issuer: &Issuer) -> Result<(), JwtConfigError> {
        issuer.mark_attempt();
        match load_jwks(&issuer.source, self.http.as_ref()).await {
            Ok((keys, skipped)) => {
                // Warned about at start; a reload every few minutes need not repeat it.
                for reason in &skipped {
                    tracing::debug!(issuer = %issuer.config.issuer, reason, "skipping a JWKS key");
                }
                tracing::debug!(issuer = %issuer.config.issuer, keys = keys.len(), "reloaded token issuer keys");
                issuer.install(keys);
                Ok(())
            }
            Err(source) => {
                tracing::warn!(
                    issuer = %issuer.config.issuer, error = %source,
                    "reloading token issuer keys failed; keeping the previous keys"
                );
                Err(JwtConfigError::Jwks { issuer: issuer.config.issuer.clone(), source })
            }
        }
    }
}

impl Issuer {
    fn current_keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn install(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    fn mark_attempt(&self) {
        *self.last_attempt.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn since_last_attempt(&self) -> Duration {
        self.last_attempt.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }
}

/// The unverified header and claims, each a JSON object, only to choose the issuer and key;
/// nothing read here is trusted before jsonwebtoken has checked the signature.
fn peek(token: &str) -> Result<(JsonObject, JsonObject), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let object = |part: &str| -> Result<JsonObject, TokenError> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(object)) => Ok(object),
            _ => Err(TokenError::Malformed),
        }
    };
    Ok((object(header)?, object(claims)?))
}

/// What a verified token says about its holder.
fn principal(claims: &Map<String, Value>, issuer: &Issuer) -> Result<Principal, TokenError> {
    let config = &issuer.config;
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub,
        _ => return Err(TokenError::InvalidClaim { claim: "sub".into() }),
    };
    let tenant = match claims.get(&config.tenant_claim) {
        None | Some(Value::Null) => return Err(TokenError::MissingTenant { claim: config.tenant_claim.clone() }),
        Some(Value::String(tenant)) if tenant.is_empty() => {
            return Err(TokenError::MissingTenant { claim: config.tenant_claim.clone() });
        }
        Some(Value::String(tenant)) => tenant,
        Some(_) => return Err(TokenError::InvalidClaim { claim: config.tenant_claim.clone() }),
    };
    let roles = roles(claims.get(&config.roles_claim), &config.roles_claim)?;
    Ok(Principal {
        subject: format!("user:{}#{sub}", config.issuer),
        kind: PrincipalKind::Token { issuer: config.issuer.clone() },
        tenants: TenantScope::parse(tenant),
        roles,
    })
}

/// The roles claim: an array of names or one space-separated string (as OAuth's `scope`).
/// Every name must be a role: a typo granting nothing should be seen, not ignored.
fn roles(value: Option<&Value>, claim: &str) -> Result<Vec<Role>, TokenError> {
    let names: Vec<&str> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(names)) => names.split_whitespace().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| TokenError::InvalidClaim { claim: claim.to_owned() }))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(TokenError::InvalidClaim { claim: claim.to_owned() }),
    };
    let mut roles = Vec::with_capacity(names.len());
    for name in names {
        let role = Role::from_str(name).map_err(|_| TokenError::UnknownRole { role: shorten(name, SHOWN_CHARS) })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(TokenError::NoRoles { claim: claim.to_owned() });
    }
    Ok(roles)
}

/// jsonwebtoken's refusal as ours.
fn token_error(kind: ErrorKind, kid: &str, issuer: &Issuer) -> TokenError {
    let config = &issuer.config;
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature { kid: kid.to_owned(), issuer: config.issuer.clone() },
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience { audience: config.audience.clone() },
        // The issuer was chosen by this very `iss`, so only a non-string one gets here.
        ErrorKind::InvalidIssuer => TokenError::MissingIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::MissingIssuer,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim { claim },
        ErrorKind::InvalidClaimFormat(claim) => TokenError::InvalidClaim { claim },
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => {
            tracing::warn!(issuer = %config.issuer, kid, "a JWKS key cannot verify tokens");
            TokenError::KeyUnusable { kid: kid.to_owned(), issuer: config.issuer.clone() }
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            TokenError::Malformed
        }
        other => {
            tracing::debug!(issuer = %config.issuer, error = ?other, "token refused");
            TokenError::Unverifiable
        }
    }
}

/// The HTTP client for JWKS URLs, with rustls on ring's provider (see Cargo.toml).
fn http_client() -> Result<reqwest::Client, JwtConfigError> {
    // reqwest is built without a bundled provider, so the process needs one; an error means
    // one is installed already, which serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|error| JwtConfigError::HttpClient { reason: error_chain(&error) })
}

/// Reads or fetches a JWKS and keeps its usable signing keys, with why each other was
/// skipped. No usable key at all is an error: the issuer could not sign anything we accept.
async fn load_jwks(source: &JwksSource, http: Option<&reqwest::Client>) -> Result<(KeySet, Vec<String>), JwksError> {
    let bytes = match source {
        JwksSource::File(path) => read_file(path.clone()).await?,
        JwksSource::Url(url) => {
            let http = http.expect("an HTTP client is built whenever an issuer has a jwks_url");
            fetch(http, url).await?
        }
    };
    let (keys, skipped) = parse_jwks(&bytes, &source.to_string())?;
    if keys.is_empty() {
        let skipped = if skipped.is_empty() { String::new() } else { format!(" (skipped: {})", skipped.join("; ")) };
        return Err(JwksError::NoUsableKey { location: source.to_string(), skipped });
    }
    Ok((keys, skipped))
}

async fn read_file(path: PathBuf) -> Result<Vec<u8>, JwksError> {
    let shown = path.display().to_string();
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        std::fs::File::open(&path)?.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    })
    .await
    .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
    let bytes = read.map_err(|source| JwksError::Read { path: shown.clone(), source })?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge { location: shown });
    }
    Ok(bytes)
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, JwksError> {
    let failed = |error: reqwest::Error| JwksError::Fetch { url: url.to_owned(), reason: error_chain(&error) };
    let mut response =
        http.get(url).header(reqwest::header::ACCEPT, "application/json").send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(JwksError::Status { url: url.to_owned(), status: response.status().as_u16() });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge { location: url.to_owned() });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The usable keys of a JWKS document and why each other key was skipped. Keys are parsed
/// one by one so that one odd key (an encryption key, a curve we do not support) does not
/// hide the others.
fn parse_jwks(bytes: &[u8], location: &str) -> Result<(KeySet, Vec<String>), JwksError> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document = serde_json::from_slice(bytes)
        .map_err(|error| JwksError::NotJwks { location: location.to_owned(), reason: error.to_string() })?;
    let mut keys = KeySet::new();
    let mut skipped = Vec::new();
    for (index, value) in document.keys.into_iter().enumerate() {
        let name = match value.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("key {:?}", shorten(kid, SHOWN_CHARS)),
            None => format!("key #{index}"),
        };
        match usable_key(value) {
            Ok((kid, _)) if keys.contains_key(&kid) => skipped.push(format!("{name}: a second key with this kid")),
            Ok((kid, key)) => {
                keys.insert(kid, key);
            }
            Err(reason) => skipped.push(format!("{name}: {reason}")),
        }
    }
    Ok((keys, skipped))
}

/// One JWK as a key we verify with, or why it is not one.
fn usable_key(value: Value) -> Result<(String, Key), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|error| format!("not a JWK ({error})"))?;
    let kid = jwk.common.key_id.clone().filter(|kid| !kid.is_empty()).ok_or("no kid")?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return Err("an encryption key (use: enc)".into());
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyKind::Ec(Algorithm::ES256),
            EllipticCurve::P384 => KeyKind::Ec(Algorithm::ES384),
            ref curve => return Err(format!("EC curve {curve:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            ref curve => return Err(format!("OKP curve {curve:?} is not supported")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (oct) key; issuers must sign with public keys".into());
        }
        _ => return Err("an unsupported key type".into()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(pinned) => {
            let alg = Algorithm::try_from(pinned).map_err(|_| format!("alg {pinned} is not a signing algorithm"))?;
            if !kind.fits(alg) {
                return Err(format!("its alg {alg:?} does not fit {}", kind.describe()));
            }
            Some(alg)
        }
    };
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|error| format!("unreadable key material ({error})"))?;
    // Building a verifier parses the key (an EC point on its curve, an RSA modulus), so a
    // broken key is skipped now rather than failing every token later.
    if let Some(provider) = jsonwebtoken::crypto::CryptoProvider::try_get_default() {
        (provider.verifier_factory)(&alg.unwrap_or(kind.natural_alg()), &decoding)
            .map_err(|error| format!("invalid key material ({error})"))?;
    }
    Ok((kid, Key { kind, alg, decoding }))
}

/// An error with its causes, for messages read by an operator (reqwest's own message stops
/// at "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IssuerConfig {
        IssuerConfig {
            issuer: "https://login.example.com".into(),
            audience: "smart-maintenance".into(),
            jwks_file: "/etc/sm/jwks.json".into(),
            ..IssuerConfig::default()
        }
    }

    #[test]
    fn defaults_are_the_documented_ones_and_a_filled_in_issuer_validates() {
        let default = IssuerConfig::default();
        assert_eq!((default.tenant_claim.as_str(), default.roles_claim.as_str()), ("tenant", "roles"));
        assert_eq!(default.algorithms, ["RS256", "ES256", "EdDSA"]);
        assert_eq!((default.refresh_secs, default.leeway_secs), (300, 30));
        assert!(matches!(default.validate(), Err(JwtConfigError::MissingIssuer)));
        config().validate().unwrap();
        let (source, algorithms) = config().checked().unwrap();
        assert_eq!(source, JwksSource::File("/etc/sm/jwks.json".into()));
        assert_eq!(algorithms, [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);
        let url =
            IssuerConfig { jwks_file: String::new(), jwks_url: "https://login.example.com/certs".into(), ..config() };
        assert_eq!(url.checked().unwrap().0, JwksSource::Url("https://login.example.com/certs".into()));
    }

    #[test]
    fn config_parses_with_defaults_and_refuses_unknown_fields() {
        let parsed: IssuerConfig = serde_json::from_value(serde_json::json!({
            "issuer": "https://login.example.com", "audience": "sm", "jwks_url": "http://idp:8080/certs"
        }))
        .unwrap();
        assert_eq!(parsed.roles_claim, "roles");
        parsed.validate().unwrap();
        let unknown = serde_json::from_value::<IssuerConfig>(serde_json::json!({ "issuer": "x", "jwks": "y" }));
        assert!(unknown.unwrap_err().to_string().contains("unknown field `jwks`"));
    }

    #[test]
    fn config_refuses_none_and_symmetric_algorithms() {
        for none in ["none", "None"] {
            let error =
                IssuerConfig { algorithms: vec!["ES256".into(), none.into()], ..config() }.validate().unwrap_err();
            assert!(matches!(error, JwtConfigError::NoneAlgorithm { .. }), "{error}");
            assert!(error.to_string().contains("\"none\" is not allowed"), "{error}");
        }
        for symmetric in ["HS256", "HS384", "HS512", "hs256"] {
            let error = IssuerConfig { algorithms: vec![symmetric.into()], ..config() }.validate().unwrap_err();
            assert!(matches!(error, JwtConfigError::SymmetricAlgorithm { .. }), "{error}");
            assert!(error.to_string().contains("symmetric algorithms are not allowed for issuers"), "{error}");
        }
        let error = IssuerConfig { algorithms: vec!["ES512".into()], ..config() }.validate().unwrap_err();
        assert!(matches!(error, JwtConfigError::UnknownAlgorithm { .. }), "{error}");
        let error = IssuerConfig { algorithms: vec![], ..config() }.validate().unwrap_err();
        assert!(matches!(error, JwtConfigError::NoAlgorithms { .. }), "{error}");
    }

    #[test]
    fn config_needs_exactly_one_key_source() {
        let both = IssuerConfig { jwks_url: "https://login.example.com/certs".into(), ..config() };
        let error = both.validate().unwrap_err();
        assert!(matches!(error, JwtConfigError::TwoKeySources { .. }), "{error}");
        assert!(error.to_string().contains("set only one of `jwks_file` and `jwks_url`"), "{error}");
        let neither = IssuerConfig { jwks_file: String::new(), ..config() };
        let error = neither.validate().unwrap_err();
        assert!(matches!(error, JwtConfigError::NoKeySource { .. }), "{error}");
        for url in ["ftp://login.example.com/certs", "login.example.com/certs", "https://", "https:///certs"] {
            let bad = IssuerConfig { jwks_file: String::new(), jwks_url: url.into(), ..config() };
            assert!(matches!(bad.validate(), Err(JwtConfigError::BadJwksUrl { .. })), "{url}");
        }
    }

    #[test]
    fn config_refuses_other_unusable_settings() {
        let cases = [
            IssuerConfig { audience: String::new(), ..config() },
            IssuerConfig { tenant_claim: String::new(), ..config() },
            IssuerConfig { roles_claim: String::new(), ..config() },
            IssuerConfig { refresh_secs: 0, ..config() },
            IssuerConfig { leeway_secs: MAX_LEEWAY_SECS + 1, ..config() },
        ];
        for case in cases {
            assert!(case.validate().is_err(), "{case:?}");
        }
    }

    #[test]
    fn roles_come_from_an_array_or_a_space_separated_string() {
        let roles_of = |value: Value| roles(Some(&value), "roles");
        assert_eq!(roles_of(serde_json::json!(["viewer", "admin"])), Ok(vec![Role::Viewer, Role::Admin]));
        assert_eq!(
            roles_of(serde_json::json!(" operator  planner operator ")),
            Ok(vec![Role::Operator, Role::Planner])
        );
        assert_eq!(roles_of(serde_json::json!([])), Err(TokenError::NoRoles { claim: "roles".into() }));
        assert_eq!(roles_of(serde_json::json!("  ")), Err(TokenError::NoRoles { claim: "roles".into() }));
        assert_eq!(roles(None, "roles"), Err(TokenError::NoRoles { claim: "roles".into() }));
        assert_eq!(roles_of(serde_json::json!(["viewer", 7])), Err(TokenError::InvalidClaim { claim: "roles".into() }));
        assert_eq!(
            roles_of(serde_json::json!({"viewer": true})),
            Err(TokenError::InvalidClaim { claim: "roles".into() })
        );
        assert_eq!(
            roles_of(serde_json::json!(["viewer", "root"])),
            Err(TokenError::UnknownRole { role: "root".into() })
        );
    }

    #[test]
    fn peek_needs_three_parts_with_json_objects() {
        let part = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let good = format!("{}.{}.sig", part(r#"{"alg":"ES256"}"#), part(r#"{"iss":"x"}"#));
        assert!(peek(&good).is_ok());
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{good}.extra"),
            format!("{}.{}.sig", part("[1]"), part(r#"{"iss":"x"}"#)),
            format!("{}.{}.sig", part(r#"{"alg":"ES256"}"#), part("not json")),
            format!("{}=.{}.sig", part(r#"{"alg":"ES256"}"#), part(r#"{"iss":"x"}"#)),
        ] {
            assert_eq!(peek(&bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn jwks_keys_that_cannot_sign_for_an_issuer_are_skipped_with_a_reason() {
        let document = serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "shared", "k": "c2VjcmV0" },
            { "kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": "AA", "y": "AA" },
            { "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA" },
            { "kty": "EC", "crv": "P-256", "kid": "off-curve", "x": "AQ", "y": "AQ" },
            { "kty": "weird", "kid": "weird" },
        ]});
        let (keys, skipped) = parse_jwks(document.to_string().as_bytes(), "jwks.json").unwrap();
        assert!(keys.is_empty());
        let skipped = skipped.join("\n");
        for expected in [
            "\"shared\": a symmetric (oct) key",
            "\"enc\": an encryption key",
            "key #2: no kid",
            "\"off-curve\": invalid key material",
            "\"weird\": an unsupported key type",
        ] {
            assert!(skipped.contains(expected), "{expected} not in\n{skipped}");
        }
        let error = parse_jwks(b"{\"keys\": 1}", "jwks.json").unwrap_err();
        assert!(error.to_string().starts_with("jwks.json is not a JWKS"), "{error}");
    }
}
