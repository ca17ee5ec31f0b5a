//! The registry's tables, applied with `sm_storage::migrate(pool, "registry", MIGRATIONS)`.
//!
//! `sm_models` holds one row per model name: its kind and the last version number handed
//! out, which the row lock turns into an atomic counter. `sm_model_versions` holds one row
//! per version. A partial unique index allows at most one production version per name, so
//! even a bug in the promotion code cannot serve two.

use sm_storage::Migration;

/// Component name in `sm_schema_migrations`.
pub const COMPONENT: &str = "registry";

/// Applied in order by `sm_storage::migrate`; never edit an applied one, add a version.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "model registry",
        sql: |_| {
            "CREATE TABLE sm_models (
             name           text        PRIMARY KEY,
             kind           text        NOT NULL,
             latest_version integer     NOT NULL CHECK (latest_version > 0),
             created_at     timestamptz NOT NULL
         );
         CREATE TABLE sm_model_versions (
             name              text        NOT NULL REFERENCES sm_models (name),
             version           integer     NOT NULL CHECK (version > 0),
             stage             text        NOT NULL CHECK (stage IN ('staging', 'production', 'archived')),
             kind              text        NOT NULL,
             features          text[]      NOT NULL,
             training_source   text        NOT NULL,
             training_from     timestamptz,
             training_to       timestamptz,
             training_rows     bigint      NOT NULL CHECK (training_rows >= 0),
             training_units    bigint      NOT NULL CHECK (training_units >= 0),
             metrics           jsonb       NOT NULL,
             comparison        jsonb,
             artifact_location text        NOT NULL,
             artifact_sha256   text        NOT NULL CHECK (artifact_sha256 ~ '^[0-9a-f]{64}$'),
             artifact_size     bigint      NOT NULL CHECK (artifact_size >= 0),
             created_at        timestamptz NOT NULL,
             promoted_at       timestamptz,
             archived_at       timestamptz,
             PRIMARY KEY (name, version),
             CHECK (training_from IS NULL OR training_to IS NULL OR training_from <= training_to)
         );
         CREATE UNIQUE INDEX sm_model_versions_one_production ON sm_model_versions (name)
             WHERE stage = 'production';"
                .to_owned()
        },
    },
    Migration {
        version: 2,
        name: "asset type of a model version",
        // The prediction agent serves, per asset type, that type's production model.
        sql: |_| "ALTER TABLE sm_model_versions ADD COLUMN asset_type text NOT NULL DEFAULT ''".to_owned(),
    },
    Migration {
        version: 3,
        name: "the query role reads versions and moves their stage",
        // ModelService and Predict read; Promote and Archive update the stage (row locks
        // need UPDATE). Registering stays with the owner: the trainer.
        sql: |_| {
            format!(
                "{}GRANT SELECT, UPDATE ON sm_models, sm_model_versions TO {};",
                sm_storage::roles::reader_role_sql(),
                sm_storage::roles::READER_ROLE
            )
        },
    },
];
