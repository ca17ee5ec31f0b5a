//! scheduling: work orders from live predictions and people's commands, and each site's plan
//! of its technicians' shifts, exactly once (two runtimes: the intake and the owner).

use anyhow::Context;
use sm_domain::topics;
use sm_scheduling::{Intake, SchedulingAgent, SchedulingConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = SchedulingConfig::load().context("loading configuration")?;
    let settings = config.scheduling.clone();
    let catalog = settings.load_catalog().map_err(anyhow::Error::msg)?;
    let telemetry = sm_telemetry::start_service("scheduling", &config.telemetry, &config, &["kafka"])
        .await
        .context("starting telemetry and /metrics")?;
    let health = telemetry.health.clone();
    sm_kafka::ensure_topics(
        &config.kafka,
        &[
            (topics::PREDICTIONS, false),
            (topics::COMMANDS, false),
            (topics::WORKORDERS, false),
            (topics::SCHEDULING_REJECTED, false),
            (topics::SCHEDULING_STATE, true),
            (settings.assets_topic.as_str(), true),
            (settings.technicians_topic.as_str(), true),
        ],
    )
    .await
    .context("creating topics")?;
    let (assets, _assets) = sm_scheduling::follow_assets(&config.kafka, &settings.assets_topic)
        .await
        .context("loading the asset registry")?;
    let (roster, _roster) = sm_scheduling::follow_roster(&config.kafka, &settings.technicians_topic)
        .await
        .context("loading the technician roster")?;
    tracing::info!(assets = assets.len(), technicians = roster.len(), "registries loaded");
    let intake = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "scheduling-intake",
        &[topics::PREDICTIONS],
        topics::SCHEDULING_REJECTED,
    )?
    .with_health(health.clone());
    let owner =
        sm_kafka::Runtime::new(config.kafka.clone(), "scheduling", &[topics::COMMANDS], topics::SCHEDULING_REJECTED)?
            .with_health(health);
    let shutdown = sm_telemetry::shutdown_signal();
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let (mut intake_stop, mut owner_stop) = (stop.subscribe(), stop.subscribe());
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(());
    });
    let (intake, owner) = tokio::join!(
        intake.run(Intake::new(assets), async move {
            let _ = intake_stop.recv().await;
        }),
        owner.run(SchedulingAgent::new(settings, catalog, roster), async move {
            let _ = owner_stop.recv().await;
        }),
    );
    signal.abort();
    let intake = intake.context("running the scheduling intake")?;
    let owner = owner.context("running the scheduling agent")?;
    tracing::info!(?intake, ?owner, "stopped");
    Ok(())
}
