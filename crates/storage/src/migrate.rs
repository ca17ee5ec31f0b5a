//! Versioned, idempotent migrations, run by each service at start. Every component (storage
//! itself, the projector, ...) owns a numbered list; each applied version is recorded with
//! its name, and an advisory lock lets several instances start at once safely.
//!
//! TimescaleDB is used when the server has it: [`Flavor`] tells migrations whether to make
//! hypertables or natively partitioned tables, so the same service runs on both.

use crate::{Pool, StorageError};

/// What the database server offers for time-series tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The `timescaledb` extension is installed: hypertables, continuous aggregates.
    Timescale,
    /// Plain PostgreSQL: declarative partitioning and `date_bin` rollups.
    Native,
}

/// One schema change. `sql` gets the flavor so a migration can differ per server.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: fn(Flavor) -> String,
}

/// Storage's own tables: the migration log and the offset store.
pub const STORAGE_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "projection offset store",
    sql: |_| {
        "CREATE TABLE IF NOT EXISTS sm_projection_offsets (
             projection  text        NOT NULL,
             topic       text        NOT NULL,
             partition   integer     NOT NULL,
             next_offset bigint      NOT NULL,
             updated_at  timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (projection, topic, partition)
         )"
        .to_owned()
    },
}];

/// Applies `component`'s migrations not applied yet (and storage's own first), in version
/// order, each in its own transaction. Returns the server's flavor.
pub async fn migrate(pool: &Pool, component: &str, migrations: &[Migration]) -> Result<Flavor, StorageError> {
    let mut client = pool.get().await?;
    let flavor = detect_flavor(&client).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sm_schema_migrations (
                 component  text        NOT NULL,
                 version    integer     NOT NULL,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (component, version)
             )",
        )
        .await
        .or_else(ignore_concurrent_create)?;
    let mut lists = vec![("storage", STORAGE_MIGRATIONS)];
    if component != "storage" {
        lists.push((component, migrations));
    }
    for (component, migrations) in lists {
        let mut sorted: Vec<&Migration> = migrations.iter().collect();
        sorted.sort_by_key(|m| m.version);
        for migration in sorted {
            let tx = client.transaction().await?;
            // Serialises concurrent starts; released at commit.
            tx.execute("SELECT pg_advisory_xact_lock(7277001)", &[]).await?;
            let applied = tx
                .query_opt(
                    "SELECT name FROM sm_schema_migrations WHERE component = $1 AND version = $2",
                    &[&component, &migration.version],
                )
                .await?;
            match applied {
                Some(row) => {
                    let name: String = row.get(0);
                    if name != migration.name {
                        return Err(StorageError::MigrationChanged {
                            component: component.to_owned(),
                            version: migration.version,
                            applied: name,
                            current: migration.name.to_owned(),
                        });
                    }
                }
                None => {
                    tx.batch_execute(&(migration.sql)(flavor)).await?;
                    tx.execute(
                        "INSERT INTO sm_schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                        &[&component, &migration.version, &migration.name],
                    )
                    .await?;
                    tracing::info!(component, version = migration.version, name = migration.name, "migration applied");
                }
            }
            tx.commit().await?;
        }
    }
    Ok(flavor)
}

/// Timescale when the extension is installed or can be (it needs the server package).
pub async fn detect_flavor(client: &tokio_postgres::Client) -> Result<Flavor, StorageError> {
    let available = client
        .query_one("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'", &[])
        .await?
        .get::<_, i64>(0)
        > 0;
    if !available {
        return Ok(Flavor::Native);
    }
    match client.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb").await {
        Ok(()) => Ok(Flavor::Timescale),
        Err(error) => {
            tracing::warn!(error = %error, "timescaledb is available but cannot be enabled; using native partitioning");
            Ok(Flavor::Native)
        }
    }
}

/// Two instances creating the same table at once: the loser's unique violation is harmless.
fn ignore_concurrent_create(error: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    match error.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => Ok(()),
        _ => Err(error),
    }
}
