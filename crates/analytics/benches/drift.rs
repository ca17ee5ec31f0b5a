//! Throughput of the drift code on one core, each against a baseline measured in the same run:
//! `DriftMonitor::observe` (default config, one reading per second of event time) against a
//! plain summing loop and Page–Hinkley alone over the same readings; two-sample KS and PSI of
//! 2 × N values against sorting the same two vectors (which both have to do).
//! Run with `cargo bench -p sm-analytics --bench drift`.
//!
//! Not criterion (not in the workspace): a fixed-time loop with `black_box`, best of 3 for the
//! stream, the setup (data generation) outside the timing.

use std::hint::black_box;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sm_analytics::drift::{DriftConfig, DriftMonitor, KsMethod, PageHinkley, ks_two_sample_with, psi};

/// Standard normal draws by Box–Muller.
fn gaussians(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

/// Seconds per call of `f`, doubling the repetitions until a run lasts `min_secs`.
fn seconds_per_call<R>(min_secs: f64, mut f: impl FnMut() -> R) -> f64 {
    black_box(f());
    let mut calls = 1u64;
    loop {
        let started = Instant::now();
        for _ in 0..calls {
            black_box(f());
        }
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed >= min_secs {
            return elapsed / calls as f64;
        }
        calls *= 2;
    }
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

fn sort_both(a: &[f64], b: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable_by(f64::total_cmp);
    b.sort_unstable_by(f64::total_cmp);
    (a, b)
}

fn main() {
    println!("machine: {}", machine());

    // A day-long slow drift (4 σ) repeated: the monitor collects, checks every minute, confirms
    // and re-bases, as in production at 1 Hz.
    const READINGS: usize = 2_000_000;
    let noise = gaussians(1, READINGS);
    let readings: Vec<(i64, f64)> = noise
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let day = (i % 86_400) as f64 / 86_400.0;
            (1_704_067_200_000 + i as i64 * 1000, 70.0 + 0.8 * (z + 4.0 * day))
        })
        .collect();
    let stream = |f: &mut dyn FnMut(i64, f64)| {
        let started = Instant::now();
        for &(ts, value) in &readings {
            f(ts, value);
        }
        started.elapsed().as_secs_f64()
    };
    let best_of_3 = |run: &mut dyn FnMut() -> f64| (0..3).map(|_| run()).fold(f64::INFINITY, f64::min);
    let sum_secs = best_of_3(&mut || {
        let mut sum = 0.0;
        let secs = stream(&mut |ts, value| sum += black_box(value) + ts as f64 * 1e-18);
        black_box(sum);
        secs
    });
    let ph_secs = best_of_3(&mut || {
        let mut ph = PageHinkley::new(0.5, 50.0, 200);
        let secs = stream(&mut |_, value| {
            if ph.observe(black_box(value)) {
                ph.reset();
            }
        });
        black_box(ph);
        secs
    });
    let mut findings = 0;
    let monitor_secs = best_of_3(&mut || {
        let mut monitor = DriftMonitor::new(DriftConfig::default());
        findings = 0;
        let secs = stream(&mut |ts, value| findings += usize::from(monitor.observe(ts, black_box(value)).is_some()));
        black_box(monitor);
        secs
    });
    let rate = |secs: f64| READINGS as f64 / secs;
    println!("\nstream of {READINGS} readings, 1 per second of event time, default DriftConfig ({findings} findings)");
    println!("  baseline: summing loop              {:>14.0} readings/s", rate(sum_secs));
    println!("  baseline: PageHinkley::observe      {:>14.0} readings/s", rate(ph_secs));
    println!("  DriftMonitor::observe               {:>14.0} readings/s", rate(monitor_secs));
    println!(
        "  ratio monitor / summing loop: {:.1}x slower; monitor / Page–Hinkley: {:.1}x slower",
        monitor_secs / sum_secs,
        monitor_secs / ph_secs
    );

    println!("\ntwo samples of N values each (b shifted by 0.1 σ), per call; values/s counts both samples");
    println!(
        "  {:>7} {:>22} {:>22} {:>22} {:>22}",
        "N", "sort both (baseline)", "KS auto", "KS auto, N and N-1", "PSI (10 bins)"
    );
    for n in [100usize, 1_000, 10_000, 100_000] {
        let a = gaussians(2, n);
        let b: Vec<f64> = gaussians(3, n).iter().map(|z| z + 0.1).collect();
        let b_short = &b[..n - 1];
        let budget = 0.3;
        let sort = seconds_per_call(budget, || sort_both(&a, &b));
        let ks = seconds_per_call(budget, || ks_two_sample_with(&a, &b, KsMethod::Auto));
        let ks_unequal = seconds_per_call(budget, || ks_two_sample_with(&a, b_short, KsMethod::Auto));
        let psi_secs = seconds_per_call(budget, || psi(&a, &b, 10));
        let cell = |secs: f64| format!("{:>9.1} µs {:>6.1}M/s", secs * 1e6, 2.0 * n as f64 / secs / 1e6);
        println!("  {n:>7} {:>22} {:>22} {:>22} {:>22}", cell(sort), cell(ks), cell(ks_unequal), cell(psi_secs));
        println!(
            "  {:>7} ratio to sorting: KS {:.2}x, KS N/N-1 {:.2}x, PSI {:.2}x",
            "",
            ks / sort,
            ks_unequal / sort,
            psi_secs / sort
        );
    }
    println!(
        "\nKS auto is exact up to 10 000 values a side: O(N) for equal sizes, O(D·N1·N2) otherwise; asymptotic above."
    );
}
