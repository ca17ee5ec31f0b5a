//! `smctl eval failure --ai4i FILE` and `smctl eval rul --cmapss FILE`: the failure classifier
//! and the remaining-useful-life regressor trained and scored on public data with the code
//! the trainer and the prediction agent run (`sm_models::evaluate`). No stack needed.
//!
//! Each prints the split (units and rows per side, seed), the held-out figures next to the
//! published ones, the training time and the model's top features. The figures are for one
//! seeded split; `--seed` shows how much they move.
//!
//! `smctl train` ([`crate::train`]) trains through the same functions ([`train_failure`],
//! [`train_rul`]) and prints the same report before it registers the model, so a figure in a
//! model card is one `smctl eval` would print for the same data, split and settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use sm_models::cmapss::Cycle;
use sm_models::evaluate::{self, FailureEvaluation, RulEvaluation};
use sm_models::{BoostParams, FailureClassifier, FailureParams, RulParams, RulRegressor, ai4i, cmapss};

/// Tree-ensemble settings; each defaults to the model's own default.
#[derive(Debug, clap::Args)]
pub struct BoostArgs {
    /// Trees in the ensemble.
    #[arg(long)]
    pub trees: Option<usize>,
    /// Shrinkage of each tree.
    #[arg(long)]
    pub learning_rate: Option<f32>,
    /// Depth of each tree.
    #[arg(long)]
    pub max_depth: Option<usize>,
    /// Minimum hessian sum in a leaf.
    #[arg(long)]
    pub min_leaf_weight: Option<f32>,
    /// L2 penalty on leaf values.
    #[arg(long)]
    pub l2: Option<f32>,
}

impl BoostArgs {
    pub fn apply(&self, defaults: BoostParams) -> BoostParams {
        BoostParams {
            trees: self.trees.unwrap_or(defaults.trees),
            learning_rate: self.learning_rate.unwrap_or(defaults.learning_rate),
            max_depth: self.max_depth.unwrap_or(defaults.max_depth),
            min_leaf_weight: self.min_leaf_weight.unwrap_or(defaults.min_leaf_weight),
            l2: self.l2.unwrap_or(defaults.l2),
            seed: defaults.seed,
        }
    }
}

/// How the failure classifier is split, trained and scored: shared by `smctl eval failure`
/// and `smctl train failure`.
#[derive(Debug, clap::Args)]
pub struct FailureTrainingArgs {
    /// Seed of the split and of the training-side folds.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of units (AI4I: rows) held out for scoring.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    #[command(flatten)]
    pub boost: BoostArgs,
}

/// `smctl eval failure --ai4i FILE`.
#[derive(Debug, clap::Args)]
pub struct FailureArgs {
    /// The AI4I 2020 CSV (UCI layout; the failure-mode flags are read but never used as inputs).
    #[arg(long, value_name = "FILE")]
    pub ai4i: PathBuf,
    #[command(flatten)]
    pub training: FailureTrainingArgs,
    /// Features to list.
    #[arg(long, default_value_t = 8)]
    pub top: usize,
}

/// How the RUL regressor is split, trained, scored and cross-validated: shared by `smctl eval
/// rul` and `smctl train rul`. Unset windows and tree settings take the defaults the caller
/// passes to [`RulTrainingArgs::params`] (C-MAPSS or live-stream ones).
#[derive(Debug, clap::Args)]
pub struct RulTrainingArgs {
    /// Seed of the split, of the training-side folds and of where each held-out engine is cut.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of engines held out for scoring.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Also cross-validate with this many folds by engine (0: skip).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Cycles averaged for each sensor's mean feature (default 30; 10 for `train rul
    /// --simulated`).
    #[arg(long)]
    pub mean_window: Option<usize>,
    /// Cycles over which each sensor's slope is fitted (default 150; 60 for `train rul
    /// --simulated`).
    #[arg(long)]
    pub slope_window: Option<usize>,
    #[command(flatten)]
    pub boost: BoostArgs,
}

impl RulTrainingArgs {
    /// `defaults` with the flags given on the command line applied, seeded by `--seed`.
    pub fn params(&self, defaults: RulParams) -> RulParams {
        RulParams {
            boost: self.boost.apply(defaults.boost.clone()),
            mean_window_cycles: self.mean_window.unwrap_or(defaults.mean_window_cycles),
            slope_window_cycles: self.slope_window.unwrap_or(defaults.slope_window_cycles),
            seed: self.seed,
            ..defaults
        }
    }
}

/// `smctl eval rul --cmapss FILE`.
#[derive(Debug, clap::Args)]
pub struct RulArgs {
    /// A C-MAPSS run-to-failure file (e.g. train_FD001.txt), with or without its header line.
    #[arg(long, value_name = "FILE")]
    pub cmapss: PathBuf,
    #[command(flatten)]
    pub training: RulTrainingArgs,
    /// Features to list.
    #[arg(long, default_value_t = 8)]
    pub top: usize,
}

/// A failure classifier trained on one side of a split and scored on the other.
pub struct FailureRun {
    pub model: FailureClassifier,
    pub evaluation: FailureEvaluation,
    pub params: FailureParams,
    pub training_secs: f64,
}

/// A RUL regressor trained on one side of a split and scored on the other, with the pooled
/// figures of a k-fold cross-validation by unit when one was asked for.
pub struct RulRun {
    pub model: RulRegressor,
    pub evaluation: RulEvaluation,
    pub params: RulParams,
    pub training_secs: f64,
    /// `folds`, the pooled figures and the seconds they took.
    pub cross_validation: Option<(usize, BTreeMap<String, f64>, f64)>,
}

impl RulRun {
    /// The figures a model card records: held-out (`last_cycle_*`, `all_cycles_*`), the
    /// training side's `out_of_fold_rmse`, and the cross-validation's as `cv_*`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut metrics = self.evaluation.metrics.clone();
        metrics.insert("out_of_fold_rmse".into(), self.evaluation.training.out_of_fold_rmse);
        if let Some((folds, cv, _)) = &self.cross_validation {
            metrics.insert("cv_folds".into(), *folds as f64);
            for (name, value) in cv {
                metrics.insert(format!("cv_{name}"), *value);
            }
        }
        metrics.retain(|_, value| value.is_finite());
        metrics
    }
}

/// Reads and parses an AI4I 2020 file.
pub fn read_ai4i(path: &Path) -> anyhow::Result<Vec<ai4i::Row>> {
    let text = read(path)?;
    ai4i::parse(&text).with_context(|| format!("parsing {} as AI4I 2020", path.display()))
}

/// Reads and parses a C-MAPSS file.
pub fn read_cmapss(path: &Path) -> anyhow::Result<Vec<Cycle>> {
    let text = read(path)?;
    cmapss::parse(&text).with_context(|| format!("parsing {} as C-MAPSS", path.display()))
}

/// Splits `rows` by unit, trains the classifier on one side and scores it on the other.
pub fn train_failure(rows: &[ai4i::Row], args: &FailureTrainingArgs) -> anyhow::Result<FailureRun> {
    let defaults = FailureParams::default();
    let params = FailureParams { boost: args.boost.apply(defaults.boost), seed: args.seed, ..defaults };
    let started = Instant::now();
    let (model, evaluation) = evaluate::evaluate_failure(rows, args.test_fraction, args.seed, &params)
        .context("training and scoring the failure classifier")?;
    Ok(FailureRun { model, evaluation, params, training_secs: started.elapsed().as_secs_f64() })
}

/// Splits `cycles` by unit, trains the regressor with `params` on one side and scores it on the
/// other; then cross-validates when `folds` ≥ 2.
pub fn train_rul(cycles: &[Cycle], args: &RulTrainingArgs, params: RulParams) -> anyhow::Result<RulRun> {
    let started = Instant::now();
    let (model, evaluation) = evaluate::evaluate_rul(cycles, args.test_fraction, args.seed, &params)
        .context("training and scoring the RUL regressor")?;
    let training_secs = started.elapsed().as_secs_f64();
    let cross_validation = if args.folds >= 2 {
        let started = Instant::now();
        let cv = evaluate::cross_validate_rul(cycles, args.folds, args.seed, &params)
            .context("cross-validating the RUL regressor")?;
        Some((args.folds, cv, started.elapsed().as_secs_f64()))
    } else {
        None
    };
    Ok(RulRun { model, evaluation, params, training_secs, cross_validation })
}

pub fn failure(args: FailureArgs) -> anyhow::Result<()> {
    let rows = read_ai4i(&args.ai4i)?;
    let failures = rows.iter().filter(|r| r.machine_failure).count();
    println!("AI4I 2020 {}: {} processes, {failures} failures", args.ai4i.display(), rows.len());
    println!("inputs: type, temperatures, speed, torque, tool wear + derived; never TWF/HDF/PWF/OSF/RNF");

    let run = train_failure(&rows, &args.training)?;
    print_failure(&run, &rows);
    println!("  published, sensors only (no failure-mode flags): F1 ≈ 0.69, ROC-AUC ≈ 0.98");
    let (model, evaluation) = (&run.model, &run.evaluation);

    println!("\ntop features (share of split gain):");
    for (name, share) in model.feature_importance().iter().take(args.top) {
        println!("  {name:<26} {share:>6.3}");
    }
    // One explained prediction: the held-out failure the model was surest of.
    let surest = evaluation
        .split
        .test
        .iter()
        .filter(|&&i| rows[i].machine_failure)
        .map(|&i| (i, model.probability(&rows[i].sample).unwrap_or(0.0)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((i, _)) = surest {
        let prediction = model.predict(&rows[i].sample).context("explaining a prediction")?;
        println!(
            "\nexample: held-out UDI {} ({:?}), P(failure) = {:.3} from a baseline of {:.3}; top contributions:",
            rows[i].udi, rows[i].modes, prediction.probability, prediction.baseline
        );
        for c in prediction.contributions.iter().take(4) {
            println!("  {:<26} = {:>10.2}  {:+.3}", c.feature, c.value, c.contribution);
        }
    }
    Ok(())
}

/// The split, the model, the threshold and the held-out figures of a run.
pub fn print_failure(run: &FailureRun, rows: &[ai4i::Row]) {
    let (evaluation, params, training_secs, trees) =
        (&run.evaluation, &run.params, run.training_secs, run.model.trees());
    let split = &evaluation.split;
    let failures_in = |indices: &[usize]| indices.iter().filter(|&&i| rows[i].machine_failure).count();
    println!(
        "split by unit (UDI), seed {}: train {} units / {} rows ({} failures), test {} units / {} rows ({} failures)",
        split.seed,
        split.train_units,
        split.train.len(),
        failures_in(&split.train),
        split.test_units,
        split.test.len(),
        evaluation.test_failures
    );
    let b = &params.boost;
    println!(
        "model: gradient-boosted trees ({trees} trees, depth {}, learning rate {}), trained in {training_secs:.1} s \
         (incl. {} out-of-fold fits)",
        b.max_depth, b.learning_rate, params.threshold_folds
    );
    println!(
        "threshold {:.3}: best F1 over out-of-fold predictions on the training side (F1 {:.3}, ROC-AUC {:.3})",
        evaluation.training.threshold, evaluation.training.out_of_fold_f1, evaluation.training.out_of_fold_roc_auc
    );
    let m = &evaluation.metrics;
    let c = &evaluation.confusion;
    println!("\nheld-out ({} processes):", split.test.len());
    println!("  {:<10} {:>9} {:>9} {:>9}", "", "precision", "recall", "F1");
    println!("  {:<10} {:>9.3} {:>9.3} {:>9.3}", "model", m["test_precision"], m["test_recall"], m["test_f1"]);
    println!("  ROC-AUC {:.4}", m.get("test_roc_auc").copied().unwrap_or(f64::NAN));
    println!(
        "  confusion: {} true alarms, {} false alarms, {} missed, {} true quiet",
        c.true_positives, c.false_positives, c.false_negatives, c.true_negatives
    );
}

pub fn rul(args: RulArgs) -> anyhow::Result<()> {
    let cycles = read_cmapss(&args.cmapss)?;
    let engines = cmapss::trajectories(&cycles).len();
    println!("C-MAPSS {}: {engines} engines, {} cycles (run to failure)", args.cmapss.display(), cycles.len());

    let run = train_rul(&cycles, &args.training, args.training.params(RulParams::default()))?;
    print_rul(&run);
    println!("\ntop features (share of split gain):");
    for (name, share) in run.model.feature_importance().iter().take(args.top) {
        println!("  {name:<26} {share:>6.3}");
    }
    print_cross_validation(&run);
    println!("\npublished FD001 RMSE (NASA test set, last cycle): LSTM 16.1, CNN 12.6");
    println!("(ours: engine-wise split of the training file, each held-out engine cut at a random cycle ≥ 31)");
    Ok(())
}

/// The pooled figures of the run's cross-validation, if it had one.
pub fn print_cross_validation(run: &RulRun) {
    if let Some((folds, cv, secs)) = &run.cross_validation {
        println!("\n{folds}-fold cross-validation by engine (every engine held out once, cut as above; {secs:.0} s):");
        print_rul_metrics(cv, run.params.cap_cycles);
    }
}

/// The split, the features, the model and the held-out figures of a run.
pub fn print_rul(run: &RulRun) {
    let (evaluation, params) = (&run.evaluation, &run.params);
    let split = &evaluation.split;
    println!(
        "split by engine, seed {}: train {} engines / {} cycles, test {} engines / {} cycles",
        split.seed,
        split.train_units,
        split.train.len(),
        split.test_units,
        split.test.len()
    );
    let t = &evaluation.training;
    let features = run.model.feature_names();
    let sensors = (features.len() - usize::from(params.use_age)) / 3;
    let age = if params.use_age { "cycle + " } else { "" };
    match run.model.stream_layout() {
        Some(layout) => println!(
            "features: {age}last, mean over {} and slope over {} cycles of {sensors} channels ({}), cycles of {} ms",
            params.mean_window_cycles,
            params.slope_window_cycles,
            layout.channels.join(" "),
            layout.cycle_ms
        ),
        None => println!(
            "features: {age}last, mean over {} and slope over {} cycles of {sensors} sensors (dropped as constant: {})",
            params.mean_window_cycles,
            params.slope_window_cycles,
            t.dropped_sensors.join(" ")
        ),
    }
    let b = &params.boost;
    println!(
        "model: gradient-boosted trees ({} trees, depth {}, learning rate {}), RUL capped at {}, trained in \
         {:.1} s (incl. {} out-of-fold fits for the {:.0} % interval; out-of-fold RMSE {:.2})",
        run.model.trees(),
        b.max_depth,
        b.learning_rate,
        params.cap_cycles,
        run.training_secs,
        params.calibration_folds,
        100.0 * params.interval_coverage,
        t.out_of_fold_rmse
    );
    println!("\nheld-out engines:");
    print_rul_metrics(&evaluation.metrics, params.cap_cycles);
}

fn print_rul_metrics(m: &BTreeMap<String, f64>, cap_cycles: f64) {
    println!("  {:<34} {:>8} {:>8} {:>12} {:>9}", "", "RMSE", "MAE", "PHM08", "coverage");
    println!(
        "  {:<34} {:>8.2} {:>8.2} {:>12.1} {:>9.3}",
        format!("last cycle ({} engines, cut)", m["engines"]),
        m["last_cycle_rmse"],
        m["last_cycle_mae"],
        m["last_cycle_phm08"],
        m["last_cycle_coverage"]
    );
    println!(
        "  {:<34} {:>8.2} {:>8.2} {:>12.1} {:>9.3}",
        format!("all cycles ({})", m["all_cycles"]),
        m["all_cycles_rmse"],
        m["all_cycles_mae"],
        m["all_cycles_phm08"],
        m["all_cycles_coverage"]
    );
    println!("  (PHM08 per cycle on all cycles: {:.2}; truths capped at {cap_cycles})", m["all_cycles_phm08_mean"]);
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
