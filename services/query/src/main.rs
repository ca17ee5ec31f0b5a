//! query: the gRPC read API over the projections (`sm.v1.ReadingService`,
//! `sm.v1.AssetService`, `sm.v1.AlertService`, `sm.v1.PredictionService`), the model registry
//! (`sm.v1.ModelService`) and the on-demand analytics (`sm.v1.DriftService`,
//! `sm.v1.AnomalyService`, `PredictionService.Predict`), with gRPC health and reflection on
//! the same port.

use anyhow::Context;
use sm_query::{QueryConfig, QueryServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = QueryConfig::load().context("loading configuration")?;
    // postgres: until the first SELECT 1 answers (QueryServer::serve); kafka: until the
    // topics below are known to exist.
    let telemetry = sm_telemetry::start_service("query", &config.telemetry, &config, &["postgres", "kafka"])
        .await
        .context("starting telemetry and /metrics")?;
    let health = telemetry.health.clone();

    // RegisterAsset, Promote and Archive publish there; creating them here means the first
    // command never meets a missing topic (brokers do not auto-create platform topics). The
    // alert topics are what StreamAlerts follows: its feed starts once they exist.
    let topics = [
        (config.query.assets_topic.as_str(), true),
        (config.query.models_topic.as_str(), false),
        (sm_domain::topics::ANOMALIES, false),
        (sm_domain::topics::DRIFT, false),
    ];
    sm_kafka::ensure_topics(&config.kafka, &topics).await.context("creating the assets, models and alert topics")?;
    health.set("kafka", true);

    // No migrations: the projector owns the projections and the registry's tables, and this
    // service logs in as a role that may not change them (not ready as one that escapes
    // row-level security).
    let pool = sm_storage::connect(&config.postgres).context("building the database pool")?;
    let server = QueryServer::new(&config, pool).context("building the gRPC services")?;
    let listener = tokio::net::TcpListener::bind(config.query.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}; set SM_QUERY__GRPC_ADDR", config.query.grpc_addr))?;
    tracing::info!(grpc_addr = %config.query.grpc_addr, "serving gRPC");
    server.serve(listener, health, sm_telemetry::shutdown_signal()).await.context("serving gRPC")?;
    tracing::info!("stopped");
    Ok(())
}
