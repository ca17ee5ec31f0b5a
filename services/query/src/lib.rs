//! Query service: the gRPC read API over the PostgreSQL projections and the model registry,
//! the commands that belong to the registries (`RegisterAsset`, `Promote`, `Archive`: each
//! becomes an event on Kafka), and on-demand analytics and predictions.
//!
//! Layout:
//! - [`config`]: [`QueryConfig`] (`SM_KAFKA__*`, `SM_POSTGRES__*`, `SM_TELEMETRY__*`,
//!   `SM_ARTIFACTS__*`, `SM_QUERY__*`);
//! - [`readings`]: `sm.v1.ReadingService` (history pages, aggregates, latest values);
//! - [`assets`]: `sm.v1.AssetService` (registry reads, `RegisterAsset`);
//! - [`alerts`]: `sm.v1.AlertService` (anomaly and drift pages, `StreamAlerts`);
//! - [`feed`]: the one Kafka consumer behind `StreamAlerts`, fanned out to every stream;
//! - [`drift`]: `sm.v1.DriftService` (`CheckDrift`, the drift agent's test on demand);
//! - [`anomaly`]: `sm.v1.AnomalyService` (`ScoreReadings`, the anomaly agent's detector on
//!   demand);
//! - [`models`]: `sm.v1.ModelService` (the model registry; `Promote`, `Archive`);
//! - [`predictions`]: `sm.v1.PredictionService` (prediction pages, each asset's latest,
//!   `Predict` with a registered model version);
//! - [`auth`]: who is calling and whether they may ([`auth::PERMISSIONS`], the tower layer in
//!   front of every service);
//! - [`keys`]: `sm.v1.KeyService` (API keys: create, list, revoke);
//! - [`args`]: validation of the fields several methods share;
//! - [`cursor`]: page tokens (keyset cursors);
//! - [`db`]: exact microsecond conversions to PostgreSQL's `timestamptz` and `interval`;
//! - [`error`]: [`QueryError`] and its mapping to gRPC status codes, in one place;
//! - [`metrics`]: request counts and latencies, and the alert feed's counts;
//! - [`tls`]: TLS and mutual TLS on the gRPC port (`SM_QUERY__TLS__*`), and the principal a
//!   client certificate stands for;
//! - [`QueryServer`]: all of it on one port, with gRPC health and reflection.
//!
//! The service does not own or migrate the projections it reads: the projector does
//! (`services/projector/src/schema.rs`). The model registry's tables are the registry's own
//! (`sm_registry`), migrated by it when `ModelService` or `Predict` first opens it.

pub mod alerts;
pub mod anomaly;
pub mod args;
pub mod assets;
pub mod auth;
pub mod config;
pub mod cursor;
pub mod db;
pub mod drift;
pub mod error;
pub mod feed;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod predictions;
pub mod readings;
pub mod tls;

pub use config::{QueryConfig, QuerySettings};
pub use error::QueryError;

use sm_proto::v1::alert_service_server::{self, AlertServiceServer};
use sm_proto::v1::anomaly_service_server::{self, AnomalyServiceServer};
use sm_proto::v1::asset_service_server::{self, AssetServiceServer};
use sm_proto::v1::drift_service_server::{self, DriftServiceServer};
use sm_proto::v1::key_service_server::{self, KeyServiceServer};
use sm_proto::v1::model_service_server::{self, ModelServiceServer};
use sm_proto::v1::prediction_service_server::{self, PredictionServiceServer};
use sm_proto::v1::reading_service_server::{self, ReadingServiceServer};
use sm_storage::Pool;
use sm_telemetry::Health;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// How often readiness (`/readyz` and gRPC health) re-checks the database.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);
/// How long one readiness check may take before it counts as a failure.
const READINESS_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the server could not start or stopped with an error. Request errors are
/// [`QueryError`]s; these are about the process.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the Kafka producer: {0}; check SM_KAFKA__*")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error("cannot create the alert feed's Kafka consumer: {0}; check SM_KAFKA__*")]
    Consumer(#[source] rdkafka::error::KafkaError),
    #[error("cannot load the event schemas: {0}")]
    Codec(#[from] sm_domain::CodecError),
    #[error("cannot open the artifact store: {0}; check SM_ARTIFACTS__*")]
    Artifacts(#[source] sm_registry::RegistryError),
    #[error("cannot load the OIDC issuers' keys: {0}; check auth.issuers")]
    Identity(#[from] sm_identity::jwt::JwtConfigError),
    #[error("cannot build gRPC reflection from the descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Every gRPC service, health and reflection, ready to serve on a listener.
pub struct QueryServer {
    pool: Pool,
    readings: readings::Readings,
    assets: assets::Assets,
    alerts: alerts::Alerts,
    drift: drift::Drift,
    anomaly: anomaly::Anomalies,
    models: models::Models,
    predictions: predictions::Predictions,
    /// Identity settings: the authenticator is built when serving (it may fetch JWKS).
    auth: auth::AuthConfig,
    /// For `KeyService`'s events.
    key_announcer: sm_kafka::Announcer,
    /// The fan-out side of the alert feed: readiness follows it, shutdown stops it.
    feed: feed::AlertFeed,
    /// Runs as a task while serving.
    feed_consumer: feed::FeedConsumer,
    /// `None`: plaintext. Read in [`QueryServer::new`], so bad files fail before serving.
    tls: Option<tonic::transport::server::ServerTlsConfig>,
}

impl QueryServer {
    /// Builds the services from configuration and a pool (see [`sm_storage::connect`]).
    /// Nothing connects yet: the pool and the producers connect lazily, the alert feed's
    /// consumer when serving starts, the model registry on its first request. The artifact
    /// store is opened (a local directory is created; an S3 client makes no request yet).
    pub fn new(config: &QueryConfig, pool: Pool) -> Result<Self, ServeError> {
        let settings = Arc::new(config.query.clone());
        let publisher = assets::Publisher::new(&config.kafka, &settings)?;
        let (feed, feed_consumer) = feed::build(&config.kafka, &settings)?;
        // Statistics feed the consumer-lag metric of agents; a lone producer has no use for
        // them, and librdkafka's default context would log each report.
        let announcer_kafka = sm_kafka::KafkaConfig { statistics_interval_ms: 0, ..config.kafka.clone() };
        let announcer = sm_kafka::Announcer::new(&announcer_kafka).map_err(ServeError::Producer)?;
        let key_announcer = sm_kafka::Announcer::new(&announcer_kafka).map_err(ServeError::Producer)?;
        let artifacts = config.artifacts.build().map_err(ServeError::Artifacts)?;
        // The projector migrates the registry's tables: this role may not.
        let registry = sm_registry::Registry::attach(pool.clone());
        let tls = config.query.tls.server_config()?;
        Ok(Self {
            models: models::Models::new(registry.clone(), announcer, settings.models_topic.clone()),
            predictions: predictions::Predictions::new(pool.clone(), settings.clone(), registry, artifacts),
            readings: readings::Readings::new(pool.clone(), settings.clone()),
            assets: assets::Assets::new(pool.clone(), settings.clone(), publisher),
            alerts: alerts::Alerts::new(pool.clone(), settings, feed.clone()),
            drift: drift::Drift::new(pool.clone()),
            anomaly: anomaly::Anomalies::new(pool.clone()),
            auth: config.auth.clone(),
            key_announcer,
            pool,
            feed,
            feed_consumer,
            tls,
        })
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests in flight finish.
    /// Alert streams never finish by themselves, so shutdown first ends them
    /// ([`feed::AlertFeed::stop`]; clients see `UNAVAILABLE` and reconnect elsewhere).
    ///
    /// Readiness follows the database: `SELECT 1` at start and every few seconds sets
    /// `postgres` in `health` (for `/readyz`) and the gRPC health status of every service
    /// (and of the server, `""`), `SERVING` or `NOT_SERVING`. `sm.v1.AlertService` is
    /// `SERVING` only once the alert feed is live as well, so a client (or a test) can wait
    /// for it before opening a stream. Taking the listener (bound by the caller) lets tests
    /// use port 0 and know the address before serving.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        health: Health,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        // First, so that no task is running yet should it fail (it was built once in `new`).
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            server = server.tls_config(tls)?;
        }
        let authenticator = auth::Authenticator::new(&self.auth, self.pool.clone()).await?;
        let keys = keys::Keys::new(
            self.pool.clone(),
            self.key_announcer,
            self.auth.identity_topic.clone(),
            authenticator.clone(),
        );
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Descriptors of our services and of gRPC health, so `grpcurl list` shows all three
        // (reflection adds its own). Both protocol versions: grpcurl and older tools differ.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(sm_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        // Watching before the feed can change, so no change goes unreported until a tick.
        let mut feed_state = self.feed.watch_state();
        let consumer = tokio::spawn(self.feed_consumer.run());
        report_readiness(&self.pool, &reporter, &health, &self.feed).await;
        let watcher = {
            let (pool, reporter, health, feed) =
                (self.pool.clone(), reporter.clone(), health.clone(), self.feed.clone());
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(READINESS_INTERVAL);
                interval.tick().await; // the first tick is immediate; start just checked
                let mut feed_watched = true;
                loop {
                    // A change of the feed's state is reported at once, not at the next tick.
                    tokio::select! {
                        _ = interval.tick() => {}
                        changed = feed_state.changed(), if feed_watched => feed_watched = changed.is_ok(),
                    }
                    report_readiness(&pool, &reporter, &health, &feed).await;
                }
            })
        };
        let feed = self.feed.clone();
        let shutdown = async move {
            shutdown.await;
            feed.stop();
        };

        // Nagle's algorithm would hold small responses back for a delayed ACK.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        // Reflection only when configured (it is open, like health: see `auth`).
        let (reflection_v1, reflection_v1alpha) =
            if authenticator.reflection() { (Some(reflection_v1), Some(reflection_v1alpha)) } else { (None, None) };
        let result = server
            .layer(auth::AuthLayer(authenticator))
            .add_service(health_service)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(KeyServiceServer::new(keys))
            .add_service(ReadingServiceServer::new(self.readings))
            .add_service(AssetServiceServer::new(self.assets))
            .add_service(AlertServiceServer::new(self.alerts))
            .add_service(DriftServiceServer::new(self.drift))
            .add_service(AnomalyServiceServer::new(self.anomaly))
            .add_service(ModelServiceServer::new(self.models))
            .add_service(PredictionServiceServer::new(self.predictions))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        watcher.abort();
        consumer.abort();
        Ok(result?)
    }
}

/// Checks the database once and publishes the outcome, with the alert feed's state, to
/// `/readyz` and gRPC health.
async fn report_readiness(
    pool: &Pool,
    reporter: &tonic_health::server::HealthReporter,
    health: &Health,
    feed: &feed::AlertFeed,
) {
    // Bounded: an unreachable host can hold a TCP connect for minutes.
    let failure = match tokio::time::timeout(READINESS_TIMEOUT, check_store(pool)).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => {
            match error {
                StoreCheck::Unreachable(_) => tracing::warn!(error = %error, "projection store not reachable"),
                StoreCheck::BypassesRowSecurity { .. } => tracing::error!(error = %error, "not serving"),
            }
            Some(error.to_string())
        }
        Err(_) => {
            tracing::warn!(timeout_ms = READINESS_TIMEOUT.as_millis() as u64, "projection store did not answer");
            Some(format!("no answer within {} ms", READINESS_TIMEOUT.as_millis()))
        }
    };
    let ready = failure.is_none();
    // The reason on /readyz too, so whoever deploys it sees why.
    match failure {
        None => health.set("postgres", true),
        Some(reason) => health.set_unavailable("postgres", reason),
    }
    let status = |ready| if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
    for service in [
        "",
        reading_service_server::SERVICE_NAME,
        asset_service_server::SERVICE_NAME,
        drift_service_server::SERVICE_NAME,
        anomaly_service_server::SERVICE_NAME,
        model_service_server::SERVICE_NAME,
        prediction_service_server::SERVICE_NAME,
        key_service_server::SERVICE_NAME,
    ] {
        reporter.set_service_status(service, status(ready)).await;
    }
    let feed_live = feed.state() == feed::FeedState::Live;
    reporter.set_service_status(alert_service_server::SERVICE_NAME, status(ready && feed_live)).await;
}

/// Why the projection store is not fit to serve from.
#[derive(Debug, thiserror::Error)]
enum StoreCheck {
    #[error(transparent)]
    Unreachable(#[from] sm_storage::StorageError),
    #[error(
        "connected to PostgreSQL as {role}, which row-level security does not apply to (it owns the projections, \
         is a superuser or has BYPASSRLS): connect as a role that is only a member of {reader} (sm_query in the \
         local stack and deploy/postgres/init-roles.sql) in SM_POSTGRES__URL"
    )]
    BypassesRowSecurity { role: String, reader: &'static str },
}

/// The store answers, and the role we are connected as is subject to row-level security, so
/// a query that forgot its tenant still sees nothing. Before the projector created the
/// tables there is nothing to protect yet: ready, and checked again at the next tick.
async fn check_store(pool: &Pool) -> Result<(), StoreCheck> {
    let client = pool.get().await.map_err(sm_storage::StorageError::from)?;
    let statement = format!("SELECT current_user::text, ({}) IS TRUE", sm_storage::roles::BYPASSES_RLS_SQL);
    let row = client
        .query_one(&statement, &[&"readings"])
        .await
        .map_err(|e| StoreCheck::Unreachable(sm_storage::StorageError::Database(e)))?;
    if row.get::<_, bool>(1) {
        return Err(StoreCheck::BypassesRowSecurity { role: row.get(0), reader: sm_storage::roles::READER_ROLE });
    }
    Ok(())
}
