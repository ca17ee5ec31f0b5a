//! Tokens end to end through the public API: keys generated at run time (none checked in), a
//! JWKS written to a temporary file or served over HTTP on 127.0.0.1, and tokens signed with
//! jsonwebtoken as an issuer would sign them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde_json::{Value, json};
use sm_domain::TenantId;
use sm_identity::jwt::{IssuerConfig, JwtConfigError, TokenError, TokenVerifier};
use sm_identity::{Principal, PrincipalKind, Role, TenantScope};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://login.example.com/realms/acme";
const AUDIENCE: &str = "smart-maintenance";

/// A signing key an issuer would hold, with its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl TestKey {
    /// A fresh P-256 key. The PKCS#8 document is written by hand (version, ecPublicKey with
    /// prime256v1, then a SEC1 ECPrivateKey holding only the scalar) so that no key
    /// generation crate is needed; the top bit is cleared so the scalar is below the order.
    fn es256(kid: &str) -> Self {
        let mut scalar = [0u8; 32];
        rand::rng().fill_bytes(&mut scalar);
        scalar[0] &= 0x7f;
        scalar[31] |= 1;
        let mut der = hex::decode("3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420").unwrap();
        der.extend_from_slice(&scalar);
        Self::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(&der))
    }

    /// A fresh Ed25519 key: PKCS#8 is a fixed 16-byte prefix and the 32-byte seed.
    fn ed25519(kid: &str) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
        der.extend_from_slice(&seed);
        let mut key = Self::new(kid, Algorithm::EdDSA, EncodingKey::from_ed_der(&der));
        // Issuers often leave `alg` out of a JWK: the key type alone must then decide.
        key.jwk.common.key_algorithm = None;
        key
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        Self { kid: kid.into(), alg, encoding, jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// The uncompressed SEC1 point (`04 || x || y`): what an attacker would use as an HMAC
    /// secret, since the public key is public.
    fn ec_public_bytes(&self) -> Vec<u8> {
        let AlgorithmParameters::EllipticCurve(ec) = &self.jwk.algorithm else { panic!("not an EC key") };
        let mut point = vec![4];
        point.extend(URL_SAFE_NO_PAD.decode(&ec.x).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(&ec.y).unwrap());
        point
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|key| &key.jwk).collect::<Vec<_>>() }).to_string()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// What a well-behaved issuer puts in a token for an operator of tenant acme.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now(),
        "exp": now() + 600,
        "tenant": "acme",
        "roles": ["operator"],
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn config(jwks_file: &Path) -> IssuerConfig {
    IssuerConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_file: jwks_file.display().to_string(),
        ..IssuerConfig::default()
    }
}

/// An issuer with an ES256 and an Ed25519 key in a JWKS file, and a verifier trusting it.
struct Fixture {
    _dir: tempfile::TempDir,
    jwks_path: PathBuf,
    es: TestKey,
    ed: TestKey,
    verifier: TokenVerifier,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let jwks_path = dir.path().join("jwks.json");
    let (es, ed) = (TestKey::es256("es-1"), TestKey::ed25519("ed-1"));
    std::fs::write(&jwks_path, jwks(&[&es, &ed])).unwrap();
    let verifier = TokenVerifier::new(&[config(&jwks_path)]).await.unwrap();
    Fixture { _dir: dir, jwks_path, es, ed, verifier }
}

fn operator_of_acme() -> Principal {
    Principal {
        subject: format!("user:{ISSUER}#alice"),
        kind: PrincipalKind::Token { issuer: ISSUER.into() },
        tenants: TenantScope::One(TenantId("acme".into())),
        roles: vec![Role::Operator],
    }
}

/// Refusals go to the caller: they must not carry the token or its signature.
fn assert_refused(verifier: &TokenVerifier, token: &str, expected: TokenError) {
    let error = verifier.verify(token).unwrap_err();
    assert_eq!(error, expected);
    let message = error.to_string();
    for part in token.split('.').filter(|part| part.len() > 8) {
        assert!(!message.contains(part), "{message:?} echoes the token");
    }
}

#[tokio::test]
async fn a_valid_token_names_the_user_their_tenant_and_roles() {
    let f = fixture().await;
    assert_eq!(f.verifier.verify(&f.es.sign(&claims())).unwrap(), operator_of_acme());
    assert_eq!(f.verifier.verify(&f.ed.sign(&claims())).unwrap(), operator_of_acme());

    let admin_of_all = with(with(claims(), "tenant", json!("*")), "roles", json!(["admin", "viewer"]));
    let principal = f.verifier.verify(&f.es.sign(&admin_of_all)).unwrap();
    assert_eq!((principal.tenants, principal.roles), (TenantScope::All, vec![Role::Admin, Role::Viewer]));
    // `aud` may be an array that includes this service.
    let audiences = with(claims(), "aud", json!(["other", AUDIENCE]));
    assert_eq!(f.verifier.verify(&f.es.sign(&audiences)).unwrap(), operator_of_acme());
    assert_eq!(f.verifier.issuers().collect::<Vec<_>>(), [ISSUER]);
}

#[tokio::test]
async fn roles_may_be_one_space_separated_string() {
    let f = fixture().await;
    let token = f.es.sign(&with(claims(), "roles", json!("viewer planner")));
    assert_eq!(f.verifier.verify(&token).unwrap().roles, [Role::Viewer, Role::Planner]);
}

#[tokio::test]
async fn claim_names_come_from_the_config() {
    let f = fixture().await;
    let renamed = IssuerConfig { tenant_claim: "org".into(), roles_claim: "sm_roles".into(), ..config(&f.jwks_path) };
    let verifier = TokenVerifier::new(&[renamed]).await.unwrap();
    let token = f.es.sign(&with(with(claims(), "org", json!("acme")), "sm_roles", json!(["operator"])));
    assert_eq!(verifier.verify(&token).unwrap(), operator_of_acme());
    // The default names mean nothing to this issuer.
    let token = f.es.sign(&without(claims(), "roles"));
    let error = verifier.verify(&token).unwrap_err();
    assert_eq!(error, TokenError::MissingTenant { claim: "org".into() });
}

#[tokio::test]
async fn an_expired_token_is_refused_beyond_the_leeway_only() {
    let f = fixture().await;
    let expired = f.es.sign(&with(claims(), "exp", json!(now() - 3600)));
    assert_refused(&f.verifier, &expired, TokenError::Expired);
    assert!(TokenError::Expired.to_string().contains("expired"));
    // Ten seconds ago is within the default 30 s of clock skew.
    let just_expired = f.es.sign(&with(claims(), "exp", json!(now() - 10)));
    assert_eq!(f.verifier.verify(&just_expired).unwrap(), operator_of_acme());
    // `exp` is required.
    let forever = f.es.sign(&without(claims(), "exp"));
    assert_refused(&f.verifier, &forever, TokenError::MissingClaim { claim: "exp".into() });
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let f = fixture().await;
    let early = f.es.sign(&with(claims(), "nbf", json!(now() + 3600)));
    assert_refused(&f.verifier, &early, TokenError::NotYetValid);
    let fine = f.es.sign(&with(claims(), "nbf", json!(now() - 5)));
    assert!(f.verifier.verify(&fine).is_ok());
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let f = fixture().await;
    let token = f.es.sign(&with(claims(), "aud", json!("grafana")));
    assert_refused(&f.verifier, &token, TokenError::WrongAudience { audience: AUDIENCE.into() });
    let token = f.es.sign(&without(claims(), "aud"));
    assert_refused(&f.verifier, &token, TokenError::MissingClaim { claim: "aud".into() });
}

#[tokio::test]
async fn a_token_from_an_unknown_issuer_is_refused() {
    let f = fixture().await;
    let token = f.es.sign(&with(claims(), "iss", json!("https://evil.example.com")));
    assert_refused(&f.verifier, &token, TokenError::UnknownIssuer { issuer: "https://evil.example.com".into() });
    let message = f.verifier.verify(&token).unwrap_err().to_string();
    assert!(message.contains("\"https://evil.example.com\" is not trusted"), "{message}");
    assert_refused(&f.verifier, &f.es.sign(&without(claims(), "iss")), TokenError::MissingIssuer);
    assert_refused(&f.verifier, &f.es.sign(&with(claims(), "iss", json!([ISSUER]))), TokenError::MissingIssuer);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let f = fixture().await;
    for alg in ["none", "None", "NONE"] {
        let header = URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "kid": f.es.kid, "typ": "JWT" }).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        let token = format!("{header}.{payload}.");
        assert_refused(&f.verifier, &token, TokenError::AlgNone);
        assert!(f.verifier.verify(&token).unwrap_err().to_string().contains("alg none is not accepted"));
    }
}

#[tokio::test]
async fn hs256_signed_with_the_ec_public_key_is_refused_as_key_type_confusion() {
    let f = fixture().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(f.es.kid.clone());
    let secret = EncodingKey::from_secret(&f.es.ec_public_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims(), &secret).unwrap();
    let error = f.verifier.verify(&token).unwrap_err();
    assert!(
        matches!(&error, TokenError::KeyTypeConfusion { alg, kid, issuer, .. }
            if alg == "HS256" && kid == "es-1" && issuer == ISSUER),
        "{error:?}"
    );
    assert!(error.to_string().contains("key-type confusion"), "{error}");

    // The same with the Ed25519 key's kid, and an EdDSA header naming the EC key.
    header.kid = Some(f.ed.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims(), &secret).unwrap();
    assert!(matches!(f.verifier.verify(&token), Err(TokenError::KeyTypeConfusion { .. })));
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(f.es.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims(), &f.ed.encoding).unwrap();
    assert!(matches!(f.verifier.verify(&token), Err(TokenError::KeyTypeConfusion { .. })));
}

#[tokio::test]
async fn an_algorithm_the_issuer_does_not_use_is_refused() {
    let f = fixture().await;
    let es_only = IssuerConfig { algorithms: vec!["ES256".into()], ..config(&f.jwks_path) };
    let verifier = TokenVerifier::new(&[es_only]).await.unwrap();
    assert!(verifier.verify(&f.es.sign(&claims())).is_ok());
    assert_refused(
        &verifier,
        &f.ed.sign(&claims()),
        TokenError::AlgorithmNotAllowed { alg: "EdDSA".into(), issuer: ISSUER.into(), allowed: "ES256".into() },
    );
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES512","kid":"es-1"}"#);
    let token = format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode(claims().to_string()));
    assert_refused(&verifier, &token, TokenError::UnsupportedAlgorithm { alg: "ES512".into() });
}

#[tokio::test]
async fn an_unknown_or_missing_kid_is_refused() {
    let f = fixture().await;
    let stranger = TestKey::es256("es-2");
    let error = f.verifier.verify(&stranger.sign(&claims())).unwrap_err();
    assert_eq!(error, TokenError::UnknownKid { kid: "es-2".into(), issuer: ISSUER.into() });
    let message = error.to_string();
    assert!(message.contains("\"es-2\"") && message.contains(ISSUER), "{message}");

    let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &f.es.encoding).unwrap();
    assert_refused(&f.verifier, &token, TokenError::MissingKid { issuer: ISSUER.into() });
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_the_same_kid_is_refused() {
    let f = fixture().await;
    let impostor = TestKey::es256("es-1");
    let token = impostor.sign(&claims());
    assert_refused(&f.verifier, &token, TokenError::BadSignature { kid: "es-1".into(), issuer: ISSUER.into() });
    // A genuine token whose claims were changed after signing.
    let genuine = f.es.sign(&claims());
    let parts: Vec<&str> = genuine.split('.').collect();
    let promoted = URL_SAFE_NO_PAD.encode(with(claims(), "roles", json!(["admin"])).to_string());
    let tampered = format!("{}.{promoted}.{}", parts[0], parts[2]);
    assert_refused(&f.verifier, &tampered, TokenError::BadSignature { kid: "es-1".into(), issuer: ISSUER.into() });
}

#[tokio::test]
async fn a_token_without_tenant_or_with_unknown_roles_is_refused() {
    let f = fixture().await;
    assert_refused(
        &f.verifier,
        &f.es.sign(&without(claims(), "tenant")),
        TokenError::MissingTenant { claim: "tenant".into() },
    );
    assert_refused(
        &f.verifier,
        &f.es.sign(&with(claims(), "tenant", json!(7))),
        TokenError::InvalidClaim { claim: "tenant".into() },
    );
    let root = f.es.sign(&with(claims(), "roles", json!(["operator", "root"])));
    assert_refused(&f.verifier, &root, TokenError::UnknownRole { role: "root".into() });
    assert_refused(&f.verifier, &f.es.sign(&without(claims(), "roles")), TokenError::NoRoles { claim: "roles".into() });
    assert_refused(
        &f.verifier,
        &f.es.sign(&without(claims(), "sub")),
        TokenError::MissingClaim { claim: "sub".into() },
    );
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let f = fixture().await;
    let long = "a".repeat(20_000);
    for bad in ["", "not-a-token", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30", &format!("{}.x", f.es.sign(&claims()))] {
        assert_eq!(f.verifier.verify(bad), Err(TokenError::Malformed), "{bad:?}");
    }
    assert_eq!(f.verifier.verify(&long), Err(TokenError::TooLong));
}

#[tokio::test]
async fn refresh_now_picks_up_a_new_key_and_keeps_the_old_keys_on_failure() {
    let f = fixture().await;
    let rotated = TestKey::es256("es-2");
    let token = rotated.sign(&claims());
    assert!(matches!(f.verifier.verify(&token), Err(TokenError::UnknownKid { .. })));

    std::fs::write(&f.jwks_path, jwks(&[&f.es, &f.ed, &rotated])).unwrap();
    f.verifier.refresh_now().await.unwrap();
    assert_eq!(f.verifier.verify(&token).unwrap(), operator_of_acme());

    // A broken or empty JWKS is not installed: the keys in use stay.
    std::fs::write(&f.jwks_path, "{\"keys\": [").unwrap();
    let error = f.verifier.refresh_now().await.unwrap_err();
    assert!(matches!(error, JwtConfigError::Jwks { .. }) && error.to_string().contains("is not a JWKS"), "{error}");
    std::fs::write(&f.jwks_path, "{\"keys\": []}").unwrap();
    let error = f.verifier.refresh_now().await.unwrap_err();
    assert!(error.to_string().contains("no usable signing key"), "{error}");
    std::fs::remove_file(&f.jwks_path).unwrap();
    assert!(f.verifier.refresh_now().await.unwrap_err().to_string().contains("cannot read"));
    assert!(f.verifier.verify(&token).is_ok() && f.verifier.verify(&f.ed.sign(&claims())).is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_refresh_task_reloads_early_after_an_unknown_kid() {
    let f = fixture().await;
    // Hourly refresh: a reload within minutes can only be the unknown kid's doing.
    let hourly = IssuerConfig { refresh_secs: 3600, ..config(&f.jwks_path) };
    let verifier = TokenVerifier::new(&[hourly]).await.unwrap();
    let refresh = verifier.spawn_refresh();

    let rotated = TestKey::es256("es-2");
    std::fs::write(&f.jwks_path, jwks(&[&f.es, &rotated])).unwrap();
    let token = rotated.sign(&claims());
    assert!(matches!(verifier.verify(&token), Err(TokenError::UnknownKid { .. })));
    let started = tokio::time::Instant::now();
    while verifier.verify(&token).is_err() {
        assert!(started.elapsed() < Duration::from_secs(600), "no reload after an unknown kid");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Not before the rate limit allowed it.
    assert!(started.elapsed() >= Duration::from_secs(25), "{:?}", started.elapsed());
    refresh.abort();
}

#[tokio::test]
async fn keys_come_from_a_jwks_url() {
    let key = TestKey::ed25519("ed-web");
    let body = Arc::new(Mutex::new(jwks(&[&key])));
    let url = serve_jwks(Arc::clone(&body)).await;
    let from_url = IssuerConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_url: format!("{url}/certs"),
        ..IssuerConfig::default()
    };
    let verifier = TokenVerifier::new(std::slice::from_ref(&from_url)).await.unwrap();
    assert_eq!(verifier.verify(&key.sign(&claims())).unwrap(), operator_of_acme());

    let rotated = TestKey::es256("es-web");
    *body.lock().unwrap() = jwks(&[&key, &rotated]);
    verifier.refresh_now().await.unwrap();
    assert!(verifier.verify(&rotated.sign(&claims())).is_ok());

    // Nothing listening: the start fails and says where it looked.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/certs", listener.local_addr().unwrap());
    drop(listener);
    let error = TokenVerifier::new(&[IssuerConfig { jwks_url: dead.clone(), ..from_url }]).await.unwrap_err();
    assert!(error.to_string().contains(&format!("cannot fetch {dead}")), "{error}");
}

#[tokio::test]
async fn new_refuses_bad_configs_and_duplicate_issuers() {
    let f = fixture().await;
    let both = IssuerConfig { jwks_url: "https://login.example.com/certs".into(), ..config(&f.jwks_path) };
    assert!(matches!(TokenVerifier::new(&[both]).await, Err(JwtConfigError::TwoKeySources { .. })));
    let hs = IssuerConfig { algorithms: vec!["HS256".into()], ..config(&f.jwks_path) };
    assert!(matches!(TokenVerifier::new(&[hs]).await, Err(JwtConfigError::SymmetricAlgorithm { .. })));
    let twice = [config(&f.jwks_path), config(&f.jwks_path)];
    assert!(matches!(TokenVerifier::new(&twice).await, Err(JwtConfigError::DuplicateIssuer { .. })));
    let missing = config(&f.jwks_path.with_file_name("missing.json"));
    let error = TokenVerifier::new(&[missing]).await.unwrap_err();
    assert!(error.to_string().contains("missing.json"), "{error}");
}

/// A one-route HTTP/1.1 server answering every request with the current `body`.
async fn serve_jwks(body: Arc<Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    url
}
