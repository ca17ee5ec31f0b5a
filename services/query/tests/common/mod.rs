//! What several of the query service's test files check alike.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use futures::StreamExt;
use sm_proto::auth::{AuthChannel, Credentials};
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_client::ServerReflectionClient};

/// gRPC health answers SERVING for each of `healthy` (`""` is the server as a whole), and
/// reflection lists each of `listed`.
pub async fn assert_served_and_listed(channel: AuthChannel, healthy: &[&str], listed: &[&str]) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in healthy {
        let response = health
            .check(tonic_health::pb::HealthCheckRequest { service: (*service).into() })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(response.status(), tonic_health::pb::health_check_response::ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(futures::stream::iter([list])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(services)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a list of services");
    };
    let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    for expected in listed {
        assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
    }
}

/// Identity settings of a test server: the stack's bootstrap admin key, reflection on.
pub fn auth(stack: &sm_testkit::Stack) -> sm_query::auth::AuthConfig {
    sm_query::auth::AuthConfig {
        bootstrap_key: sm_telemetry::Secret(stack.api_key()),
        reflection: true,
        ..Default::default()
    }
}

/// The query server of one test, on a loopback port of its own.
pub struct Server {
    addr: std::net::SocketAddr,
    /// What [`Server::channel`] authenticates with: the configured bootstrap key.
    key: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Serves `config` from `schema` until [`Server::stop`], as deployed: the owner applies
    /// the projector's and the registry's migrations (again, if the fixture did), and the
    /// server logs in as `sm_query`, which owns nothing and reads under row-level security.
    pub async fn start(config: &sm_query::QueryConfig, schema: &sm_testkit::postgres::ScratchSchema) -> Self {
        let owner = sm_storage::connect(&sm_storage::PostgresConfig {
            url: sm_telemetry::Secret(schema.url.clone()),
            pool_size: 1,
            ..Default::default()
        })
        .unwrap();
        sm_storage::migrate(&owner, sm_projector::schema::COMPONENT, sm_projector::schema::MIGRATIONS).await.unwrap();
        sm_storage::migrate(&owner, sm_registry::schema::COMPONENT, sm_registry::MIGRATIONS).await.unwrap();
        let pool = sm_storage::connect(&sm_storage::PostgresConfig {
            url: sm_telemetry::Secret(schema.query_url.clone()),
            ..config.postgres.clone()
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = config.auth.bootstrap_key.0.clone();
        let server = sm_query::QueryServer::new(config, pool).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, sm_telemetry::Health::new(), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self { addr, key, stop: Some(stop), task: Some(task) }
    }

    /// Where it listens (127.0.0.1 and a port of its own), for clients that build their own
    /// channel (over TLS, say).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The bootstrap key it was configured with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The id of the key [`Server::channel`] calls with, as principals name it (`key:<id>`).
    pub fn key_id(&self) -> String {
        self.key.split('_').nth(1).unwrap_or_default().to_owned()
    }

    /// A channel that calls as the bootstrap admin (every tenant).
    pub async fn channel(&self) -> AuthChannel {
        self.channel_as(&self.key).await
    }

    /// A channel that calls with `credential` (an API key or a token).
    pub async fn channel_as(&self, credential: &str) -> AuthChannel {
        Credentials::bearer(credential).unwrap().on(self.plain_channel().await)
    }

    /// A channel without credentials.
    pub async fn plain_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }

    /// Shuts the server down; it must stop within 10 s, open streams included.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(std::time::Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("server stops within 10 s, open streams included")
            .unwrap();
    }
}
