//! prediction: remaining useful life and failure probability per asset, from the production
//! model of its type, exactly once; promoted models are hot-reloaded.

use anyhow::Context;
use sm_domain::topics;
use sm_prediction::models::{self, ModelShelf};
use sm_prediction::{AssetTypes, PredictionAgent, PredictionConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = PredictionConfig::load().context("loading configuration")?;
    let telemetry = sm_telemetry::start_service("prediction", &config.telemetry, &config, &["kafka"])
        .await
        .context("starting telemetry and /metrics")?;
    let health = telemetry.health.clone();
    let settings = config.prediction.clone();
    let (models_topic, assets_topic) = (settings.models_topic.as_str(), settings.assets_topic.as_str());
    sm_kafka::ensure_topics(
        &config.kafka,
        &[
            (topics::READINGS_VALIDATED, false),
            (topics::PREDICTIONS, false),
            (topics::ANALYTICS_REJECTED, false),
            (topics::PREDICTION_STATE, true),
            (models_topic, false),
            (assets_topic, true),
        ],
    )
    .await
    .context("creating topics")?;
    let store = config.artifacts.build().context("opening the artifact store (SM_ARTIFACTS__*)")?;
    let shelf = ModelShelf::default();
    let _models = models::follow(&config.kafka, models_topic, store, shelf.clone())
        .await
        .context("loading the model registry from its events")?;
    let (asset_types, _assets) =
        AssetTypes::follow(&config.kafka, assets_topic).await.context("loading the asset registry")?;
    tracing::info!(assets = asset_types.len(), serving = ?shelf.serving(), "registries loaded");
    let runtime = sm_kafka::Runtime::new(
        config.kafka.clone(),
        "prediction",
        &[topics::READINGS_VALIDATED],
        topics::ANALYTICS_REJECTED,
    )?
    .with_health(health);
    let summary = runtime
        .run(PredictionAgent::new(settings.clone(), shelf, asset_types), sm_telemetry::shutdown_signal())
        .await
        .context("running the prediction agent")?;
    tracing::info!(?summary, "stopped");
    Ok(())
}
