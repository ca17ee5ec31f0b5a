//! Settings of the query service: the shared sections (`SM_KAFKA__*`, `SM_POSTGRES__*`,
//! `SM_TELEMETRY__*`, `SM_ARTIFACTS__*`) and its own (`SM_QUERY__*`). Loading and validation only; nothing here
//! connects to anything.

use serde::{Deserialize, Serialize};
use sm_kafka::KafkaConfig;
use sm_registry::ArtifactStoreConfig;
use sm_storage::PostgresConfig;
use sm_telemetry::{ConfigError, TelemetryConfig};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Everything the query service is configured with. Every field has a safe local default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// For `RegisterAsset`, `Promote` and `Archive`, which publish events (idempotent
    /// producers), and the alert feed behind `StreamAlerts` (one consumer outside any group; it
    /// never commits).
    pub kafka: KafkaConfig,
    /// The projections the service reads, and the model registry's tables, as a role that
    /// owns nothing (`sm_query`): the projector migrates both.
    pub postgres: PostgresConfig,
    pub telemetry: TelemetryConfig,
    /// Where model artifacts are (`SM_ARTIFACTS__*`): `Predict` reads them, checked against the
    /// SHA-256 the registry recorded. The same store the trainer writes to.
    pub artifacts: ArtifactStoreConfig,
    pub query: QuerySettings,
    /// Who may call (`SM_AUTH__*`): the bootstrap key, OIDC issuers, the key cache, reflection.
    pub auth: crate::auth::AuthConfig,
}

/// The query service's own settings (`SM_QUERY__*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySettings {
    /// gRPC listen address. 127.0.0.1 by default (safe on a laptop); `0.0.0.0:50051` in a
    /// container.
    pub grpc_addr: SocketAddr,
    /// Largest `page_size` a client may ask for; more is `INVALID_ARGUMENT`. Bounds the rows
    /// one request reads and the size of one response (about 200 bytes per reading).
    pub max_page_size: u32,
    /// Page size when a request sends 0.
    pub default_page_size: u32,
    /// Where `RegisterAsset` publishes `AssetRegistered` events; the projector and ingestion
    /// read it. Only tests change it.
    pub assets_topic: String,
    /// Where `Promote` and `Archive` publish `ModelPromoted` and `ModelArchived`; the
    /// prediction agent follows it. Only tests change it.
    pub models_topic: String,
    /// How long `RegisterAsset` waits for the broker's acknowledgement (librdkafka's
    /// `message.timeout.ms`) before answering `UNAVAILABLE`.
    pub publish_timeout_ms: u64,
    /// Alerts a `StreamAlerts` client may fall behind by before its stream ends with
    /// `RESOURCE_EXHAUSTED`. The buffer is shared by all streams (one `broadcast` channel), so
    /// memory is bounded by this times an alert's size (~1 KiB), whatever the number of clients.
    pub alert_stream_buffer: usize,
    /// How long `Predict` reuses what a model name and selector resolved to, instead of
    /// asking the registry on every call (the lookup was 61 % of a warm call). A promotion
    /// reaches `Predict` within this; 0 resolves every call.
    pub resolve_cache_ms: u64,
    /// TLS and mutual TLS on the gRPC port (`SM_QUERY__TLS__CERT_FILE`, `..._KEY_FILE`,
    /// `..._CLIENT_CA_FILE`); plaintext by default.
    pub tls: crate::tls::TlsSettings,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_page_size: 1000,
            default_page_size: 100,
            assets_topic: sm_domain::topics::ASSETS.to_owned(),
            models_topic: sm_domain::topics::MODELS.to_owned(),
            publish_timeout_ms: 10_000,
            alert_stream_buffer: 1024,
            resolve_cache_ms: 1_000,
            tls: crate::tls::TlsSettings::default(),
        }
    }
}

impl QueryConfig {
    /// Loads from the process environment (and `SM_CONFIG`), then validates.
    pub fn load() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(&env)
    }

    /// As [`QueryConfig::load`], from the given environment (tests pass a map).
    pub fn load_from(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let config: Self = sm_telemetry::load_config(env)?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Checks the settings before any connection; the error names the setting to fix.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        let query = &self.query;
        if query.max_page_size == 0 {
            return Err("SM_QUERY__MAX_PAGE_SIZE must be at least 1".into());
        }
        if query.default_page_size == 0 || query.default_page_size > query.max_page_size {
            return Err(format!(
                "SM_QUERY__DEFAULT_PAGE_SIZE={} must be between 1 and SM_QUERY__MAX_PAGE_SIZE ({})",
                query.default_page_size, query.max_page_size
            ));
        }
        if query.assets_topic.trim().is_empty() {
            return Err("SM_QUERY__ASSETS_TOPIC is empty: leave it unset for sm.assets.v1".into());
        }
        if query.models_topic.trim().is_empty() {
            return Err("SM_QUERY__MODELS_TOPIC is empty: leave it unset for sm.models.v1".into());
        }
        if query.publish_timeout_ms == 0 {
            return Err("SM_QUERY__PUBLISH_TIMEOUT_MS must be positive".into());
        }
        if !(1..=1_000_000).contains(&query.alert_stream_buffer) {
            return Err(format!(
                "SM_QUERY__ALERT_STREAM_BUFFER={} must be between 1 and 1000000",
                query.alert_stream_buffer
            ));
        }
        query.tls.validate()?;
        self.artifacts.validate().map_err(|e| e.to_string())?;
        self.auth.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_validate_and_match_the_documentation() {
        let config = QueryConfig::load_from(&HashMap::new()).unwrap();
        assert_eq!(config.query.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!((config.query.default_page_size, config.query.max_page_size), (100, 1000));
        assert_eq!(config.query.assets_topic, "sm.assets.v1");
        assert_eq!(config.query.alert_stream_buffer, 1024);
        assert_eq!(config.query.models_topic, "sm.models.v1");
        assert_eq!(config.artifacts, ArtifactStoreConfig::default());
    }

    #[test]
    fn artifact_settings_load_and_a_bad_store_url_names_the_setting() {
        let config = QueryConfig::load_from(&env(&[
            ("SM_ARTIFACTS__URL", "s3://sm-models/models"),
            ("SM_ARTIFACTS__ENDPOINT", "http://127.0.0.1:18014"),
            ("SM_ARTIFACTS__ALLOW_HTTP", "true"),
        ]))
        .unwrap();
        assert_eq!(config.artifacts.url, "s3://sm-models/models");
        let error = QueryConfig::load_from(&env(&[("SM_ARTIFACTS__URL", "gs://models")])).unwrap_err();
        assert!(error.to_string().contains("SM_ARTIFACTS__URL"), "{error}");
        let error = QueryConfig::load_from(&env(&[("SM_QUERY__MODELS_TOPIC", " ")])).unwrap_err();
        assert!(error.to_string().contains("SM_QUERY__MODELS_TOPIC"), "{error}");
    }

    #[test]
    fn an_empty_alert_stream_buffer_is_refused() {
        // tokio's broadcast channel panics on a capacity of 0: refuse it before any stream.
        let error = QueryConfig::load_from(&env(&[("SM_QUERY__ALERT_STREAM_BUFFER", "0")])).unwrap_err();
        assert!(error.to_string().contains("SM_QUERY__ALERT_STREAM_BUFFER"), "{error}");
    }

    #[test]
    fn env_overrides_the_grpc_address_and_page_sizes() {
        let config = QueryConfig::load_from(&env(&[
            ("SM_QUERY__GRPC_ADDR", "0.0.0.0:50051"),
            ("SM_QUERY__MAX_PAGE_SIZE", "50"),
            ("SM_QUERY__DEFAULT_PAGE_SIZE", "20"),
        ]))
        .unwrap();
        assert_eq!(config.query.grpc_addr.to_string(), "0.0.0.0:50051");
        assert_eq!((config.query.default_page_size, config.query.max_page_size), (20, 50));
    }

    #[test]
    fn a_default_page_size_above_the_maximum_names_both_settings() {
        let error = QueryConfig::load_from(&env(&[("SM_QUERY__DEFAULT_PAGE_SIZE", "2000")])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("SM_QUERY__DEFAULT_PAGE_SIZE") && message.contains("SM_QUERY__MAX_PAGE_SIZE"));
    }

    #[test]
    fn tls_settings_load_from_the_environment_and_are_validated() {
        assert!(!QueryConfig::load_from(&HashMap::new()).unwrap().query.tls.enabled());
        let error = QueryConfig::load_from(&env(&[("SM_QUERY__TLS__CERT_FILE", "/nonexistent/cert.pem")])).unwrap_err();
        assert!(error.to_string().contains("SM_QUERY__TLS__KEY_FILE"), "{error}");
        let error = QueryConfig::load_from(&env(&[
            ("SM_QUERY__TLS__CERT_FILE", "/nonexistent/cert.pem"),
            ("SM_QUERY__TLS__KEY_FILE", "/nonexistent/key.pem"),
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("SM_QUERY__TLS__CERT_FILE=/nonexistent/cert.pem"), "{error}");
        assert!(QueryConfig::load_from(&env(&[("SM_QUERY__TLS__CA_FILE", "ca.pem")])).is_err());
    }

    #[test]
    fn a_typo_in_the_query_section_is_an_error() {
        assert!(QueryConfig::load_from(&env(&[("SM_QUERY__GRPC_ADR", "0.0.0.0:1")])).is_err());
    }
}
