//! drift: watches every sensor's distribution and reports confirmed drift, exactly once.

use anyhow::Context;
use sm_domain::topics;
use sm_drift::{DriftAgent, DriftAgentConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = DriftAgentConfig::load().context("loading configuration")?;
    let telemetry = sm_telemetry::start_service("drift", &config.telemetry, &config, &["kafka"])
        .await
        .context("starting telemetry and /metrics")?;
    let health = telemetry.health.clone();
    sm_kafka::ensure_topics(
        &config.kafka,
        &[
            (topics::READINGS_VALIDATED, false),
            (topics::DRIFT, false),
            (topics::ANALYTICS_REJECTED, false),
            (topics::DRIFT_STATE, true),
        ],
    )
    .await
    .context("creating topics")?;
    let runtime = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "drift",
        &[topics::READINGS_VALIDATED],
        topics::ANALYTICS_REJECTED,
    )?
    .with_health(health);
    let summary = runtime
        .run(DriftAgent::new(config.drift.clone()), sm_telemetry::shutdown_signal())
        .await
        .context("running the drift agent")?;
    tracing::info!(?summary, "stopped");
    Ok(())
}
