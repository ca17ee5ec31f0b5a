//! PostgreSQL for the platform's read models.
//!
//! Layout:
//! - [`PostgresConfig`] and [`connect`]: the connection pool (`SM_POSTGRES__*`);
//! - [`migrate`]: versioned, idempotent migrations run at start, and TimescaleDB detection
//!   ([`Flavor`]): hypertables when the extension is there, native partitioning otherwise;
//! - [`offsets`]: the offset store, written in the same transaction as projection rows;
//! - [`projection`]: [`Projection`], the one way to write a projection, and
//!   [`ProjectionWriter`], which runs it on the Kafka runtime effectively-once.
//!
//! Departure from the crate map in STYLE.md: this crate depends on `sm-kafka` for the
//! runtime's `ExternalCheckpoint` seam, so that projections reuse the one consume loop
//! instead of growing a second one.

pub mod migrate;
pub mod offsets;
pub mod projection;

pub use migrate::{Flavor, Migration, migrate};
pub use projection::{Projection, ProjectionWriter};

use serde::{Deserialize, Serialize};
use sm_telemetry::Secret;
use std::str::FromStr;

/// Errors of the projection store; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("SM_POSTGRES__URL is not a valid connection string: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    #[error("cannot get a database connection: {0}; is PostgreSQL running at SM_POSTGRES__URL?")]
    Connect(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error(
        "migration {component} v{version} was applied as `{applied}` but is now `{current}`: migrations never change once applied; add a new version"
    )]
    MigrationChanged { component: String, version: i32, applied: String, current: String },
}

/// PostgreSQL settings (`SM_POSTGRES__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`; TLS parameters are not supported yet.
    pub url: Secret,
    /// Connections kept open at most.
    pub pool_size: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self { url: Secret("postgres://sm:sm@127.0.0.1:15432/sm".to_owned()), pool_size: 8 }
    }
}

/// The connection pool all database access goes through.
pub type Pool = deadpool_postgres::Pool;

/// Builds the pool. Connections open lazily; call [`migrate`] to check the server is there.
pub fn connect(config: &PostgresConfig) -> Result<Pool, StorageError> {
    let pg = tokio_postgres::Config::from_str(config.url.expose()).map_err(StorageError::InvalidUrl)?;
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StorageError::Pool(e.to_string()))
}

/// One round trip to the server (`SELECT 1`): the readiness probe of a service that writes
/// PostgreSQL. The error says why it cannot.
pub async fn ping(pool: &Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| format!("postgres: {e}"))?;
    client.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| format!("postgres: {e}"))
}
