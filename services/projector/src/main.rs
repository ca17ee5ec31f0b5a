//! projector: every read model, from Kafka into PostgreSQL, effectively once.

use anyhow::Context;
use sm_domain::topics;
use sm_projector::{
    ProjectorConfig, alerts::AlertsProjection, assets::AssetsProjection, identity::IdentityProjection,
    predictions::PredictionsProjection, readings::ReadingsProjection, schema,
};
use sm_storage::ProjectionWriter;

/// How often PostgreSQL is checked for `/readyz`, also while nothing is being written.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ProjectorConfig::load().context("loading configuration")?;
    let telemetry = sm_telemetry::start_service("projector", &config.telemetry, &config, &["kafka", "postgres"])
        .await
        .context("starting telemetry and /metrics")?;
    let health = telemetry.health.clone();
    let pool = sm_storage::connect(&config.postgres).context("SM_POSTGRES__URL")?;
    let flavor = sm_storage::migrate(&pool, schema::COMPONENT, schema::MIGRATIONS)
        .await
        .context("migrating the read models (is PostgreSQL at SM_POSTGRES__URL?)")?;
    // The model registry's tables too: the query service reads and stages models but, not
    // owning the schema, may not create them.
    sm_storage::migrate(&pool, sm_registry::schema::COMPONENT, sm_registry::MIGRATIONS)
        .await
        .context("migrating the model registry")?;
    health.set("postgres", true);
    let probed = pool.clone();
    let _probe = health.probe("postgres", PROBE_INTERVAL, move || {
        let pool = probed.clone();
        async move { sm_storage::ping(&pool).await }
    });
    tracing::info!(?flavor, "read models ready");
    sm_kafka::ensure_topics(
        &config.kafka,
        &[
            (topics::READINGS_VALIDATED, false),
            (topics::ASSETS, true),
            (topics::ANOMALIES, false),
            (topics::DRIFT, false),
            (topics::PREDICTIONS, false),
            (topics::IDENTITY, true),
            (topics::PROJECTIONS_REJECTED, false),
        ],
    )
    .await
    .context("creating topics")?;

    // One signal stops every projection.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let readings = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "projector-readings",
        &[topics::READINGS_VALIDATED],
        topics::PROJECTIONS_REJECTED,
    )?
    .with_health(health.clone())
    .run_projection(ProjectionWriter::new(pool.clone(), ReadingsProjection::new(flavor)), signal());
    let assets = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "projector-assets",
        &[topics::ASSETS],
        topics::PROJECTIONS_REJECTED,
    )?
    .with_health(health.clone())
    .run_projection(ProjectionWriter::new(pool.clone(), AssetsProjection), signal());
    let alerts = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "projector-alerts",
        &[topics::ANOMALIES, topics::DRIFT],
        topics::PROJECTIONS_REJECTED,
    )?
    .with_health(health.clone())
    .run_projection(ProjectionWriter::new(pool.clone(), AlertsProjection), signal());
    let predictions = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "projector-predictions",
        &[topics::PREDICTIONS],
        topics::PROJECTIONS_REJECTED,
    )?
    .with_health(health.clone())
    .run_projection(ProjectionWriter::new(pool.clone(), PredictionsProjection), signal());
    let identity = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "projector-identity",
        &[topics::IDENTITY],
        topics::PROJECTIONS_REJECTED,
    )?
    .with_health(health.clone())
    .run_projection(ProjectionWriter::new(pool.clone(), IdentityProjection), signal());
    tokio::spawn(async move {
        sm_telemetry::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let (readings, assets, alerts, predictions, identity) =
        tokio::join!(readings, assets, alerts, predictions, identity);
    tracing::info!(
        readings = ?readings.context("readings projection")?,
        assets = ?assets.context("assets projection")?,
        alerts = ?alerts.context("alerts projection")?,
        predictions = ?predictions.context("predictions projection")?,
        identity = ?identity.context("identity projection")?,
        "stopped"
    );
    Ok(())
}
