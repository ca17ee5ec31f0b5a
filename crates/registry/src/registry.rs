//! Model versions in PostgreSQL: registration with an atomic version counter, stages
//! (`staging` → `production` → `archived`), and resolution of what to serve.
//!
//! Every write takes its timestamp from the caller (the event's time, later), so replaying
//! the same events gives the same rows, and every write is idempotent: re-applying the last
//! registration, promotion or archival is a no-op reported as [`Change::Unchanged`]. Writes
//! for one model are serialised by locking its `sm_models` row, so a promotion and its
//! archival of the previous production version happen together or not at all.
//!
//! Not here: events, Kafka and gRPC (the registry service), and artifact bytes
//! ([`ArtifactStore`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sm_domain::Timestamp;
use sm_models::{ModelCard, ModelKind, TrainingData};
use sm_storage::{Pool, StorageError};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::artifacts::{ArtifactRef, ArtifactStore};
use crate::schema::MIGRATIONS;
use crate::{RegistryError, validate_model_name};

/// `$n` (µs since the epoch) as a timestamptz.
macro_rules! at {
    ($n:literal) => {
        concat!("(timestamptz 'epoch' + $", $n, "::bigint * interval '1 microsecond')")
    };
}

/// A timestamptz column as µs since the epoch (exact: `extract` is numeric since PG 14).
macro_rules! micros {
    ($column:literal) => {
        concat!("(extract(epoch FROM ", $column, ") * 1000000)::bigint")
    };
}

/// A timestamptz column as RFC 3339 in UTC, without a fraction when it is zero, so that
/// `2026-01-01T00:00:00Z` reads back as written.
macro_rules! rfc3339 {
    ($column:literal) => {
        concat!(
            "rtrim(rtrim(to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '0'), '.') || 'Z'"
        )
    };
}

/// The columns [`version_from_row`] reads, in order.
const VERSION_COLUMNS: &str = concat!(
    "name, version, stage, kind, features, training_source, ",
    rfc3339!("training_from"),
    ", ",
    rfc3339!("training_to"),
    ", training_rows, training_units, metrics::text, comparison::text, artifact_location, artifact_sha256, artifact_size, ",
    micros!("created_at"),
    ", ",
    micros!("promoted_at"),
    ", ",
    micros!("archived_at"),
    ", asset_type"
);

/// Where a version is in its life. Versions only move forward: staging → production →
/// archived, or staging → archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Registered and evaluated; served only when nothing is in production.
    Staging,
    /// The version to serve; at most one per model.
    Production,
    /// Never served again.
    Archived,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staging => "staging",
            Self::Production => "production",
            Self::Archived => "archived",
        }
    }

    fn from_db(stage: &str) -> Result<Self, RegistryError> {
        match stage {
            "staging" => Ok(Self::Staging),
            "production" => Ok(Self::Production),
            "archived" => Ok(Self::Archived),
            other => Err(unreadable(format!("stage {other:?}"))),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which version a caller wants, as typed by an operator or sent by the prediction agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The production version, else the newest staging one: what a model name serves.
    Auto,
    Production,
    /// The newest staging version.
    Staging,
    Version(u32),
}

impl FromStr for Selector {
    type Err = RegistryError;

    fn from_str(selector: &str) -> Result<Self, RegistryError> {
        match selector.trim() {
            "auto" => Ok(Self::Auto),
            "production" => Ok(Self::Production),
            "staging" => Ok(Self::Staging),
            number => match number.parse::<u32>() {
                Ok(version) if version > 0 => Ok(Self::Version(version)),
                _ => Err(RegistryError::InvalidSelector(selector.to_owned())),
            },
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto (production, else staging)"),
            Self::Production => f.write_str("production"),
            Self::Staging => f.write_str("staging"),
            Self::Version(version) => write!(f, "{version}"),
        }
    }
}

/// What a training run registers; the registry adds the version number, stage and artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewVersion {
    pub name: String,
    pub kind: ModelKind,
    /// The asset type it predicts for (`pump`, ...); empty when it is not tied to one.
    pub asset_type: String,
    /// The model's inputs, in order.
    pub features: Vec<String>,
    pub training: TrainingData,
    /// Held-out evaluation figures by name; finite only (JSON has no NaN).
    pub metrics: BTreeMap<String, f64>,
    /// The trainer's champion/challenger record, when the version was compared with production.
    pub comparison: Option<serde_json::Value>,
    /// When it was registered: the event's time, so that replays give the same rows.
    pub registered_at: Timestamp,
}

impl NewVersion {
    /// The registry's view of a model card (the card travels inside the artifact too).
    pub fn from_card(card: &ModelCard, asset_type: &str, registered_at: Timestamp) -> Self {
        Self {
            name: card.name.clone(),
            kind: card.kind,
            asset_type: asset_type.to_owned(),
            features: card.features.clone(),
            training: card.training.clone(),
            metrics: card.metrics.clone(),
            comparison: None,
            registered_at,
        }
    }

    fn validate(&self) -> Result<(), RegistryError> {
        validate_model_name(&self.name)?;
        if self.features.is_empty() {
            return Err(RegistryError::InvalidVersion(format!(
                "{} has no features; list the model's inputs",
                self.name
            )));
        }
        if let Some((metric, value)) = self.metrics.iter().find(|(_, value)| !value.is_finite()) {
            return Err(RegistryError::InvalidVersion(format!(
                "metric {metric} is {value}; record only finite figures"
            )));
        }
        Ok(())
    }
}

/// One registered version, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: u32,
    pub stage: Stage,
    pub kind: ModelKind,
    pub asset_type: String,
    pub features: Vec<String>,
    /// `from`/`to` come back as RFC 3339 in UTC.
    pub training: TrainingData,
    pub metrics: BTreeMap<String, f64>,
    pub comparison: Option<serde_json::Value>,
    pub artifact: ArtifactRef,
    pub created_at: Timestamp,
    pub promoted_at: Option<Timestamp>,
    pub archived_at: Option<Timestamp>,
}

/// One model name and where its versions stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub name: String,
    pub kind: ModelKind,
    /// Versions registered so far.
    pub versions: u32,
    pub latest_version: u32,
    pub production: Option<u32>,
    pub newest_staging: Option<u32>,
    /// When its first version was registered.
    pub created_at: Timestamp,
}

/// Whether a write changed anything; `Unchanged` is how a repeated event shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Applied,
    Unchanged,
}

/// The outcome of [`Registry::promote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    pub change: Change,
    /// The production version this promotion archived.
    pub archived: Option<u32>,
}

/// The registry's metadata store. Cheap to clone: it is a pool handle.
#[derive(Clone)]
pub struct Registry {
    pool: Pool,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Applies the registry's migrations and returns the registry. Needs the tables' owner
    /// (the trainer, the projector); the query service [`Registry::attach`]es instead.
    pub async fn open(pool: Pool) -> Result<Self, RegistryError> {
        sm_storage::migrate(&pool, crate::schema::COMPONENT, MIGRATIONS).await?;
        Ok(Self { pool })
    }

    /// The registry over tables someone else migrated (the projector does at start), for a
    /// role that may not change the schema.
    pub fn attach(pool: Pool) -> Self {
        Self { pool }
    }

    /// Registers the next version of `new.name` in staging, storing `artifact` first.
    ///
    /// The model's row stays locked from allocating the number to the commit, so concurrent
    /// registrations get consecutive numbers and a failed one consumes none. The artifact is
    /// stored inside that window: if the commit then fails, the object is left at a key the
    /// next registration overwrites.
    pub async fn register(
        &self,
        store: &ArtifactStore,
        new: &NewVersion,
        artifact: &[u8],
    ) -> Result<ModelVersion, RegistryError> {
        new.validate()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                concat!(
                    "INSERT INTO sm_models (name, kind, latest_version, created_at) VALUES ($1, $2, 1, ",
                    at!(3),
                    ") ON CONFLICT (name) DO UPDATE SET latest_version = sm_models.latest_version + 1
                     RETURNING latest_version, kind"
                ),
                &[&new.name, &new.kind.as_str(), &new.registered_at.as_micros()],
            )
            .await?;
        check_kind(&new.name, row.get(1), new.kind)?;
        let version = from_db_version(row.get(0))?;
        let artifact = store.put(&new.name, version, artifact).await?;
        insert_version(&tx, new, version, &artifact).await?;
        let registered = fetch_version(&tx, &new.name, version).await?;
        tx.commit().await?;
        tracing::info!(model = %new.name, version, sha256 = %artifact.sha256, "model version registered");
        Ok(registered)
    }

    /// Records a version whose number and artifact were decided elsewhere (a
    /// `ModelRegistered` event). Applying it twice is a no-op; a different artifact under the
    /// same number is refused.
    pub async fn apply_registered(
        &self,
        new: &NewVersion,
        version: u32,
        artifact: &ArtifactRef,
    ) -> Result<Change, RegistryError> {
        new.validate()?;
        let db_version = to_db_version(version)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                concat!(
                    "INSERT INTO sm_models (name, kind, latest_version, created_at) VALUES ($1, $2, $3, ",
                    at!(4),
                    ") ON CONFLICT (name) DO UPDATE
                     SET latest_version = GREATEST(sm_models.latest_version, EXCLUDED.latest_version)
                     RETURNING kind"
                ),
                &[&new.name, &new.kind.as_str(), &db_version, &new.registered_at.as_micros()],
            )
            .await?;
        check_kind(&new.name, row.get(0), new.kind)?;
        if insert_version(&tx, new, version, artifact).await? {
            tx.commit().await?;
            return Ok(Change::Applied);
        }
        let existing: String = tx
            .query_one(
                "SELECT artifact_sha256 FROM sm_model_versions WHERE name = $1 AND version = $2",
                &[&new.name, &db_version],
            )
            .await?
            .get(0);
        if existing.eq_ignore_ascii_case(&artifact.sha256) {
            Ok(Change::Unchanged)
        } else {
            Err(RegistryError::VersionConflict {
                name: new.name.clone(),
                version,
                existing,
                requested: artifact.sha256.clone(),
            })
        }
    }

    /// Puts a staging version into production and archives the previous production version
    /// in the same transaction. Promoting the production version again is a no-op.
    pub async fn promote(&self, name: &str, version: u32, at: Timestamp) -> Result<Promotion, RegistryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let db_version = to_db_version(version)?;
        match lock_stage(&tx, name, version).await? {
            Stage::Production => Ok(Promotion { change: Change::Unchanged, archived: None }),
            Stage::Archived => Err(RegistryError::Archived { name: name.to_owned(), version }),
            Stage::Staging => {
                let archived = tx
                    .query_opt(
                        concat!(
                            "UPDATE sm_model_versions SET stage = 'archived', archived_at = ",
                            at!(2),
                            " WHERE name = $1 AND stage = 'production' RETURNING version"
                        ),
                        &[&name, &at.as_micros()],
                    )
                    .await?
                    .map(|row| from_db_version(row.get(0)))
                    .transpose()?;
                tx.execute(
                    concat!(
                        "UPDATE sm_model_versions SET stage = 'production', promoted_at = ",
                        at!(3),
                        " WHERE name = $1 AND version = $2"
                    ),
                    &[&name, &db_version, &at.as_micros()],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(model = name, version, archived, "model version promoted");
                Ok(Promotion { change: Change::Applied, archived })
            }
        }
    }

    /// Archives a version (staging or production); archiving it again is a no-op. Archiving
    /// the production version leaves the model served by its newest staging version, if any.
    pub async fn archive(&self, name: &str, version: u32, at: Timestamp) -> Result<Change, RegistryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let db_version = to_db_version(version)?;
        if lock_stage(&tx, name, version).await? == Stage::Archived {
            return Ok(Change::Unchanged);
        }
        tx.execute(
            concat!(
                "UPDATE sm_model_versions SET stage = 'archived', archived_at = ",
                at!(3),
                " WHERE name = $1 AND version = $2"
            ),
            &[&name, &db_version, &at.as_micros()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(model = name, version, "model version archived");
        Ok(Change::Applied)
    }

    /// Every model, by name.
    pub async fn list_models(&self) -> Result<Vec<ModelSummary>, RegistryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                concat!(
                    "SELECT m.name, m.kind, m.latest_version, ",
                    micros!("m.created_at"),
                    ", count(v.version),
                            max(v.version) FILTER (WHERE v.stage = 'production'),
                            max(v.version) FILTER (WHERE v.stage = 'staging')
                     FROM sm_models m LEFT JOIN sm_model_versions v USING (name)
                     GROUP BY m.name ORDER BY m.name"
                ),
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ModelSummary {
                    name: row.get(0),
                    kind: parse_kind(row.get(1))?,
                    latest_version: from_db_version(row.get(2))?,
                    created_at: Timestamp(row.get(3)),
                    versions: u32::try_from(row.get::<_, i64>(4)).map_err(|e| unreadable(e.to_string()))?,
                    production: row.get::<_, Option<i32>>(5).map(from_db_version).transpose()?,
                    newest_staging: row.get::<_, Option<i32>>(6).map(from_db_version).transpose()?,
                })
            })
            .collect()
    }

    /// Every version of `name`, oldest first.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<ModelVersion>, RegistryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {VERSION_COLUMNS} FROM sm_model_versions WHERE name = $1 ORDER BY version"),
                &[&name],
            )
            .await?;
        if rows.is_empty() {
            require_model(&client, name).await?;
        }
        rows.iter().map(version_from_row).collect()
    }

    /// One version, whatever its stage.
    pub async fn get(&self, name: &str, version: u32) -> Result<ModelVersion, RegistryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {VERSION_COLUMNS} FROM sm_model_versions WHERE name = $1 AND version = $2"),
                &[&name, &to_db_version(version)?],
            )
            .await?;
        match row {
            Some(row) => version_from_row(&row),
            None => {
                require_model(&client, name).await?;
                Err(RegistryError::UnknownVersion { name: name.to_owned(), version })
            }
        }
    }

    /// The version `selector` picks. A number picks that version whatever its stage (an
    /// explicit pin); the other selectors never pick an archived version.
    pub async fn resolve(&self, name: &str, selector: Selector) -> Result<ModelVersion, RegistryError> {
        let condition = match selector {
            Selector::Version(version) => return self.get(name, version).await,
            Selector::Auto => "stage <> 'archived' ORDER BY stage = 'production' DESC, version DESC",
            Selector::Production => "stage = 'production'",
            Selector::Staging => "stage = 'staging' ORDER BY version DESC",
        };
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {VERSION_COLUMNS} FROM sm_model_versions WHERE name = $1 AND {condition} LIMIT 1"),
                &[&name],
            )
            .await?;
        match row {
            Some(row) => version_from_row(&row),
            None => {
                require_model(&client, name).await?;
                Err(RegistryError::NoVersion { name: name.to_owned(), selector })
            }
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, RegistryError> {
        Ok(self.pool.get().await.map_err(StorageError::from)?)
    }
}

/// Inserts a staging row unless `(name, version)` exists; true when it inserted.
async fn insert_version(
    tx: &tokio_postgres::Transaction<'_>,
    new: &NewVersion,
    version: u32,
    artifact: &ArtifactRef,
) -> Result<bool, RegistryError> {
    let metrics = serde_json::to_string(&new.metrics).map_err(|e| RegistryError::InvalidVersion(e.to_string()))?;
    let comparison = new.comparison.as_ref().map(serde_json::Value::to_string);
    let count = |n: usize| i64::try_from(n).map_err(|e| RegistryError::InvalidVersion(e.to_string()));
    let size = i64::try_from(artifact.size).map_err(|e| RegistryError::InvalidVersion(e.to_string()))?;
    let inserted = tx
        .execute(
            concat!(
                "INSERT INTO sm_model_versions (name, version, stage, kind, features, training_source,
                     training_from, training_to, training_rows, training_units, metrics, comparison,
                     artifact_location, artifact_sha256, artifact_size, created_at, asset_type)
                 VALUES ($1, $2, 'staging', $3, $4, $5, $6::text::timestamptz, $7::text::timestamptz, $8, $9,
                     $10::text::jsonb, $11::text::jsonb, $12, $13, $14, ",
                at!(15),
                ", $16) ON CONFLICT (name, version) DO NOTHING"
            ),
            &[
                &new.name,
                &to_db_version(version)?,
                &new.kind.as_str(),
                &new.features,
                &new.training.source,
                &new.training.from,
                &new.training.to,
                &count(new.training.rows)?,
                &count(new.training.units)?,
                &metrics,
                &comparison,
                &artifact.location,
                &artifact.sha256.to_ascii_lowercase(),
                &size,
                &new.registered_at.as_micros(),
                &new.asset_type,
            ],
        )
        .await
        .map_err(|error| match error.code() {
            Some(code) if code.code().starts_with("22") || *code == SqlState::CHECK_VIOLATION => {
                RegistryError::InvalidVersion(format!(
                    "{error}: training from/to must be RFC 3339 times with from <= to, and the sha-256 64 hex digits"
                ))
            }
            _ => RegistryError::from(error),
        })?;
    Ok(inserted == 1)
}

async fn fetch_version(
    client: &tokio_postgres::Transaction<'_>,
    name: &str,
    version: u32,
) -> Result<ModelVersion, RegistryError> {
    let row = client
        .query_one(
            &format!("SELECT {VERSION_COLUMNS} FROM sm_model_versions WHERE name = $1 AND version = $2"),
            &[&name, &to_db_version(version)?],
        )
        .await?;
    version_from_row(&row)
}

/// Locks the model's row (serialising its writes) and returns the version's stage.
async fn lock_stage(tx: &tokio_postgres::Transaction<'_>, name: &str, version: u32) -> Result<Stage, RegistryError> {
    if tx.query_opt("SELECT 1 FROM sm_models WHERE name = $1 FOR UPDATE", &[&name]).await?.is_none() {
        return Err(RegistryError::UnknownModel(name.to_owned()));
    }
    let row = tx
        .query_opt(
            "SELECT stage FROM sm_model_versions WHERE name = $1 AND version = $2",
            &[&name, &to_db_version(version)?],
        )
        .await?;
    match row {
        Some(row) => Stage::from_db(row.get(0)),
        None => Err(RegistryError::UnknownVersion { name: name.to_owned(), version }),
    }
}

async fn require_model(client: &tokio_postgres::Client, name: &str) -> Result<(), RegistryError> {
    match client.query_opt("SELECT 1 FROM sm_models WHERE name = $1", &[&name]).await? {
        Some(_) => Ok(()),
        None => Err(RegistryError::UnknownModel(name.to_owned())),
    }
}

fn check_kind(name: &str, existing: &str, requested: ModelKind) -> Result<(), RegistryError> {
    if existing == requested.as_str() {
        return Ok(());
    }
    Err(RegistryError::KindMismatch {
        name: name.to_owned(),
        existing: existing.to_owned(),
        requested: requested.as_str().to_owned(),
    })
}

fn version_from_row(row: &Row) -> Result<ModelVersion, RegistryError> {
    let count = |i: usize| usize::try_from(row.get::<_, i64>(i)).map_err(|e| unreadable(e.to_string()));
    let metrics: String = row.get(10);
    let comparison: Option<String> = row.get(11);
    Ok(ModelVersion {
        name: row.get(0),
        version: from_db_version(row.get(1))?,
        stage: Stage::from_db(row.get(2))?,
        kind: parse_kind(row.get(3))?,
        features: row.get(4),
        training: TrainingData {
            source: row.get(5),
            from: row.get(6),
            to: row.get(7),
            rows: count(8)?,
            units: count(9)?,
        },
        metrics: serde_json::from_str(&metrics).map_err(|e| unreadable(format!("metrics: {e}")))?,
        comparison: comparison
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| unreadable(format!("comparison: {e}")))?,
        artifact: ArtifactRef {
            location: row.get(12),
            sha256: row.get(13),
            size: u64::try_from(row.get::<_, i64>(14)).map_err(|e| unreadable(e.to_string()))?,
        },
        created_at: Timestamp(row.get(15)),
        promoted_at: row.get::<_, Option<i64>>(16).map(Timestamp),
        archived_at: row.get::<_, Option<i64>>(17).map(Timestamp),
        asset_type: row.get(18),
    })
}

fn parse_kind(kind: &str) -> Result<ModelKind, RegistryError> {
    serde_json::from_value(serde_json::Value::from(kind)).map_err(|_| unreadable(format!("model kind {kind:?}")))
}

fn to_db_version(version: u32) -> Result<i32, RegistryError> {
    match i32::try_from(version) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(RegistryError::InvalidVersion(format!("version {version} is out of range 1..={}", i32::MAX))),
    }
}

fn from_db_version(version: i32) -> Result<u32, RegistryError> {
    u32::try_from(version).map_err(|_| unreadable(format!("version {version}")))
}

/// A stored value this build cannot read: written by a newer build, or edited by hand.
fn unreadable(detail: String) -> RegistryError {
    RegistryError::InvalidVersion(format!("stored {detail} is not readable by this build; upgrade it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_selectors_and_refuses_the_rest() {
        assert_eq!("auto".parse::<Selector>().unwrap(), Selector::Auto);
        assert_eq!("production".parse::<Selector>().unwrap(), Selector::Production);
        assert_eq!("staging".parse::<Selector>().unwrap(), Selector::Staging);
        assert_eq!(" 12 ".parse::<Selector>().unwrap(), Selector::Version(12));
        for bad in ["", "0", "-1", "latest", "v2", "Production"] {
            assert!(matches!(bad.parse::<Selector>(), Err(RegistryError::InvalidSelector(_))), "{bad}");
        }
    }

    #[test]
    fn refuses_nameless_featureless_or_non_finite_versions() {
        let card = NewVersion {
            name: "milling-failure".into(),
            kind: ModelKind::FailureClassifier,
            asset_type: "mill".into(),
            features: vec!["power_w".into()],
            training: TrainingData { source: "synthetic".into(), from: None, to: None, rows: 10, units: 2 },
            metrics: BTreeMap::from([("test_f1".into(), 0.9)]),
            comparison: None,
            registered_at: Timestamp(0),
        };
        assert!(card.validate().is_ok());
        assert!(matches!(
            NewVersion { name: "Bad Name".into(), ..card.clone() }.validate(),
            Err(RegistryError::InvalidName(_))
        ));
        assert!(NewVersion { features: vec![], ..card.clone() }.validate().is_err());
        let nan = NewVersion { metrics: BTreeMap::from([("test_f1".into(), f64::NAN)]), ..card };
        assert!(nan.validate().unwrap_err().to_string().contains("finite"));
    }

    #[test]
    fn versions_outside_the_column_range_are_refused() {
        assert!(to_db_version(0).is_err());
        assert!(to_db_version(u32::MAX).is_err());
        assert_eq!(to_db_version(7).unwrap(), 7);
    }
}
