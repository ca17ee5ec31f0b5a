//! Held-out evaluation as `smctl eval` and the trainer run it: split by unit, train on one
//! side, score the other. The figures come back as a name → value map, ready for a
//! [`ModelCard`](crate::ModelCard) and for comparing a challenger with the production model.
//!
//! RUL protocol. NASA's C-MAPSS test trajectories stop at a random cycle before failure, and
//! the published RMSE is scored on the last cycle of each. Held-out *training* trajectories
//! run to failure, so their literal last cycle always has RUL 0; instead each held-out engine
//! is cut at a seeded random cycle (at least 31 cycles in, the shortest FD001 test
//! trajectory) and scored there. Truths are capped at 125 cycles like the target. Every
//! cycle of the held-out engines is scored too (`all_cycles_*`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ai4i::Row;
use crate::cmapss::{Cycle, Trajectory, trajectories};
use crate::error::ModelError;
use crate::failure::{FailureClassifier, FailureExample, FailureParams, FailureTrainingReport};
use crate::metrics::{Confusion, interval_coverage, mae, phm08_score, rmse, roc_auc};
use crate::rng::SplitMix64;
use crate::rul::{RulParams, RulRegressor, RulTrainingReport};
use crate::split::{Split, folds_by_unit, split_by_unit};

/// The shortest test trajectory of FD001: an engine is never scored on less history.
pub const MIN_HISTORY_CYCLES: u32 = 31;

/// The outcome of a held-out evaluation of the failure classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureEvaluation {
    pub split: Split,
    pub training: FailureTrainingReport,
    pub test_failures: usize,
    pub confusion: Confusion,
    /// `test_precision`, `test_recall`, `test_f1`, `test_roc_auc`, `threshold`, and the
    /// training side's `out_of_fold_f1` / `out_of_fold_roc_auc`.
    pub metrics: BTreeMap<String, f64>,
}

/// Trains on about `1 − test_fraction` of the rows' units and scores the rest.
pub fn evaluate_failure(
    rows: &[Row],
    test_fraction: f64,
    seed: u64,
    params: &FailureParams,
) -> Result<(FailureClassifier, FailureEvaluation), ModelError> {
    let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
    let units: Vec<&str> = examples.iter().map(|e| e.unit.as_str()).collect();
    let split = split_by_unit(&units, test_fraction, seed)?;
    let train: Vec<FailureExample> = split.train.iter().map(|&i| examples[i].clone()).collect();
    let (model, training) = FailureClassifier::train(&train, params)?;

    let scores = split.test.iter().map(|&i| model.probability(&examples[i].sample)).collect::<Result<Vec<_>, _>>()?;
    let labels: Vec<bool> = split.test.iter().map(|&i| examples[i].failed).collect();
    let confusion = Confusion::at_threshold(&scores, &labels, model.threshold());
    let mut metrics = BTreeMap::from([
        ("test_precision".to_string(), confusion.precision()),
        ("test_recall".to_string(), confusion.recall()),
        ("test_f1".to_string(), confusion.f1()),
        ("threshold".to_string(), model.threshold()),
        ("out_of_fold_f1".to_string(), training.out_of_fold_f1),
    ]);
    if let Some(auc) = roc_auc(&scores, &labels) {
        metrics.insert("test_roc_auc".into(), auc);
    }
    if training.out_of_fold_roc_auc.is_finite() {
        metrics.insert("out_of_fold_roc_auc".into(), training.out_of_fold_roc_auc);
    }
    let test_failures = labels.iter().filter(|&&l| l).count();
    Ok((model, FailureEvaluation { split, training, test_failures, confusion, metrics }))
}

/// The outcome of a held-out evaluation of the RUL regressor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulEvaluation {
    pub split: Split,
    pub training: RulTrainingReport,
    /// `last_cycle_{rmse,mae,phm08,coverage}` on the cut held-out engines and
    /// `all_cycles_{rmse,mae,phm08,phm08_mean,coverage}` on all their cycles.
    pub metrics: BTreeMap<String, f64>,
    /// Per held-out engine: unit, cut cycle, true and predicted RUL there.
    pub engines: Vec<EngineScore>,
}

/// One held-out engine scored at its cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineScore {
    pub unit: u32,
    pub cut_cycle: u32,
    pub true_rul: f64,
    pub predicted_rul: f64,
}

/// Trains on about `1 − test_fraction` of the engines and scores the rest (see the module doc
/// for the protocol).
pub fn evaluate_rul(
    cycles: &[Cycle],
    test_fraction: f64,
    seed: u64,
    params: &RulParams,
) -> Result<(RulRegressor, RulEvaluation), ModelError> {
    let engines = trajectories(cycles);
    let units: Vec<u32> = engines.iter().map(|t| t.unit).collect();
    let by_engine = split_by_unit(&units, test_fraction, seed)?;
    let train: Vec<Trajectory> = by_engine.train.iter().map(|&i| engines[i].clone()).collect();
    let test: Vec<&Trajectory> = by_engine.test.iter().map(|&i| &engines[i]).collect();
    let (model, training) = RulRegressor::train(&train, params)?;
    let scored = score_engines(&model, &test, seed)?;
    // Report the split in cycles (rows), as the split of engines.
    let row_split = split_rows(cycles, &by_engine, &units);
    Ok((model, RulEvaluation { split: row_split, training, metrics: scored.metrics(), engines: scored.engines }))
}

/// k-fold cross-validation by engine: every engine is held out once; the figures pool the
/// held-out predictions of all folds (so the last-cycle RMSE is over every engine).
pub fn cross_validate_rul(
    cycles: &[Cycle],
    folds: usize,
    seed: u64,
    params: &RulParams,
) -> Result<BTreeMap<String, f64>, ModelError> {
    let engines = trajectories(cycles);
    let units: Vec<u32> = engines.iter().map(|t| t.unit).collect();
    let fold_of = folds_by_unit(&units, folds, seed)?;
    let mut pooled = Scored::default();
    for fold in 0..folds {
        let train: Vec<Trajectory> =
            engines.iter().zip(&fold_of).filter(|(_, f)| **f != fold).map(|(t, _)| t.clone()).collect();
        let test: Vec<&Trajectory> =
            engines.iter().zip(&fold_of).filter(|(_, f)| **f == fold).map(|(t, _)| t).collect();
        let (model, _) = RulRegressor::train(&train, params)?;
        pooled.extend(score_engines(&model, &test, seed)?);
    }
    Ok(pooled.metrics())
}

/// Held-out predictions gathered for the figures.
#[derive(Default)]
struct Scored {
    engines: Vec<EngineScore>,
    last_intervals: Vec<(f64, f64)>,
    all_predicted: Vec<f64>,
    all_truth: Vec<f64>,
    all_intervals: Vec<(f64, f64)>,
}

impl Scored {
    fn extend(&mut self, other: Scored) {
        self.engines.extend(other.engines);
        self.last_intervals.extend(other.last_intervals);
        self.all_predicted.extend(other.all_predicted);
        self.all_truth.extend(other.all_truth);
        self.all_intervals.extend(other.all_intervals);
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        let predicted: Vec<f64> = self.engines.iter().map(|e| e.predicted_rul).collect();
        let truth: Vec<f64> = self.engines.iter().map(|e| e.true_rul).collect();
        let coverage = |intervals: &[(f64, f64)], truth: &[f64]| {
            let (lower, upper): (Vec<f64>, Vec<f64>) = intervals.iter().copied().unzip();
            interval_coverage(&lower, &upper, truth)
        };
        BTreeMap::from([
            ("engines".to_string(), self.engines.len() as f64),
            ("last_cycle_rmse".to_string(), rmse(&predicted, &truth)),
            ("last_cycle_mae".to_string(), mae(&predicted, &truth)),
            ("last_cycle_phm08".to_string(), phm08_score(&predicted, &truth)),
            ("last_cycle_coverage".to_string(), coverage(&self.last_intervals, &truth)),
            ("all_cycles".to_string(), self.all_truth.len() as f64),
            ("all_cycles_rmse".to_string(), rmse(&self.all_predicted, &self.all_truth)),
            ("all_cycles_mae".to_string(), mae(&self.all_predicted, &self.all_truth)),
            ("all_cycles_phm08".to_string(), phm08_score(&self.all_predicted, &self.all_truth)),
            (
                "all_cycles_phm08_mean".to_string(),
                phm08_score(&self.all_predicted, &self.all_truth) / self.all_truth.len() as f64,
            ),
            ("all_cycles_coverage".to_string(), coverage(&self.all_intervals, &self.all_truth)),
        ])
    }
}

fn score_engines(model: &RulRegressor, test: &[&Trajectory], seed: u64) -> Result<Scored, ModelError> {
    let cap = model.cap_cycles();
    let mut scored = Scored::default();
    for trajectory in test {
        let predictions = model.rul_along(&trajectory.cycles)?;
        let last = trajectory.last_cycle();
        for (cycle, &p) in trajectory.cycles.iter().zip(&predictions) {
            scored.all_predicted.push(p);
            scored.all_truth.push(f64::from(last - cycle.cycle).min(cap));
            scored.all_intervals.push(model.interval(p));
        }
        let cut = cut_index(trajectory, seed);
        let cut_cycle = trajectory.cycles[cut].cycle;
        scored.engines.push(EngineScore {
            unit: trajectory.unit,
            cut_cycle,
            true_rul: f64::from(last - cut_cycle).min(cap),
            predicted_rul: predictions[cut],
        });
        scored.last_intervals.push(model.interval(predictions[cut]));
    }
    Ok(scored)
}

/// Index of the cycle an engine is cut at: uniform over the cycles from the 31st on, seeded by
/// the run's seed and the unit so that each engine's cut is the same in every fold and run.
fn cut_index(trajectory: &Trajectory, seed: u64) -> usize {
    let len = trajectory.cycles.len();
    let first = (MIN_HISTORY_CYCLES as usize).min(len) - 1;
    let mut rng = SplitMix64::new(seed ^ u64::from(trajectory.unit).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    first + rng.below(len - first)
}

/// The engine split expressed over cycle rows, for reporting rows per side.
fn split_rows(cycles: &[Cycle], by_engine: &Split, units: &[u32]) -> Split {
    let test_units: std::collections::BTreeSet<u32> = by_engine.test.iter().map(|&i| units[i]).collect();
    let (test, train): (Vec<usize>, Vec<usize>) =
        (0..cycles.len()).partition(|&i| test_units.contains(&cycles[i].unit));
    Split { train, test, ..by_engine.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoostParams;
    use crate::synthetic;

    #[test]
    fn failure_evaluation_reports_held_out_figures() {
        let rows = synthetic::ai4i_like(3_000, 21);
        let (_, evaluation) = evaluate_failure(&rows, 0.2, 1, &FailureParams::default()).unwrap();
        assert_eq!(evaluation.split.test.len() + evaluation.split.train.len(), 3_000);
        assert_eq!(evaluation.split.test_units, 600);
        for key in ["test_precision", "test_recall", "test_f1", "test_roc_auc", "threshold", "out_of_fold_f1"] {
            assert!(evaluation.metrics.contains_key(key), "{key}");
        }
        assert!(evaluation.metrics["test_f1"] > 0.7, "{:?}", evaluation.metrics);
    }

    #[test]
    fn rul_evaluation_cuts_each_engine_after_its_31st_cycle() {
        let cycles = synthetic::degradation_fleet(30, 8);
        let params = RulParams {
            boost: BoostParams { trees: 80, learning_rate: 0.15, ..RulParams::default().boost },
            calibration_folds: 3,
            ..RulParams::default()
        };
        let (_, evaluation) = evaluate_rul(&cycles, 0.2, 3, &params).unwrap();
        assert_eq!(evaluation.engines.len(), 6);
        for engine in &evaluation.engines {
            assert!(engine.cut_cycle >= MIN_HISTORY_CYCLES);
            assert!(engine.true_rul <= 125.0);
        }
        let test_units: std::collections::BTreeSet<u32> = evaluation.engines.iter().map(|e| e.unit).collect();
        assert!(evaluation.split.train.iter().all(|&i| !test_units.contains(&cycles[i].unit)));
        assert!(evaluation.metrics["last_cycle_rmse"] < 40.0, "{:?}", evaluation.metrics);
        // The same seed cuts the same engines at the same cycles.
        let (_, again) = evaluate_rul(&cycles, 0.2, 3, &params).unwrap();
        assert_eq!(
            again.engines.iter().map(|e| e.cut_cycle).collect::<Vec<_>>(),
            evaluation.engines.iter().map(|e| e.cut_cycle).collect::<Vec<_>>()
        );

        let folds = cross_validate_rul(&cycles, 3, 3, &params).unwrap();
        assert_eq!(folds["engines"], 30.0);
    }
}
