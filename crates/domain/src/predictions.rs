//! The prediction agent's output on `sm.predictions.v1` (keyed by asset, so one asset's
//! predictions stay in order).

use crate::events::DomainEvent;
use serde::{Deserialize, Serialize};

/// What the production model for an asset's type says after a closed cycle of readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailurePredicted {
    pub model_name: String,
    pub model_version: i32,
    /// `remaining_useful_life` or `failure_classifier`.
    pub model_kind: String,
    pub asset_type: String,
    pub rul_seconds: f64,
    pub rul_low_seconds: f64,
    pub rul_high_seconds: f64,
    /// Share of true RULs the interval is meant to hold.
    pub coverage: f64,
    pub horizon_seconds: f64,
    /// Probability of failure within `horizon_seconds`.
    pub failure_probability: f64,
    /// Closed cycles of history behind the features.
    pub cycles: i32,
    /// Largest first.
    pub contributions: Vec<FeatureContribution>,
}

/// One feature's part in a prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureContribution {
    pub feature: String,
    pub value: f64,
    /// In seconds of RUL; negative shortens the predicted life.
    pub contribution: f64,
}

impl DomainEvent for FailurePredicted {
    const EVENT_TYPE: &'static str = "FailurePredicted";
    const SCHEMA: &'static str = "failure_predicted";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AssetId, Codec, Envelope, TenantId, Timestamp};

    #[test]
    fn round_trips_in_avro_and_json() {
        let codec = Codec::embedded().unwrap();
        let event = Envelope::origin(
            TenantId::from("t"),
            AssetId::from("pump-001"),
            Timestamp(5_000_000),
            "prediction",
            FailurePredicted {
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
                contributions: vec![FeatureContribution {
                    feature: "vibration_rms_slope60".into(),
                    value: 0.04,
                    contribution: -12.5,
                }],
            },
        );
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(codec.decode::<FailurePredicted>(&bytes, None).unwrap(), event);
    }
}
