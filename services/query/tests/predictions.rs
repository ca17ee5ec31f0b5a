//! `sm.v1.PredictionService` against the real local stack: the server runs in-process on
//! 127.0.0.1:0 and the tests talk to it with the generated client.
//!
//! Each test gets its own PostgreSQL schema, migrated with the projector's migrations, and
//! prediction rows are written by the projector's own `PredictionsProjection`, so the service
//! reads exactly what production writes. `Predict` runs small models trained here on the
//! synthetic data of `sm_models` and registered with `sm_registry::Registry::register` into a
//! temporary artifact directory, as the trainer does. The stack must be up
//! (`deploy/local/stack up`); a missing stack is a panic, never a skip.

mod common;

use sm_domain::{AssetId, Envelope, FailurePredicted, FeatureContribution, TenantId, Timestamp};
use sm_kafka::KafkaConfig;
use sm_models::ai4i::{ProcessSample, ProductType};
use sm_models::cmapss::trajectories;
use sm_models::failure::{FailureExample, FailureParams};
use sm_models::{
    Artifact, BoostParams, FailureClassifier, Model, ModelCard, ModelKind, RulParams, RulRegressor, StreamLayout,
    TrainingData,
};
use sm_proto::auth::AuthChannel as Channel;
use sm_proto::convert::{from_timestamp, to_timestamp};
use sm_proto::v1;
use sm_proto::v1::prediction_service_client::PredictionServiceClient;
use sm_query::{QueryConfig, QuerySettings};
use sm_registry::{ArtifactStore, ArtifactStoreConfig, ModelVersion, NewVersion, Registry};
use sm_storage::{Pool, PostgresConfig, Projection};
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::{stack_from_env_file, unique};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tonic::Code;

const SECOND: i64 = 1_000_000;
/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000 * SECOND;
/// Cycle length of the stream RUL model: its predictions in seconds are cycles × 2.
const CYCLE_MS: i64 = 2_000;

/// A running server on its own schema and artifact directory.
struct Fixture {
    pool: Pool,
    registry: Registry,
    store: ArtifactStore,
    artifacts: tempfile::TempDir,
    server: common::Server,
    _schema: ScratchSchema,
}

impl Fixture {
    async fn start() -> Self {
        let stack = stack_from_env_file();
        let schema = ScratchSchema::create(&stack, "sm_predictions_test").await;
        let artifacts = tempfile::tempdir().unwrap();
        let config = QueryConfig {
            kafka: KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..KafkaConfig::default() },
            postgres: PostgresConfig { url: Secret(schema.url.clone()), pool_size: 4, ..Default::default() },
            telemetry: Default::default(),
            auth: common::auth(&stack),
            artifacts: ArtifactStoreConfig {
                url: format!("file://{}", artifacts.path().display()),
                ..ArtifactStoreConfig::default()
            },
            query: QuerySettings {
                assets_topic: unique("sm.assets.test"),
                models_topic: unique("sm.models.test"),
                ..QuerySettings::default()
            },
        };
        config.validate().unwrap();
        let pool = sm_storage::connect(&config.postgres).unwrap();
        sm_storage::migrate(&pool, sm_projector::schema::COMPONENT, sm_projector::schema::MIGRATIONS).await.unwrap();
        let registry = Registry::open(pool.clone()).await.unwrap();
        let store = config.artifacts.build().unwrap();

        let server = common::Server::start(&config, &schema).await;
        Self { pool, registry, store, artifacts, server, _schema: schema }
    }

    async fn client(&self) -> PredictionServiceClient<Channel> {
        let channel = self.server.channel().await;
        PredictionServiceClient::new(channel)
    }

    /// Writes prediction events with the projector's own projection, in one transaction.
    async fn project(&self, events: &[Envelope<FailurePredicted>]) {
        let mut client = self.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        sm_projector::predictions::PredictionsProjection.write(&tx, events).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// Registers `model` as the next version of `name`, as the trainer does.
    async fn register(&self, name: &str, model: Model) -> ModelVersion {
        let card = ModelCard {
            name: name.to_owned(),
            kind: model.kind(),
            features: model.feature_names(),
            training: TrainingData { source: "synthetic".into(), from: None, to: None, rows: 1, units: 1 },
            metrics: BTreeMap::from([("test_metric".to_owned(), 1.0)]),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let new = NewVersion::from_card(&card, "pump", Timestamp(T0));
        let bytes = Artifact::new(card, model).unwrap().to_bytes().unwrap();
        self.registry.register(&self.store, &new, &bytes).await.unwrap()
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn prediction(asset: &str, at: i64, rul_seconds: f64) -> Envelope<FailurePredicted> {
    Envelope::origin(
        TenantId::from("acme"),
        AssetId::from(asset),
        Timestamp(at),
        "prediction",
        FailurePredicted {
            model_name: "rul-pump".into(),
            model_version: 2,
            model_kind: "remaining_useful_life".into(),
            asset_type: "pump".into(),
            rul_seconds,
            rul_low_seconds: rul_seconds * 0.8,
            rul_high_seconds: rul_seconds * 1.25,
            coverage: 0.9,
            horizon_seconds: 60.0,
            failure_probability: (60.0 / rul_seconds).min(1.0),
            cycles: 150,
            contributions: vec![
                FeatureContribution { feature: "vibration_rms_slope150".into(), value: 0.04, contribution: -12.5 },
                FeatureContribution { feature: "temperature_last".into(), value: 71.0, contribution: 3.0 },
            ],
        },
    )
}

/// What the service must answer for a projected event.
fn message(event: &Envelope<FailurePredicted>) -> v1::Prediction {
    let (h, p) = (&event.header, &event.payload);
    v1::Prediction {
        event_id: h.event_id.to_string(),
        tenant_id: h.tenant_id.as_str().to_owned(),
        asset_id: h.asset_id.as_str().to_owned(),
        asset_type: p.asset_type.clone(),
        occurred_at: Some(to_timestamp(h.occurred_at)),
        recorded_at: Some(to_timestamp(h.recorded_at)),
        model_name: p.model_name.clone(),
        model_version: p.model_version as u32,
        model_kind: p.model_kind.clone(),
        rul_seconds: p.rul_seconds,
        rul_low_seconds: p.rul_low_seconds,
        rul_high_seconds: p.rul_high_seconds,
        coverage: p.coverage,
        horizon_seconds: p.horizon_seconds,
        failure_probability: p.failure_probability,
        cycles: p.cycles,
        contributions: p
            .contributions
            .iter()
            .map(|c| v1::FeatureContribution {
                feature: c.feature.clone(),
                value: c.value,
                contribution: c.contribution,
            })
            .collect(),
    }
}

/// The key the list orders by, descending.
fn position(prediction: &v1::Prediction) -> (i64, String) {
    (from_timestamp(prediction.occurred_at.as_ref().unwrap()).unwrap().as_micros(), prediction.event_id.clone())
}

/// Follows next_page_token to the end; returns every prediction.
async fn all_pages(
    client: &mut PredictionServiceClient<Channel>,
    first: v1::ListPredictionsRequest,
) -> Vec<v1::Prediction> {
    let (mut all, mut request) = (Vec::new(), first);
    loop {
        let page = client.list_predictions(request.clone()).await.unwrap().into_inner();
        assert!(page.predictions.len() <= request.page_size as usize);
        all.extend(page.predictions);
        if page.next_page_token.is_empty() {
            return all;
        }
        request.page_token = page.next_page_token;
    }
}

fn expected(
    events: &[Envelope<FailurePredicted>],
    keep: impl Fn(&Envelope<FailurePredicted>) -> bool,
) -> Vec<v1::Prediction> {
    let mut kept: Vec<v1::Prediction> = events.iter().filter(|e| keep(e)).map(message).collect();
    kept.sort_by_key(|p| std::cmp::Reverse(position(p)));
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prediction_pages_have_no_gap_or_repeat_and_latest_is_the_newest_per_asset() {
    let fixture = Fixture::start().await;
    let (pump, fan, mill) = (unique("pump"), unique("fan"), unique("mill"));
    // 150 predictions of the pump, two per second (ties on occurred_at on every page), and
    // the fan's and the mill's interleaved in time.
    let mut events = Vec::new();
    for i in 0..150_i64 {
        events.push(prediction(&pump, T0 + (i / 2) * SECOND, 1_000.0 - i as f64));
    }
    for i in 0..30_i64 {
        events.push(prediction(&fan, T0 + i * 3 * SECOND, 500.0 + i as f64));
    }
    events.push(prediction(&mill, T0 + 7 * SECOND, 42.0));
    fixture.project(&events).await;
    // Projected twice (a replay): nothing changes.
    fixture.project(&events).await;
    let mut client = fixture.client().await;

    let of = |asset: &str| {
        let asset = asset.to_owned();
        move |e: &Envelope<FailurePredicted>| e.header.asset_id.as_str() == asset
    };
    let base = v1::ListPredictionsRequest { asset_id: pump.clone(), page_size: 7, ..Default::default() };
    let got = all_pages(&mut client, base.clone()).await;
    let want = expected(&events, of(&pump));
    assert_eq!(got.len(), 150);
    assert!(got == want, "pages differ from the reference");
    let ids: HashSet<&str> = got.iter().map(|p| p.event_id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "a prediction was returned twice");

    // Every asset, a time range [from, to), another page size.
    let at = |micros| Some(to_timestamp(Timestamp(micros)));
    let ranged = v1::ListPredictionsRequest {
        asset_id: String::new(),
        from: at(T0 + 10 * SECOND),
        to: at(T0 + 40 * SECOND),
        page_size: 13,
        page_token: String::new(),
    };
    let got = all_pages(&mut client, ranged.clone()).await;
    let want = expected(&events, |e| (T0 + 10 * SECOND..T0 + 40 * SECOND).contains(&e.header.occurred_at.as_micros()));
    assert!(!want.is_empty());
    assert!(got == want, "ranged pages differ: got {}, want {}", got.len(), want.len());

    // Rows arriving while paging: newer ones are not in this pass, none is repeated or lost.
    let page = client.list_predictions(base.clone()).await.unwrap().into_inner();
    let newer = prediction(&pump, T0 + 3_600 * SECOND, 10.0);
    fixture.project(std::slice::from_ref(&newer)).await;
    let mut rest =
        all_pages(&mut client, v1::ListPredictionsRequest { page_token: page.next_page_token, ..base.clone() }).await;
    let mut pass = page.predictions;
    pass.append(&mut rest);
    assert!(pass == expected(&events, of(&pump)), "a pass started before the insert sees exactly the rows before it");

    // A token is tied to its filters and its method.
    let first = client.list_predictions(base.clone()).await.unwrap().into_inner();
    let status = client
        .list_predictions(v1::ListPredictionsRequest {
            asset_id: fan.clone(),
            page_token: first.next_page_token,
            ..base.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("other filters"), "{}", status.message());
    let status =
        client.list_predictions(v1::ListPredictionsRequest { page_size: 1001, ..base.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .list_predictions(v1::ListPredictionsRequest { from: at(T0 + SECOND), to: at(T0), ..base.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Latest: the newest of each asset asked for (duplicates and unknown ids are harmless),
    // ordered by asset id.
    let newest = |asset: &str, extra: Option<&Envelope<FailurePredicted>>| {
        let all: Vec<&Envelope<FailurePredicted>> =
            events.iter().chain(extra).filter(|e| e.header.asset_id.as_str() == asset).collect();
        let best =
            all.into_iter().max_by_key(|e| (e.header.occurred_at.as_micros(), e.header.event_id.to_string())).unwrap();
        message(best)
    };
    let mut want = vec![newest(&pump, Some(&newer)), newest(&fan, None)];
    want.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    let request =
        v1::LatestPredictionsRequest { asset_ids: vec![fan.clone(), pump.clone(), unique("ghost"), fan.clone()] };
    let got = client.latest(request).await.unwrap().into_inner().predictions;
    assert_eq!(got, want);
    assert_eq!(got.iter().find(|p| p.asset_id == pump).unwrap().event_id, newer.header.event_id.to_string());

    // A late prediction about an older cycle does not become the latest.
    fixture.project(&[prediction(&pump, T0 + 5 * SECOND, 1.0)]).await;
    let all = client.latest(v1::LatestPredictionsRequest { asset_ids: vec![] }).await.unwrap().into_inner().predictions;
    let mut want = vec![newest(&pump, Some(&newer)), newest(&fan, None), newest(&mill, None)];
    want.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    assert_eq!(all, want, "every asset's newest, in asset order");

    let status =
        client.latest(v1::LatestPredictionsRequest { asset_ids: vec![pump.clone(), String::new()] }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("asset_ids[1]"), "{}", status.message());
    fixture.stop().await;
}

/// A stream RUL model trained quickly on the synthetic fleet, and one held-out history.
fn rul_model() -> (RulRegressor, Vec<sm_models::cmapss::Cycle>) {
    let mut fleet = trajectories(&sm_models::synthetic::degradation_fleet(14, 4));
    let test = fleet.pop().unwrap();
    let params = RulParams {
        boost: BoostParams { trees: 40, learning_rate: 0.15, ..RulParams::default().boost },
        use_age: false,
        ..RulParams::default()
    };
    let (model, _) = RulRegressor::train(&fleet, &params).unwrap();
    let channels = (0..sm_models::cmapss::SENSORS).map(|s| format!("ch{s}")).collect();
    let model = model.for_stream(StreamLayout { channels, cycle_ms: CYCLE_MS }).unwrap();
    let history = test.cycles[..test.cycles.len() - 40].to_vec();
    (model, history)
}

fn failure_model() -> FailureClassifier {
    let rows = sm_models::synthetic::ai4i_like(3_000, 7);
    let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
    let params = FailureParams {
        boost: BoostParams { trees: 40, ..FailureParams::default().boost },
        ..FailureParams::default()
    };
    FailureClassifier::train(&examples, &params).unwrap().0
}

/// A model's copy, through its own bytes (the models are not `Clone`).
fn copy(model: &Model) -> Model {
    serde_json::from_slice(&serde_json::to_vec(model).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_runs_registered_models_and_explains_each_prediction() {
    let fixture = Fixture::start().await;
    let (rul, history) = rul_model();
    let rul = Model::RemainingUsefulLife(rul);
    let failure = Model::FailureClassifier(failure_model());
    let (rul_name, failure_name) = (unique("pump-rul"), unique("mill-failure"));
    let registered = fixture.register(&rul_name, copy(&rul)).await;
    assert_eq!((registered.version, registered.kind), (1, ModelKind::RemainingUsefulLife));
    fixture.register(&failure_name, copy(&failure)).await;
    let mut client = fixture.client().await;

    // RUL: the window features by name, in any order.
    let Model::RemainingUsefulLife(reference) = &rul else { unreachable!() };
    let names = reference.feature_names();
    let values = reference.features(&history).unwrap();
    let features: HashMap<String, f64> = names.iter().cloned().zip(values.iter().copied()).collect();
    let request = v1::PredictRequest {
        model: rul_name.clone(),
        selector: String::new(),
        features: features.clone(),
        product_type: None,
    };
    let response = client.predict(request.clone()).await.unwrap().into_inner();
    assert_eq!((response.model_name.as_str(), response.model_version), (rul_name.as_str(), 1));
    assert_eq!(response.model_kind, "remaining_useful_life");
    let Some(v1::predict_response::Estimate::RemainingUsefulLife(estimate)) = response.estimate else {
        panic!("not a RUL estimate: {response:?}");
    };
    let direct = reference.predict_features(&values).unwrap();
    assert_eq!(estimate.rul_cycles, direct.rul_cycles, "the model's own prediction");
    assert_eq!(
        (estimate.lower_cycles, estimate.upper_cycles, estimate.coverage),
        (direct.lower_cycles, direct.upper_cycles, direct.coverage)
    );
    assert_eq!(estimate.cycle_ms, Some(CYCLE_MS));
    assert_eq!(estimate.rul_seconds, Some(direct.rul_cycles * 2.0));
    assert_eq!(
        (estimate.lower_seconds, estimate.upper_seconds),
        (Some(direct.lower_cycles * 2.0), Some(direct.upper_cycles * 2.0))
    );
    assert!(estimate.lower_cycles <= estimate.rul_cycles && estimate.rul_cycles <= estimate.upper_cycles);
    // Contributions: every feature, largest first, summing with the baseline to the prediction.
    assert_eq!(response.contributions.len(), names.len());
    assert!(response.contributions.windows(2).all(|w| w[0].contribution.abs() >= w[1].contribution.abs()));
    let total = response.baseline + response.contributions.iter().map(|c| c.contribution).sum::<f64>();
    assert!(
        (total.clamp(0.0, estimate.cap_cycles) - estimate.rul_cycles).abs() < 1e-6,
        "{total} vs {}",
        estimate.rul_cycles
    );
    assert!(
        estimate.rul_cycles > 0.0 && estimate.rul_cycles < estimate.cap_cycles,
        "not clamped: {}",
        estimate.rul_cycles
    );
    let slope = response.contributions.iter().find(|c| c.feature == names[2]).unwrap();
    assert_eq!(slope.value, features[&names[2]]);

    // Wrong inputs name what the model expects.
    let mut missing = features.clone();
    missing.remove(&names[0]);
    missing.insert("humidity".into(), 1.0);
    let status = client.predict(v1::PredictRequest { features: missing, ..request.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let message = status.message();
    assert!(message.starts_with(&format!("features: missing {}; unknown \"humidity\";", names[0])), "{message}");
    assert!(message.contains(&names.join(", ")), "{message}");
    let typed = v1::PredictRequest { product_type: Some("L".into()), ..request.clone() };
    assert_eq!(client.predict(typed).await.unwrap_err().code(), Code::InvalidArgument);

    // Failure classifier: five process inputs and the product type.
    let Model::FailureClassifier(classifier) = &failure else { unreachable!() };
    let sample = ProcessSample {
        product_type: ProductType::Low,
        air_temperature_k: 301.0,
        process_temperature_k: 309.5,
        rotational_speed_rpm: 1_320.0,
        torque_nm: 62.0,
        tool_wear_min: 190.0,
    };
    let process = HashMap::from([
        ("air_temperature_k".to_owned(), sample.air_temperature_k),
        ("process_temperature_k".to_owned(), sample.process_temperature_k),
        ("rotational_speed_rpm".to_owned(), sample.rotational_speed_rpm),
        ("torque_nm".to_owned(), sample.torque_nm),
        ("tool_wear_min".to_owned(), sample.tool_wear_min),
    ]);
    let request = v1::PredictRequest {
        model: failure_name.clone(),
        selector: "auto".into(),
        features: process.clone(),
        product_type: Some("L".into()),
    };
    let response = client.predict(request.clone()).await.unwrap().into_inner();
    let Some(v1::predict_response::Estimate::Failure(estimate)) = response.estimate else {
        panic!("not a failure estimate: {response:?}");
    };
    let direct = classifier.predict(&sample).unwrap();
    assert_eq!(
        (estimate.probability, estimate.failure_expected, estimate.threshold),
        (direct.probability, direct.failure_expected, direct.threshold)
    );
    assert_eq!(response.contributions.len(), sm_models::failure::FAILURE_FEATURES.len());
    let total = response.baseline + response.contributions.iter().map(|c| c.contribution).sum::<f64>();
    assert!((total - estimate.probability).abs() < 1e-9, "{total} vs {}", estimate.probability);
    assert!(response.contributions.iter().any(|c| c.feature == "overstrain_min_nm"));
    let untyped = v1::PredictRequest { product_type: None, ..request.clone() };
    let status = client.predict(untyped).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("product_type:"), "{}", status.message());

    // Selectors and names.
    assert_eq!(
        client
            .predict(v1::PredictRequest { selector: "production".into(), ..request.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client.predict(v1::PredictRequest { selector: "newest".into(), ..request.clone() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client.predict(v1::PredictRequest { model: unique("ghost"), ..request.clone() }).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        client.predict(v1::PredictRequest { model: "Not A Name".into(), ..request.clone() }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // A second version is served by auto (newest staging) once registered, at the latest
    // when the resolution cache (SM_QUERY__RESOLVE_CACHE_MS) lets go of the first.
    let second = fixture.register(&failure_name, copy(&failure)).await;
    tokio::time::sleep(Duration::from_millis(QuerySettings::default().resolve_cache_ms + 100)).await;
    let response = client.predict(request.clone()).await.unwrap().into_inner();
    assert_eq!(response.model_version, second.version);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_altered_in_the_store_is_refused_with_a_clear_error() {
    let fixture = Fixture::start().await;
    let name = unique("mill-failure");
    let registered = fixture.register(&name, Model::FailureClassifier(failure_model())).await;
    // Same length, other bytes: only the SHA-256 can tell.
    let file = fixture.artifacts.path().join(format!("{name}/v{}/model.json", registered.version));
    let mut bytes = std::fs::read(&file).unwrap();
    let i = bytes.iter().rposition(|b| b.is_ascii_digit() && *b != b'7').unwrap();
    bytes[i] = b'7';
    std::fs::write(&file, &bytes).unwrap();

    let mut client = fixture.client().await;
    let request = v1::PredictRequest {
        model: name.clone(),
        selector: registered.version.to_string(),
        features: HashMap::from([
            ("air_temperature_k".to_owned(), 300.0),
            ("process_temperature_k".to_owned(), 310.0),
            ("rotational_speed_rpm".to_owned(), 1_500.0),
            ("torque_nm".to_owned(), 40.0),
            ("tool_wear_min".to_owned(), 100.0),
        ]),
        product_type: Some("M".into()),
    };
    let status = client.predict(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    let message = status.message();
    assert!(message.contains("does not match its recorded SHA-256"), "{message}");
    assert!(message.contains(&registered.artifact.sha256), "{message}");
    fixture.stop().await;
}
