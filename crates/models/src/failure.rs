//! The failure classifier: probability that a machining process ends in a machine failure,
//! from process data and physically derived features, with per-feature contributions.
//!
//! Why derived features: AI4I's failure mechanisms are thresholds on quantities the raw
//! columns only imply — mechanical power (power failure outside 3.5–9 kW), the air–process
//! temperature difference at low speed (heat dissipation), and tool wear × torque against a
//! limit that depends on the product type (overstrain). Giving the trees those quantities
//! turns a diagonal boundary into one split. The failure-mode flags are never inputs:
//! [`failure_features`] takes a [`ProcessSample`], which does not carry them.

use serde::{Deserialize, Serialize};

use crate::Contribution;
use crate::ai4i::{ProcessSample, Row};
use crate::boost::{BoostParams, Ensemble, Objective, select, sigmoid};
use crate::error::ModelError;
use crate::metrics::{Confusion, best_f1_threshold, roc_auc};
use crate::split::folds_by_unit;

/// Names of the classifier's inputs, in order; units are in the names.
pub const FAILURE_FEATURES: [&str; 11] = [
    "product_type",
    "air_temperature_k",
    "process_temperature_k",
    "rotational_speed_rpm",
    "torque_nm",
    "tool_wear_min",
    "power_w",
    "temperature_difference_k",
    "heat_dissipation_k_rpm",
    "overstrain_min_nm",
    "overstrain_ratio",
];

/// The feature vector of one process, in [`FAILURE_FEATURES`] order.
///
/// - `power_w`: torque × angular speed (rpm × 2π/60), the mechanical power at the spindle;
/// - `temperature_difference_k`: process − air, the gradient that carries heat away;
/// - `heat_dissipation_k_rpm`: that gradient × speed (air flow grows with speed), a proxy for
///   the heat removed;
/// - `overstrain_min_nm`: tool wear × torque, the strain the tool has accumulated;
/// - `overstrain_ratio`: the same over the product type's overstrain limit, so that one
///   threshold (1.0) serves all three types.
pub fn failure_features(sample: &ProcessSample) -> [f64; FAILURE_FEATURES.len()] {
    let angular_speed_rad_s = sample.rotational_speed_rpm * std::f64::consts::TAU / 60.0;
    let temperature_difference = sample.process_temperature_k - sample.air_temperature_k;
    let overstrain = sample.tool_wear_min * sample.torque_nm;
    [
        sample.product_type.ordinal(),
        sample.air_temperature_k,
        sample.process_temperature_k,
        sample.rotational_speed_rpm,
        sample.torque_nm,
        sample.tool_wear_min,
        sample.torque_nm * angular_speed_rad_s,
        temperature_difference,
        temperature_difference * sample.rotational_speed_rpm,
        overstrain,
        overstrain / sample.product_type.overstrain_limit_min_nm(),
    ]
}

/// A labelled process for training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureExample {
    /// The machine or product the process belongs to; splits and folds keep a unit whole.
    pub unit: String,
    pub sample: ProcessSample,
    pub failed: bool,
}

impl From<&Row> for FailureExample {
    /// AI4I: each row is its own unit (the UDI); the label is `Machine failure`, never a mode flag.
    fn from(row: &Row) -> Self {
        Self { unit: row.udi.to_string(), sample: row.sample, failed: row.machine_failure }
    }
}

/// Training settings of the classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureParams {
    pub boost: BoostParams,
    /// Folds (by unit) of the training side whose out-of-fold predictions choose the decision
    /// threshold: the test side never sees the threshold being chosen.
    pub threshold_folds: usize,
    /// Seed of the folds.
    pub seed: u64,
}

impl Default for FailureParams {
    fn default() -> Self {
        Self {
            // Small leaves (failures are 3 % of AI4I) and shallow trees; tuned by out-of-fold F1
            // on the training side only.
            boost: BoostParams { trees: 300, learning_rate: 0.1, max_depth: 4, min_leaf_weight: 0.5, l2: 1.0, seed: 0 },
            threshold_folds: 4,
            seed: 0,
        }
    }
}

/// A trained classifier: the ensemble, the decision threshold chosen on the training side and
/// the global feature importance.
#[derive(Serialize, Deserialize)]
pub struct FailureClassifier {
    ensemble: Ensemble,
    threshold: f64,
    importance: Vec<f64>,
}

/// What training saw: sizes and the out-of-fold figures behind the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureTrainingReport {
    pub rows: usize,
    pub units: usize,
    pub failures: usize,
    pub threshold: f64,
    pub out_of_fold_f1: f64,
    pub out_of_fold_roc_auc: f64,
}

/// One prediction with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailurePrediction {
    /// Probability that the process ends in a failure.
    pub probability: f64,
    /// Whether `probability` reaches the model's threshold.
    pub failure_expected: bool,
    pub threshold: f64,
    /// The probability before any split (the training base rate, roughly).
    pub baseline: f64,
    /// Every feature, largest absolute contribution first, in probability units; with the
    /// baseline they sum to `probability`.
    pub contributions: Vec<Contribution>,
}

impl FailureClassifier {
    /// Fits the classifier, choosing the threshold that maximises F1 over out-of-fold
    /// predictions on the training examples, then refitting on all of them.
    pub fn train(
        examples: &[FailureExample],
        params: &FailureParams,
    ) -> Result<(Self, FailureTrainingReport), ModelError> {
        if params.threshold_folds < 2 {
            return Err(ModelError::InvalidParameter { name: "threshold_folds", detail: "must be at least 2".into() });
        }
        let failures = examples.iter().filter(|e| e.failed).count();
        if failures < params.threshold_folds || examples.len() - failures < params.threshold_folds {
            return Err(ModelError::NotEnoughData(format!(
                "{failures} failures among {} examples; each of {} folds needs both classes",
                examples.len(),
                params.threshold_folds
            )));
        }
        let n = FAILURE_FEATURES.len();
        let rows: Vec<f64> = examples.iter().flat_map(|e| failure_features(&e.sample)).collect();
        let labels: Vec<bool> = examples.iter().map(|e| e.failed).collect();
        let targets: Vec<f64> = labels.iter().map(|&l| f64::from(u8::from(l))).collect();
        let units: Vec<&str> = examples.iter().map(|e| e.unit.as_str()).collect();
        let folds = folds_by_unit(&units, params.threshold_folds, params.seed)?;

        let mut out_of_fold = vec![0.0; examples.len()];
        for fold in 0..params.threshold_folds {
            let (fit_rows, fit_targets) = select(&rows, &targets, n, |i| folds[i] != fold);
            let ensemble = Ensemble::fit(&fit_rows, n, &fit_targets, Objective::LogLoss, &params.boost)?;
            for (i, row) in rows.chunks_exact(n).enumerate().filter(|(i, _)| folds[*i] == fold) {
                out_of_fold[i] = sigmoid(ensemble.raw_score(row));
            }
        }
        let threshold = best_f1_threshold(&out_of_fold, &labels);
        let ensemble = Ensemble::fit(&rows, n, &targets, Objective::LogLoss, &params.boost)?;
        let importance = ensemble.gain_importance(n);
        let report = FailureTrainingReport {
            rows: examples.len(),
            units: units.iter().collect::<std::collections::BTreeSet<_>>().len(),
            failures,
            threshold,
            out_of_fold_f1: Confusion::at_threshold(&out_of_fold, &labels, threshold).f1(),
            out_of_fold_roc_auc: roc_auc(&out_of_fold, &labels).unwrap_or(f64::NAN),
        };
        Ok((Self { ensemble, threshold, importance }, report))
    }

    /// Probability of failure only: the agent's hot path.
    pub fn probability(&self, sample: &ProcessSample) -> Result<f64, ModelError> {
        sample.validate()?;
        Ok(sigmoid(self.ensemble.raw_score(&failure_features(sample))))
    }

    /// Probability of failure with the contribution of every feature.
    pub fn predict(&self, sample: &ProcessSample) -> Result<FailurePrediction, ModelError> {
        sample.validate()?;
        let features = failure_features(sample);
        let (contributions, baseline) = self.ensemble.probability_contributions(&features);
        let probability = baseline + contributions.iter().sum::<f64>();
        Ok(FailurePrediction {
            probability,
            failure_expected: probability >= self.threshold,
            threshold: self.threshold,
            baseline,
            contributions: Contribution::ranked(&FAILURE_FEATURES, &features, &contributions),
        })
    }

    /// The decision threshold chosen on the training side.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Feature names with their share of the ensemble's total split gain, largest first.
    pub fn feature_importance(&self) -> Vec<(String, f64)> {
        crate::ranked_importance(&FAILURE_FEATURES, &self.importance)
    }

    /// Trees in the ensemble.
    pub fn trees(&self) -> usize {
        self.ensemble.n_trees()
    }
}

impl std::fmt::Debug for FailureClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureClassifier")
            .field("trees", &self.ensemble.n_trees())
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai4i::ProductType;
    use crate::split::split_by_unit;
    use crate::synthetic;

    #[test]
    fn derived_features_follow_the_physics() {
        let sample = ProcessSample {
            product_type: ProductType::Medium,
            air_temperature_k: 300.0,
            process_temperature_k: 309.5,
            rotational_speed_rpm: 1500.0,
            torque_nm: 40.0,
            tool_wear_min: 150.0,
        };
        let f = failure_features(&sample);
        let power = 40.0 * 1500.0 * std::f64::consts::TAU / 60.0; // ≈ 6283 W
        assert!((f[6] - power).abs() < 1e-9);
        assert!((f[7] - 9.5).abs() < 1e-9);
        assert!((f[8] - 9.5 * 1500.0).abs() < 1e-6);
        assert_eq!(f[9], 6000.0);
        assert_eq!(f[10], 0.5); // 6,000 of M's 12,000 min·Nm
    }

    #[test]
    fn learns_the_known_failure_rules_of_synthetic_process_data() {
        let rows = synthetic::ai4i_like(8_000, 11);
        let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
        let units: Vec<&str> = examples.iter().map(|e| e.unit.as_str()).collect();
        let split = split_by_unit(&units, 0.25, 5).unwrap();
        let train: Vec<FailureExample> = split.train.iter().map(|&i| examples[i].clone()).collect();
        let (model, report) = FailureClassifier::train(&train, &FailureParams::default()).unwrap();
        assert!(report.out_of_fold_f1 > 0.8, "{report:?}");

        let scores: Vec<f64> = split.test.iter().map(|&i| model.probability(&examples[i].sample).unwrap()).collect();
        let labels: Vec<bool> = split.test.iter().map(|&i| examples[i].failed).collect();
        let confusion = Confusion::at_threshold(&scores, &labels, model.threshold());
        assert!(confusion.f1() > 0.85, "{confusion:?} f1 {}", confusion.f1());
        assert!(roc_auc(&scores, &labels).unwrap() > 0.97);
        // The physics carries the model: a derived feature leads the importance ranking.
        let top = &model.feature_importance()[0].0;
        assert!(
            ["power_w", "overstrain_ratio", "overstrain_min_nm", "temperature_difference_k", "heat_dissipation_k_rpm"]
                .contains(&top.as_str()),
            "{top}"
        );
    }

    #[test]
    fn explanation_sums_to_the_probability_and_names_the_cause() {
        let rows = synthetic::ai4i_like(4_000, 3);
        let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
        let (model, _) = FailureClassifier::train(&examples, &FailureParams::default()).unwrap();
        // A process at 1,300 W: far below the 3.5 kW a power failure starts at.
        let sample = ProcessSample {
            product_type: ProductType::Low,
            air_temperature_k: 300.0,
            process_temperature_k: 310.5,
            rotational_speed_rpm: 2_600.0,
            torque_nm: 4.8,
            tool_wear_min: 20.0,
        };
        let prediction = model.predict(&sample).unwrap();
        let total = prediction.baseline + prediction.contributions.iter().map(|c| c.contribution).sum::<f64>();
        assert!((total - prediction.probability).abs() < 1e-9);
        assert!((prediction.probability - model.probability(&sample).unwrap()).abs() < 1e-12);
        assert!(prediction.failure_expected, "{prediction:?}");
        let top: Vec<&str> = prediction.contributions.iter().take(2).map(|c| c.feature.as_str()).collect();
        assert!(top.contains(&"power_w") || top.contains(&"torque_nm"), "{top:?}");
        assert_eq!(prediction.contributions.len(), FAILURE_FEATURES.len());
    }

    #[test]
    fn refuses_training_without_both_classes_and_bad_samples() {
        let rows = synthetic::ai4i_like(200, 1);
        let healthy: Vec<FailureExample> = rows.iter().map(FailureExample::from).filter(|e| !e.failed).collect();
        assert!(matches!(
            FailureClassifier::train(&healthy, &FailureParams::default()),
            Err(ModelError::NotEnoughData(_))
        ));
    }
}
