//! The remaining-useful-life regressor: cycles left before failure, from the recent history
//! of an engine's sensors, with a prediction interval and per-feature contributions.
//!
//! The usual C-MAPSS recipe: sensors that never move are dropped (chosen on the training
//! data and stored with the model); each remaining sensor gives its last value, its mean over
//! the last few cycles (noise) and its least-squares slope over a longer window (trend); the
//! target is capped at 125 cycles, because early in life nothing in the sensors tells 200
//! cycles left from 300 (the piecewise-linear target of Heimes 2008).
//!
//! The interval comes from out-of-fold residuals on the training side (split conformal by
//! engine), banded by predicted RUL because errors shrink as failure nears. Only FD001/FD003
//! style data (one operating condition) is modelled: multi-condition sets (FD002/FD004) need
//! per-condition normalisation, which this does not do.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::Contribution;
use crate::boost::{BoostParams, Ensemble, Objective, select};
use crate::cmapss::{Cycle, SENSORS, Trajectory};
use crate::error::ModelError;
use crate::metrics::rmse;
use crate::split::folds_by_unit;

/// The usual cap of the RUL target, in cycles.
pub const RUL_CAP_CYCLES: f64 = 125.0;

/// Training settings of the regressor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulParams {
    pub boost: BoostParams,
    /// Cycles averaged for each sensor's `mean` feature.
    pub mean_window_cycles: usize,
    /// Cycles over which each sensor's `slope` is fitted.
    pub slope_window_cycles: usize,
    /// Cap of the target (and of predictions).
    pub cap_cycles: f64,
    /// Share of true RULs the interval should cover (e.g. 0.9 for a 5–95 % interval).
    pub interval_coverage: f64,
    /// Folds (by engine) of the training side whose out-of-fold residuals set the interval.
    pub calibration_folds: usize,
    /// Seed of the folds.
    pub seed: u64,
    /// Use the cycle number (the unit's age) as a feature. Right for C-MAPSS, where every
    /// engine is observed from new; wrong for a live asset, whose age the agent does not know.
    pub use_age: bool,
}

impl Default for RulParams {
    fn default() -> Self {
        Self {
            boost: BoostParams {
                trees: 300,
                learning_rate: 0.05,
                max_depth: 5,
                min_leaf_weight: 20.0,
                l2: 1.0,
                seed: 0,
            },
            // Chosen by 5-fold cross-validation by engine on FD001's training file: a slope over
            // a long window measures the rate of degradation through the sensor noise (last-cycle
            // RMSE 14.3 with a 30-cycle slope, 8.9 with 150).
            mean_window_cycles: 30,
            slope_window_cycles: 150,
            cap_cycles: RUL_CAP_CYCLES,
            interval_coverage: 0.9,
            calibration_folds: 4,
            seed: 0,
            use_age: true,
        }
    }
}

impl RulParams {
    fn validate(&self) -> Result<(), ModelError> {
        let invalid = |name, detail: &str| Err(ModelError::InvalidParameter { name, detail: detail.to_string() });
        if self.mean_window_cycles == 0 || self.slope_window_cycles < 2 {
            return invalid("mean_window_cycles/slope_window_cycles", "need at least 1 and 2 cycles");
        }
        if !(self.cap_cycles > 0.0 && self.cap_cycles.is_finite()) {
            return invalid("cap_cycles", "must be positive");
        }
        if !(self.interval_coverage > 0.0 && self.interval_coverage < 1.0) {
            return invalid("interval_coverage", "must be in (0, 1)");
        }
        if self.calibration_folds < 2 {
            return invalid("calibration_folds", "must be at least 2");
        }
        Ok(())
    }
}

/// How raw cycles become a feature vector: which sensors, which windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Windows {
    /// 0-based indices of the sensors kept (`0` is `s1`).
    sensors: Vec<usize>,
    mean_cycles: usize,
    slope_cycles: usize,
    /// Whether the cycle number is the first feature (artifacts before this field had it).
    #[serde(default = "yes")]
    age: bool,
    /// Names of the sensor slots (`channels[0]` is slot `s1`) when the model reads a live
    /// stream; empty for C-MAPSS files, whose sensors are `s1`...`s21`.
    #[serde(default)]
    channels: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Windows {
    fn sensor_name(&self, s: usize) -> String {
        self.channels.get(s).cloned().unwrap_or_else(|| format!("s{}", s + 1))
    }

    fn names(&self) -> Vec<String> {
        let mut names = if self.age { vec!["cycle".to_string()] } else { Vec::new() };
        for &s in &self.sensors {
            let sensor = self.sensor_name(s);
            names.push(format!("{sensor}_last"));
            names.push(format!("{sensor}_mean{}", self.mean_cycles));
            names.push(format!("{sensor}_slope{}", self.slope_cycles));
        }
        names
    }

    /// Features at the last cycle of `history` (one engine, cycles in order); only the past
    /// is used, so a prediction at cycle t is what the agent could have said at cycle t.
    fn features(&self, history: &[Cycle], out: &mut Vec<f64>) {
        let Some(current) = history.last() else { return };
        if self.age {
            out.push(f64::from(current.cycle));
        }
        let mean_window = &history[history.len().saturating_sub(self.mean_cycles)..];
        let slope_window = &history[history.len().saturating_sub(self.slope_cycles)..];
        for &s in &self.sensors {
            out.push(current.sensors[s]);
            out.push(mean_window.iter().map(|c| c.sensors[s]).sum::<f64>() / mean_window.len() as f64);
            out.push(slope(slope_window, s));
        }
    }
}

/// Least-squares slope of sensor `s` against the cycle number, per cycle; 0 for one point.
fn slope(window: &[Cycle], s: usize) -> f64 {
    let n = window.len() as f64;
    let mean_t = window.iter().map(|c| f64::from(c.cycle)).sum::<f64>() / n;
    let mean_y = window.iter().map(|c| c.sensors[s]).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for c in window {
        let dt = f64::from(c.cycle) - mean_t;
        sxy += dt * (c.sensors[s] - mean_y);
        sxx += dt * dt;
    }
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

/// Residual quantiles (truth − prediction) per band of predicted RUL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidualBands {
    /// Upper edges of the bands of predicted RUL; the last band is open.
    pub edges_cycles: Vec<f64>,
    /// Lower and upper residual quantile of each band (one more entry than `edges_cycles`).
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    /// The share of truths the interval is meant to cover.
    pub coverage: f64,
}

impl ResidualBands {
    /// Bands fitted from out-of-fold `(prediction, truth)` pairs. A band with fewer than 30
    /// residuals takes the quantiles of all residuals: a few points make a wild quantile.
    fn fit(predictions: &[f64], truths: &[f64], cap: f64, coverage: f64) -> Self {
        let edges_cycles: Vec<f64> = [0.2, 0.4, 0.6, 0.8].iter().map(|f| f * cap).collect();
        let band_of = |p: f64| edges_cycles.iter().position(|&e| p < e).unwrap_or(edges_cycles.len());
        let (lo_q, hi_q) = ((1.0 - coverage) / 2.0, (1.0 + coverage) / 2.0);
        let all: Vec<f64> = truths.iter().zip(predictions).map(|(t, p)| t - p).collect();
        let (all_lo, all_hi) = (quantile(&all, lo_q), quantile(&all, hi_q));
        let (mut lower, mut upper) = (Vec::new(), Vec::new());
        for band in 0..=edges_cycles.len() {
            let residuals: Vec<f64> =
                all.iter().zip(predictions).filter(|(_, p)| band_of(**p) == band).map(|(r, _)| *r).collect();
            if residuals.len() < 30 {
                lower.push(all_lo);
                upper.push(all_hi);
            } else {
                lower.push(quantile(&residuals, lo_q));
                upper.push(quantile(&residuals, hi_q));
            }
        }
        Self { edges_cycles, lower, upper, coverage }
    }

    fn interval(&self, prediction: f64) -> (f64, f64) {
        let band = self.edges_cycles.iter().position(|&e| prediction < e).unwrap_or(self.edges_cycles.len());
        ((prediction + self.lower[band]).max(0.0), (prediction + self.upper[band]).max(0.0))
    }
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7): enough for a
/// probability read off an interval.
fn normal_cdf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() / std::f64::consts::SQRT_2);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-(x * x) / 2.0).exp();
    if x >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

/// The standard normal quantile by bisection on [`normal_cdf`] (called once per prediction
/// with the same argument; cheap next to the trees).
fn normal_quantile(p: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0_f64, 10.0_f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if normal_cdf(mid) < p { lo = mid } else { hi = mid }
    }
    (lo + hi) / 2.0
}

/// The `q` quantile by linear interpolation between order statistics; NaN for no values.
fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

/// A trained regressor.
#[derive(Serialize, Deserialize)]
pub struct RulRegressor {
    ensemble: Ensemble,
    windows: Windows,
    cap_cycles: f64,
    bands: ResidualBands,
    importance: Vec<f64>,
    /// Length of one cycle in event time when the model reads a live stream (see
    /// [`RulRegressor::for_stream`]); `None` for models of C-MAPSS flights.
    #[serde(default)]
    cycle_ms: Option<i64>,
}

/// How a live asset's readings become this model's cycles: which sensor type fills which
/// slot, and how long a cycle lasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamLayout {
    /// Sensor type of each slot (`channels[0]` is `s1`); a slot without readings in a cycle
    /// repeats its previous value.
    pub channels: Vec<String>,
    /// Event-time length of one cycle.
    pub cycle_ms: i64,
}

/// What training saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulTrainingReport {
    pub cycles: usize,
    pub units: usize,
    /// Sensors dropped because they never move (names as in the file: `s1`...).
    pub dropped_sensors: Vec<String>,
    /// RMSE of the out-of-fold predictions that calibrated the interval, against the capped RUL.
    pub out_of_fold_rmse: f64,
    pub bands: ResidualBands,
}

/// One prediction with its interval and explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulPrediction {
    /// Predicted remaining useful life in cycles, within [0, cap].
    pub rul_cycles: f64,
    /// Interval meant to hold the true (capped) RUL with probability `coverage`.
    pub lower_cycles: f64,
    pub upper_cycles: f64,
    pub coverage: f64,
    /// The prediction before any split (the mean training target).
    pub baseline_cycles: f64,
    /// Every feature, largest absolute contribution first, in cycles (Saabas attribution); with
    /// the baseline they sum to the uncapped prediction.
    pub contributions: Vec<Contribution>,
}

impl RulRegressor {
    /// Fits on run-to-failure trajectories: the last cycle of each is taken as its failure.
    pub fn train(trajectories: &[Trajectory], params: &RulParams) -> Result<(Self, RulTrainingReport), ModelError> {
        params.validate()?;
        if trajectories.len() < params.calibration_folds {
            return Err(ModelError::NotEnoughData(format!(
                "{} engine(s); calibrating the interval needs at least {}",
                trajectories.len(),
                params.calibration_folds
            )));
        }
        for trajectory in trajectories {
            validate_history(&trajectory.cycles)?;
        }
        let sensors = moving_sensors(trajectories.iter().flat_map(|t| &t.cycles));
        let dropped_sensors = (0..SENSORS).filter(|s| !sensors.contains(s)).map(|s| format!("s{}", s + 1)).collect();
        let windows = Windows {
            sensors,
            mean_cycles: params.mean_window_cycles,
            slope_cycles: params.slope_window_cycles,
            age: params.use_age,
            channels: Vec::new(),
        };
        let n = windows.names().len();

        let mut rows = Vec::new();
        let mut targets = Vec::new();
        let mut units = Vec::new();
        for trajectory in trajectories {
            let last = f64::from(trajectory.last_cycle());
            for end in 1..=trajectory.cycles.len() {
                windows.features(&trajectory.cycles[..end], &mut rows);
                targets.push((last - f64::from(trajectory.cycles[end - 1].cycle)).min(params.cap_cycles));
                units.push(trajectory.unit);
            }
        }

        let folds = folds_by_unit(&units, params.calibration_folds, params.seed)?;
        let mut out_of_fold = vec![0.0; targets.len()];
        for fold in 0..params.calibration_folds {
            let (fit_rows, fit_targets) = select(&rows, &targets, n, |i| folds[i] != fold);
            let ensemble = Ensemble::fit(&fit_rows, n, &fit_targets, Objective::SquaredLoss, &params.boost)?;
            for (i, row) in rows.chunks_exact(n).enumerate().filter(|(i, _)| folds[*i] == fold) {
                out_of_fold[i] = ensemble.raw_score(row).clamp(0.0, params.cap_cycles);
            }
        }
        let bands = ResidualBands::fit(&out_of_fold, &targets, params.cap_cycles, params.interval_coverage);
        let ensemble = Ensemble::fit(&rows, n, &targets, Objective::SquaredLoss, &params.boost)?;
        let importance = ensemble.gain_importance(n);
        let report = RulTrainingReport {
            cycles: targets.len(),
            units: trajectories.len(),
            dropped_sensors,
            out_of_fold_rmse: rmse(&out_of_fold, &targets),
            bands: bands.clone(),
        };
        Ok((Self { ensemble, windows, cap_cycles: params.cap_cycles, bands, importance, cycle_ms: None }, report))
    }

    /// Marks the model as one that reads a live stream laid out as `layout`; its feature
    /// names then use the channel names (`temperature_slope60`, not `s1_slope60`).
    pub fn for_stream(mut self, layout: StreamLayout) -> Result<Self, ModelError> {
        if layout.cycle_ms <= 0 || layout.channels.is_empty() || layout.channels.len() > SENSORS {
            return Err(ModelError::InvalidParameter {
                name: "stream layout",
                detail: format!("needs a positive cycle length and 1 to {SENSORS} channels"),
            });
        }
        self.windows.channels = layout.channels;
        self.cycle_ms = Some(layout.cycle_ms);
        Ok(self)
    }

    /// The live-stream layout, for models trained with [`RulRegressor::for_stream`].
    pub fn stream_layout(&self) -> Option<StreamLayout> {
        Some(StreamLayout { channels: self.windows.channels.clone(), cycle_ms: self.cycle_ms? })
    }

    /// Cycles of history the features look at (older ones can be dropped).
    pub fn window_cycles(&self) -> usize {
        self.windows.mean_cycles.max(self.windows.slope_cycles)
    }

    /// Prediction from a ready feature vector (in [`Self::feature_names`] order): the
    /// on-demand `Predict` path, for callers who computed the window features themselves.
    pub fn predict_features(&self, features: &[f64]) -> Result<RulPrediction, ModelError> {
        let names = self.windows.names();
        if features.len() != names.len() || features.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!(
                "expected {} finite features ({}), got {}",
                names.len(),
                names.join(", "),
                features.len()
            )));
        }
        let (contributions, baseline) = self.ensemble.contributions(features);
        let rul_cycles = (baseline + contributions.iter().sum::<f64>()).clamp(0.0, self.cap_cycles);
        let (lower_cycles, upper_cycles) = self.bands.interval(rul_cycles);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(RulPrediction {
            rul_cycles,
            lower_cycles,
            upper_cycles,
            coverage: self.bands.coverage,
            baseline_cycles: baseline,
            contributions: Contribution::ranked(&names, features, &contributions),
        })
    }

    /// Probability that the true RUL is below `horizon_cycles`, given a prediction: the
    /// interval's band read as a normal distribution around the prediction (its lower and
    /// upper residual quantiles set the spread). An approximation, stated as such; it is 0.5
    /// when the prediction sits on the horizon and moves smoothly either side.
    pub fn failure_probability(&self, rul_cycles: f64, horizon_cycles: f64) -> f64 {
        let band =
            self.bands.edges_cycles.iter().position(|&e| rul_cycles < e).unwrap_or(self.bands.edges_cycles.len());
        let z = normal_quantile((1.0 + self.bands.coverage) / 2.0);
        let spread = ((self.bands.upper[band] - self.bands.lower[band]) / (2.0 * z)).max(1e-9);
        let centre = rul_cycles + (self.bands.upper[band] + self.bands.lower[band]) / 2.0;
        normal_cdf((horizon_cycles - centre) / spread)
    }

    /// Predicted RUL at the last cycle of `history` (one engine's cycles, oldest first; only the
    /// last `max(windows)` matter). The agent's hot path.
    pub fn rul(&self, history: &[Cycle]) -> Result<f64, ModelError> {
        let features = self.features(history)?;
        Ok(self.ensemble.raw_score(&features).clamp(0.0, self.cap_cycles))
    }

    /// The feature vector at the last cycle of `history`, in [`Self::feature_names`] order
    /// (for display, and as the benchmark's baseline).
    pub fn features(&self, history: &[Cycle]) -> Result<Vec<f64>, ModelError> {
        validate_history(history)?;
        let mut features = Vec::with_capacity(self.windows.sensors.len() * 3 + 1);
        self.windows.features(history, &mut features);
        Ok(features)
    }

    /// Predicted RUL with its interval and the contribution of every feature.
    pub fn predict(&self, history: &[Cycle]) -> Result<RulPrediction, ModelError> {
        let features = self.features(history)?;
        self.predict_features(&features)
    }

    /// Predictions at every cycle of one engine's trajectory, each from its own past only.
    pub fn rul_along(&self, cycles: &[Cycle]) -> Result<Vec<f64>, ModelError> {
        validate_history(cycles)?;
        let mut features = Vec::new();
        Ok((1..=cycles.len())
            .map(|end| {
                features.clear();
                self.windows.features(&cycles[..end], &mut features);
                self.ensemble.raw_score(&features).clamp(0.0, self.cap_cycles)
            })
            .collect())
    }

    /// The interval for a prediction made elsewhere (e.g. by [`Self::rul_along`]).
    pub fn interval(&self, rul_cycles: f64) -> (f64, f64) {
        self.bands.interval(rul_cycles)
    }

    /// Names of the model's inputs, in order.
    pub fn feature_names(&self) -> Vec<String> {
        self.windows.names()
    }

    /// Cycles of history the features look at; older cycles do not change a prediction.
    pub fn history_cycles(&self) -> usize {
        self.windows.mean_cycles.max(self.windows.slope_cycles)
    }

    /// Feature names with their share of the ensemble's total split gain, largest first.
    pub fn feature_importance(&self) -> Vec<(String, f64)> {
        let names = self.windows.names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        crate::ranked_importance(&names, &self.importance)
    }

    /// The cap of the target and the predictions, in cycles.
    pub fn cap_cycles(&self) -> f64 {
        self.cap_cycles
    }

    /// Trees in the ensemble.
    pub fn trees(&self) -> usize {
        self.ensemble.n_trees()
    }
}

impl std::fmt::Debug for RulRegressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulRegressor")
            .field("trees", &self.ensemble.n_trees())
            .field("windows", &self.windows)
            .field("cap_cycles", &self.cap_cycles)
            .finish_non_exhaustive()
    }
}

/// Sensors with at least three distinct values: a sensor that is stuck, or toggles between two
/// quantisation steps, carries no degradation trend.
fn moving_sensors<'a>(cycles: impl Iterator<Item = &'a Cycle>) -> Vec<usize> {
    let mut distinct: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); SENSORS];
    for cycle in cycles {
        for (s, values) in distinct.iter_mut().enumerate() {
            if values.len() < 3 {
                values.insert(cycle.sensors[s].to_bits());
            }
        }
    }
    (0..SENSORS).filter(|&s| distinct[s].len() >= 3).collect()
}

/// One engine, cycles strictly increasing, every value finite.
fn validate_history(history: &[Cycle]) -> Result<(), ModelError> {
    let Some(first) = history.first() else {
        return Err(ModelError::InvalidInput("empty cycle history".into()));
    };
    for pair in history.windows(2) {
        if pair[1].unit != first.unit {
            return Err(ModelError::InvalidInput(format!("history mixes units {} and {}", first.unit, pair[1].unit)));
        }
        if pair[1].cycle <= pair[0].cycle {
            return Err(ModelError::InvalidInput(format!(
                "unit {}: cycle {} follows cycle {}",
                first.unit, pair[1].cycle, pair[0].cycle
            )));
        }
    }
    if let Some(bad) = history.iter().find(|c| c.sensors.iter().any(|v| !v.is_finite())) {
        return Err(ModelError::InvalidInput(format!("unit {} cycle {}: a sensor is not finite", bad.unit, bad.cycle)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmapss::trajectories;
    use crate::metrics::interval_coverage;
    use crate::synthetic::{self, CONSTANT_SENSORS};

    fn fleet() -> (Vec<Trajectory>, Vec<Trajectory>) {
        let mut all = trajectories(&synthetic::degradation_fleet(50, 4));
        let test = all.split_off(40);
        (all, test)
    }

    fn quick() -> RulParams {
        RulParams {
            boost: BoostParams { trees: 150, learning_rate: 0.1, ..RulParams::default().boost },
            ..RulParams::default()
        }
    }

    #[test]
    fn slope_and_quantile_match_hand_computed_values() {
        let mut cycles = synthetic::degradation_fleet(1, 1)[..4].to_vec();
        for (c, y) in cycles.iter_mut().zip([1.0, 3.0, 5.0, 7.0]) {
            c.sensors[2] = y;
        }
        assert!((slope(&cycles, 2) - 2.0).abs() < 1e-12);
        assert_eq!(slope(&cycles[..1], 2), 0.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0, 5.0], 0.5), 3.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.25), 1.25);
    }

    #[test]
    fn learns_synthetic_degradation_and_drops_constant_sensors() {
        let (train, test) = fleet();
        let (model, report) = RulRegressor::train(&train, &quick()).unwrap();
        let mut expected: Vec<String> = CONSTANT_SENSORS.iter().chain(&[5]).map(|s| format!("s{}", s + 1)).collect();
        expected.sort_by_key(|name| name[1..].parse::<u32>().unwrap());
        assert_eq!(report.dropped_sensors, expected);
        assert!(!model.feature_names().iter().any(|name| name.starts_with("s1_")));

        let (mut predicted, mut truth, mut lower, mut upper) = (vec![], vec![], vec![], vec![]);
        for trajectory in &test {
            let predictions = model.rul_along(&trajectory.cycles).unwrap();
            for (cycle, p) in trajectory.cycles.iter().zip(predictions) {
                predicted.push(p);
                truth.push(f64::from(trajectory.last_cycle() - cycle.cycle).min(RUL_CAP_CYCLES));
                let (lo, hi) = model.interval(p);
                lower.push(lo);
                upper.push(hi);
            }
        }
        let mean = truth.iter().sum::<f64>() / truth.len() as f64;
        let constant_rmse = rmse(&vec![mean; truth.len()], &truth);
        let model_rmse = rmse(&predicted, &truth);
        assert!(model_rmse < 0.5 * constant_rmse, "rmse {model_rmse} vs constant {constant_rmse}");
        let coverage = interval_coverage(&lower, &upper, &truth);
        assert!((0.8..=0.98).contains(&coverage), "coverage {coverage}");
    }

    #[test]
    fn a_stream_model_names_its_channels_and_gives_a_monotone_failure_probability() {
        let (train, test) = fleet();
        let params = RulParams { use_age: false, ..quick() };
        let (model, _) = RulRegressor::train(&train, &params).unwrap();
        assert!(model.stream_layout().is_none());
        let channels: Vec<String> = (0..SENSORS).map(|s| format!("c{s}")).collect();
        let model = model.for_stream(StreamLayout { channels: channels.clone(), cycle_ms: 1_000 }).unwrap();
        assert_eq!(model.stream_layout().unwrap().channels, channels);
        let names = model.feature_names();
        assert!(!names.contains(&"cycle".to_string()), "{names:?}");
        assert!(names.iter().all(|n| n.starts_with('c')), "{names:?}");
        // The same features give the same prediction either way in.
        let history = &test[0].cycles[..test[0].cycles.len() - 10];
        let from_history = model.predict(history).unwrap();
        let from_features = model.predict_features(&model.features(history).unwrap()).unwrap();
        assert_eq!(from_history, from_features);
        assert!(model.predict_features(&[1.0]).is_err());
        // P(RUL < 30): high for a short predicted life, low for a long one, 1/2-ish between.
        let p: Vec<f64> = [0.0, 15.0, 30.0, 60.0, 120.0].iter().map(|&r| model.failure_probability(r, 30.0)).collect();
        assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
        assert!(p[0] > 0.8 && p[4] < 0.05, "{p:?}");
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_quantile(0.95) - 1.644_854).abs() < 1e-5);
    }

    #[test]
    fn prediction_is_explained_and_agrees_with_the_fast_path() {
        let (train, test) = fleet();
        let (model, _) = RulRegressor::train(&train, &quick()).unwrap();
        let history = &test[0].cycles[..test[0].cycles.len() - 20];
        let prediction = model.predict(history).unwrap();
        assert!((prediction.rul_cycles - model.rul(history).unwrap()).abs() < 1e-9);
        assert!(prediction.lower_cycles <= prediction.rul_cycles && prediction.rul_cycles <= prediction.upper_cycles);
        let total = prediction.baseline_cycles + prediction.contributions.iter().map(|c| c.contribution).sum::<f64>();
        assert!((total.clamp(0.0, RUL_CAP_CYCLES) - prediction.rul_cycles).abs() < 1e-3);
        // Old history beyond the windows does not matter.
        let recent = &history[history.len() - model.history_cycles()..];
        let recent_prediction = model.rul(recent).unwrap();
        assert!((recent_prediction - prediction.rul_cycles).abs() < 1e-9);
    }

    #[test]
    fn refuses_histories_it_cannot_read() {
        let (train, _) = fleet();
        let (model, _) = RulRegressor::train(&train[..8], &quick()).unwrap();
        assert!(model.rul(&[]).is_err());
        let mut mixed = train[0].cycles[..3].to_vec();
        mixed[2].unit = 99;
        assert!(model.rul(&mixed).unwrap_err().to_string().contains("mixes units"));
        let backwards = [train[0].cycles[1], train[0].cycles[0]];
        assert!(model.rul(&backwards).is_err());
        let mut nan = train[0].cycles[..2].to_vec();
        nan[1].sensors[3] = f64::NAN;
        assert!(model.rul(&nan).is_err());
        assert!(RulRegressor::train(&train[..1], &quick()).is_err());
    }
}
