//! query: the gRPC read API over the projections (`sm.v1.ReadingService`,
//! `sm.v1.AssetService`, `sm.v1.AlertService`) and the on-demand analytics
//! (`sm.v1.DriftService`, `sm.v1.AnomalyService`), with gRPC health and reflection on the
//! same port.

use anyhow::Context;
use sm_query::{QueryConfig, QueryServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = QueryConfig::load().context("loading configuration")?;
    let _telemetry = sm_telemetry::init("query", &config.telemetry).context("starting telemetry")?;
    tracing::info!(config = ?config, "starting");
    let health = sm_telemetry::Health::new();
    health.set("postgres", false); // until the first SELECT 1 answers (QueryServer::serve)
    health.set("kafka", false); // until the assets topic is known to exist
    let (http_addr, _http) =
        sm_telemetry::serve_http(config.telemetry.http_addr, health.clone(), std::future::pending())
            .await
            .context("starting /metrics")?;
    tracing::info!(%http_addr, "serving /metrics /healthz /readyz");

    // RegisterAsset publishes there; creating it here means the first registration never
    // meets a missing topic (brokers do not auto-create platform topics). The alert topics
    // are what StreamAlerts follows: its feed starts once they exist.
    let topics = [
        (config.query.assets_topic.as_str(), true),
        (sm_domain::topics::ANOMALIES, false),
        (sm_domain::topics::DRIFT, false),
    ];
    sm_kafka::ensure_topics(&config.kafka, &topics).await.context("creating the assets and alert topics")?;
    health.set("kafka", true);

    // No migrations: the projector owns the schema, and the service only reads it.
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
