//! `sm.v1.PredictionService`: the prediction agent's output from the projector's
//! `predictions` table (newest-first keyset pages, each asset's latest), and `Predict`, a
//! registered model version run on demand.
//!
//! Pages work as `ListAnomalies` does (`crate::alerts`): one statement holding only the
//! filters set, ordered by `(occurred_at DESC, event_id DESC)`, which the
//! `predictions_asset_time` index (one asset) or `predictions_time` (every asset) serves in
//! order, and the next page seeks past the cursor. `Latest` is one index probe per asset: the
//! asked-for ids, or every asset id found by skipping along the same index.
//!
//! `Predict` resolves the version in the registry, fetches its artifact from the artifact
//! store (which checks size and SHA-256 against the registry's record), parses it with
//! `sm_models::load` (which checks the SHA-256 again), and keeps the loaded model in memory
//! keyed by that SHA-256: a version's bytes never change, so a cached model never goes stale,
//! and a new version (new bytes) is loaded on first use. Nothing is stored or published.

use crate::QuerySettings;
use crate::alerts::{Statement, fetch_page, time_range};
use crate::args;
use crate::cursor::{AlertPosition, Cursor, CursorError, PredictionFilter};
use crate::db::PgTimestamp;
use crate::error::QueryError;
use crate::metrics::observe;
use crate::models::{model_name, selector};
use sm_domain::{QUOTE_MAX_CHARS, Timestamp, quote};
use sm_identity::TenantScope;
use sm_models::ai4i::{ProcessSample, ProductType};
use sm_models::{FailureClassifier, Model, RulRegressor};
use sm_proto::convert::to_timestamp;
use sm_proto::v1::{self, prediction_service_server::PredictionService};
use sm_registry::{ArtifactStore, ModelVersion, Registry};
use sm_storage::Pool;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tonic::{Request, Response, Status};

/// Loaded models kept in memory at most. Each is a few MB at worst (300 trees); a deployment
/// serves a handful of versions at a time, and an evicted one is simply loaded again.
pub const MAX_CACHED_MODELS: usize = 16;

/// How many of a request's unknown feature names an error lists (then "and N more").
const MAX_UNKNOWN_LISTED: usize = 5;

/// The inputs of a failure classifier that `Predict` takes by name; the model derives its
/// other features (power, temperature difference, ...) from these and `product_type`.
pub const PROCESS_INPUTS: [&str; 5] =
    ["air_temperature_k", "process_temperature_k", "rotational_speed_rpm", "torque_nm", "tool_wear_min"];

/// The columns [`prediction_from_row`] reads. `contributions` is read as text and parsed
/// into the domain's `FeatureContribution`s, so the driver needs no JSON feature.
const COLUMNS: &str = "event_id, tenant_id, asset_id, asset_type, occurred_at, recorded_at, model_name, model_version,
     model_kind, rul_seconds, rul_low_seconds, rul_high_seconds, coverage, horizon_seconds, failure_probability,
     cycles, contributions::text AS contributions";

/// The newest prediction of one asset (`a.asset_id`), as a lateral subquery.
fn latest_of_asset() -> String {
    format!(
        "CROSS JOIN LATERAL (
             SELECT {COLUMNS} FROM predictions p
             WHERE p.asset_id = a.asset_id
             ORDER BY p.occurred_at DESC, p.event_id DESC
             LIMIT 1
         ) latest
         ORDER BY latest.asset_id"
    )
}

/// `Latest` of the asset ids in `$1`.
fn latest_of(assets: &str) -> String {
    format!("SELECT latest.* FROM {assets} {}", latest_of_asset())
}

/// The page statement under `filter`, after `after`, with `limit` rows at most.
fn page_statement(
    filter: &PredictionFilter,
    after: Option<&AlertPosition>,
    limit: i64,
) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut statement = Statement::default();
    if !filter.asset_id.is_empty() {
        let p = statement.bind(filter.asset_id.clone());
        statement.condition(format!("asset_id = {p}"));
    }
    if let Some(from) = filter.from {
        let p = statement.bind(PgTimestamp(from));
        statement.condition(format!("occurred_at >= {p}"));
    }
    if let Some(to) = filter.to {
        let p = statement.bind(PgTimestamp(to));
        statement.condition(format!("occurred_at < {p}"));
    }
    if let Some(after) = after {
        // A row comparison, which the index can seek to.
        let at = statement.bind(PgTimestamp(after.occurred_at));
        let id = statement.bind(after.event_id.clone());
        statement.condition(format!("(occurred_at, event_id) < ({at}, {id})"));
    }
    let limit = statement.bind(limit);
    let mut sql = format!("SELECT {COLUMNS} FROM predictions");
    if !statement.conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&statement.conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY occurred_at DESC, event_id DESC LIMIT {limit}"));
    (sql, statement.params)
}

/// The position a page token continues from, if `ListPredictions` issued it for `filter`.
fn continue_from(token: &str, filter: &PredictionFilter) -> Result<Option<AlertPosition>, QueryError> {
    if token.is_empty() {
        return Ok(None);
    }
    let (issued, after) = match Cursor::decode(token)? {
        Cursor::Predictions { filter, after } => (filter, after),
        other => {
            return Err(CursorError::WrongMethod { issued_by: other.method(), used_with: "ListPredictions" }.into());
        }
    };
    if &issued != filter {
        return Err(CursorError::FilterMismatch { issued: issued.to_string() }.into());
    }
    Ok(Some(after))
}

fn corrupt(reason: String) -> QueryError {
    QueryError::CorruptRow { table: "predictions", reason }
}

/// One stored contribution (the projector writes the domain's `FeatureContribution`). JSON
/// has no NaN, so a non-finite number was stored as `null`; it reads back as NaN rather than
/// failing the page.
#[derive(serde::Deserialize)]
struct StoredContribution {
    feature: String,
    value: Option<f64>,
    contribution: Option<f64>,
}

/// One row of `predictions` as its message, with its place in list order.
fn prediction_from_row(row: &Row) -> Result<(AlertPosition, v1::Prediction), QueryError> {
    let event_id: String = row.try_get("event_id")?;
    let occurred_at = Timestamp(row.try_get::<_, PgTimestamp>("occurred_at")?.0);
    let contributions: String = row.try_get("contributions")?;
    let contributions: Vec<StoredContribution> =
        serde_json::from_str(&contributions).map_err(|e| corrupt(format!("contributions: {e}")))?;
    let model_version: i32 = row.try_get("model_version")?;
    let prediction = v1::Prediction {
        event_id: event_id.clone(),
        tenant_id: row.try_get("tenant_id")?,
        asset_id: row.try_get("asset_id")?,
        asset_type: row.try_get("asset_type")?,
        occurred_at: Some(to_timestamp(occurred_at)),
        recorded_at: Some(to_timestamp(Timestamp(row.try_get::<_, PgTimestamp>("recorded_at")?.0))),
        model_name: row.try_get("model_name")?,
        model_version: u32::try_from(model_version).map_err(|_| corrupt(format!("model_version {model_version}")))?,
        model_kind: row.try_get("model_kind")?,
        rul_seconds: row.try_get("rul_seconds")?,
        rul_low_seconds: row.try_get("rul_low_seconds")?,
        rul_high_seconds: row.try_get("rul_high_seconds")?,
        coverage: row.try_get("coverage")?,
        horizon_seconds: row.try_get("horizon_seconds")?,
        failure_probability: row.try_get("failure_probability")?,
        cycles: row.try_get("cycles")?,
        contributions: contributions
            .into_iter()
            .map(|c| v1::FeatureContribution {
                feature: c.feature,
                value: c.value.unwrap_or(f64::NAN),
                contribution: c.contribution.unwrap_or(f64::NAN),
            })
            .collect(),
    };
    Ok((AlertPosition { occurred_at: occurred_at.0, event_id }, prediction))
}

/// The values of `expected` in order, from a request's `features` map, which must hold exactly
/// those names, each finite.
fn named_values<S: AsRef<str>>(expected: &[S], given: &HashMap<String, f64>) -> Result<Vec<f64>, QueryError> {
    let missing: Vec<&str> = expected.iter().map(AsRef::as_ref).filter(|name| !given.contains_key(*name)).collect();
    let mut unknown: Vec<&str> =
        given.keys().map(String::as_str).filter(|name| !expected.iter().any(|e| e.as_ref() == *name)).collect();
    unknown.sort_unstable();
    if !missing.is_empty() || !unknown.is_empty() {
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("missing {}", missing.join(", ")));
        }
        if !unknown.is_empty() {
            // The client's names: each quoted short, and only the first few of them.
            let mut listed: Vec<String> =
                unknown.iter().take(MAX_UNKNOWN_LISTED).map(|name| quote(name, QUOTE_MAX_CHARS)).collect();
            if unknown.len() > MAX_UNKNOWN_LISTED {
                listed.push(format!("and {} more", unknown.len() - MAX_UNKNOWN_LISTED));
            }
            problems.push(format!("unknown {}", listed.join(", ")));
        }
        let names: Vec<&str> = expected.iter().map(AsRef::as_ref).collect();
        return Err(QueryError::invalid(
            "features",
            format!("{}; this model takes exactly: {}", problems.join("; "), names.join(", ")),
        ));
    }
    expected
        .iter()
        .map(|name| {
            let value = given[name.as_ref()];
            if value.is_finite() {
                Ok(value)
            } else {
                Err(QueryError::invalid(format!("features[{:?}]", name.as_ref()), format!("{value} is not finite")))
            }
        })
        .collect()
}

fn contribution_messages(contributions: Vec<sm_models::Contribution>) -> Vec<v1::FeatureContribution> {
    contributions
        .into_iter()
        .map(|c| v1::FeatureContribution { feature: c.feature, value: c.value, contribution: c.contribution })
        .collect()
}

/// What a model said, before the version fields are added.
pub struct Estimate {
    pub estimate: v1::predict_response::Estimate,
    pub baseline: f64,
    pub contributions: Vec<v1::FeatureContribution>,
}

/// A remaining-useful-life model on its named window features.
pub fn predict_rul(
    model: &RulRegressor,
    features: &HashMap<String, f64>,
    product_type: Option<&str>,
) -> Result<Estimate, QueryError> {
    if product_type.is_some_and(|p| !p.is_empty()) {
        return Err(QueryError::invalid(
            "product_type",
            "applies to failure classifiers only; this is a remaining-useful-life model",
        ));
    }
    let values = named_values(&model.feature_names(), features)?;
    let prediction = model.predict_features(&values).map_err(|e| QueryError::invalid("features", e.to_string()))?;
    let cycle_ms = model.stream_layout().map(|layout| layout.cycle_ms);
    let seconds = |cycles: f64| cycle_ms.map(|ms| cycles * ms as f64 / 1000.0);
    let estimate = v1::RulEstimate {
        rul_cycles: prediction.rul_cycles,
        lower_cycles: prediction.lower_cycles,
        upper_cycles: prediction.upper_cycles,
        coverage: prediction.coverage,
        cap_cycles: model.cap_cycles(),
        cycle_ms,
        rul_seconds: seconds(prediction.rul_cycles),
        lower_seconds: seconds(prediction.lower_cycles),
        upper_seconds: seconds(prediction.upper_cycles),
    };
    Ok(Estimate {
        estimate: v1::predict_response::Estimate::RemainingUsefulLife(estimate),
        baseline: prediction.baseline_cycles,
        contributions: contribution_messages(prediction.contributions),
    })
}

/// A failure classifier on one process's inputs ([`PROCESS_INPUTS`]) and product type.
pub fn predict_failure(
    model: &FailureClassifier,
    features: &HashMap<String, f64>,
    product_type: Option<&str>,
) -> Result<Estimate, QueryError> {
    let product_type = match product_type.unwrap_or("") {
        "" => return Err(QueryError::invalid("product_type", "is required for a failure classifier: L, M or H")),
        code => ProductType::from_code(code).ok_or_else(|| {
            let code = quote(code, QUOTE_MAX_CHARS);
            QueryError::invalid("product_type", format!("{code} is not a product type: L, M or H"))
        })?,
    };
    let values = named_values(&PROCESS_INPUTS, features)?;
    let sample = ProcessSample {
        product_type,
        air_temperature_k: values[0],
        process_temperature_k: values[1],
        rotational_speed_rpm: values[2],
        torque_nm: values[3],
        tool_wear_min: values[4],
    };
    let prediction = model.predict(&sample).map_err(|e| QueryError::invalid("features", e.to_string()))?;
    Ok(Estimate {
        estimate: v1::predict_response::Estimate::Failure(v1::FailureEstimate {
            probability: prediction.probability,
            failure_expected: prediction.failure_expected,
            threshold: prediction.threshold,
        }),
        baseline: prediction.baseline,
        contributions: contribution_messages(prediction.contributions),
    })
}

/// Loaded models by artifact SHA-256 (lower case), oldest first out when full.
#[derive(Default)]
struct ModelCache {
    models: HashMap<String, Arc<Model>>,
    order: VecDeque<String>,
}

impl ModelCache {
    fn get(&self, sha256: &str) -> Option<Arc<Model>> {
        self.models.get(sha256).cloned()
    }

    fn insert(&mut self, sha256: String, model: Arc<Model>) {
        if self.models.contains_key(&sha256) {
            return; // another request loaded it meanwhile; the same bytes, the same model
        }
        while self.models.len() >= MAX_CACHED_MODELS {
            let Some(oldest) = self.order.pop_front() else { break };
            self.models.remove(&oldest);
        }
        self.order.push_back(sha256.clone());
        self.models.insert(sha256, model);
    }
}

/// The `PredictionService` implementation.
pub struct Predictions {
    pool: Pool,
    settings: Arc<QuerySettings>,
    registry: Registry,
    artifacts: ArtifactStore,
    /// A std mutex: held only to look up or insert, never across an await. Two requests
    /// for a model not loaded yet may both load it; the second insert is dropped. A poisoned
    /// lock is used as is: a lookup or an insert leaves the map consistent at every step.
    cache: Mutex<ModelCache>,
    /// What `(model name, selector)` resolved to, and when: reused for
    /// `SM_QUERY__RESOLVE_CACHE_MS`. Same locking rules as `cache`.
    resolved: Mutex<HashMap<(String, String), (ModelVersion, Instant)>>,
}

/// Resolutions kept at most; past it the map starts over (names are few in practice).
const MAX_RESOLVED: usize = 1024;

impl Predictions {
    pub fn new(pool: Pool, settings: Arc<QuerySettings>, registry: Registry, artifacts: ArtifactStore) -> Self {
        Self {
            pool,
            settings,
            registry,
            artifacts,
            cache: Mutex::new(ModelCache::default()),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// The version `selector` picks for `name`, from the registry at most every
    /// `resolve_cache_ms`.
    async fn resolve(&self, name: &str, selector: sm_registry::Selector) -> Result<ModelVersion, QueryError> {
        let ttl = Duration::from_millis(self.settings.resolve_cache_ms);
        let key = (name.to_owned(), selector.to_string());
        if !ttl.is_zero() {
            let resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((version, at)) = resolved.get(&key)
                && at.elapsed() < ttl
            {
                return Ok(version.clone());
            }
        }
        let version = self.registry.resolve(name, selector).await?;
        if !ttl.is_zero() {
            let mut resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
            if resolved.len() >= MAX_RESOLVED {
                resolved.clear();
            }
            resolved.insert(key, (version.clone(), Instant::now()));
        }
        Ok(version)
    }

    async fn list_page(
        &self,
        scope: &TenantScope,
        request: v1::ListPredictionsRequest,
    ) -> Result<v1::ListPredictionsResponse, QueryError> {
        let (from, to) = time_range(request.from.as_ref(), request.to.as_ref())?;
        let filter = PredictionFilter { asset_id: request.asset_id, from, to };
        let page_size = args::page_size(request.page_size, &self.settings)?;
        let after = continue_from(&request.page_token, &filter)?;
        // One row more than the page tells whether another page follows, without a count.
        let statement = page_statement(&filter, after.as_ref(), page_size as i64 + 1);
        let (predictions, next) = fetch_page(&self.pool, scope, statement, page_size, prediction_from_row).await?;
        let next_page_token = next.map(|after| Cursor::Predictions { filter, after }.encode()).unwrap_or_default();
        Ok(v1::ListPredictionsResponse { predictions, next_page_token })
    }

    async fn latest(
        &self,
        scope: &TenantScope,
        request: v1::LatestPredictionsRequest,
    ) -> Result<v1::LatestPredictionsResponse, QueryError> {
        let max = self.settings.max_page_size as usize;
        if request.asset_ids.len() > max {
            return Err(QueryError::invalid(
                "asset_ids",
                format!("{} ids is above the maximum of {max}; ask in several requests", request.asset_ids.len()),
            ));
        }
        if let Some(i) = request.asset_ids.iter().position(String::is_empty) {
            return Err(QueryError::invalid(format!("asset_ids[{i}]"), "is empty"));
        }
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, scope).await?;
        let rows = if request.asset_ids.is_empty() {
            // Every asset id, by skipping along the (asset_id, ...) index: one probe per asset
            // instead of reading every prediction.
            let sql = latest_of(
                "(WITH RECURSIVE ids AS (
                     (SELECT asset_id FROM predictions ORDER BY asset_id LIMIT 1)
                     UNION ALL
                     SELECT (SELECT p.asset_id FROM predictions p WHERE p.asset_id > ids.asset_id
                             ORDER BY p.asset_id LIMIT 1)
                     FROM ids WHERE ids.asset_id IS NOT NULL
                 ) SELECT asset_id FROM ids WHERE asset_id IS NOT NULL) AS a",
            );
            let statement = client.prepare_cached(&sql).await?;
            client.query(&statement, &[]).await?
        } else {
            let mut ids = request.asset_ids;
            ids.sort_unstable();
            ids.dedup();
            let statement = client.prepare_cached(&latest_of("unnest($1::text[]) AS a(asset_id)")).await?;
            client.query(&statement, &[&ids]).await?
        };
        drop(client);
        drop(connection);
        let predictions = rows.iter().map(|row| prediction_from_row(row).map(|(_, p)| p)).collect::<Result<_, _>>()?;
        Ok(v1::LatestPredictionsResponse { predictions })
    }

    /// The loaded model of `version`, from the cache or the artifact store.
    async fn model(&self, version: &ModelVersion) -> Result<Arc<Model>, QueryError> {
        let key = version.artifact.sha256.to_ascii_lowercase();
        if let Some(model) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(model);
        }
        // Checks size and SHA-256 against the registry's record (DATA_LOSS if altered).
        let bytes = self.artifacts.get(&version.artifact).await?;
        let expected = version.artifact.sha256.clone();
        // Parsing a few MB of JSON takes milliseconds: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || sm_models::load(&bytes, &expected)).await?;
        let unreadable =
            |source| QueryError::UnreadableArtifact { name: version.name.clone(), version: version.version, source };
        let artifact = loaded.map_err(unreadable)?;
        if artifact.model.kind() != version.kind {
            return Err(unreadable(sm_models::ModelError::CardMismatch(format!(
                "the registry records a {} model, the artifact holds a {} model",
                version.kind.as_str(),
                artifact.model.kind().as_str()
            ))));
        }
        let model = Arc::new(artifact.model);
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(key, model.clone());
        tracing::info!(model = %version.name, version = version.version, sha256 = %version.artifact.sha256, "model artifact loaded");
        Ok(model)
    }

    async fn predict_one(&self, request: v1::PredictRequest) -> Result<v1::PredictResponse, QueryError> {
        let name = model_name("model", &request.model)?;
        let selector = selector(&request.selector)?;
        let version = self.resolve(&name, selector).await?;
        let model = self.model(&version).await?;
        // Tens of microseconds for one row with contributions: no need to leave the worker.
        let product_type = request.product_type.as_deref();
        let estimate = match model.as_ref() {
            Model::RemainingUsefulLife(m) => predict_rul(m, &request.features, product_type)?,
            Model::FailureClassifier(m) => predict_failure(m, &request.features, product_type)?,
        };
        Ok(v1::PredictResponse {
            model_name: version.name,
            model_version: version.version,
            model_kind: version.kind.as_str().to_owned(),
            estimate: Some(estimate.estimate),
            baseline: estimate.baseline,
            contributions: estimate.contributions,
        })
    }
}

#[tonic::async_trait]
impl PredictionService for Predictions {
    async fn list_predictions(
        &self,
        request: Request<v1::ListPredictionsRequest>,
    ) -> Result<Response<v1::ListPredictionsResponse>, Status> {
        observe("ListPredictions", async move {
            let scope = crate::auth::tenants(&request)?;
            self.list_page(&scope, request.into_inner()).await
        })
        .await
    }

    async fn latest(
        &self,
        request: Request<v1::LatestPredictionsRequest>,
    ) -> Result<Response<v1::LatestPredictionsResponse>, Status> {
        observe("LatestPredictions", async move {
            let scope = crate::auth::tenants(&request)?;
            Predictions::latest(self, &scope, request.into_inner()).await
        })
        .await
    }

    async fn predict(&self, request: Request<v1::PredictRequest>) -> Result<Response<v1::PredictResponse>, Status> {
        observe("Predict", self.predict_one(request.into_inner())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm_models::failure::{FailureExample, FailureParams};

    fn refused(result: Result<Estimate, QueryError>) -> String {
        let status = Status::from(result.err().expect("refused"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{}", status.message());
        status.message().to_owned()
    }

    fn features(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn feature_maps_must_hold_exactly_the_expected_names() {
        let expected = ["a", "b", "c"];
        assert_eq!(named_values(&expected, &features(&[("c", 3.0), ("a", 1.0), ("b", 2.0)])).unwrap(), [1.0, 2.0, 3.0]);
        let error =
            Status::from(named_values(&expected, &features(&[("a", 1.0), ("z", 0.0), ("y", 0.0)])).unwrap_err());
        assert_eq!(error.message(), "features: missing b, c; unknown \"y\", \"z\"; this model takes exactly: a, b, c");
        let error =
            Status::from(named_values(&expected, &features(&[("a", 1.0), ("b", f64::NAN), ("c", 0.0)])).unwrap_err());
        assert_eq!(error.message(), "features[\"b\"]: NaN is not finite");
    }

    #[test]
    fn unknown_feature_names_are_quoted_short_and_only_the_first_few_listed() {
        let expected = ["a"];
        let mut given = features(&[("a", 1.0)]);
        for i in 0..1_000 {
            given.insert(format!("{i:04}{}", "n".repeat(100_000)), 0.0);
        }
        let message = Status::from(named_values(&expected, &given).unwrap_err()).message().to_owned();
        assert!(message.len() < 1_000, "{} bytes: {}", message.len(), &message[..1_000]);
        assert!(message.starts_with("features: unknown \"0000nnn"), "{message}");
        assert!(message.contains("bytes cut") && message.contains("and 995 more"), "{message}");
        assert!(message.ends_with("this model takes exactly: a"), "{message}");
    }

    #[test]
    fn a_failure_classifier_needs_a_product_type_and_the_five_process_inputs() {
        let rows = sm_models::synthetic::ai4i_like(1_500, 3);
        let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
        let params = FailureParams {
            boost: sm_models::BoostParams { trees: 20, ..FailureParams::default().boost },
            ..FailureParams::default()
        };
        let (model, _) = FailureClassifier::train(&examples, &params).unwrap();
        let inputs = features(&[
            ("air_temperature_k", 300.0),
            ("process_temperature_k", 310.0),
            ("rotational_speed_rpm", 1_500.0),
            ("torque_nm", 40.0),
            ("tool_wear_min", 100.0),
        ]);
        assert!(refused(predict_failure(&model, &inputs, None)).starts_with("product_type: is required"));
        assert!(refused(predict_failure(&model, &inputs, Some("X"))).starts_with("product_type: \"X\" is not"));
        let long = refused(predict_failure(&model, &inputs, Some(&"X".repeat(100_000))));
        assert!(long.len() < 200 && long.contains("bytes cut"), "{long}");
        let mut extra = inputs.clone();
        extra.insert("power_w".into(), 6_000.0);
        assert!(refused(predict_failure(&model, &extra, Some("L"))).contains("unknown \"power_w\""));
        let mut negative = inputs.clone();
        negative.insert("torque_nm".into(), -1.0);
        assert!(refused(predict_failure(&model, &negative, Some("L"))).starts_with("features: invalid input"));

        let estimate = predict_failure(&model, &inputs, Some("M")).unwrap();
        let v1::predict_response::Estimate::Failure(failure) = estimate.estimate else {
            panic!("not a failure estimate")
        };
        let total = estimate.baseline + estimate.contributions.iter().map(|c| c.contribution).sum::<f64>();
        assert!((total - failure.probability).abs() < 1e-9, "{total} vs {}", failure.probability);
        assert_eq!(estimate.contributions.len(), sm_models::failure::FAILURE_FEATURES.len());
    }

    #[test]
    fn the_cache_keeps_at_most_its_bound_and_drops_the_oldest() {
        let rows = sm_models::synthetic::ai4i_like(600, 5);
        let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
        let params = FailureParams {
            boost: sm_models::BoostParams { trees: 2, ..FailureParams::default().boost },
            ..FailureParams::default()
        };
        let (model, _) = FailureClassifier::train(&examples, &params).unwrap();
        let model = Arc::new(Model::FailureClassifier(model));
        let mut cache = ModelCache::default();
        for i in 0..MAX_CACHED_MODELS + 2 {
            cache.insert(format!("{i:064x}"), model.clone());
        }
        assert_eq!(cache.models.len(), MAX_CACHED_MODELS);
        assert!(cache.get(&format!("{:064x}", 0)).is_none() && cache.get(&format!("{:064x}", 1)).is_none());
        assert!(cache.get(&format!("{:064x}", MAX_CACHED_MODELS + 1)).is_some());
    }

    #[test]
    fn stored_contributions_read_null_back_as_nan() {
        let stored: Vec<StoredContribution> =
            serde_json::from_str(r#"[{"feature":"a","value":1.5,"contribution":null}]"#).unwrap();
        assert_eq!((stored[0].feature.as_str(), stored[0].value, stored[0].contribution), ("a", Some(1.5), None));
    }

    #[test]
    fn page_statements_hold_only_the_filters_set() {
        let (sql, params) = page_statement(&PredictionFilter::default(), None, 101);
        assert!(sql.ends_with("FROM predictions ORDER BY occurred_at DESC, event_id DESC LIMIT $1"), "{sql}");
        assert_eq!(params.len(), 1);
        let filter = PredictionFilter { asset_id: "p".into(), from: Some(1), to: Some(2) };
        let after = AlertPosition { occurred_at: 1, event_id: "e".into() };
        let (sql, params) = page_statement(&filter, Some(&after), 11);
        assert!(
            sql.ends_with(
                "WHERE asset_id = $1 AND occurred_at >= $2 AND occurred_at < $3 AND (occurred_at, event_id) < ($4, $5) \
                 ORDER BY occurred_at DESC, event_id DESC LIMIT $6"
            ),
            "{sql}"
        );
        assert_eq!(params.len(), 6);
    }

    #[test]
    fn tokens_of_other_lists_or_filters_are_refused() {
        let filter = PredictionFilter { asset_id: "p".into(), ..PredictionFilter::default() };
        let after = AlertPosition { occurred_at: 5, event_id: "e".into() };
        let token = Cursor::Predictions { filter: filter.clone(), after: after.clone() }.encode();
        assert_eq!(continue_from(&token, &filter).unwrap(), Some(after.clone()));
        let other = PredictionFilter { from: Some(1), ..filter.clone() };
        assert!(Status::from(continue_from(&token, &other).unwrap_err()).message().contains("other filters"));
        let drift = Cursor::Drift { filter: Default::default(), after }.encode();
        let message = Status::from(continue_from(&drift, &filter).unwrap_err()).message().to_owned();
        assert!(message.contains("issued by ListDrift, not ListPredictions"), "{message}");
    }
}
