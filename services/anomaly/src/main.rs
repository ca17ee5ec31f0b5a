//! anomaly: scores validated readings and reports anomalies and silent sensors, exactly once.

use anyhow::Context;
use sm_anomaly::{AnomalyAgent, AnomalyConfig};
use sm_domain::topics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AnomalyConfig::load().context("loading configuration")?;
    let telemetry = sm_telemetry::start_service("anomaly", &config.telemetry, &config, &["kafka"])
        .await
        .context("starting telemetry and /metrics")?;
    let health = telemetry.health.clone();
    sm_kafka::ensure_topics(
        &config.kafka,
        &[
            (topics::READINGS_VALIDATED, false),
            (topics::ANOMALIES, false),
            (topics::ANALYTICS_REJECTED, false),
            (topics::ANOMALY_STATE, true),
        ],
    )
    .await
    .context("creating topics")?;
    let runtime = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "anomaly",
        &[topics::READINGS_VALIDATED],
        topics::ANALYTICS_REJECTED,
    )?
    .with_health(health);
    let summary = runtime
        .run(AnomalyAgent::new(config.anomaly.clone()), sm_telemetry::shutdown_signal())
        .await
        .context("running the anomaly agent")?;
    tracing::info!(?summary, "stopped");
    Ok(())
}
