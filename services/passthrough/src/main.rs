//! passthrough: forwards readings between two topics, exactly once.

use anyhow::Context;
use sm_passthrough::{Passthrough, PassthroughConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = PassthroughConfig::load().context("loading configuration")?;
    let telemetry = sm_telemetry::start_service("passthrough", &config.telemetry, &config, &["kafka"])
        .await
        .context("starting telemetry and /metrics")?;
    let health = telemetry.health.clone();
    let settings = &config.passthrough;
    sm_kafka::ensure_topics(
        &config.kafka,
        &[(&settings.input_topic, false), (&settings.output_topic, false), (&settings.dead_letter_topic, false)],
    )
    .await
    .context("creating topics")?;
    let runtime = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "passthrough",
        &[&settings.input_topic],
        &settings.dead_letter_topic,
    )?
    .with_health(health);
    let summary = runtime
        .run(Passthrough::new(&settings.output_topic), sm_telemetry::shutdown_signal())
        .await
        .context("running the pass-through agent")?;
    tracing::info!(?summary, "stopped");
    Ok(())
}
