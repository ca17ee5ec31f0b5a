//! Projector: turns topics into PostgreSQL read models, effectively once, each projection on
//! the shared runtime (`Runtime::run_projection`) with its own consumer group, so one slow
//! read model never holds back another. New topics get a new [`sm_storage::Projection`] and a
//! line in `main.rs`.
//!
//! Layout:
//! - [`schema`]: the read-model tables (migrations, TimescaleDB-aware);
//! - [`readings`]: validated readings → `readings`, `latest_readings`, minute and hour rollups;
//! - [`assets`]: asset registrations → `assets` and `sensors`;
//! - [`identity`]: API key events → `api_keys` (no secrets, only their SHA-256);
//! - [`alerts`]: anomalies, stale sensors, drift and retrain requests;
//! - [`predictions`]: the prediction agent's `FailurePredicted` → `predictions`.

pub mod alerts;
pub mod assets;
pub mod identity;
pub mod predictions;
pub mod readings;
pub mod schema;

use serde::{Deserialize, Serialize};
use sm_kafka::KafkaConfig;
use sm_storage::PostgresConfig;
use sm_telemetry::TelemetryConfig;

/// Settings of the projector.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectorConfig {
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub telemetry: TelemetryConfig,
}

impl ProjectorConfig {
    /// Loads from the process environment (and `SM_CONFIG`), then validates.
    pub fn load() -> Result<Self, sm_telemetry::ConfigError> {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let config: Self = sm_telemetry::load_config(&env)?;
        config.kafka.validate().map_err(sm_telemetry::ConfigError::Invalid)?;
        Ok(config)
    }
}
