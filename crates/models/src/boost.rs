//! A thin wrapper over `forust-ml`'s gradient-boosted trees: fitting from row-major feature
//! vectors, and per-row prediction and path attribution without the allocations of its
//! matrix-oriented API (the prediction agent scores one asset at a time).

use forust_ml::Matrix;
use forust_ml::gradientbooster::{GradientBooster, ImportanceMethod};
use forust_ml::objective::ObjectiveType;
use forust_ml::utils::odds;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Hyper-parameters of a boosted tree ensemble (the XGBoost ones, same meaning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoostParams {
    /// Trees in the ensemble.
    pub trees: usize,
    /// Shrinkage applied to each tree's leaf values.
    pub learning_rate: f32,
    /// Depth of each tree; depth 3 to 6 lets a tree combine a few thresholds (power and
    /// speed, say) without memorising rows.
    pub max_depth: usize,
    /// Minimum hessian sum in a leaf (≈ rows for squared loss, fewer for log loss).
    pub min_leaf_weight: f32,
    /// L2 penalty on leaf values.
    pub l2: f32,
    /// Seed of the library's own sampling (unused without subsampling, recorded anyway).
    pub seed: u64,
}

impl BoostParams {
    fn validate(&self) -> Result<(), ModelError> {
        let invalid = |name, detail: &str| Err(ModelError::InvalidParameter { name, detail: detail.to_string() });
        if self.trees == 0 {
            return invalid("trees", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return invalid("learning_rate", "must be in (0, 1]");
        }
        if self.max_depth == 0 || self.max_depth > 16 {
            return invalid("max_depth", "must be in 1..=16");
        }
        if !(self.min_leaf_weight >= 0.0 && self.l2 >= 0.0) {
            return invalid("min_leaf_weight/l2", "must be non-negative");
        }
        Ok(())
    }
}

/// What the ensemble minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Objective {
    /// Binary log loss: raw scores are log-odds.
    LogLoss,
    /// Squared error: raw scores are the prediction.
    SquaredLoss,
}

/// A fitted ensemble. Serialised as `forust-ml` serialises its booster.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Ensemble {
    booster: GradientBooster,
}

impl Ensemble {
    /// Fits on `rows` (row-major, `n_features` per row) against `targets`.
    pub(crate) fn fit(
        rows: &[f64],
        n_features: usize,
        targets: &[f64],
        objective: Objective,
        params: &BoostParams,
    ) -> Result<Self, ModelError> {
        params.validate()?;
        let n_rows = targets.len();
        debug_assert_eq!(rows.len(), n_rows * n_features);
        // forust reads column-major matrices.
        let mut columns = vec![0.0; rows.len()];
        for (r, row) in rows.chunks_exact(n_features).enumerate() {
            for (c, value) in row.iter().enumerate() {
                columns[c * n_rows + r] = *value;
            }
        }
        let matrix = Matrix::new(&columns, n_rows, n_features);
        let mut booster = GradientBooster::default()
            .set_objective_type(match objective {
                Objective::LogLoss => ObjectiveType::LogLoss,
                Objective::SquaredLoss => ObjectiveType::SquaredLoss,
            })
            .set_iterations(params.trees)
            .set_learning_rate(params.learning_rate)
            .set_max_depth(params.max_depth)
            .set_min_leaf_weight(params.min_leaf_weight)
            .set_l2(params.l2)
            .set_seed(params.seed)
            .set_parallel(true);
        booster.fit(&matrix, targets, &vec![1.0; n_rows], None).map_err(ModelError::Training)?;
        Ok(Self { booster })
    }

    fn trees(&self) -> &[forust_ml::tree::Tree] {
        let n = self.booster.prediction_iteration.unwrap_or(self.booster.trees.len());
        &self.booster.trees[..n]
    }

    pub(crate) fn n_trees(&self) -> usize {
        self.trees().len()
    }

    /// Raw score of one row: log-odds for log loss, the value for squared loss.
    pub(crate) fn raw_score(&self, row: &[f64]) -> f64 {
        let missing = self.booster.missing;
        self.booster.base_score + self.trees().iter().map(|t| t.predict_row_from_row_slice(row, &missing)).sum::<f64>()
    }

    /// Saabas path attribution in raw-score units: along each tree's decision path, the change
    /// of node value at a split is credited to the split's feature. Returns the per-feature
    /// contributions and the bias (the value before any split); they sum to `raw_score`.
    pub(crate) fn contributions(&self, row: &[f64]) -> (Vec<f64>, f64) {
        let mut contributions = vec![0.0; row.len() + 1];
        contributions[row.len()] = self.booster.base_score;
        for tree in self.trees() {
            tree.predict_contributions_row_weight(row, &mut contributions, &self.booster.missing);
        }
        let bias = contributions.pop().unwrap_or_default();
        (contributions, bias)
    }

    /// Path attribution in probability units for a log-loss ensemble: each split is credited
    /// with the change in predicted probability it causes, given the trees before it. The
    /// contributions and the bias sum to the predicted probability.
    pub(crate) fn probability_contributions(&self, row: &[f64]) -> (Vec<f64>, f64) {
        let mut contributions = vec![0.0; row.len() + 1];
        contributions[row.len()] = odds(self.booster.base_score);
        let mut log_odds = self.booster.base_score;
        for tree in self.trees() {
            log_odds = tree.predict_contributions_row_probability_change(
                row,
                &mut contributions,
                &self.booster.missing,
                log_odds,
            );
        }
        let bias = contributions.pop().unwrap_or_default();
        (contributions, bias)
    }

    /// Total split gain per feature, normalised to sum to 1: the model's global view of which
    /// inputs matter.
    pub(crate) fn gain_importance(&self, n_features: usize) -> Vec<f64> {
        let by_index = self.booster.calculate_feature_importance(ImportanceMethod::TotalGain, true);
        (0..n_features).map(|i| by_index.get(&i).copied().unwrap_or(0.0) as f64).collect()
    }
}

/// The rows (row-major, `n` wide) and targets whose index passes `keep`.
pub(crate) fn select(rows: &[f64], targets: &[f64], n: usize, keep: impl Fn(usize) -> bool) -> (Vec<f64>, Vec<f64>) {
    let mut kept_rows = Vec::new();
    let mut kept_targets = Vec::new();
    for (i, row) in rows.chunks_exact(n).enumerate().filter(|(i, _)| keep(*i)) {
        kept_rows.extend_from_slice(row);
        kept_targets.push(targets[i]);
    }
    (kept_rows, kept_targets)
}

/// The logistic function.
pub(crate) fn sigmoid(log_odds: f64) -> f64 {
    odds(log_odds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BoostParams {
        BoostParams { trees: 50, learning_rate: 0.3, max_depth: 3, min_leaf_weight: 1.0, l2: 1.0, seed: 0 }
    }

    #[test]
    fn contributions_sum_to_the_prediction() {
        // y = 3·[x0 > 5] + x1, x2 is noise-free padding.
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for i in 0..200 {
            let (x0, x1, x2) = ((i % 10) as f64, ((i * 7) % 13) as f64 / 13.0, ((i * 3) % 5) as f64);
            rows.extend([x0, x1, x2]);
            targets.push(3.0 * f64::from(u8::from(x0 > 5.0)) + x1);
        }
        let ensemble = Ensemble::fit(&rows, 3, &targets, Objective::SquaredLoss, &params()).unwrap();
        for row in rows.chunks_exact(3).take(20) {
            let (contributions, bias) = ensemble.contributions(row);
            let total: f64 = contributions.iter().sum::<f64>() + bias;
            assert!((total - ensemble.raw_score(row)).abs() < 1e-4, "{total} vs {}", ensemble.raw_score(row));
        }
        let importance = ensemble.gain_importance(3);
        assert!(importance[0] > importance[1] && importance[1] > importance[2], "{importance:?}");
    }

    #[test]
    fn probability_contributions_sum_to_the_probability() {
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for i in 0..300 {
            let (x0, x1) = ((i % 17) as f64, ((i * 5) % 11) as f64);
            rows.extend([x0, x1]);
            targets.push(f64::from(u8::from(x0 > 12.0 || x1 < 2.0)));
        }
        let ensemble = Ensemble::fit(&rows, 2, &targets, Objective::LogLoss, &params()).unwrap();
        for row in rows.chunks_exact(2).take(30) {
            let (contributions, bias) = ensemble.probability_contributions(row);
            let total: f64 = contributions.iter().sum::<f64>() + bias;
            assert!((total - sigmoid(ensemble.raw_score(row))).abs() < 1e-9);
        }
    }

    #[test]
    fn refuses_bad_parameters() {
        let bad = BoostParams { learning_rate: 0.0, ..params() };
        assert!(matches!(
            Ensemble::fit(&[1.0, 2.0], 1, &[0.0, 1.0], Objective::SquaredLoss, &bad),
            Err(ModelError::InvalidParameter { name: "learning_rate", .. })
        ));
    }
}
