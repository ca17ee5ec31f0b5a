//! Drift: is a sensor's recent distribution still the one it had?
//!
//! Two-sample Kolmogorov–Smirnov ([`ks_two_sample`]) and the Population Stability Index
//! ([`psi`]) compare a reference window with a sliding current window; Page–Hinkley
//! ([`PageHinkley`]) watches the mean reading by reading and catches steps quickly.
//! [`DriftMonitor`] ties them together per sensor over event time, with hysteresis and
//! re-basing so that one drift is one finding. Its state is small, bounded and serialisable,
//! because the drift agent checkpoints it on every commit.
//!
//! Deliberately not here: clocks, I/O, which sensors to watch, or what a drift means for an
//! asset. The agent decides that; the query service calls [`check`] on projected history.
//!
//! Why KS *and* PSI: sensor noise is autocorrelated, so on windows of hundreds of readings the KS
//! p-value becomes tiny for shifts nobody cares about. PSI measures the size of the shift, KS its
//! significance; a drift needs both.

mod kolmogorov;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Result of a two-sided two-sample Kolmogorov–Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsTest {
    /// Largest distance between the two empirical CDFs, in [0, 1].
    pub statistic: f64,
    /// Probability of a distance at least this large if both samples came from one distribution.
    pub p_value: f64,
}

/// How [`ks_two_sample_with`] computes the p-value; the names and rules are SciPy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KsMethod {
    /// Exact when both samples have at most 10 000 values, asymptotic otherwise.
    #[default]
    Auto,
    /// Exact null distribution (lattice paths); falls back to asymptotic when that is not
    /// computable, as SciPy does. O(D·n1·n2) time for unequal sizes, O(n) for equal ones.
    Exact,
    /// Kolmogorov's one-sample distribution at `n = round(n1·n2 / (n1 + n2))` (`kstwo`).
    Asymptotic,
}

/// Above this sample size `Auto` stops computing the exact distribution (SciPy's `MAX_AUTO_N`).
const KS_MAX_AUTO_N: usize = 10_000;

/// Two-sample Kolmogorov–Smirnov, two-sided. Agrees with SciPy 1.17's
/// `scipy.stats.ks_2samp(a, b, method="auto", nan_policy="omit")` to ~1e-12: exact p-value when
/// both samples have at most 10 000 values, asymptotic (`kstwo`) otherwise. NaNs are ignored;
/// an empty sample gives `D = 0, p = 1` (no evidence of a difference), where SciPy raises.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> KsTest {
    ks_two_sample_with(a, b, KsMethod::Auto)
}

/// [`ks_two_sample`] with an explicit choice of p-value computation.
pub fn ks_two_sample_with(a: &[f64], b: &[f64], method: KsMethod) -> KsTest {
    let a = sorted(a.iter().copied().filter(|v| !v.is_nan()));
    let b = sorted(b.iter().copied().filter(|v| !v.is_nan()));
    ks_sorted(&a, &b, method)
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_unstable_by(f64::total_cmp);
    values
}

/// KS on two sorted, NaN-free samples.
fn ks_sorted(a: &[f64], b: &[f64], method: KsMethod) -> KsTest {
    if a.is_empty() || b.is_empty() {
        return KsTest { statistic: 0.0, p_value: 1.0 };
    }
    let (n1, n2) = (a.len() as u64, b.len() as u64);
    let d = ks_statistic(a, b);
    let exact = match method {
        KsMethod::Auto => a.len().max(b.len()) <= KS_MAX_AUTO_N,
        KsMethod::Asymptotic => false,
        // SciPy gives up on the exact method when lcm(n1, n2) does not fit an i32.
        KsMethod::Exact => {
            let g = gcd(n1, n2);
            ((n1 / g) as f64) < f64::from(i32::MAX) / (n2 / g) as f64
        }
    };
    let d = if exact {
        match kolmogorov::two_sample_exact(n1, n2, d) {
            Ok((statistic, p_value)) => return KsTest { statistic, p_value },
            Err(snapped) => snapped,
        }
    } else {
        d
    };
    KsTest { statistic: d, p_value: kolmogorov::two_sample_asymptotic(n1, n2, d) }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `max |F_a - F_b|` over all values, with the CDFs evaluated as SciPy does
/// (`searchsorted(side="right") / n`), so ties and the floating-point result match.
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let (mut max_diff, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => unreachable!("loop condition"),
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_diff = max_diff.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_s = (-min_diff).clamp(0.0, 1.0);
    if min_s > max_diff { min_s } else { max_diff }
}

/// Proportion used for a bin that holds no value, so the logarithm stays finite. Replacing an
/// empty bin's 0 by 1e-4 (without renormalising) is what the widely copied `calculate_psi`
/// (mwburke/population-stability-index) does.
pub const PSI_EMPTY_BIN_PROPORTION: f64 = 1e-4;

/// Population Stability Index of `current` against `reference`:
/// `Σ (c_i - r_i) · ln(c_i / r_i)` over `bins` quantile bins of the reference.
///
/// The `bins - 1` inner edges are the reference's quantiles `k/bins` (linear interpolation,
/// NumPy's default), deduplicated when ties make them coincide; the first and last bins are
/// open-ended, so current values outside the reference range still count; bins are closed on
/// the right (`(e_{k-1}, e_k]`, as `pandas.qcut`); an empty bin's proportion becomes
/// [`PSI_EMPTY_BIN_PROPORTION`]. Non-finite values are ignored; an empty sample or fewer than
/// two bins gives 0. Rule of thumb: < 0.1 stable, 0.1–0.2 moderate, > 0.2 significant shift.
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> f64 {
    let reference = sorted(reference.iter().copied().filter(|v| v.is_finite()));
    let current: Vec<f64> = current.iter().copied().filter(|v| v.is_finite()).collect();
    psi_sorted_reference(&reference, &current, bins)
}

/// PSI with a sorted, finite reference and a finite current sample (any order).
fn psi_sorted_reference(reference: &[f64], current: &[f64], bins: usize) -> f64 {
    if reference.is_empty() || current.is_empty() || bins < 2 {
        return 0.0;
    }
    let mut edges: Vec<f64> = (1..bins).map(|k| quantile_linear(reference, k as f64 / bins as f64)).collect();
    edges.dedup();
    let mut reference_counts = Vec::with_capacity(edges.len() + 1);
    let mut below = 0;
    for edge in &edges {
        let upto = reference.partition_point(|v| v <= edge);
        reference_counts.push(upto - below);
        below = upto;
    }
    reference_counts.push(reference.len() - below);
    let mut current_counts = vec![0usize; edges.len() + 1];
    for v in current {
        current_counts[edges.partition_point(|edge| edge < v)] += 1;
    }
    let proportion = |count: usize, total: usize| match count {
        0 => PSI_EMPTY_BIN_PROPORTION,
        _ => count as f64 / total as f64,
    };
    reference_counts
        .iter()
        .zip(&current_counts)
        .map(|(&r, &c)| {
            let (r, c) = (proportion(r, reference.len()), proportion(c, current.len()));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Quantile `q` of a sorted sample by linear interpolation, computed as NumPy's
/// `np.quantile(method="linear")` does (including its two-sided lerp), so edges match exactly.
fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    let position = (sorted.len() - 1) as f64 * q;
    let below = position.floor();
    let t = position - below;
    let below = below as usize;
    let (a, b) = (sorted[below], sorted[(below + 1).min(sorted.len() - 1)]);
    let diff = b - a;
    if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t }
}

/// Page–Hinkley test for a change in mean, in both directions: the streaming detector, which
/// reacts to a step within tens of readings where windowed tests need a window's worth.
///
/// With `m_t` the running mean since the last reset, it keeps Page's cumulative sums
/// `up = max(0, up + x - m_t - delta)` and `down = max(0, down - (x - m_t) - delta)` and alarms
/// when either exceeds `lambda`. `delta` is the change too small to matter, `lambda` trades
/// detection delay against false alarms (under i.i.d. noise of std σ, roughly
/// `exp(-2·delta·lambda/σ²)` per excursion; autocorrelated noise needs a larger `lambda`).
/// Once alarmed it keeps returning `true` until [`PageHinkley::reset`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    delta: f64,
    lambda: f64,
    /// Readings needed after a reset before an alarm: the running mean must settle first.
    min_samples: usize,
    n: u64,
    mean: f64,
    up: f64,
    down: f64,
}

impl PageHinkley {
    /// `delta` and `lambda` are in the units of the values fed to [`PageHinkley::observe`].
    pub fn new(delta: f64, lambda: f64, min_samples: usize) -> Self {
        Self { delta, lambda, min_samples, n: 0, mean: 0.0, up: 0.0, down: 0.0 }
    }

    /// Feeds one value; `true` when the mean has changed (non-finite values are skipped).
    pub fn observe(&mut self, x: f64) -> bool {
        if !x.is_finite() {
            return self.alarmed();
        }
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        let deviation = x - self.mean;
        self.up = (self.up + deviation - self.delta).max(0.0);
        self.down = (self.down - deviation - self.delta).max(0.0);
        self.alarmed()
    }

    fn alarmed(&self) -> bool {
        self.n >= self.min_samples as u64 && self.statistic() > self.lambda
    }

    /// The larger of the two cumulative sums: what is compared with `lambda`.
    pub fn statistic(&self) -> f64 {
        self.up.max(self.down)
    }

    /// Forgets everything seen: the next value starts a new mean.
    pub fn reset(&mut self) {
        *self = Self::new(self.delta, self.lambda, self.min_samples);
    }
}

/// Settings of a [`DriftMonitor`]. Windows are in event time, so replaying history gives the
/// same findings as the live stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Event-time length of the first reference window, taken from the sensor's first readings.
    pub reference_ms: i64,
    /// Event-time length of the sliding current window (and of the reference after a re-base).
    pub current_ms: i64,
    /// Values each window needs before it is tested, and the reference before it is trusted.
    pub min_samples: usize,
    /// Cap on the values kept per window (bounded state): beyond it the window keeps every 2nd,
    /// 4th, ... reading, deterministically, so it holds between half the cap and the cap.
    pub max_window_values: usize,
    /// Run KS/PSI every this many readings (the tests cost a sort of both windows).
    pub check_every: usize,
    /// KS p-value below which the two windows differ significantly.
    pub ks_alpha: f64,
    /// PSI above which the shift is large enough to matter (0.2: the usual "significant shift").
    pub psi_threshold: f64,
    /// Quantile bins of the reference for PSI.
    pub psi_bins: usize,
    /// Consecutive failing checks before a drift is confirmed: one noisy check is not a drift.
    pub confirmations: usize,
    /// Page–Hinkley magnitude tolerance, in standard deviations of the reference.
    pub ph_delta: f64,
    /// Page–Hinkley alarm threshold, in standard deviations of the reference.
    pub ph_lambda: f64,
}

impl Default for DriftConfig {
    /// For a sensor reporting about once a second: a one-hour reference, a 15-minute current
    /// window (~450 kept values each with the 512 cap), a check every minute and three
    /// confirmations, so a drift is confirmed about three minutes after it becomes visible.
    /// Page–Hinkley (0.5 σ, 50 σ) finds a 3 σ step in about 20 readings and almost never fires
    /// on i.i.d. noise. Sparser sensors need longer windows (at least `min_samples` readings).
    fn default() -> Self {
        Self {
            reference_ms: 60 * 60 * 1000,
            current_ms: 15 * 60 * 1000,
            min_samples: 200,
            max_window_values: 512,
            check_every: 60,
            ks_alpha: 0.01,
            psi_threshold: 0.2,
            psi_bins: 10,
            confirmations: 3,
            ph_delta: 0.5,
            ph_lambda: 50.0,
        }
    }
}

/// What is wrong with a [`DriftConfig`] or with a restored [`DriftMonitor`] state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// A setting is out of range; `field` is its name in [`DriftConfig`].
    #[error("invalid drift setting {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: &'static str },
    /// A checkpoint does not describe a possible monitor (surfaces as a serde error on restore).
    #[error("corrupt drift state: {0}")]
    CorruptState(&'static str),
}

impl DriftConfig {
    /// Rejects settings under which the monitor could never test or would test nonsense; names
    /// the setting. Run once at startup (a monitor with a bad config never panics, it just
    /// never finds anything).
    pub fn validate(&self) -> Result<(), DriftError> {
        let invalid = |field, reason| Err(DriftError::InvalidConfig { field, reason });
        if self.reference_ms <= 0 {
            return invalid("reference_ms", "must be positive");
        }
        if self.current_ms <= 0 {
            return invalid("current_ms", "must be positive");
        }
        if self.min_samples < 2 {
            return invalid("min_samples", "must be at least 2");
        }
        if self.min_samples > self.max_window_values / 2 {
            return invalid("min_samples", "must be at most half of max_window_values (downsampling keeps half)");
        }
        if self.check_every == 0 {
            return invalid("check_every", "must be at least 1");
        }
        if !(self.ks_alpha > 0.0 && self.ks_alpha < 1.0) {
            return invalid("ks_alpha", "must be in (0, 1)");
        }
        if !(self.psi_threshold.is_finite() && self.psi_threshold >= 0.0) {
            return invalid("psi_threshold", "must be a non-negative number");
        }
        if self.psi_bins < 2 {
            return invalid("psi_bins", "must be at least 2");
        }
        if self.confirmations == 0 {
            return invalid("confirmations", "must be at least 1");
        }
        if !(self.ph_delta.is_finite() && self.ph_delta >= 0.0) {
            return invalid("ph_delta", "must be a non-negative number");
        }
        if !(self.ph_lambda.is_finite() && self.ph_lambda > 0.0) {
            return invalid("ph_lambda", "must be positive");
        }
        Ok(())
    }
}

/// Which detector confirmed a drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriftTest {
    /// KS p-value below `ks_alpha` and PSI above `psi_threshold`, `confirmations` times in a row.
    KsPsi,
    /// Page–Hinkley's cumulative sum exceeded `ph_lambda`.
    PageHinkley,
}

impl DriftTest {
    /// Stable name for events, metrics labels and the API.
    pub fn name(self) -> &'static str {
        match self {
            DriftTest::KsPsi => "ks_psi",
            DriftTest::PageHinkley => "page_hinkley",
        }
    }
}

/// Where a window's values come from in event time, and how many it holds: what a finding
/// reports so that someone can look at the same data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowBounds {
    /// Event time of the window's first reading.
    pub start_ms: i64,
    /// Event time of the window's last reading.
    pub end_ms: i64,
    /// Values held (after downsampling): the sample size the tests used.
    pub size: usize,
}

/// A confirmed drift: reported once, after which the monitor re-bases.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftFinding {
    pub test: DriftTest,
    /// KS D for [`DriftTest::KsPsi`]; the Page–Hinkley cumulative sum (in reference standard
    /// deviations) for [`DriftTest::PageHinkley`].
    pub statistic: f64,
    /// KS p-value ([`DriftTest::KsPsi`] only).
    pub p_value: Option<f64>,
    /// PSI ([`DriftTest::KsPsi`] only).
    pub psi: Option<f64>,
    /// The reference the drift is measured against.
    pub reference: WindowBounds,
    /// The current window when the drift was confirmed.
    pub current: WindowBounds,
}

/// On-demand verdict on two samples (see [`check`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftCheck {
    /// KS of `current` against `reference` (SciPy's `auto` method).
    pub ks: KsTest,
    /// PSI of `current` against `reference` with `psi_bins` bins.
    pub psi: f64,
    /// `p < ks_alpha` and `psi > psi_threshold`, with at least `min_samples` values on each side.
    pub drifted: bool,
}

/// On-demand check of two samples with the monitor's rules (used by the query API's
/// `CheckDrift` on projected history): KS (`Auto` method) and PSI, both required, and each
/// sample needs `min_samples` values (after dropping NaN) for `drifted` to be true.
pub fn check(reference: &[f64], current: &[f64], config: &DriftConfig) -> DriftCheck {
    let reference = sorted(reference.iter().copied().filter(|v| !v.is_nan()));
    let current = sorted(current.iter().copied().filter(|v| !v.is_nan()));
    let ks = ks_sorted(&reference, &current, KsMethod::Auto);
    let finite = |values: &[f64]| values.iter().copied().filter(|v| v.is_finite()).collect::<Vec<_>>();
    let psi = psi_sorted_reference(&finite(&reference), &finite(&current), config.psi_bins);
    let enough = reference.len() >= config.min_samples && current.len() >= config.min_samples;
    DriftCheck { ks, psi, drifted: enough && ks.p_value < config.ks_alpha && psi > config.psi_threshold }
}

/// Per-sensor drift monitor over event time.
///
/// Lifecycle: the first `reference_ms` of readings become the reference. From then on every
/// reading slides the current window (the last `current_ms`) and feeds Page–Hinkley (in units
/// of the reference's standard deviation), and every `check_every` readings KS + PSI compare
/// the windows. A drift is confirmed by Page–Hinkley at once, or by `confirmations` failing
/// KS/PSI checks in a row; the monitor then reports one [`DriftFinding`] and re-bases: the
/// reference becomes the current window as soon as that window holds only readings that came
/// after the finding (so a step is not straddled and found twice), Page–Hinkley restarts, and
/// nothing is tested meanwhile.
///
/// State is bounded by `2 · max_window_values` values whatever the reading rate, and serialises
/// compactly (timestamps as deltas) for the agent's checkpoint; a restored monitor continues
/// exactly as the original (serde_json with `float_roundtrip`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftMonitor {
    config: DriftConfig,
    /// Newest event time seen: readings at or before `newest_ms - current_ms` are ignored.
    newest_ms: Option<i64>,
    baseline: Baseline,
    current: SlidingWindow,
    page_hinkley: PageHinkley,
    /// Readings since the last KS/PSI check.
    since_check: usize,
    /// Consecutive failing KS/PSI checks (the hysteresis).
    failing: usize,
}

/// Where the monitor stands with its reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Baseline {
    /// Collecting the first reference, from `start_ms` for `reference_ms`.
    Collecting {
        start_ms: i64,
        end_ms: i64,
        sample: Downsampled,
    },
    /// A drift was found at `after_ms`; waiting for a current window made only of later readings.
    Rebasing {
        after_ms: i64,
    },
    Ready(Reference),
}

/// A frozen reference window: sorted for KS and PSI, with the moments Page–Hinkley scales by.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reference {
    bounds: WindowBounds,
    mean: f64,
    std: f64,
    sorted: Vec<f64>,
}

impl Reference {
    fn new(bounds: WindowBounds, mut values: Vec<f64>) -> Self {
        values.sort_unstable_by(f64::total_cmp);
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0).max(1.0);
        Self { bounds: WindowBounds { size: values.len(), ..bounds }, mean, std: var.sqrt(), sorted: values }
    }
}

/// A growing sample that keeps every `stride`-th value and doubles the stride (dropping every
/// other kept value) when it would exceed the cap: deterministic, evenly spread in time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Downsampled {
    stride: u64,
    seen: u64,
    values: Vec<f64>,
}

impl Downsampled {
    fn new() -> Self {
        Self { stride: 1, seen: 0, values: Vec::new() }
    }

    fn push(&mut self, value: f64, cap: usize) {
        if self.seen.is_multiple_of(self.stride) {
            self.values.push(value);
            if self.values.len() > cap {
                keep_even_positions(&mut self.values);
                self.stride *= 2;
            }
        }
        self.seen += 1;
    }
}

fn keep_even_positions<T>(values: &mut Vec<T>) {
    let mut position = 0;
    values.retain(|_| {
        position += 1;
        position % 2 == 1
    });
}

/// The current window: readings in `(newest - current_ms, newest]`, in event-time order,
/// downsampled by a stride that doubles when the window exceeds the cap and halves when the
/// rate drops so it holds less than a quarter of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "SlidingWindowState", try_from = "SlidingWindowState")]
struct SlidingWindow {
    stride: u64,
    seen: u64,
    readings: VecDeque<(i64, f64)>,
}

/// Checkpoint form of [`SlidingWindow`]: timestamps as deltas from the first, which are a few
/// digits instead of thirteen.
#[derive(Serialize, Deserialize)]
struct SlidingWindowState {
    stride: u64,
    seen: u64,
    first_ms: i64,
    delta_ms: Vec<i64>,
    values: Vec<f64>,
}

impl From<SlidingWindow> for SlidingWindowState {
    fn from(window: SlidingWindow) -> Self {
        let first_ms = window.readings.front().map_or(0, |r| r.0);
        let mut previous = first_ms;
        let delta_ms = window
            .readings
            .iter()
            .map(|&(ts, _)| {
                let delta = ts - previous;
                previous = ts;
                delta
            })
            .collect();
        let values = window.readings.iter().map(|r| r.1).collect();
        Self { stride: window.stride, seen: window.seen, first_ms, delta_ms, values }
    }
}

impl TryFrom<SlidingWindowState> for SlidingWindow {
    type Error = DriftError;

    fn try_from(state: SlidingWindowState) -> Result<Self, DriftError> {
        if state.delta_ms.len() != state.values.len() {
            return Err(DriftError::CorruptState("current window timestamps and values differ in length"));
        }
        if state.stride == 0 {
            return Err(DriftError::CorruptState("current window stride is zero"));
        }
        let mut ts = state.first_ms;
        let mut readings = VecDeque::with_capacity(state.values.len());
        for (&delta, &value) in state.delta_ms.iter().zip(&state.values) {
            ts = match ts.checked_add(delta) {
                Some(next) if delta >= 0 => next,
                _ => return Err(DriftError::CorruptState("current window timestamps out of order")),
            };
            readings.push_back((ts, value));
        }
        Ok(Self { stride: state.stride, seen: state.seen, readings })
    }
}

impl SlidingWindow {
    fn new() -> Self {
        Self { stride: 1, seen: 0, readings: VecDeque::new() }
    }

    /// Adds a reading if the stride selects it, or if the window is empty (after a gap), so a
    /// window that has seen a reading is never empty.
    fn push(&mut self, ts_ms: i64, value: f64, cap: usize) {
        if self.readings.is_empty() || self.seen.is_multiple_of(self.stride) {
            // In order in the common case; a slightly late reading is inserted in place.
            let at = self.readings.partition_point(|r| r.0 <= ts_ms);
            self.readings.insert(at, (ts_ms, value));
            if self.readings.len() > cap {
                let mut kept: Vec<_> = self.readings.drain(..).collect();
                keep_even_positions(&mut kept);
                self.readings.extend(kept);
                self.stride *= 2;
            }
        }
        self.seen += 1;
    }

    /// Drops readings at or before `cutoff_ms`; relaxes the stride if the window got sparse.
    fn evict(&mut self, cutoff_ms: i64, cap: usize) {
        while self.readings.front().is_some_and(|r| r.0 <= cutoff_ms) {
            self.readings.pop_front();
        }
        if self.stride > 1 && self.readings.len() < cap / 4 {
            self.stride /= 2;
        }
    }

    fn bounds(&self) -> Option<WindowBounds> {
        let (first, last) = (self.readings.front()?, self.readings.back()?);
        Some(WindowBounds { start_ms: first.0, end_ms: last.0, size: self.readings.len() })
    }

    fn sorted_values(&self) -> Vec<f64> {
        sorted(self.readings.iter().map(|r| r.1))
    }
}

impl DriftMonitor {
    /// A monitor with no history: its first `reference_ms` of readings become the reference.
    /// The config travels with the checkpoint; validate it first ([`DriftConfig::validate`]).
    pub fn new(config: DriftConfig) -> Self {
        Self {
            config,
            newest_ms: None,
            baseline: Baseline::Collecting { start_ms: 0, end_ms: 0, sample: Downsampled::new() },
            current: SlidingWindow::new(),
            page_hinkley: PageHinkley::new(config.ph_delta, config.ph_lambda, config.min_samples),
            since_check: 0,
            failing: 0,
        }
    }

    /// The settings this monitor runs with (restored with it from a checkpoint).
    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    /// Feeds one reading (event time ms, value). Returns a finding once per confirmed drift
    /// (see the type's docs for hysteresis and re-basing). Non-finite values, and readings at or
    /// before the start of the current window (`newest - current_ms`), are ignored.
    pub fn observe(&mut self, ts_ms: i64, value: f64) -> Option<DriftFinding> {
        if !value.is_finite() {
            return None;
        }
        let cap = self.config.max_window_values.max(2);
        let min_samples = self.config.min_samples.max(1);
        let first = self.newest_ms.is_none();
        let newest_ms = self.newest_ms.map_or(ts_ms, |newest| newest.max(ts_ms));
        let cutoff_ms = newest_ms.saturating_sub(self.config.current_ms);
        if ts_ms <= cutoff_ms {
            return None;
        }
        self.newest_ms = Some(newest_ms);
        self.current.evict(cutoff_ms, cap);
        self.current.push(ts_ms, value, cap);
        // From here on the current window is not empty (push keeps a reading into an empty
        // window), which the `expect`s on its bounds below rely on.

        match &mut self.baseline {
            Baseline::Collecting { start_ms, end_ms, sample } => {
                if first {
                    (*start_ms, *end_ms) = (ts_ms, ts_ms);
                }
                let done = ts_ms >= start_ms.saturating_add(self.config.reference_ms);
                if !done || sample.values.len() < min_samples {
                    if ts_ms >= *start_ms {
                        sample.push(value, cap);
                        *end_ms = (*end_ms).max(ts_ms);
                    }
                    return None;
                }
                let bounds = WindowBounds { start_ms: *start_ms, end_ms: *end_ms, size: 0 };
                let values = std::mem::take(&mut sample.values);
                self.rebase_onto(Reference::new(bounds, values));
                // This reading is the first after the reference: fall through to the tests.
            }
            Baseline::Rebasing { after_ms } => {
                let after_ms = *after_ms;
                let clean = self.current.readings.front().is_some_and(|r| r.0 > after_ms);
                if clean && self.current.readings.len() >= min_samples {
                    let bounds = self.current.bounds().expect("window is not empty");
                    let values = self.current.readings.iter().map(|r| r.1).collect();
                    self.rebase_onto(Reference::new(bounds, values));
                }
                // Either still waiting, or the reference *is* the current window: nothing to test.
                return None;
            }
            Baseline::Ready(_) => {}
        }
        let Baseline::Ready(reference) = &self.baseline else { unreachable!("handled above") };

        if reference.std > 0.0 && self.page_hinkley.observe((value - reference.mean) / reference.std) {
            let finding = DriftFinding {
                test: DriftTest::PageHinkley,
                statistic: self.page_hinkley.statistic(),
                p_value: None,
                psi: None,
                reference: reference.bounds,
                current: self.current.bounds().expect("window holds this reading"),
            };
            self.start_rebase(newest_ms);
            return Some(finding);
        }

        self.since_check += 1;
        if self.since_check < self.config.check_every.max(1) {
            return None;
        }
        self.since_check = 0;
        if self.current.readings.len() < min_samples || reference.sorted.len() < min_samples {
            return None;
        }
        let current = self.current.sorted_values();
        // PSI first: it is the cheaper test, and both must fail for a drift.
        let psi = psi_sorted_reference(&reference.sorted, &current, self.config.psi_bins);
        let ks = (psi > self.config.psi_threshold).then(|| ks_sorted(&reference.sorted, &current, KsMethod::Auto));
        let Some(ks) = ks.filter(|ks| ks.p_value < self.config.ks_alpha) else {
            self.failing = 0;
            return None;
        };
        self.failing += 1;
        if self.failing < self.config.confirmations {
            return None;
        }
        let finding = DriftFinding {
            test: DriftTest::KsPsi,
            statistic: ks.statistic,
            p_value: Some(ks.p_value),
            psi: Some(psi),
            reference: reference.bounds,
            current: self.current.bounds().expect("window holds this reading"),
        };
        self.start_rebase(newest_ms);
        Some(finding)
    }

    fn start_rebase(&mut self, after_ms: i64) {
        self.baseline = Baseline::Rebasing { after_ms };
        self.failing = 0;
        self.since_check = 0;
        self.page_hinkley.reset();
    }

    fn rebase_onto(&mut self, reference: Reference) {
        self.baseline = Baseline::Ready(reference);
        self.failing = 0;
        self.since_check = 0;
        self.page_hinkley.reset();
    }

    /// The reference the current window is compared with; `None` while the first one is being
    /// collected or while re-basing after a finding.
    pub fn reference_bounds(&self) -> Option<WindowBounds> {
        match &self.baseline {
            Baseline::Ready(reference) => Some(reference.bounds),
            _ => None,
        }
    }

    /// The current window; `None` before the first reading.
    pub fn current_bounds(&self) -> Option<WindowBounds> {
        self.current.bounds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Standard normal draws by Box–Muller (rand_distr is not in the workspace).
    struct Gaussian(StdRng);

    impl Gaussian {
        fn new(seed: u64) -> Self {
            Self(StdRng::seed_from_u64(seed))
        }

        fn sample(&mut self) -> f64 {
            let u1: f64 = 1.0 - self.0.random::<f64>(); // (0, 1]: ln stays finite
            let u2: f64 = self.0.random();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    fn assert_close(got: f64, expected: f64, tol: f64, what: &str) {
        assert!((got - expected).abs() <= tol, "{what}: got {got:e}, expected {expected:e}");
    }

    // ---- Kolmogorov–Smirnov -------------------------------------------------------------
    //
    // Reference values: SciPy 1.17.1, NumPy 2.4.6, Python 3.11, x86_64, computed as
    //     r = scipy.stats.ks_2samp(a, b, method=m)      # alternative="two-sided"
    //     print(r.statistic, r.pvalue)
    // with the arrays below (and `nan_policy="omit"` for the NaN case). `auto` is exact here
    // (both sizes <= 10_000) except for the 12_000 × 8_000 case.

    const SAME_A: [f64; 12] = [0.61, -1.20, 0.33, 1.75, -0.42, 0.08, -0.91, 1.12, 0.27, -0.05, -1.63, 0.84];
    const SAME_B: [f64; 15] =
        [0.15, -0.77, 1.31, 0.52, -0.26, -1.48, 0.94, 0.03, -0.58, 1.66, 0.41, -0.12, 0.70, -0.99, 0.21];
    const SHIFT_A: [f64; 10] = [9.8, 10.4, 10.1, 9.5, 10.9, 10.0, 9.7, 10.6, 10.2, 9.9];
    const SHIFT_B: [f64; 10] = [11.3, 10.8, 11.9, 11.1, 10.5, 11.6, 11.0, 12.2, 10.7, 11.4];
    const TIES_A: [f64; 14] = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 5.0, 6.0, 7.0, 8.0];
    const TIES_B: [f64; 9] = [3.0, 4.0, 4.0, 5.0, 6.0, 6.0, 7.0, 8.0, 9.0];

    #[test]
    fn ks_matches_scipy_on_small_samples() {
        type Case<'a> = (&'a str, &'a [f64], &'a [f64], KsMethod, f64, f64);
        let cases: [Case; 7] = [
            ("same 12/15 auto", &SAME_A, &SAME_B, KsMethod::Auto, 0.11666666666666667, 0.9997643791424919),
            ("same 12/15 asymp", &SAME_A, &SAME_B, KsMethod::Asymptotic, 0.11666666666666667, 0.9997498671796524),
            ("shift 10/10 auto", &SHIFT_A, &SHIFT_B, KsMethod::Auto, 0.8, 0.002056766762649115),
            ("shift 10/10 asymp", &SHIFT_A, &SHIFT_B, KsMethod::Asymptotic, 0.8, 0.0006399999999999993),
            ("ties 14/9 auto", &TIES_A, &TIES_B, KsMethod::Auto, 0.3412698412698413, 0.4522999547228918),
            ("ties 14/9 asymp", &TIES_A, &TIES_B, KsMethod::Asymptotic, 0.3412698412698413, 0.5024338205603539),
            ("ties 14/9 exact", &TIES_A, &TIES_B, KsMethod::Exact, 0.3412698412698413, 0.4522999547228918),
        ];
        for (what, a, b, method, d, p) in cases {
            let ks = ks_two_sample_with(a, b, method);
            assert_close(ks.statistic, d, 1e-15, what);
            assert_close(ks.p_value, p, 1e-12, what);
        }
        assert_eq!(ks_two_sample(&SAME_A, &SAME_B), ks_two_sample_with(&SAME_A, &SAME_B, KsMethod::Auto));
    }

    #[test]
    fn ks_ignores_nan_like_scipy_omit() {
        let a = [0.5, f64::NAN, 1.5, 2.5, 3.5, f64::NAN, 4.5, 5.5];
        let b = [2.0, 3.0, 4.0, f64::NAN, 5.0, 6.0, 7.0, 8.0, 9.0];
        let ks = ks_two_sample(&a, &b);
        assert_close(ks.statistic, 0.5, 1e-15, "D");
        assert_close(ks.p_value, 0.30169830169830175, 1e-12, "p");
    }

    #[test]
    fn ks_of_empty_or_all_nan_sample_is_no_evidence() {
        let none = KsTest { statistic: 0.0, p_value: 1.0 };
        assert_eq!(ks_two_sample(&[], &[1.0, 2.0]), none);
        assert_eq!(ks_two_sample(&[1.0], &[]), none);
        assert_eq!(ks_two_sample(&[f64::NAN], &[1.0, 2.0]), none);
    }

    /// Deterministic samples reproduced bit-for-bit in Python:
    /// `a_i = ((i * 7919) % 10007) / 10007`, `b_j = ((j * 104729) % 10009) / 10009 + shift`.
    fn formula_a(n: usize) -> Vec<f64> {
        (0..n).map(|i| ((i * 7919) % 10007) as f64 / 10007.0).collect()
    }

    fn formula_b(n: usize, shift: f64) -> Vec<f64> {
        (0..n).map(|j| ((j * 104729) % 10009) as f64 / 10009.0 + shift).collect()
    }

    #[test]
    fn ks_matches_scipy_on_larger_samples_and_every_method() {
        use KsMethod::{Asymptotic, Auto, Exact};
        // (n1, n2, shift, method, scipy D, scipy p); 12_000 × 8_000 `auto` is asymptotic.
        let cases = [
            (300, 200, 0.1, Auto, 0.11166666666666666, 0.09514476355265436),
            (300, 200, 0.1, Asymptotic, 0.11166666666666669, 0.09282474242177496),
            (500, 500, 0.1, Auto, 0.104, 0.008922221390371415),
            (500, 500, 0.1, Asymptotic, 0.10400000000000004, 0.008290637497102031),
            (450, 449, 0.08, Auto, 0.08417718386537985, 0.0740935005747397),
            (450, 449, 0.08, Asymptotic, 0.08417718386537987, 0.07780040764351626),
            (3000, 2000, 0.04, Auto, 0.042333333333333334, 0.026563852950320314),
            (3000, 2000, 0.04, Asymptotic, 0.04233333333333328, 0.026329266679838925),
            (12000, 8000, 0.03, Auto, 0.030708333333333337, 0.0002290372083345814),
            (12000, 8000, 0.03, Exact, 0.030708333333333334, 0.00023054927474628836),
            (300, 200, 0.05, Auto, 0.06, 0.7648085720274566),
            (300, 200, 0.0, Auto, 0.016666666666666666, 0.9999999999999724),
            (500, 500, 0.03, Asymptotic, 0.035999999999999976, 0.8904321032285725),
        ];
        for (n1, n2, shift, method, d, p) in cases {
            let ks = ks_two_sample_with(&formula_a(n1), &formula_b(n2, shift), method);
            let what = format!("{n1}x{n2} shift {shift} {method:?}");
            assert_close(ks.statistic, d, 1e-15, &what);
            assert_close(ks.p_value, p, 1e-10 * p.max(1e-3), &what);
        }
    }

    #[test]
    fn ks_finds_a_half_sigma_shift_and_not_a_null() {
        let mut g = Gaussian::new(7);
        let a: Vec<f64> = (0..400).map(|_| g.sample()).collect();
        let b: Vec<f64> = (0..400).map(|_| g.sample()).collect();
        let shifted: Vec<f64> = (0..300).map(|_| g.sample() + 0.5).collect();
        assert!(ks_two_sample(&a, &b).p_value > 0.01);
        assert!(ks_two_sample(&a, &shifted).p_value < 1e-6);
    }

    // ---- PSI ------------------------------------------------------------------------------

    #[test]
    fn psi_matches_hand_computed_example() {
        // Reference 1..=10, 4 bins. Quantiles (linear) at 0.25/0.5/0.75: positions 2.25, 4.5,
        // 6.75 -> edges 3.25, 5.5, 7.75. Reference counts (right-closed bins): {1,2,3} {4,5}
        // {6,7} {8,9,10} = .3 .2 .2 .3. Current {2} {4,5} {6,7} {8..12} = .1 .2 .2 .5.
        // PSI = (.1-.3)·ln(.1/.3) + 0 + 0 + (.5-.3)·ln(.5/.3) = .2197225 + .1021651 = .3218876
        let reference: Vec<f64> = (1..=10).map(f64::from).collect();
        let current = [2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        assert_close(psi(&reference, &current, 4), 0.32188758248682003, 1e-15, "hand example");
        // Empty current bins take 1e-4: 3 bins at 1e-4, the last holds everything.
        // (1e-4-.3)ln(1e-4/.3) + 2·(1e-4-.2)ln(1e-4/.2) + (1-.3)ln(1/.3) = 6.2827314
        assert_close(psi(&reference, &[8.0, 9.0, 10.0, 11.0], 4), 6.282731399891389, 1e-14, "empty bins");
        // Ties: quantile edges 1, 1, 2.75 dedupe to {1, 2.75}: reference .6 .1 .3, current .2 .2 .6.
        // PSI = .4·ln 3 + .1·ln 2 + .3·ln 2 = .4394449 + .0693147 + .2079442 = .7167038
        let tied = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let current = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0];
        assert_close(psi(&tied, &current, 4), 0.7167037876912219, 1e-15, "tied edges");
    }

    #[test]
    fn psi_matches_numpy_reference_implementation() {
        // NumPy 2.4.6, the same rules written out:
        //   edges = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
        //   r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges)+1) / len(ref)
        //   c = (same for cur); r[r == 0] = 1e-4; c[c == 0] = 1e-4
        //   psi = np.sum((c - r) * np.log(c / r))
        for (n1, n2, shift, bins, expected) in [
            (1000, 800, 0.05, 10, 0.05295075710210157),
            (1000, 800, 0.3, 10, 2.2290180435997966),
            (777, 500, 0.0, 20, 0.001045554142264697),
        ] {
            let got = psi(&formula_a(n1), &formula_b(n2, shift), bins);
            assert_close(got, expected, 1e-12, &format!("{n1}x{n2} shift {shift}"));
        }
        // Integer-valued data (many ties): ref_i = (37 i) mod 11, cur_i = (53 i) mod 13.
        let reference: Vec<f64> = (0..500).map(|i| ((i * 37) % 11) as f64).collect();
        let current: Vec<f64> = (0..400).map(|i| ((i * 53) % 13) as f64).collect();
        assert_close(psi(&reference, &current, 10), 0.14547950362620227, 1e-12, "ties");
    }

    #[test]
    fn psi_degenerate_inputs_are_zero_or_finite() {
        assert_eq!(psi(&[], &[1.0], 10), 0.0);
        assert_eq!(psi(&[1.0], &[], 10), 0.0);
        assert_eq!(psi(&[1.0, 2.0], &[3.0], 1), 0.0);
        assert_eq!(psi(&[f64::NAN, f64::INFINITY], &[1.0], 10), 0.0);
        // A constant reference: one edge, two bins; the same constant is no shift.
        assert_eq!(psi(&[5.0; 50], &[5.0; 20], 10), 0.0);
        assert!(psi(&[5.0; 50], &[6.0; 20], 10).is_finite());
    }

    // ---- Page–Hinkley ---------------------------------------------------------------------

    #[test]
    fn page_hinkley_stays_quiet_on_a_long_stationary_run() {
        let mut g = Gaussian::new(11);
        let mut ph = PageHinkley::new(0.5, 50.0, 30);
        let mut max_statistic: f64 = 0.0;
        for _ in 0..1_000_000 {
            assert!(!ph.observe(g.sample()), "false alarm on stationary noise");
            max_statistic = max_statistic.max(ph.statistic());
        }
        // The statistic is a reflected walk with drift -delta: it never gets near lambda.
        assert!(max_statistic < 25.0, "max statistic {max_statistic}");
    }

    #[test]
    fn page_hinkley_detects_a_three_sigma_step_within_bounded_delay() {
        for (seed, direction) in [(1, 1.0), (2, -1.0), (3, 1.0), (4, -1.0)] {
            let mut g = Gaussian::new(seed);
            let mut ph = PageHinkley::new(0.5, 50.0, 30);
            for _ in 0..5_000 {
                assert!(!ph.observe(g.sample()));
            }
            let delay = (1..=200).find(|_| ph.observe(g.sample() + 3.0 * direction));
            // Each shifted reading adds about 3 - 0.5 to the sum: ~20 readings to reach 50.
            let delay = delay.expect("step not detected within 200 readings");
            assert!((10..=40).contains(&delay), "delay {delay}");
            assert!(ph.observe(0.0), "stays alarmed until reset");
            ph.reset();
            assert!(!ph.observe(0.0));
            assert_eq!(ph.statistic(), 0.0);
        }
    }

    #[test]
    fn page_hinkley_ignores_non_finite_values() {
        let mut ph = PageHinkley::new(0.5, 50.0, 1);
        assert!(!ph.observe(f64::NAN));
        assert!(!ph.observe(f64::INFINITY));
        assert_eq!(ph, PageHinkley::new(0.5, 50.0, 1));
    }

    // ---- check ----------------------------------------------------------------------------

    #[test]
    fn check_needs_both_a_significant_and_a_large_shift() {
        let config = DriftConfig::default();
        let mut g = Gaussian::new(5);
        let mut sample = |n: usize, shift: f64| (0..n).map(|_| g.sample() + shift).collect::<Vec<_>>();
        let reference = sample(500, 0.0);

        let same = check(&reference, &sample(500, 0.0), &config);
        assert!(!same.drifted, "{same:?}");

        let moved = check(&reference, &sample(500, 1.0), &config);
        assert!(moved.drifted && moved.ks.p_value < 1e-10 && moved.psi > 0.5, "{moved:?}");

        // 20 000 values a side and a 0.1 σ shift: KS calls it significant, PSI calls it small.
        let big = sample(20_000, 0.0);
        let tiny = check(&big, &sample(20_000, 0.1), &config);
        assert!(tiny.ks.p_value < config.ks_alpha && tiny.psi < 0.05 && !tiny.drifted, "{tiny:?}");

        // Too few values: never a drift, whatever the statistics say.
        let few = check(&reference[..100], &sample(100, 3.0), &config);
        assert!(few.ks.p_value < 1e-10 && few.psi > 1.0 && !few.drifted, "{few:?}");
    }

    // ---- config ---------------------------------------------------------------------------

    #[test]
    fn default_config_validates_and_bad_settings_are_named() {
        DriftConfig::default().validate().unwrap();
        let bad = |change: fn(&mut DriftConfig)| {
            let mut config = DriftConfig::default();
            change(&mut config);
            match config.validate() {
                Err(DriftError::InvalidConfig { field, .. }) => field,
                other => panic!("expected a rejection, got {other:?}"),
            }
        };
        assert_eq!(bad(|c| c.current_ms = 0), "current_ms");
        assert_eq!(bad(|c| c.reference_ms = -1), "reference_ms");
        assert_eq!(bad(|c| c.min_samples = 400), "min_samples");
        assert_eq!(bad(|c| c.ks_alpha = 0.0), "ks_alpha");
        assert_eq!(bad(|c| c.psi_bins = 1), "psi_bins");
        assert_eq!(bad(|c| c.confirmations = 0), "confirmations");
        assert_eq!(bad(|c| c.check_every = 0), "check_every");
        assert_eq!(bad(|c| c.ph_lambda = f64::NAN), "ph_lambda");
        let from_json: DriftConfig = serde_json::from_str(r#"{"current_ms": 600000}"#).unwrap();
        assert_eq!(from_json, DriftConfig { current_ms: 600_000, ..DriftConfig::default() });
        assert!(serde_json::from_str::<DriftConfig>(r#"{"curent_ms": 1}"#).is_err());
    }

    #[test]
    fn drift_test_names_are_stable() {
        assert_eq!(DriftTest::KsPsi.name(), "ks_psi");
        assert_eq!(DriftTest::PageHinkley.name(), "page_hinkley");
    }

    // ---- DriftMonitor ---------------------------------------------------------------------

    const SECOND_MS: i64 = 1000;
    const HOUR: usize = 3600;
    /// An arbitrary epoch (2024-01-01T00:00:00Z) so timestamps look real.
    const T0_MS: i64 = 1_704_067_200_000;

    /// A sensor read once a second: nominal 70 with noise 0.8, plus `mean_shift(step)` in σ.
    fn run(
        monitor: &mut DriftMonitor,
        seed: u64,
        steps: std::ops::Range<usize>,
        mean_shift: impl Fn(usize) -> f64,
    ) -> Vec<(usize, DriftFinding)> {
        const MEAN: f64 = 70.0;
        const STD: f64 = 0.8;
        let mut g = Gaussian::new(seed);
        // Skip the draws of earlier steps so a split run sees the same values as a whole one.
        for _ in 0..steps.start {
            g.sample();
        }
        steps
            .filter_map(|step| {
                let value = MEAN + STD * (mean_shift(step) + g.sample());
                monitor.observe(T0_MS + step as i64 * SECOND_MS, value).map(|finding| (step, finding))
            })
            .collect()
    }

    #[test]
    fn stationary_sensor_raises_no_drift_over_three_days() {
        let mut monitor = DriftMonitor::new(DriftConfig::default());
        let findings = run(&mut monitor, 21, 0..72 * HOUR, |_| 0.0);
        assert!(findings.is_empty(), "{findings:?}");
        let reference = monitor.reference_bounds().expect("reference after the first hour");
        assert_eq!(reference.start_ms, T0_MS);
        assert!(reference.end_ms < T0_MS + 3_600_000 && reference.end_ms >= T0_MS + 3_590_000);
        assert!((256..=512).contains(&reference.size), "{reference:?}");
    }

    #[test]
    fn slow_linear_drift_is_found_once_per_rebase_without_flapping() {
        // The simulator's `drift` scenario: the mean moves linearly by 3..6 σ over the run.
        let config = DriftConfig::default();
        for (seed, total_sigma) in [(31, 4.5), (32, -3.0), (33, 6.0)] {
            let steps = 24 * HOUR;
            let mut monitor = DriftMonitor::new(config);
            let findings = run(&mut monitor, seed, 0..steps, |s| total_sigma * s as f64 / steps as f64);
            // Each finding needs roughly a half-σ move against a fresh reference.
            let per_finding = 0.5;
            let expected = total_sigma.abs() / per_finding;
            let count = findings.len() as f64;
            // Seeds 31/32/33 give 9, 6 and 12 findings, evenly spaced.
            assert!(count >= 0.6 * expected && count <= expected + 2.0, "{total_sigma} σ: {} findings", findings.len());
            for pair in findings.windows(2) {
                let (previous, next) = (&pair[0].1, &pair[1].1);
                // After a finding the reference is a window of later readings: never the same drift twice.
                assert!(next.reference.start_ms > previous.current.end_ms, "{pair:?}");
                assert!(pair[1].0 - pair[0].0 >= 2 * 900, "findings {} s apart", pair[1].0 - pair[0].0);
            }
            for (_, finding) in &findings {
                assert!(finding.reference.end_ms < finding.current.end_ms);
                assert!(finding.reference.size >= config.min_samples && finding.current.size >= config.min_samples);
                assert!(finding.current.end_ms - finding.current.start_ms < config.current_ms);
                if finding.test == DriftTest::KsPsi {
                    assert!(finding.p_value.unwrap() < config.ks_alpha && finding.psi.unwrap() > config.psi_threshold);
                }
            }
        }
    }

    #[test]
    fn step_change_is_found_once_and_quickly() {
        for (seed, step_sigma) in [(41, 3.0), (42, -3.0), (43, 4.0)] {
            let change = 6 * HOUR;
            let mut monitor = DriftMonitor::new(DriftConfig::default());
            let findings = run(&mut monitor, seed, 0..18 * HOUR, |s| if s >= change { step_sigma } else { 0.0 });
            assert_eq!(findings.len(), 1, "{step_sigma} σ step: {findings:?}");
            let (at, finding) = &findings[0];
            // About lambda / (|step| - delta) readings: 14 to 22 s for these seeds.
            assert!((change..change + 60).contains(at), "found {} s after the step", *at as i64 - change as i64);
            assert_eq!(finding.test, DriftTest::PageHinkley);
            assert!(finding.statistic > DriftConfig::default().ph_lambda);
            assert_eq!(finding.reference.start_ms, T0_MS);
            // The re-based reference holds only post-step readings.
            let rebased = monitor.reference_bounds().expect("re-based");
            assert!(rebased.start_ms > T0_MS + *at as i64 * SECOND_MS);
        }
    }

    #[test]
    fn ks_psi_confirms_a_shift_page_hinkley_is_too_tolerant_for() {
        // A 1 σ shift with a Page–Hinkley tuned to ignore it: KS/PSI must confirm it, once.
        let config = DriftConfig { ph_delta: 2.0, ..DriftConfig::default() };
        let change = 4 * HOUR;
        let mut monitor = DriftMonitor::new(config);
        let findings = run(&mut monitor, 51, 0..12 * HOUR, |s| if s >= change { 1.0 } else { 0.0 });
        assert_eq!(findings.len(), 1, "{findings:?}");
        let (at, finding) = &findings[0];
        assert_eq!(finding.test, DriftTest::KsPsi);
        // Visible once part of the window has moved, then three one-minute confirmations (419 s).
        assert!((change..change + 900).contains(at), "found {} s after the shift", at - change);
        // The window ends at its last kept reading (every 2nd one is kept at 1 Hz).
        let at_ms = T0_MS + *at as i64 * SECOND_MS;
        assert!((at_ms - 4 * SECOND_MS..=at_ms).contains(&finding.current.end_ms), "{finding:?}");
        assert!(finding.current.size >= config.min_samples);
    }

    #[test]
    fn monitor_restored_from_json_continues_identically() {
        let steps = 24 * HOUR;
        let drift = |s: usize| 4.0 * s as f64 / steps as f64;
        let mut whole = DriftMonitor::new(DriftConfig::default());
        let all = run(&mut whole, 61, 0..steps, drift);
        assert!(all.len() >= 3);

        for split in [30 * 60, 10 * HOUR + 7, 17 * HOUR + 123] {
            let mut first = DriftMonitor::new(DriftConfig::default());
            let before = run(&mut first, 61, 0..split, drift);
            let json = serde_json::to_string(&first).unwrap();
            let mut restored: DriftMonitor = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&restored).unwrap(), json);
            let after = run(&mut restored, 61, split..steps, drift);
            let continued: Vec<_> = before.into_iter().chain(after).collect();
            assert_eq!(continued, all, "split at {split}");
            assert_eq!(serde_json::to_string(&restored).unwrap(), serde_json::to_string(&whole).unwrap());
        }
    }

    #[test]
    fn state_stays_bounded_after_a_million_readings_at_any_rate() {
        let config = DriftConfig::default();
        // 100 readings a second: the 15-minute window would otherwise hold 90 000 values.
        for interval_ms in [10, 1000] {
            let mut monitor = DriftMonitor::new(config);
            let mut g = Gaussian::new(71);
            let mut largest = 0;
            for i in 0..1_000_000i64 {
                monitor.observe(T0_MS + i * interval_ms, 20.0 + g.sample());
                if i % 100_000 == 99_999 {
                    largest = largest.max(serde_json::to_string(&monitor).unwrap().len());
                }
            }
            let current = monitor.current_bounds().unwrap();
            assert!((256..=512).contains(&current.size), "{interval_ms} ms: {current:?}");
            assert!(monitor.reference_bounds().unwrap().size <= 512);
            // At most 1024 values of ≤ ~20 characters, timestamps as short deltas (16-20 KB here).
            assert!(largest < 30_000, "{interval_ms} ms: checkpoint of {largest} bytes");
        }
    }

    #[test]
    fn late_readings_are_ignored_and_slightly_late_ones_kept_in_order() {
        let config = DriftConfig::default();
        let mut monitor = DriftMonitor::new(config);
        let _ = run(&mut monitor, 81, 0..2 * HOUR, |_| 0.0);
        let before = monitor.current_bounds().unwrap();
        let json = serde_json::to_string(&monitor).unwrap();
        // Older than the current window: ignored entirely.
        assert!(monitor.observe(before.end_ms - config.current_ms - 1, 1e6).is_none());
        assert!(monitor.observe(before.end_ms - config.current_ms, 1e6).is_none());
        assert_eq!(serde_json::to_string(&monitor).unwrap(), json);
        // Non-finite: ignored.
        assert!(monitor.observe(before.end_ms + 1, f64::NAN).is_none());
        assert_eq!(serde_json::to_string(&monitor).unwrap(), json);
        // Late but inside the window: kept, in event-time order.
        monitor.observe(before.end_ms - 500, 70.0);
        let window = &monitor.current.readings;
        assert!(window.iter().zip(window.iter().skip(1)).all(|(a, b)| a.0 <= b.0));
    }

    #[test]
    fn reading_after_a_long_gap_can_be_a_finding() {
        // At 10 Hz the window keeps every 4th reading; after an hour offline the sensor returns
        // 100 σ higher. The first reading back lands in an emptied window and must be kept.
        let mut monitor = DriftMonitor::new(DriftConfig::default());
        let mut g = Gaussian::new(91);
        // 72 005 readings: not a multiple of the stride, so the stride alone would skip the next.
        for i in 0..(2 * HOUR as i64 * 10 + 5) {
            assert!(monitor.observe(T0_MS + i * 100, 70.0 + 0.8 * g.sample()).is_none());
        }
        let back_ms = T0_MS + 3 * 3_600_000;
        let findings: Vec<_> =
            (0..50).filter_map(|i| monitor.observe(back_ms + i * 100, 150.0 + 0.8 * g.sample())).collect();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].test, DriftTest::PageHinkley);
        assert_eq!(findings[0].current.start_ms, back_ms);
    }

    #[test]
    fn corrupt_window_state_is_rejected() {
        let monitor = DriftMonitor::new(DriftConfig::default());
        let json = serde_json::to_string(&monitor).unwrap();
        let broken = json.replace(r#""delta_ms":[]"#, r#""delta_ms":[5]"#);
        assert_ne!(broken, json);
        let error = serde_json::from_str::<DriftMonitor>(&broken).unwrap_err();
        assert!(error.to_string().contains("corrupt drift state"), "{error}");
        let backwards = json.replace(r#""delta_ms":[],"values":[]"#, r#""delta_ms":[0,-5],"values":[1.0,2.0]"#);
        assert_ne!(backwards, json);
        let error = serde_json::from_str::<DriftMonitor>(&backwards).unwrap_err();
        assert!(error.to_string().contains("out of order"), "{error}");
    }
}
