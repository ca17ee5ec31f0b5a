//! `sm.v1.AnomalyService`: `ScoreReadings`, the anomaly agent's per-sensor detector on
//! demand: "would these values have been anomalies for this sensor now?"
//!
//! A fresh `SensorDetector` with the agent's default settings learns the sensor's latest
//! projected readings before the earliest value sent (the agent's state is a checkpoint in
//! Kafka, not something this service can read, so it is rebuilt from the same history), then
//! scores the request's values in the order sent, learning each as the agent would. Warming
//! on a full window (at least [`WARMUP_READINGS`]) fills the rolling median/MAD completely and
//! lets the EWMA forget its start, so the scores are the ones a long-running agent would give,
//! up to readings it has not projected yet.
//!
//! Not here: alarms and persistence (a batch has no "already raised"), or storing anything.

use crate::args;
use crate::db::PgTimestamp;
use crate::drift::SENSOR_KNOWN;
use crate::error::QueryError;
use crate::metrics::observe;
use sm_analytics::sensor::{SensorDetector, SensorDetectorConfig, severity};
use sm_identity::TenantScope;
use sm_proto::v1::{self, anomaly_service_server::AnomalyService};
use sm_storage::Pool;
use tonic::{Request, Response, Status};

/// Most values one request may score.
pub const MAX_SCORE_VALUES: usize = 10_000;
/// Readings the detector learns before the first value, unless `warmup_from` is set: the
/// larger of this and the detector's window (so the rolling window starts full).
pub const WARMUP_READINGS: usize = 500;
/// Most readings learned with `warmup_from` (the latest ones).
pub const MAX_WARMUP_READINGS: i64 = 100_000;

/// The latest readings of a sensor before `$2`, newest first (the primary key backwards).
const WARMUP_LATEST: &str = "
    SELECT value FROM readings
    WHERE sensor_id = $1 AND occurred_at < $2
    ORDER BY occurred_at DESC, sequence DESC
    LIMIT $3";
/// As [`WARMUP_LATEST`], from `$3` on.
const WARMUP_SINCE: &str = "
    SELECT value FROM readings
    WHERE sensor_id = $1 AND occurred_at >= $3 AND occurred_at < $2
    ORDER BY occurred_at DESC, sequence DESC
    LIMIT $4";

/// A validated request: the values with their times (µs) and the warm-up bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub values: Vec<(prost_types::Timestamp, f64)>,
    /// Earliest `at` of the values: the warm-up history ends before it.
    pub first_at: i64,
    pub warmup_from: Option<i64>,
}

impl Batch {
    /// Checks the values (1 to [`MAX_SCORE_VALUES`], each with a valid `at` and a finite value).
    pub fn new(request: &v1::ScoreReadingsRequest) -> Result<Self, QueryError> {
        if request.values.is_empty() {
            return Err(QueryError::invalid("values", "is empty; send at least one value to score"));
        }
        if request.values.len() > MAX_SCORE_VALUES {
            return Err(QueryError::invalid(
                "values",
                format!("{} values, more than {MAX_SCORE_VALUES}; split the batch", request.values.len()),
            ));
        }
        let mut values = Vec::with_capacity(request.values.len());
        let mut first_at = i64::MAX;
        for (i, scored) in request.values.iter().enumerate() {
            let at = args::required_time(&format!("values[{i}].at"), scored.at.as_ref())?;
            if !scored.value.is_finite() {
                return Err(QueryError::invalid(format!("values[{i}].value"), "must be a finite number"));
            }
            first_at = first_at.min(at);
            values.push((scored.at.unwrap_or_default(), scored.value));
        }
        let warmup_from = args::optional_time("warmup_from", request.warmup_from.as_ref())?;
        if warmup_from.is_some_and(|from| from >= first_at) {
            return Err(QueryError::invalid("warmup_from", "must be before the earliest values[].at"));
        }
        Ok(Self { values, first_at, warmup_from })
    }
}

/// Warms a default detector on `history` (oldest first), then scores `values` in order.
pub fn score(history: &[f64], values: &[(prost_types::Timestamp, f64)]) -> Vec<v1::PointScore> {
    let mut detector = SensorDetector::new(SensorDetectorConfig::default());
    for value in history {
        detector.observe(*value);
    }
    values
        .iter()
        .map(|(at, value)| {
            let verdict = detector.observe(*value);
            v1::PointScore {
                at: Some(*at),
                value: *value,
                score: verdict.score,
                detector: verdict.detector.name().to_owned(),
                threshold: verdict.threshold,
                expected_low: verdict.expected.0,
                expected_high: verdict.expected.1,
                exceeded: verdict.exceeded,
                severity: if verdict.exceeded { i32::from(severity(verdict.score, verdict.threshold)) } else { 0 },
            }
        })
        .collect()
}

/// The `AnomalyService` implementation.
#[derive(Clone)]
pub struct Anomalies {
    pool: Pool,
}

impl Anomalies {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn score_readings(
        &self,
        scope: &TenantScope,
        request: v1::ScoreReadingsRequest,
    ) -> Result<v1::ScoreReadingsResponse, QueryError> {
        if request.sensor_id.is_empty() {
            return Err(QueryError::invalid("sensor_id", "is required"));
        }
        let batch = Batch::new(&request)?;
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, scope).await?;
        let (first_at, sensor) = (PgTimestamp(batch.first_at), &request.sensor_id);
        let rows = match batch.warmup_from {
            None => {
                let latest = WARMUP_READINGS.max(SensorDetectorConfig::default().window) as i64;
                let statement = client.prepare_cached(WARMUP_LATEST).await?;
                client.query(&statement, &[sensor, &first_at, &latest]).await?
            }
            Some(from) => {
                let statement = client.prepare_cached(WARMUP_SINCE).await?;
                client.query(&statement, &[sensor, &first_at, &PgTimestamp(from), &MAX_WARMUP_READINGS]).await?
            }
        };
        if rows.is_empty() {
            // No history is fine for a registered sensor (the first scores are then 0, as in
            // the agent's warm-up); for an id nobody knows it is most likely a typo.
            let statement = client.prepare_cached(SENSOR_KNOWN).await?;
            let known: bool = client.query_one(&statement, &[sensor]).await?.try_get(0)?;
            if !known {
                return Err(QueryError::SensorNotFound(request.sensor_id));
            }
        }
        drop(client);
        drop(connection);
        let mut history = rows.iter().map(|row| row.try_get::<_, f64>(0)).collect::<Result<Vec<f64>, _>>()?;
        history.reverse(); // oldest first, as the agent saw them
        let warmup_size = history.len() as i32;
        // Thousands of median updates: off the async workers.
        let scores = tokio::task::spawn_blocking(move || score(&history, &batch.values)).await?;
        Ok(v1::ScoreReadingsResponse { scores, warmup_size })
    }
}

#[tonic::async_trait]
impl AnomalyService for Anomalies {
    async fn score_readings(
        &self,
        request: Request<v1::ScoreReadingsRequest>,
    ) -> Result<Response<v1::ScoreReadingsResponse>, Status> {
        observe("ScoreReadings", async move {
            let scope = crate::auth::tenants(&request)?;
            Anomalies::score_readings(self, &scope, request.into_inner()).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(seconds: i64, value: f64) -> v1::ScoredValue {
        v1::ScoredValue { at: Some(prost_types::Timestamp { seconds, nanos: 0 }), value }
    }

    fn request(values: Vec<v1::ScoredValue>) -> v1::ScoreReadingsRequest {
        v1::ScoreReadingsRequest { sensor_id: "s".into(), values, warmup_from: None }
    }

    fn message(error: QueryError) -> String {
        Status::from(error).message().to_owned()
    }

    #[test]
    fn batches_are_bounded_and_every_value_checked() {
        assert!(message(Batch::new(&request(vec![])).unwrap_err()).starts_with("values: is empty"));
        let too_many = (0..=MAX_SCORE_VALUES as i64).map(|i| value(i, 1.0)).collect();
        assert!(message(Batch::new(&request(too_many)).unwrap_err()).contains("more than 10000"));
        let bad = request(vec![value(1, 1.0), value(2, f64::NAN)]);
        assert!(message(Batch::new(&bad).unwrap_err()).starts_with("values[1].value:"));
        let bad = request(vec![v1::ScoredValue { at: None, value: 1.0 }]);
        assert!(message(Batch::new(&bad).unwrap_err()).starts_with("values[0].at: is required"));
        let batch = Batch::new(&request(vec![value(5, 1.0), value(3, 2.0)])).unwrap();
        assert_eq!(batch.first_at, 3_000_000, "the earliest, not the first sent");
        let late = v1::ScoreReadingsRequest {
            warmup_from: Some(prost_types::Timestamp { seconds: 3, nanos: 0 }),
            ..request(vec![value(5, 1.0), value(3, 2.0)])
        };
        assert!(message(Batch::new(&late).unwrap_err()).starts_with("warmup_from:"));
    }

    #[test]
    fn a_spike_after_a_steady_history_is_scored_past_the_threshold() {
        let history: Vec<f64> = (0..500).map(|i| 20.0 + ((i * 7919) % 100) as f64 / 100.0).collect();
        let at = prost_types::Timestamp::default();
        let scores = score(&history, &[(at, 20.5), (at, 80.0), (at, 20.4)]);
        assert!(!scores[0].exceeded && scores[0].severity == 0, "{:?}", scores[0]);
        assert!(scores[1].exceeded && scores[1].severity == 5, "{:?}", scores[1]);
        assert!(scores[1].expected_low < 20.0 && scores[1].expected_high > 21.0 && scores[1].expected_high < 80.0);
        assert!(["robust_z", "ewma"].contains(&scores[1].detector.as_str()));
        assert!(!scores[2].exceeded, "one spike does not blind the detector: {:?}", scores[2]);
    }

    #[test]
    fn without_history_the_first_scores_are_warm_up_zeros() {
        let at = prost_types::Timestamp::default();
        let scores = score(&[], &[(at, 1.0), (at, 1000.0)]);
        assert!(scores.iter().all(|s| s.score == 0.0 && !s.exceeded));
    }
}
