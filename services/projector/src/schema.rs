//! The read-model tables. Time-series tables are hypertables with continuous aggregates when
//! TimescaleDB is installed, and natively partitioned tables with rollups maintained by the
//! projector otherwise; both expose the same columns, so the query service does not care.

use sm_storage::{Flavor, Migration};

/// Binary `COPY` into `readings`, with the column types in [`READINGS_COPY_TYPES`]: how bulk
/// loads and the benchmarks' baseline write rows without the projection's bookkeeping.
pub const READINGS_COPY: &str = "COPY readings (tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit,
     sequence, quality_flags, backfill, event_id, recorded_at) FROM STDIN BINARY";

/// Column types of [`READINGS_COPY`], in order.
pub const READINGS_COPY_TYPES: [tokio_postgres::types::Type; 12] = {
    use tokio_postgres::types::Type;
    [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::FLOAT8,
        Type::TEXT,
        Type::INT8,
        Type::TEXT_ARRAY,
        Type::BOOL,
        Type::TEXT,
        Type::TIMESTAMPTZ,
    ]
};

/// Component name in `sm_schema_migrations`.
pub const COMPONENT: &str = "projector";

/// Applied in order by `sm_storage::migrate` at start.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "readings", sql: readings },
    Migration { version: 2, name: "latest readings", sql: |_| LATEST.to_owned() },
    Migration { version: 3, name: "minute and hour rollups", sql: rollups },
    Migration { version: 4, name: "assets and sensors", sql: |_| ASSETS.to_owned() },
    Migration { version: 5, name: "anomalies, stale sensors, drift and retrain requests", sql: |_| ALERTS.to_owned() },
    Migration { version: 6, name: "predictions", sql: |_| PREDICTIONS.to_owned() },
    Migration { version: 7, name: "api keys", sql: |_| API_KEYS.to_owned() },
    Migration { version: 8, name: "row-level security by tenant", sql: row_level_security },
];

/// The role the query service reads as: not the owner, so the policies below apply to it.
pub use sm_storage::roles::READER_ROLE;

/// Tables whose rows carry their tenant; each gets the same policy.
pub const TENANT_TABLES: &[&str] = &[
    "readings",
    "latest_readings",
    "assets",
    "anomalies",
    "stale_sensors",
    "drift_events",
    "retrain_requests",
    "predictions",
    "api_keys",
];

/// Tables without a tenant column: a row is visible when its asset is (the `assets` policy
/// applies inside the policy's own query). Rollups are continuous aggregates (views) on
/// TimescaleDB, which take no policy: there, as in every flavor, `Aggregate` only reads
/// rollups of an asset it has checked the caller can see.
fn by_asset_tables(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::Native => &["sensors", "readings_1m", "readings_1h"],
        Flavor::Timescale => &["sensors"],
    }
}

/// Row-level security, the second wall behind the query service's tenant checks. Every
/// transaction of the query service sets `sm.tenant_id` (`*` for a cross-tenant admin) with
/// `set_config(..., true)`; with none set, `current_setting(..., true)` is NULL and no row
/// is visible. The owner (the projector) is not subject to the policies and writes every
/// tenant.
fn row_level_security(flavor: Flavor) -> String {
    let setting = "current_setting('sm.tenant_id', true)";
    let mut sql = sm_storage::roles::reader_role_sql();
    for table in TENANT_TABLES {
        sql.push_str(&format!(
            "GRANT SELECT ON {table} TO {READER_ROLE};
             ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
             DROP POLICY IF EXISTS tenant_rows ON {table};
             CREATE POLICY tenant_rows ON {table} USING ({setting} = '*' OR tenant_id = {setting});\n"
        ));
    }
    for table in by_asset_tables(flavor) {
        sql.push_str(&format!(
            "GRANT SELECT ON {table} TO {READER_ROLE};
             ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
             DROP POLICY IF EXISTS tenant_rows ON {table};
             CREATE POLICY tenant_rows ON {table} USING (
                 {setting} = '*' OR EXISTS (SELECT 1 FROM assets a WHERE a.asset_id = {table}.asset_id));\n"
        ));
    }
    if flavor == Flavor::Timescale {
        sql.push_str(&format!("GRANT SELECT ON readings_1m, readings_1h TO {READER_ROLE};\n"));
    }
    sql
}

const READING_COLUMNS: &str = "
    tenant_id     text             NOT NULL,
    asset_id      text             NOT NULL,
    sensor_id     text             NOT NULL,
    sensor_type   text             NOT NULL,
    occurred_at   timestamptz      NOT NULL,
    value         double precision NOT NULL,
    unit          text             NOT NULL,
    sequence      bigint           NOT NULL,
    quality_flags text[]           NOT NULL DEFAULT '{}',
    backfill      boolean          NOT NULL DEFAULT false,
    event_id      text             NOT NULL,
    recorded_at   timestamptz      NOT NULL,
    projected_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, occurred_at, sequence)";

fn readings(flavor: Flavor) -> String {
    let table = match flavor {
        // Daily partitions are created by the projector as readings arrive (readings.rs).
        Flavor::Native => format!("CREATE TABLE readings ({READING_COLUMNS}) PARTITION BY RANGE (occurred_at);"),
        Flavor::Timescale => format!(
            "CREATE TABLE readings ({READING_COLUMNS});
             SELECT create_hypertable('readings', 'occurred_at', chunk_time_interval => interval '1 day');"
        ),
    };
    format!(
        "{table}\nCREATE INDEX readings_asset_time ON readings (asset_id, occurred_at DESC, sensor_id DESC, sequence DESC);"
    )
}

const LATEST: &str = "
CREATE TABLE latest_readings (
    sensor_id     text PRIMARY KEY,
    tenant_id     text             NOT NULL,
    asset_id      text             NOT NULL,
    sensor_type   text             NOT NULL,
    occurred_at   timestamptz      NOT NULL,
    value         double precision NOT NULL,
    unit          text             NOT NULL,
    sequence      bigint           NOT NULL,
    quality_flags text[]           NOT NULL,
    backfill      boolean          NOT NULL,
    event_id      text             NOT NULL
);
CREATE INDEX latest_readings_asset ON latest_readings (asset_id);";

fn rollups(flavor: Flavor) -> String {
    match flavor {
        Flavor::Native => ["readings_1m", "readings_1h"]
            .iter()
            .map(|table| {
                format!(
                    "CREATE TABLE {table} (
                         sensor_id   text             NOT NULL,
                         asset_id    text             NOT NULL,
                         bucket      timestamptz      NOT NULL,
                         min_value   double precision NOT NULL,
                         max_value   double precision NOT NULL,
                         sum_value   double precision NOT NULL,
                         count       bigint           NOT NULL,
                         first_at    timestamptz      NOT NULL,
                         first_value double precision NOT NULL,
                         last_at     timestamptz      NOT NULL,
                         last_value  double precision NOT NULL,
                         PRIMARY KEY (sensor_id, bucket)
                     );
                     CREATE INDEX {table}_asset ON {table} (asset_id, bucket);"
                )
            })
            .collect(),
        Flavor::Timescale => [("readings_1m", "1 minute"), ("readings_1h", "1 hour")]
            .iter()
            .map(|(view, width)| {
                format!(
                    "CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous) AS
                     SELECT sensor_id, min(asset_id) AS asset_id, time_bucket(interval '{width}', occurred_at) AS bucket,
                            min(value) AS min_value, max(value) AS max_value, sum(value) AS sum_value,
                            count(*) AS count, min(occurred_at) AS first_at, first(value, occurred_at) AS first_value,
                            max(occurred_at) AS last_at, last(value, occurred_at) AS last_value
                     FROM readings GROUP BY sensor_id, bucket WITH NO DATA;
                     SELECT add_continuous_aggregate_policy('{view}', start_offset => NULL,
                            end_offset => NULL, schedule_interval => interval '{width}');"
                )
            })
            .collect(),
    }
}

const ASSETS: &str = "
CREATE TABLE assets (
    asset_id      text PRIMARY KEY,
    tenant_id     text        NOT NULL,
    name          text        NOT NULL,
    asset_type    text        NOT NULL,
    site          text        NOT NULL,
    registered_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE TABLE sensors (
    sensor_id            text PRIMARY KEY,
    asset_id             text             NOT NULL,
    sensor_type          text             NOT NULL,
    unit                 text             NOT NULL,
    min_value            double precision NOT NULL,
    max_value            double precision NOT NULL,
    expected_interval_ms bigint           NOT NULL
);
CREATE INDEX sensors_asset ON sensors (asset_id);";

/// What the analytics agents found. Keyed by event id: a replay rewrites the same rows.
/// The `(…, occurred_at DESC, event_id DESC)` indexes serve the newest-first keyset pages.
const ALERTS: &str = "
CREATE TABLE anomalies (
    event_id      text PRIMARY KEY,
    tenant_id     text             NOT NULL,
    asset_id      text             NOT NULL,
    scope         text             NOT NULL,
    sensor_id     text,
    sensor_type   text,
    detector      text             NOT NULL,
    score         double precision NOT NULL,
    threshold     double precision NOT NULL,
    severity      smallint         NOT NULL,
    value         double precision,
    expected_low  double precision,
    expected_high double precision,
    contributing  jsonb            NOT NULL,
    triggered_by  text[]           NOT NULL,
    window_start  timestamptz,
    backfill      boolean          NOT NULL,
    occurred_at   timestamptz      NOT NULL,
    recorded_at   timestamptz      NOT NULL
);
CREATE INDEX anomalies_time ON anomalies (occurred_at DESC, event_id DESC);
CREATE INDEX anomalies_asset_time ON anomalies (asset_id, occurred_at DESC, event_id DESC);
CREATE INDEX anomalies_sensor_time ON anomalies (sensor_id, occurred_at DESC, event_id DESC);
CREATE TABLE stale_sensors (
    event_id             text PRIMARY KEY,
    tenant_id            text        NOT NULL,
    asset_id             text        NOT NULL,
    sensor_id            text        NOT NULL,
    sensor_type          text        NOT NULL,
    last_reading_at      timestamptz NOT NULL,
    silent_for_ms        bigint      NOT NULL,
    expected_interval_ms bigint      NOT NULL,
    stale_after_ms       bigint      NOT NULL,
    occurred_at          timestamptz NOT NULL
);
CREATE INDEX stale_sensors_asset_time ON stale_sensors (asset_id, occurred_at DESC);
CREATE TABLE drift_events (
    event_id        text PRIMARY KEY,
    tenant_id       text             NOT NULL,
    asset_id        text             NOT NULL,
    sensor_id       text             NOT NULL,
    sensor_type     text             NOT NULL,
    test            text             NOT NULL,
    statistic       double precision NOT NULL,
    p_value         double precision,
    psi             double precision,
    reference_start timestamptz      NOT NULL,
    reference_end   timestamptz      NOT NULL,
    reference_size  integer          NOT NULL,
    current_start   timestamptz      NOT NULL,
    current_end     timestamptz      NOT NULL,
    current_size    integer          NOT NULL,
    backfill        boolean          NOT NULL,
    occurred_at     timestamptz      NOT NULL,
    recorded_at     timestamptz      NOT NULL
);
CREATE INDEX drift_events_time ON drift_events (occurred_at DESC, event_id DESC);
CREATE INDEX drift_events_asset_time ON drift_events (asset_id, occurred_at DESC, event_id DESC);
CREATE INDEX drift_events_sensor_time ON drift_events (sensor_id, occurred_at DESC, event_id DESC);
CREATE TABLE retrain_requests (
    event_id     text PRIMARY KEY,
    tenant_id    text        NOT NULL,
    asset_id     text        NOT NULL,
    sensor_id    text        NOT NULL,
    sensor_type  text        NOT NULL,
    reason       text        NOT NULL,
    history_from timestamptz NOT NULL,
    history_to   timestamptz NOT NULL,
    occurred_at  timestamptz NOT NULL
);";

/// API keys as `sm.identity.v1` tells them: never a secret, only its SHA-256. A revocation
/// of a key whose creation was compacted away still leaves a (revoked) row.
const API_KEYS: &str = "
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    tenant_id     text        NOT NULL,
    name          text        NOT NULL DEFAULT '',
    roles         text[]      NOT NULL DEFAULT '{}',
    secret_sha256 text        NOT NULL DEFAULT '',
    created_by    text        NOT NULL DEFAULT '',
    created_at    timestamptz,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoked_by    text,
    revoke_reason text
);";

/// What the prediction agent said, one row per `FailurePredicted` (keyed by event id: a replay
/// rewrites the same rows). `occurred_at` is the end of the cycle the prediction is about.
/// `predictions_asset_time` serves one asset's newest-first keyset pages and "latest per
/// asset" (one index probe per asset); `predictions_time` serves pages across every asset.
const PREDICTIONS: &str = "
CREATE TABLE predictions (
    event_id            text PRIMARY KEY,
    tenant_id           text             NOT NULL,
    asset_id            text             NOT NULL,
    asset_type          text             NOT NULL,
    occurred_at         timestamptz      NOT NULL,
    recorded_at         timestamptz      NOT NULL,
    model_name          text             NOT NULL,
    model_version       integer          NOT NULL,
    model_kind          text             NOT NULL,
    rul_seconds         double precision NOT NULL,
    rul_low_seconds     double precision NOT NULL,
    rul_high_seconds    double precision NOT NULL,
    coverage            double precision NOT NULL,
    horizon_seconds     double precision NOT NULL,
    failure_probability double precision NOT NULL,
    cycles              integer          NOT NULL,
    contributions       jsonb            NOT NULL
);
CREATE INDEX predictions_asset_time ON predictions (asset_id, occurred_at DESC, event_id DESC);
CREATE INDEX predictions_time ON predictions (occurred_at DESC, event_id DESC);";
