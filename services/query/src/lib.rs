//! Query service: the gRPC read API over the PostgreSQL projections, and the one command
//! that belongs to the registry (`RegisterAsset`, which becomes an event, never a row).
//!
//! Layout:
//! - [`config`]: [`QueryConfig`] (`SM_KAFKA__*`, `SM_POSTGRES__*`, `SM_TELEMETRY__*`,
//!   `SM_QUERY__*`);
//! - [`readings`]: `sm.v1.ReadingService` (history pages, aggregates, latest values);
//! - [`assets`]: `sm.v1.AssetService` (registry reads, `RegisterAsset`);
//! - [`args`]: validation of the fields several methods share;
//! - [`cursor`]: page tokens (keyset cursors);
//! - [`db`]: exact microsecond conversions to PostgreSQL's `timestamptz` and `interval`;
//! - [`error`]: [`QueryError`] and its mapping to gRPC status codes, in one place;
//! - [`metrics`]: request counts and latencies;
//! - [`QueryServer`]: all of it on one port, with gRPC health and reflection.
//!
//! The service does not own or migrate the tables it reads: the projector does
//! (`services/projector/src/schema.rs`).

pub mod args;
pub mod assets;
pub mod config;
pub mod cursor;
pub mod db;
pub mod error;
pub mod metrics;
pub mod readings;

pub use config::{QueryConfig, QuerySettings};
pub use error::QueryError;

use sm_proto::v1::asset_service_server::AssetServiceServer;
use sm_proto::v1::reading_service_server::ReadingServiceServer;
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
    #[error("cannot load the event schemas: {0}")]
    Codec(#[from] sm_domain::CodecError),
    #[error("cannot build gRPC reflection from the descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Both gRPC services, health and reflection, ready to serve on a listener.
pub struct QueryServer {
    pool: Pool,
    readings: readings::Readings,
    assets: assets::Assets,
}

impl QueryServer {
    /// Builds the services from configuration and a pool (see [`sm_storage::connect`]).
    /// Nothing connects yet: the pool and the producer connect lazily.
    pub fn new(config: &QueryConfig, pool: Pool) -> Result<Self, ServeError> {
        let settings = Arc::new(config.query.clone());
        let publisher = assets::Publisher::new(&config.kafka, &settings)?;
        Ok(Self {
            readings: readings::Readings::new(pool.clone(), settings.clone()),
            assets: assets::Assets::new(pool.clone(), settings, publisher),
            pool,
        })
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests in flight finish.
    ///
    /// Readiness follows the database: `SELECT 1` at start and every few seconds sets
    /// `postgres` in `health` (for `/readyz`) and the gRPC health status of both services
    /// (and of the server, `""`), `SERVING` or `NOT_SERVING`. Taking the listener (bound
    /// by the caller) lets tests use port 0 and know the address before serving.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        health: Health,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
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

        report_readiness(&self.pool, &reporter, &health).await;
        let watcher = {
            let (pool, reporter, health) = (self.pool.clone(), reporter.clone(), health.clone());
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(READINESS_INTERVAL);
                interval.tick().await; // the first tick is immediate; start just checked
                loop {
                    interval.tick().await;
                    report_readiness(&pool, &reporter, &health).await;
                }
            })
        };

        // Nagle's algorithm would hold small responses back for a delayed ACK.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ReadingServiceServer::new(self.readings))
            .add_service(AssetServiceServer::new(self.assets))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        watcher.abort();
        Ok(result?)
    }
}

/// Checks the database once and publishes the outcome to `/readyz` and gRPC health.
async fn report_readiness(pool: &Pool, reporter: &tonic_health::server::HealthReporter, health: &Health) {
    // Bounded: an unreachable host can hold a TCP connect for minutes.
    let ready = match tokio::time::timeout(READINESS_TIMEOUT, ping(pool)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "projection store not reachable");
            false
        }
        Err(_) => {
            tracing::warn!(timeout_ms = READINESS_TIMEOUT.as_millis() as u64, "projection store did not answer");
            false
        }
    };
    health.set("postgres", ready);
    let status = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
    for service in
        ["", sm_proto::v1::reading_service_server::SERVICE_NAME, sm_proto::v1::asset_service_server::SERVICE_NAME]
    {
        reporter.set_service_status(service, status).await;
    }
}

/// `SELECT 1` on a pooled connection.
pub async fn ping(pool: &Pool) -> Result<(), sm_storage::StorageError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
