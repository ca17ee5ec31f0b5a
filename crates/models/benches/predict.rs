//! Predictions per second on one core for both models, each against a baseline measured in the
//! same run: building the feature vector alone (which every prediction has to do), so the ratio
//! is the cost of the trees on top of it. Also the explained prediction (with contributions),
//! which the on-demand `Predict` API serves.
//! Run with `cargo bench -p sm-models --bench predict`.
//!
//! Not criterion (not in the workspace): a fixed-time loop with `black_box`, best of 3, models
//! trained on synthetic data outside the timing (a fresh clone has no data sets).

use std::hint::black_box;
use std::time::Instant;

use sm_models::cmapss::{Cycle, trajectories};
use sm_models::failure::{FailureExample, failure_features};
use sm_models::{
    Artifact, FailureClassifier, FailureParams, Model, ModelCard, RulParams, RulRegressor, TrainingData, load,
    sha256_hex, synthetic,
};

/// Seconds per call of `f`: best of 3 runs, each doubling the repetitions until it lasts `min_secs`.
fn seconds_per_call<R>(min_secs: f64, mut f: impl FnMut() -> R) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        black_box(f());
        let mut calls = 1u64;
        loop {
            let started = Instant::now();
            for _ in 0..calls {
                black_box(f());
            }
            let elapsed = started.elapsed().as_secs_f64();
            if elapsed >= min_secs {
                best = best.min(elapsed / calls as f64);
                break;
            }
            calls *= 2;
        }
    }
    best
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(str::trim)
                .map(String::from)
        })
        .unwrap_or_default();
    format!("{} cores, {cpu}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0))
}

fn report(what: &str, baseline_secs: f64, secs: f64) {
    println!(
        "  {what:<44} {:>12.0} /s   {:>6.2} µs   {:>6.1}× the baseline",
        1.0 / secs,
        secs * 1e6,
        secs / baseline_secs
    );
}

fn main() {
    println!("machine: {}", machine());
    const MIN_SECS: f64 = 0.3;

    // Failure classifier: 10,000 synthetic processes, default parameters.
    let rows = synthetic::ai4i_like(10_000, 1);
    let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
    let (classifier, _) = FailureClassifier::train(&examples, &FailureParams::default()).expect("training");
    let samples: Vec<_> = rows.iter().map(|r| r.sample).collect();
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % samples.len();
        &samples[i]
    };
    let baseline = seconds_per_call(MIN_SECS, || {
        let sample = next();
        sample.validate().map(|()| failure_features(sample))
    });
    let plain = seconds_per_call(MIN_SECS, || classifier.probability(next()));
    let explained = seconds_per_call(MIN_SECS, || classifier.predict(next()));
    println!(
        "\nfailure classifier ({} trees, {} features), predictions per second on one core:",
        classifier.trees(),
        11
    );
    report("baseline: validate + feature vector", baseline, baseline);
    report("probability", baseline, plain);
    report("probability + contributions (predict)", baseline, explained);

    // RUL regressor: 100 synthetic engines, default parameters; histories of the length the
    // model reads, taken at every 7th cycle of every engine.
    let cycles = synthetic::degradation_fleet(100, 2);
    let engines = trajectories(&cycles);
    let (regressor, _) = RulRegressor::train(&engines, &RulParams::default()).expect("training");
    let window = regressor.history_cycles();
    let histories: Vec<&[Cycle]> = engines
        .iter()
        .flat_map(|t| (window..=t.cycles.len()).step_by(7).map(move |end| &t.cycles[end - window..end]))
        .collect();
    let mut j = 0;
    let mut next = || {
        j = (j + 1) % histories.len();
        histories[j]
    };
    let baseline = seconds_per_call(MIN_SECS, || regressor.features(next()));
    let plain = seconds_per_call(MIN_SECS, || regressor.rul(next()));
    let explained = seconds_per_call(MIN_SECS, || regressor.predict(next()));
    println!(
        "\nRUL regressor ({} trees, {} features, {window}-cycle histories), predictions per second on one core:",
        regressor.trees(),
        regressor.feature_names().len()
    );
    report("baseline: validate + window features", baseline, baseline);
    report("RUL", baseline, plain);
    report("RUL + interval + contributions (predict)", baseline, explained);

    // What a hot reload costs: artifact size, and checking + parsing it.
    println!("\nartifacts (JSON): size, and SHA-256 check + parse (what a hot reload pays):");
    for model in [Model::FailureClassifier(classifier), Model::RemainingUsefulLife(regressor)] {
        let kind = model.kind();
        let card = ModelCard {
            name: "bench".into(),
            kind,
            features: model.feature_names(),
            training: TrainingData { source: "synthetic".into(), from: None, to: None, rows: 0, units: 0 },
            metrics: Default::default(),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let bytes = Artifact::new(card, model).and_then(|a| a.to_bytes()).expect("artifact");
        let sha = sha256_hex(&bytes);
        let secs = seconds_per_call(MIN_SECS, || load(&bytes, &sha).expect("load"));
        println!("  {:<24} {:>8.0} KiB   {:>7.1} ms", kind.as_str(), bytes.len() as f64 / 1024.0, secs * 1e3);
    }
}
