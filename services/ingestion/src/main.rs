//! ingestion: validates raw readings against the asset registry, exactly once.

use anyhow::Context;
use sm_domain::topics;
use sm_ingestion::{Ingestion, IngestionConfig, dedup::Deduplicator};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = IngestionConfig::load().context("loading configuration")?;
    let telemetry = sm_telemetry::start_service("ingestion", &config.telemetry, &config, &["kafka", "redis"])
        .await
        .context("starting telemetry and /metrics")?;
    let health = telemetry.health.clone();
    sm_kafka::ensure_topics(
        &config.kafka,
        &[
            (topics::READINGS_RAW, false),
            (topics::READINGS_VALIDATED, false),
            (topics::READINGS_REJECTED, false),
            (topics::ASSETS, true),
        ],
    )
    .await
    .context("creating topics")?;
    let dedup = Deduplicator::connect(config.redis.url.expose(), config.ingestion.dedup_window_secs)
        .await
        .context("connecting to Redis (SM_REDIS__URL)")?;
    health.set("redis", true);
    let probed = dedup.clone();
    let _probe = health.probe("redis", std::time::Duration::from_secs(2), move || {
        let mut dedup = probed.clone();
        async move { dedup.ping().await.map_err(|e| format!("redis: {e}")) }
    });
    let (registry, follower) =
        sm_ingestion::registry::follow(&config.kafka, topics::ASSETS).await.context("loading the asset registry")?;
    let runtime =
        sm_kafka::Runtime::new(config.kafka.clone(), "ingestion", &[topics::READINGS_RAW], topics::READINGS_REJECTED)?
            .with_health(health);
    let summary = runtime
        .run(Ingestion::new(registry, dedup, config.ingestion.clone()), sm_telemetry::shutdown_signal())
        .await
        .context("running the ingestion agent")?;
    follower.abort();
    tracing::info!(?summary, "stopped");
    Ok(())
}
