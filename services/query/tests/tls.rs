//! TLS and mutual TLS on the query service's gRPC port, against the real local stack: the
//! server runs in-process on 127.0.0.1:0 with `query.tls` set, and the clients connect the
//! way `smctl` does (`sm_proto::auth::connect`).
//!
//! Every certificate is made at run time with rcgen (a CA, a server certificate for
//! 127.0.0.1 and localhost, client certificates, and a second CA nobody trusts) and written
//! to a temporary directory: nothing secret is committed, and nothing expires under the
//! tests. Each test gets its own PostgreSQL schema, migrated with the projector's
//! migrations, holding one asset of tenant `acme` and one of `globex`. The stack must be up
//! (`deploy/local/stack up`); a missing stack is a panic, never a skip.

mod common;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use sm_proto::AssetServiceClient;
use sm_proto::auth::{ConnectError, Credentials, connect, connect_channel};
use sm_proto::v1;
use sm_query::QueryConfig;
use sm_query::db::PgTimestamp;
use sm_query::tls::TlsSettings;
use sm_storage::PostgresConfig;
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::stack_from_env_file;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

/// A refused connection must fail by then, never hang.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A throwaway certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { pem, issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate signed by this CA and its key, PEM.
    fn issue(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }
}

/// The certificate files of one test.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// The client certificate `name` and its key, as `connect` takes them.
    fn identity(&self, name: &str) -> (String, String) {
        (self.path(&format!("{name}.pem")), self.path(&format!("{name}-key.pem")))
    }

    /// Makes the trusted CA and a second one, the server's certificate (127.0.0.1 and
    /// localhost) and client certificates: `gateway` (`acme/gateway-1`), `unnamed` (a CN
    /// without a tenant) and `stranger` (`acme/gateway-1` again, from the other CA).
    fn new() -> Self {
        let pki = Self { dir: tempfile::tempdir().unwrap() };
        let ca = Ca::new("sm test CA");
        let other = Ca::new("someone else's CA");
        pki.write("ca.pem", &ca.pem);
        pki.write("other-ca.pem", &other.pem);
        let server = ca.issue("query", &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        let clients = [
            ("gateway", ca.issue("acme/gateway-1", &[], ExtendedKeyUsagePurpose::ClientAuth)),
            ("unnamed", ca.issue("gateway-2", &[], ExtendedKeyUsagePurpose::ClientAuth)),
            ("stranger", other.issue("acme/gateway-1", &[], ExtendedKeyUsagePurpose::ClientAuth)),
        ];
        for (name, (cert, key)) in [("server", server)].into_iter().chain(clients) {
            pki.write(&format!("{name}.pem"), &cert);
            pki.write(&format!("{name}-key.pem"), &key);
        }
        pki
    }
}

/// A server with TLS (and mutual TLS when asked) on its own schema.
struct Fixture {
    pki: Pki,
    server: common::Server,
    _schema: ScratchSchema,
}

impl Fixture {
    async fn start(mutual: bool) -> Self {
        let stack = stack_from_env_file();
        let schema = ScratchSchema::create(&stack, "sm_query_tls").await;
        let pki = Pki::new();
        let mut config = QueryConfig {
            kafka: sm_kafka::KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..Default::default() },
            postgres: PostgresConfig { url: Secret(schema.url.clone()), pool_size: 2, ..Default::default() },
            auth: common::auth(&stack),
            ..Default::default()
        };
        config.query.tls = TlsSettings {
            cert_file: pki.path("server.pem"),
            key_file: pki.path("server-key.pem"),
            client_ca_file: if mutual { pki.path("ca.pem") } else { String::new() },
        };
        config.validate().unwrap();
        let pool = sm_storage::connect(&config.postgres).unwrap();
        sm_storage::migrate(&pool, sm_projector::schema::COMPONENT, sm_projector::schema::MIGRATIONS).await.unwrap();
        for (asset, tenant) in [("pump-acme", "acme"), ("pump-globex", "globex")] {
            pool.get()
                .await
                .unwrap()
                .execute(
                    "INSERT INTO assets (asset_id, tenant_id, name, asset_type, site, registered_at, updated_at)
                     VALUES ($1, $2, $1, 'pump', 'plant-a', $3, $3)",
                    &[&asset, &tenant, &PgTimestamp(1_764_000_000_000_000)],
                )
                .await
                .unwrap();
        }
        let server = common::Server::start(&config, &schema).await;
        Self { pki, server, _schema: schema }
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.server.addr().port())
    }

    /// A TLS channel to 127.0.0.1 trusting the test CA, with the client certificate `identity`.
    async fn channel(&self, identity: Option<&str>) -> Result<Channel, ConnectError> {
        let identity = identity.map(|name| self.pki.identity(name));
        let identity = identity.as_ref().map(|(cert, key)| (cert.as_str(), key.as_str()));
        connect_channel(&self.url("127.0.0.1"), Some(&self.pki.path("ca.pem")), identity).await
    }
}

/// Asset ids of the first page of `ListAssets`.
async fn list_assets<T>(mut client: AssetServiceClient<T>) -> Result<Vec<String>, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let response = client.list_assets(v1::ListAssetsRequest::default()).await?.into_inner();
    Ok(response.assets.into_iter().map(|asset| asset.asset_id).collect())
}

/// The connection is refused below gRPC: the channel cannot be opened, or its first call
/// fails without any answer from the service (a transport error, not a status the server
/// sent). Returns what the client saw, for the caller to check.
async fn assert_refused(key: &str, channel: Result<Channel, ConnectError>) -> String {
    let outcome = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let channel = channel.map_err(|error| error.to_string())?;
        let client = AssetServiceClient::new(Credentials::bearer(key).unwrap().on(channel));
        list_assets(client).await.map_err(|status| {
            // The server never answered: tonic reports the broken connection itself. A
            // plaintext client may also read the server's TLS alert as a malformed HTTP/2
            // frame (h2's FRAME_SIZE_ERROR, which tonic reports as INTERNAL).
            let garbled = status.code() == Code::Internal && status.message().starts_with("h2 protocol error");
            assert!(matches!(status.code(), Code::Unavailable | Code::Unknown) || garbled, "{status:?}");
            format!("{status:?}")
        })
    })
    .await
    .expect("a refused connection fails within 10 s");
    match outcome {
        Ok(assets) => panic!("the call went through and listed {assets:?}"),
        Err(seen) => seen,
    }
}

#[tokio::test]
async fn a_client_trusting_the_ca_calls_over_tls_with_an_api_key() {
    let fixture = Fixture::start(false).await;
    let ca = fixture.pki.path("ca.pem");
    let key = fixture.server.key();
    // Both names of the server's certificate: its IP SAN and its DNS SAN.
    for host in ["127.0.0.1", "localhost"] {
        let channel = connect(&fixture.url(host), Some(&ca), None, Credentials::bearer(key).unwrap()).await.unwrap();
        let assets = list_assets(AssetServiceClient::new(channel)).await.unwrap();
        assert_eq!(assets.len(), 2, "the bootstrap admin sees every tenant: {assets:?}");
    }
    // Still authenticated: TLS alone is no credential.
    let anonymous = fixture.channel(None).await.unwrap();
    let status = list_assets(AssetServiceClient::new(anonymous)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    fixture.server.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_and_a_client_not_trusting_the_ca_get_no_answer() {
    let fixture = Fixture::start(false).await;
    let key = fixture.server.key().to_owned();
    let plaintext = format!("http://{}", fixture.server.addr());
    assert_refused(&key, connect_channel(&plaintext, None, None).await).await;
    // The system's roots (no CA file) do not know the test CA; nor does the other CA.
    let seen = assert_refused(&key, connect_channel(&fixture.url("127.0.0.1"), None, None).await).await;
    assert!(seen.contains("UnknownIssuer"), "{seen}");
    let other_ca = fixture.pki.path("other-ca.pem");
    let seen = assert_refused(&key, connect_channel(&fixture.url("127.0.0.1"), Some(&other_ca), None).await).await;
    assert!(seen.contains("UnknownIssuer"), "{seen}");
    // A CA file with an http:// URL is a mistake, not a reason to go out in the clear.
    let error = connect_channel(&plaintext, Some(&other_ca), None).await.unwrap_err();
    assert!(matches!(error, ConnectError::TlsFilesWithoutHttps { .. }), "{error}");
    fixture.server.stop().await;
}

#[tokio::test]
async fn with_mutual_tls_a_client_without_a_certificate_of_the_ca_is_refused() {
    let fixture = Fixture::start(true).await;
    let key = fixture.server.key().to_owned();
    // Even with the admin key: the handshake itself fails. (In TLS 1.3 the client learns it
    // from the server's alert on its first read, so the call fails rather than the connect.)
    let seen = assert_refused(&key, fixture.channel(None).await).await;
    assert!(seen.contains("CertificateRequired"), "{seen}");
    let seen = assert_refused(&key, fixture.channel(Some("stranger")).await).await;
    assert!(seen.contains("UnknownCA"), "{seen}");
    fixture.server.stop().await;
}

#[tokio::test]
async fn with_mutual_tls_the_client_certificate_is_a_service_principal_of_its_tenant() {
    let fixture = Fixture::start(true).await;
    // No authorization header: the certificate's subject is the caller.
    let channel = fixture.channel(Some("gateway")).await.unwrap();
    let assets = list_assets(AssetServiceClient::new(channel.clone())).await.unwrap();
    assert_eq!(assets, ["pump-acme"], "tenant acme only");
    let status = AssetServiceClient::new(channel.clone())
        .register_asset(v1::RegisterAssetRequest { asset_id: "pump-new".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let message = status.message();
    assert!(message.contains("assets.manage") && message.contains("cert:acme/gateway-1 has role service"), "{message}");

    // A key on the same connection wins over the certificate: the admin passes the
    // permission check, and the empty registration fails its validation instead.
    let admin = Credentials::bearer(fixture.server.key()).unwrap().on(channel);
    let status =
        AssetServiceClient::new(admin.clone()).register_asset(v1::RegisterAssetRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(list_assets(AssetServiceClient::new(admin)).await.unwrap().len(), 2);

    // A certificate of the CA whose CN names no tenant connects, but is no principal.
    let unnamed = fixture.channel(Some("unnamed")).await.unwrap();
    let status = list_assets(AssetServiceClient::new(unnamed)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("<tenant>/<name>"), "{status:?}");
    fixture.server.stop().await;
}
