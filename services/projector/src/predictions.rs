//! The prediction agent's output (`FailurePredicted` on `sm.predictions.v1`) into
//! `predictions`, one row per event. Rows are keyed by event id, so a replay rewrites nothing
//! and a batch applied twice changes nothing.
//!
//! Not here: which prediction is an asset's latest. That is a query over the
//! `(asset_id, occurred_at DESC, event_id DESC)` index (the query service's `Latest`), so a
//! late prediction about an older cycle never hides a newer one, whatever the arrival order.

use sm_domain::{Envelope, FailurePredicted};
use sm_storage::Projection;

/// The predictions projection (`sm.predictions.v1`).
pub struct PredictionsProjection;

/// `$n` (µs since the epoch) as a timestamptz.
macro_rules! ts {
    ($n:literal) => {
        concat!("(timestamptz 'epoch' + $", $n, "::bigint * interval '1 microsecond')")
    };
}

const INSERT: &str = concat!(
    "INSERT INTO predictions (event_id, tenant_id, asset_id, asset_type, occurred_at, recorded_at, model_name,
         model_version, model_kind, rul_seconds, rul_low_seconds, rul_high_seconds, coverage, horizon_seconds,
         failure_probability, cycles, contributions)
     VALUES ($1, $2, $3, $4, ",
    ts!(5),
    ", ",
    ts!(6),
    ", $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::text::jsonb) ON CONFLICT (event_id) DO NOTHING"
);

impl Projection for PredictionsProjection {
    type Event = FailurePredicted;

    fn name(&self) -> &'static str {
        "predictions"
    }

    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[Envelope<FailurePredicted>],
    ) -> Result<(), tokio_postgres::Error> {
        let statement = tx.prepare(INSERT).await?;
        for event in events {
            let (h, p) = (&event.header, &event.payload);
            tx.execute(
                &statement,
                &[
                    &h.event_id.to_string(),
                    &h.tenant_id.as_str(),
                    &h.asset_id.as_str(),
                    &p.asset_type,
                    &h.occurred_at.as_micros(),
                    &h.recorded_at.as_micros(),
                    &p.model_name,
                    &p.model_version,
                    &p.model_kind,
                    &p.rul_seconds,
                    &p.rul_low_seconds,
                    &p.rul_high_seconds,
                    &p.coverage,
                    &p.horizon_seconds,
                    &p.failure_probability,
                    &p.cycles,
                    &contributions_json(p),
                ],
            )
            .await?;
        }
        Ok(())
    }

    async fn clear(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("TRUNCATE predictions").await
    }
}

/// `[{"feature": ..., "value": ..., "contribution": ...}, ...]`, in the event's order (largest
/// first): the domain's `FeatureContribution`s as JSON. JSON has no NaN: a non-finite number
/// is stored as `null`, which the query service reads back as NaN.
pub fn contributions_json(prediction: &FailurePredicted) -> String {
    // Never panics: a list of structs of strings and floats always serialises.
    serde_json::to_string(&prediction.contributions).expect("contributions serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm_domain::FeatureContribution;

    #[test]
    fn contributions_keep_their_order_and_read_back_as_the_domain_type() {
        let prediction = FailurePredicted {
            model_name: "rul-pump".into(),
            model_version: 2,
            model_kind: "remaining_useful_life".into(),
            asset_type: "pump".into(),
            rul_seconds: 41.5,
            rul_low_seconds: 30.0,
            rul_high_seconds: 55.0,
            coverage: 0.9,
            horizon_seconds: 30.0,
            failure_probability: 0.21,
            cycles: 60,
            contributions: vec![
                FeatureContribution { feature: "vibration_slope150".into(), value: 0.04, contribution: -12.5 },
                FeatureContribution { feature: "temperature_last".into(), value: 71.0, contribution: 3.25 },
            ],
        };
        let json = contributions_json(&prediction);
        let back: Vec<FeatureContribution> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prediction.contributions);
    }
}
