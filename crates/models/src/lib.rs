//! Machine learning for predictive maintenance, with no I/O: parsers that read text handed to
//! them, feature builders, training, metrics and model artifacts. The trainer, the prediction
//! agent and `smctl eval` all call this crate, so a figure in a model card and a prediction in
//! production come from the same code.
//!
//! # Why `forust-ml`
//! Both models are gradient-boosted trees from [`forust-ml`](https://github.com/jinlow/forust)
//! (the XGBoost algorithm in pure Rust: no BLAS, no system library; Apache-2.0). The failure
//! mechanisms are thresholds on power, temperature difference and overstrain, which trees
//! express in a split and linear models cannot. Against the other pure-Rust candidates:
//! `smartcore`'s random forest offers neither class probabilities nor access to its tree
//! nodes, so no per-prediction contributions; `linfa-trees` has single trees only;
//! `perpetual` 2.x needs a nightly compiler and 3.x is a release candidate. forust exposes its
//! trees, so a prediction is explained by path attribution (Saabas): each split's change of
//! node value is credited to its feature, and the contributions sum to the prediction.
//!
//! # Layout
//! - [`ai4i`], [`cmapss`]: parsers for the AI4I 2020 and C-MAPSS layouts;
//! - [`failure`]: the failure classifier (AI4I-style process data);
//! - [`rul`]: the remaining-useful-life regressor (C-MAPSS-style trajectories);
//! - [`split`]: train/test splits and folds that keep each unit whole;
//! - [`metrics`]: precision, recall, F1, ROC-AUC, RMSE, MAE, PHM08;
//! - [`evaluate`]: the held-out evaluations `smctl eval` prints;
//! - [`artifact`]: [`Model`], [`ModelCard`], bytes, SHA-256 and a checked [`load`];
//! - [`synthetic`]: generators with known mechanisms, for tests and benchmarks.

pub mod ai4i;
pub mod artifact;
mod boost;
pub mod cmapss;
mod error;
pub mod evaluate;
pub mod failure;
pub mod metrics;
mod rng;
pub mod rul;
pub mod split;
pub mod stream;
pub mod synthetic;

use serde::{Deserialize, Serialize};

pub use artifact::{Artifact, Model, ModelCard, ModelKind, TrainingData, load, sha256_hex};
pub use boost::BoostParams;
pub use error::ModelError;
pub use failure::{FailureClassifier, FailureParams, FailurePrediction};
pub use rul::{RulParams, RulPrediction, RulRegressor, StreamLayout};
pub use stream::{CycleBuilder, Pushed};

/// How much one input moved one prediction, for "why this prediction" displays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The feature's name (with its unit, e.g. `power_w`).
    pub feature: String,
    /// The feature's value in this prediction.
    pub value: f64,
    /// Its contribution, in the prediction's unit (probability, or cycles of RUL); positive
    /// pushes towards failure / towards a longer life.
    pub contribution: f64,
}

impl Contribution {
    /// All features, largest absolute contribution first (ties keep feature order).
    fn ranked(names: &[&str], values: &[f64], contributions: &[f64]) -> Vec<Contribution> {
        let mut ranked: Vec<Contribution> = names
            .iter()
            .zip(values)
            .zip(contributions)
            .map(|((name, value), contribution)| Contribution {
                feature: name.to_string(),
                value: *value,
                contribution: *contribution,
            })
            .collect();
        ranked.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        ranked
    }
}

/// Names paired with importances, largest first.
fn ranked_importance(names: &[&str], importance: &[f64]) -> Vec<(String, f64)> {
    let mut ranked: Vec<(String, f64)> =
        names.iter().zip(importance).map(|(name, value)| (name.to_string(), *value)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}
