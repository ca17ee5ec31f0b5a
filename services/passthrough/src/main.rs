//! passthrough: forwards readings between two topics, exactly once.

use anyhow::Context;
use sm_passthrough::{Passthrough, PassthroughConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = PassthroughConfig::load().context("loading configuration")?;
    let _telemetry = sm_telemetry::init("passthrough", &config.telemetry).context("starting telemetry")?;
    tracing::info!(config = ?config, "starting");
    let health = sm_telemetry::Health::new();
    health.set("kafka", false); // not ready until the runtime has joined its group
    let (http_addr, _http) =
        sm_telemetry::serve_http(config.telemetry.http_addr, health.clone(), std::future::pending())
            .await
            .context("starting /metrics")?;
    tracing::info!(%http_addr, "serving /metrics /healthz /readyz");
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
