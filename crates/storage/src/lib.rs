//! PostgreSQL for the platform's read models.
//!
//! Layout:
//! - [`PostgresConfig`] and [`connect`]: the connection pool (`SM_POSTGRES__*`);
//! - [`tls`]: `sslmode` and the verified rustls connector the pool uses unless it is `disable`;
//! - [`migrate`]: versioned, idempotent migrations run at start, and TimescaleDB detection
//!   ([`Flavor`]): hypertables when the extension is there, native partitioning otherwise;
//! - [`roles`]: the roles the migrations grant to (the query service's is not the owner);
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
pub mod roles;
pub mod tls;

pub use migrate::{Flavor, Migration, migrate};
pub use projection::{Projection, ProjectionWriter};
pub use tls::SslMode;

use serde::{Deserialize, Serialize};
use sm_telemetry::Secret;
use std::str::FromStr;

/// Errors of the projection store; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("SM_POSTGRES__URL is not a valid connection string: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error(
        "sslmode={value:?} in SM_POSTGRES__URL is not supported: use disable, prefer, require or verify-full (all but disable verify the server's certificate and host name)"
    )]
    UnsupportedSslMode { value: String },
    #[error("cannot read SM_POSTGRES__CA_FILE {path}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("SM_POSTGRES__CA_FILE {path} is not a PEM file of CA certificates: {detail}")]
    CaFileInvalid { path: String, detail: String },
    #[error(
        "no system root certificates to verify PostgreSQL's certificate with ({detail}); set SM_POSTGRES__CA_FILE to the CA's PEM file, or sslmode=disable in SM_POSTGRES__URL"
    )]
    NoSystemRoots { detail: String },
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    /// Made by `From<PoolError>` when the pool could not open a connection because of TLS.
    #[error("TLS with PostgreSQL failed: {detail}; {hint}")]
    Tls {
        detail: String,
        hint: &'static str,
        #[source]
        source: deadpool_postgres::PoolError,
    },
    #[error("cannot get a database connection: {0}; is PostgreSQL running at SM_POSTGRES__URL?")]
    Connect(#[source] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error(
        "migration {component} v{version} was applied as `{applied}` but is now `{current}`: migrations never change once applied; add a new version"
    )]
    MigrationChanged { component: String, version: i32, applied: String, current: String },
}

/// A connection the pool could not open is a TLS failure (certificate, host name, a server
/// without TLS) or anything else; the first names the settings to fix.
impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(source: deadpool_postgres::PoolError) -> Self {
        match tls::tls_failure(&source) {
            Some((detail, hint)) => Self::Tls { detail, hint, source },
            None => Self::Connect(source),
        }
    }
}

/// PostgreSQL settings (`SM_POSTGRES__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database?sslmode=MODE`. `sslmode` ([`SslMode`]) is
    /// `disable`, `prefer` (when absent, as in libpq), `require` or `verify-full`; whenever TLS
    /// is used the server's certificate chain and host name are verified, so `require`
    /// verifies too. The default is the local stack in plaintext (`sslmode=disable`): its
    /// server offers TLS with a throwaway CA the system does not trust.
    pub url: Secret,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// PEM file of the CA certificates that verify the server (`SM_POSTGRES__CA_FILE`; the
    /// local stack's is `SM_TLS_CA_FILE`). Empty: the system's roots. Unused with `disable`.
    pub ca_file: String,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: Secret("postgres://sm:sm@127.0.0.1:15432/sm?sslmode=disable".to_owned()),
            pool_size: 8,
            ca_file: String::new(),
        }
    }
}

/// The connection pool all database access goes through.
pub type Pool = deadpool_postgres::Pool;

/// Builds the pool, with the TLS connector unless `sslmode=disable`. Connections open lazily
/// (a certificate problem shows as [`StorageError::Tls`] on the first); call [`migrate`] to
/// check the server is there. The CA file is read here, so a bad one fails at start.
pub fn connect(config: &PostgresConfig) -> Result<Pool, StorageError> {
    let (mode, url) = tls::split_sslmode(config.url.expose())?;
    let mut pg = tokio_postgres::Config::from_str(&url).map_err(StorageError::InvalidUrl)?;
    let mode = mode.unwrap_or_else(|| SslMode::from_tokio(pg.get_ssl_mode()));
    pg.ssl_mode(mode.to_tokio());
    let manager_config =
        deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast };
    let manager = match mode {
        SslMode::Disable => deadpool_postgres::Manager::from_config(pg, tokio_postgres::NoTls, manager_config),
        _ => deadpool_postgres::Manager::from_config(pg, tls::connector(mode, &config.ca_file)?, manager_config),
    };
    Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StorageError::Pool(e.to_string()))
}

/// One round trip to the server (`SELECT 1`): the readiness probe of a service that writes
/// PostgreSQL. The error says why it cannot.
pub async fn ping(pool: &Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| match StorageError::from(e) {
        // As before for everything but TLS, whose pool error hides the cause.
        StorageError::Connect(e) => format!("postgres: {e}"),
        other => format!("postgres: {other}"),
    })?;
    client.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| format!("postgres: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A service's configuration, as far as this crate's section goes.
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Service {
        postgres: PostgresConfig,
    }

    fn load(vars: &[(&str, &str)]) -> Result<Service, sm_telemetry::ConfigError> {
        let env: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        sm_telemetry::config::load_from(None, &env)
    }

    fn config(url: &str, ca_file: &str) -> PostgresConfig {
        PostgresConfig { url: Secret(url.to_owned()), ca_file: ca_file.to_owned(), ..PostgresConfig::default() }
    }

    #[test]
    fn the_default_is_the_local_stack_in_plaintext() {
        let config = PostgresConfig::default();
        assert!(config.ca_file.is_empty());
        assert_eq!(tls::split_sslmode(config.url.expose()).unwrap().0, Some(SslMode::Disable));
        connect(&config).unwrap();
    }

    #[test]
    fn ca_file_and_url_come_from_the_environment() {
        let service = load(&[
            ("SM_POSTGRES__URL", "postgres://sm:hunter2@db:5432/sm?sslmode=verify-full"),
            ("SM_POSTGRES__CA_FILE", "/etc/sm/pg-ca.pem"),
        ])
        .unwrap();
        assert_eq!(service.postgres.ca_file, "/etc/sm/pg-ca.pem");
        assert_eq!(service.postgres.pool_size, 8);
        assert!(!format!("{service:?}").contains("hunter2"));
    }

    #[test]
    fn sslmode_is_not_a_setting_of_its_own() {
        let error = load(&[("SM_POSTGRES__SSLMODE", "require")]).unwrap_err();
        assert!(error.to_string().contains("sslmode"), "{error}");
    }

    #[test]
    fn tls_modes_build_a_pool_with_the_ca_file_read_up_front() {
        for mode in ["prefer", "require", "verify-full"] {
            let url = format!("postgres://sm:sm@127.0.0.1:1/sm?sslmode={mode}");
            let Err(error) = connect(&config(&url, "/nonexistent/ca.pem")) else { panic!("{mode}: no CA, yet a pool") };
            assert!(matches!(error, StorageError::CaFile { .. }), "{mode}: {error}");
        }
        // `disable` never reads it.
        connect(&config("postgres://sm:sm@127.0.0.1:1/sm?sslmode=disable", "/nonexistent/ca.pem")).unwrap();
    }

    #[test]
    fn an_unsupported_sslmode_fails_at_start_without_the_password() {
        let Err(error) = connect(&config("postgres://sm:hunter2@db/sm?sslmode=verify-ca", "")) else {
            panic!("verify-ca accepted")
        };
        let message = error.to_string();
        assert!(message.contains("\"verify-ca\"") && message.contains("SM_POSTGRES__URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn a_key_value_string_keeps_its_own_sslmode() {
        connect(&config("host=127.0.0.1 port=1 user=sm sslmode=disable", "/nonexistent/ca.pem")).unwrap();
        let Err(error) = connect(&config("host=127.0.0.1 port=1 user=sm sslmode=require", "/nonexistent/ca.pem"))
        else {
            panic!("require without its CA")
        };
        assert!(matches!(error, StorageError::CaFile { .. }), "{error}");
    }
}
