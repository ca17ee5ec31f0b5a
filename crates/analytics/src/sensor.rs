//! Per-sensor streaming anomaly detection: a robust z-score on a rolling median/MAD and an
//! EWMA z-score, run side by side, gated by how rare the value is in the recent window, with
//! persistence (k of the last n points) and alarm hysteresis so that one incident raises one
//! alarm.
//!
//! A point *exceeds* when one detector's score passes its threshold **and** the value is rare
//! in the window (few recent values near it). The gate is what lets one default config serve
//! both Gaussian-like sensors, where it changes nothing, and sensors with a daily cycle or two
//! operating levels, where the MAD describes only the majority level and every visit to the
//! other level would otherwise alarm. A value between the usual levels, or past them, is still
//! rare and still alarms.
//!
//! Each value is scored against the state *before* it, then added to the state. Both
//! baselines keep learning while an alarm is active: after a sustained level shift the median
//! reaches the new level within half a window, the scores fall back, the alarm clears and the
//! new level is the baseline. That is deliberate: a step that persists is news once, not
//! forever. A Gaussian sensor passes the default gate about once in 70,000 values.
//!
//! What this is not: a seasonal model (a missing daily peak goes unseen) or a drift test (see
//! [`crate::drift`]). Values are plain `f64`s; timestamps, units and ids are the agent's.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// MAD → standard deviation for Gaussian data.
const MAD_TO_SD: f64 = 1.4826;
/// Persistence is a bit mask of the last n points, so n is at most 64.
const MAX_PERSISTENCE_N: usize = 64;
/// Hysteresis: a point is calm when both scores are below this share of their thresholds. An
/// active alarm clears once it has lasted `clear_after` points and more than half of the last
/// `clear_after` were calm. A shift keeps its alarm until the baseline has moved to the new
/// level (then clears, and does not re-raise); a sensor whose incident brings recurring bursts
/// between calm readings still clears; a value hovering around the threshold is one alarm.
const CLEAR_RATIO: f64 = 0.5;
/// A value is rare when fewer than `RARE_BELOW` values of the window lie within a radius of
/// `RARE_RADIUS` robust scales or `RARE_FRACTION` of its distance from the median, whichever is
/// larger (see `SensorDetector::is_rare`). Three neighbours: once a new level has been read a
/// few times it is no longer news. The relative radius makes "near" mean "of the same size" for
/// far excursions: a 90 % CPU burst is like the 80 % bursts of yesterday.
const RARE_BELOW: usize = 3;
const RARE_RADIUS: f64 = 1.0;
const RARE_FRACTION: f64 = 0.2;
/// Neighbours among the last `RARE_IGNORES_LAST` values do not count: a new level is news until
/// it has lasted this long, so a shift whose first few values stay under the threshold is still
/// caught when a later one crosses it.
const RARE_IGNORES_LAST: usize = 16;

/// Settings of one sensor's detectors. One set of defaults serves simulated sensors and the
/// NAB corpus alike (see `smctl eval anomaly`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorDetectorConfig {
    /// Rolling median/MAD window, in values.
    pub window: usize,
    /// Values before any score counts.
    pub warmup: usize,
    /// Robust z (`|x - median| / (1.4826 MAD)`) threshold.
    pub z_threshold: f64,
    /// EWMA smoothing factor for mean and variance, in (0, 1].
    pub ewma_alpha: f64,
    /// EWMA threshold, in EWMA standard deviations.
    pub ewma_threshold: f64,
    /// Raise when `persistence_k` of the last `persistence_n` points exceed a threshold.
    pub persistence_k: usize,
    /// See `persistence_k`; at most 64.
    pub persistence_n: usize,
    /// An active alarm clears after at least this many points, once more than half of the last
    /// `clear_after` were calm (both scores below half their thresholds); at most 64.
    pub clear_after: usize,
}

impl Default for SensorDetectorConfig {
    /// - `window` 720: 2.5 days of 5-minute readings (12 minutes at 1 Hz), so a level the
    ///   sensor visits once a day is in the window at least twice and is not rare; the
    ///   median/MAD stay cheap (binary-search insert/remove in a sorted copy);
    /// - `warmup` 48: enough values for the MAD to mean something (its relative error is
    ///   about 1/√n, ~15 % here);
    /// - thresholds 5.0: a Gaussian value passes 5 σ about once in 1.7 million, so a healthy
    ///   sensor almost never alarms even with k = 1; spikes of 6 σ and more and level shifts
    ///   of 4 σ and more still cross it within a few points;
    /// - `ewma_alpha` 0.05: a memory of ~20 points, short beside the window, so the EWMA
    ///   catches a departure from the *recent* level that the window's median still absorbs;
    /// - `persistence_k = 1`: an isolated spike of that size is itself the event (a
    ///   pressure surge, a stuck relay); with a lower threshold, raise k instead;
    /// - `clear_after` 12: an hour of 5-minute readings, so one incident that flickers around
    ///   the threshold is one alarm.
    ///
    /// On the NAB subset in `shared/datasets/nab` these defaults score above Random Cut Forest's
    /// published 51.7 (standard profile); `smctl eval anomaly` prints the figures.
    fn default() -> Self {
        SensorDetectorConfig {
            window: 720,
            warmup: 48,
            z_threshold: 5.0,
            ewma_alpha: 0.05,
            ewma_threshold: 5.0,
            persistence_k: 1,
            persistence_n: 1,
            clear_after: 12,
        }
    }
}

/// A setting that cannot work, named so that the operator knows which one to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field} must be {requirement} (got {value})")]
    Invalid { field: &'static str, requirement: &'static str, value: String },
}

impl ConfigError {
    pub(crate) fn invalid(field: &'static str, requirement: &'static str, value: impl ToString) -> Self {
        ConfigError::Invalid { field, requirement, value: value.to_string() }
    }
}

impl SensorDetectorConfig {
    /// Checks every setting; the agents call this once at start-up, before any reading.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window < 3 {
            return Err(ConfigError::invalid("window", "at least 3", self.window));
        }
        if self.warmup > self.window.max(1) * 1000 {
            return Err(ConfigError::invalid("warmup", "at most 1000 windows", self.warmup));
        }
        if !(self.z_threshold.is_finite() && self.z_threshold > 0.0) {
            return Err(ConfigError::invalid("z_threshold", "finite and > 0", self.z_threshold));
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(ConfigError::invalid("ewma_alpha", "in (0, 1]", self.ewma_alpha));
        }
        if !(self.ewma_threshold.is_finite() && self.ewma_threshold > 0.0) {
            return Err(ConfigError::invalid("ewma_threshold", "finite and > 0", self.ewma_threshold));
        }
        if self.persistence_n == 0 || self.persistence_n > MAX_PERSISTENCE_N {
            return Err(ConfigError::invalid("persistence_n", "in 1..=64", self.persistence_n));
        }
        if self.persistence_k == 0 || self.persistence_k > self.persistence_n {
            return Err(ConfigError::invalid("persistence_k", "in 1..=persistence_n", self.persistence_k));
        }
        if self.clear_after == 0 || self.clear_after > 64 {
            return Err(ConfigError::invalid("clear_after", "in 1..=64", self.clear_after));
        }
        Ok(())
    }

    /// The nearest config that works, so that a detector never panics on a bad setting
    /// (`validate` is where bad settings are reported).
    fn sanitised(mut self) -> Self {
        let defaults = SensorDetectorConfig::default();
        self.window = self.window.max(3);
        if !(self.z_threshold.is_finite() && self.z_threshold > 0.0) {
            self.z_threshold = defaults.z_threshold;
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            self.ewma_alpha = defaults.ewma_alpha;
        }
        if !(self.ewma_threshold.is_finite() && self.ewma_threshold > 0.0) {
            self.ewma_threshold = defaults.ewma_threshold;
        }
        self.persistence_n = self.persistence_n.clamp(1, MAX_PERSISTENCE_N);
        self.persistence_k = self.persistence_k.clamp(1, self.persistence_n);
        self.clear_after = self.clear_after.clamp(1, 64);
        self
    }
}

/// Which of a sensor's detectors gave a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SensorDetectorKind {
    /// Robust z-score on the rolling median/MAD.
    RobustZ,
    /// z-score on the exponentially weighted mean and variance.
    Ewma,
}

impl SensorDetectorKind {
    /// Stable name, for events and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            SensorDetectorKind::RobustZ => "robust_z",
            SensorDetectorKind::Ewma => "ewma",
        }
    }
}

/// What a point did to the alarm: the agent emits an event only on `Raised` and `Cleared`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmChange {
    None,
    Raised,
    Cleared,
}

/// One value's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SensorScore {
    /// The larger of the two detectors' scores, compared relative to their thresholds (with the
    /// default equal thresholds that is simply the larger score). 0 during warm-up.
    pub score: f64,
    /// The detector that gave `score`.
    pub detector: SensorDetectorKind,
    /// That detector's threshold.
    pub threshold: f64,
    /// The range that detector considered normal before this value (during warm-up, and for an
    /// ignored non-finite value: the range of the values in the window).
    pub expected: (f64, f64),
    /// `score > threshold` and the value is rare in the window: a level the sensor visited
    /// often in the window is not news, so a score can pass its threshold without exceeding.
    pub exceeded: bool,
    pub alarm: AlarmChange,
}

/// One sensor's detectors and alarm state; checkpointed as JSON by the anomaly agent.
///
/// Serialised form: the config, the last `window` values (oldest first) and a few scalars. The
/// sorted copy of the window that makes the median fast is rebuilt on load, not stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "SensorDetectorState", into = "SensorDetectorState")]
pub struct SensorDetector {
    config: SensorDetectorConfig,
    /// The last `config.window` finite values, oldest first.
    recent: VecDeque<f64>,
    /// The same values, sorted: binary-search insert/remove beside the ring buffer, so a
    /// median is an index and the MAD an O(log n) selection (see [`mad_of_sorted`]).
    sorted: Vec<f64>,
    /// Finite values observed (saturating).
    seen: u64,
    ewma_mean: f64,
    ewma_var: f64,
    /// Bit i set: the point i steps ago exceeded a threshold (bit 0 is the latest).
    exceed_bits: u64,
    alarm_active: bool,
    /// Bit i set: the point i steps ago was calm (bit 0 is the latest).
    calm_bits: u64,
    /// Points scored since the alarm was raised (saturating at 64).
    since_raised: u8,
}

/// The checkpointed fields of [`SensorDetector`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorDetectorState {
    config: SensorDetectorConfig,
    recent: VecDeque<f64>,
    seen: u64,
    ewma_mean: f64,
    ewma_var: f64,
    exceed_bits: u64,
    alarm_active: bool,
    calm_bits: u64,
    since_raised: u8,
}

impl From<SensorDetectorState> for SensorDetector {
    fn from(state: SensorDetectorState) -> Self {
        let config = state.config.sanitised();
        let mut recent: VecDeque<f64> = state.recent.into_iter().filter(|v| v.is_finite()).collect();
        while recent.len() > config.window {
            recent.pop_front();
        }
        let mut sorted: Vec<f64> = recent.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        SensorDetector {
            config,
            recent,
            sorted,
            seen: state.seen,
            ewma_mean: if state.ewma_mean.is_finite() { state.ewma_mean } else { 0.0 },
            ewma_var: if state.ewma_var.is_finite() { state.ewma_var.max(0.0) } else { 0.0 },
            exceed_bits: state.exceed_bits,
            alarm_active: state.alarm_active,
            calm_bits: state.calm_bits,
            since_raised: state.since_raised,
        }
    }
}

impl From<SensorDetector> for SensorDetectorState {
    fn from(detector: SensorDetector) -> Self {
        SensorDetectorState {
            config: detector.config,
            recent: detector.recent,
            seen: detector.seen,
            ewma_mean: detector.ewma_mean,
            ewma_var: detector.ewma_var,
            exceed_bits: detector.exceed_bits,
            alarm_active: detector.alarm_active,
            calm_bits: detector.calm_bits,
            since_raised: detector.since_raised,
        }
    }
}

/// One detector's view of a value.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    score: f64,
    threshold: f64,
    expected: (f64, f64),
}

impl SensorDetector {
    /// A cold detector. A bad setting is replaced by the nearest one that works; call
    /// [`SensorDetectorConfig::validate`] first to report it.
    pub fn new(config: SensorDetectorConfig) -> Self {
        let config = config.sanitised();
        SensorDetector {
            config,
            recent: VecDeque::with_capacity(config.window),
            sorted: Vec::with_capacity(config.window),
            seen: 0,
            ewma_mean: 0.0,
            ewma_var: 0.0,
            exceed_bits: 0,
            alarm_active: false,
            calm_bits: 0,
            since_raised: 0,
        }
    }

    /// The settings in use (after sanitising).
    pub fn config(&self) -> &SensorDetectorConfig {
        &self.config
    }

    /// Scores `value` against the state *before* it, updates the alarm, then learns `value`.
    /// A NaN or infinite value is ignored: score 0, no state change.
    pub fn observe(&mut self, value: f64) -> SensorScore {
        if !value.is_finite() {
            return self.quiet_score(self.warm_up_range(0.0));
        }
        if !self.is_warm() {
            let expected = self.warm_up_range(value);
            self.learn(value);
            return self.quiet_score(expected);
        }

        let median = median_of_sorted(&self.sorted);
        let robust_scale = self.robust_scale(median);
        let robust = verdict(value, median, robust_scale, self.config.z_threshold);
        let ewma_sd = self.ewma_var.sqrt().max(scale_floor(self.ewma_mean));
        let ewma = verdict(value, self.ewma_mean, ewma_sd, self.config.ewma_threshold);
        // Compare relative to the thresholds so that `exceeded` means the same thing whichever wins.
        let (detector, verdict) = if ewma.score / ewma.threshold > robust.score / robust.threshold {
            (SensorDetectorKind::Ewma, ewma)
        } else {
            (SensorDetectorKind::RobustZ, robust)
        };
        let rare = self.is_rare(value, median, robust_scale);
        let exceeded = verdict.score > verdict.threshold && rare;
        let calm = robust.score < CLEAR_RATIO * robust.threshold && ewma.score < CLEAR_RATIO * ewma.threshold;
        let alarm = self.update_alarm(exceeded, calm);
        self.learn(value);
        SensorScore {
            score: verdict.score,
            detector,
            threshold: verdict.threshold,
            expected: verdict.expected,
            exceeded,
            alarm,
        }
    }

    /// Whether scores count yet (`warmup` finite values seen, and at least 3 in the window).
    pub fn is_warm(&self) -> bool {
        self.seen >= self.config.warmup as u64 && self.recent.len() >= 3
    }

    /// Whether an alarm is raised and not yet cleared.
    pub fn alarm_active(&self) -> bool {
        self.alarm_active
    }

    fn quiet_score(&self, expected: (f64, f64)) -> SensorScore {
        SensorScore {
            score: 0.0,
            detector: SensorDetectorKind::RobustZ,
            threshold: self.config.z_threshold,
            expected,
            exceeded: false,
            alarm: AlarmChange::None,
        }
    }

    /// During warm-up nothing is abnormal: report the range seen so far.
    fn warm_up_range(&self, fallback: f64) -> (f64, f64) {
        match (self.sorted.first(), self.sorted.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            _ => (fallback, fallback),
        }
    }

    /// Whether fewer than [`RARE_BELOW`] values of the window lie near `value` (within
    /// [`RARE_RADIUS`] scales, or [`RARE_FRACTION`] of its distance from the median). On
    /// Gaussian noise this changes nothing: a value past 5 σ has practically no neighbours.
    /// Two binary searches on the sorted window.
    fn is_rare(&self, value: f64, median: f64, scale: f64) -> bool {
        let radius = (RARE_RADIUS * scale).max(RARE_FRACTION * (value - median).abs());
        let (low, high) = (value - radius, value + radius);
        let below = self.sorted.partition_point(|v| *v < low);
        let within = self.sorted.partition_point(|v| *v <= high) - below;
        let recent = self.recent.iter().rev().take(RARE_IGNORES_LAST).filter(|v| (low..=high).contains(*v)).count();
        within.saturating_sub(recent) < RARE_BELOW
    }

    /// 1.4826 MAD; when more than half the window is one value (MAD = 0, e.g. a sensor that
    /// idles at 0 and sometimes reads 1) the window's standard deviation instead, so that a
    /// value the sensor takes regularly is not news; and a floor relative to the level so that
    /// a constant sensor does not divide by zero (any change from it is then news).
    fn robust_scale(&self, median: f64) -> f64 {
        let floor = scale_floor(median);
        let mad = MAD_TO_SD * mad_of_sorted(&self.sorted, median);
        if mad > floor {
            return mad;
        }
        let n = self.recent.len() as f64;
        let mean = self.recent.iter().sum::<f64>() / n;
        let variance = self.recent.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        variance.sqrt().max(floor)
    }

    /// `exceeded`: past a threshold (counts towards raising); `calm`: both scores below
    /// [`CLEAR_RATIO`] of their thresholds (counts towards clearing).
    fn update_alarm(&mut self, exceeded: bool, calm: bool) -> AlarmChange {
        self.exceed_bits = ((self.exceed_bits << 1) | u64::from(exceeded)) & low_bits(self.config.persistence_n);
        self.calm_bits = (self.calm_bits << 1) | u64::from(calm);
        self.since_raised = self.since_raised.saturating_add(1).min(64);
        if !self.alarm_active && self.exceed_bits.count_ones() as usize >= self.config.persistence_k {
            self.alarm_active = true;
            self.since_raised = 0;
            return AlarmChange::Raised;
        }
        let span = self.config.clear_after;
        let calm_points = (self.calm_bits & low_bits(span)).count_ones() as usize;
        if self.alarm_active && usize::from(self.since_raised) >= span && 2 * calm_points > span {
            self.alarm_active = false;
            self.exceed_bits = 0;
            return AlarmChange::Cleared;
        }
        AlarmChange::None
    }

    /// Adds a finite value to both baselines.
    fn learn(&mut self, value: f64) {
        if self.recent.len() == self.config.window
            && let Some(oldest) = self.recent.pop_front()
        {
            let at = self.sorted.partition_point(|v| *v < oldest);
            debug_assert!(at < self.sorted.len() && self.sorted[at] == oldest, "sorted copy out of step");
            self.sorted.remove(at.min(self.sorted.len() - 1));
        }
        self.recent.push_back(value);
        let at = self.sorted.partition_point(|v| *v < value);
        self.sorted.insert(at, value);

        if self.seen == 0 {
            self.ewma_mean = value;
            self.ewma_var = 0.0;
        } else {
            // Once warm, a deviation counts for at most `ewma_threshold` standard deviations,
            // so one spike does not blind the detector for the next hundred points; a lasting
            // shift still moves the mean (and widens the variance) within a few points.
            let mut diff = value - self.ewma_mean;
            if self.is_warm() {
                let limit = self.config.ewma_threshold * self.ewma_var.sqrt().max(scale_floor(self.ewma_mean));
                diff = diff.clamp(-limit, limit);
            }
            let increment = self.config.ewma_alpha * diff;
            self.ewma_mean += increment;
            self.ewma_var = (1.0 - self.config.ewma_alpha) * (self.ewma_var + diff * increment);
        }
        self.seen = self.seen.saturating_add(1);
    }
}

/// One detector's z-score of `value` and its normal range.
fn verdict(value: f64, centre: f64, scale: f64, threshold: f64) -> Verdict {
    Verdict {
        score: (value - centre).abs() / scale,
        threshold,
        expected: (centre - threshold * scale, centre + threshold * scale),
    }
}

/// A mask of the lowest `n` bits (n <= 64).
fn low_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// The smallest scale a detector divides by: a millionth of the level (or 1e-9 near zero).
fn scale_floor(level: f64) -> f64 {
    (level.abs() * 1e-6).max(1e-9)
}

/// 1..=5 from how far past its threshold a score is: 1 just past (or below), 2 from 1.5x,
/// 3 from 2x, 4 from 3x, 5 from 4x. The same scale for every detector, so alarms sort by it.
pub fn severity(score: f64, threshold: f64) -> u8 {
    if threshold.is_nan() || threshold <= 0.0 || score.is_nan() {
        return 1;
    }
    let ratio = score / threshold;
    match ratio {
        r if r >= 4.0 => 5,
        r if r >= 3.0 => 4,
        r if r >= 2.0 => 3,
        r if r >= 1.5 => 2,
        _ => 1,
    }
}

/// Median of a sorted, non-empty slice (0 if empty).
pub(crate) fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// Median absolute deviation from `median` of a sorted slice, in O(log n).
///
/// The deviations below the split, read right to left, and those above it, read left to right,
/// are two ascending sequences; the MAD is the median of their union, found by the usual
/// "k-th smallest of two sorted arrays" binary search instead of sorting n deviations.
pub(crate) fn mad_of_sorted(sorted: &[f64], median: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let split = n / 2;
    let lower = |i: usize| median - sorted[split - 1 - i]; // ascending in i, for i < split
    let upper = |j: usize| sorted[split + j] - median; // ascending in j, for j < n - split
    let kth = |k: usize| kth_of_two(&lower, split, &upper, n - split, k);
    if n % 2 == 1 { kth(n / 2) } else { 0.5 * (kth(n / 2 - 1) + kth(n / 2)) }
}

/// The k-th smallest (0-based) of the union of two ascending sequences given by index.
fn kth_of_two(a: &dyn Fn(usize) -> f64, a_len: usize, b: &dyn Fn(usize) -> f64, b_len: usize, k: usize) -> f64 {
    debug_assert!(k < a_len + b_len);
    // Take `i` from `a` and `k + 1 - i` from `b`: find the smallest i with a[i] >= b[k - i].
    let (mut lo, mut hi) = ((k + 1).saturating_sub(b_len), (k + 1).min(a_len));
    while lo < hi {
        let i = (lo + hi) / 2;
        let j = k + 1 - i;
        if a(i) < b(j - 1) {
            lo = i + 1;
        } else {
            hi = i;
        }
    }
    let (i, j) = (lo, k + 1 - lo);
    let from_a = if i > 0 { a(i - 1) } else { f64::NEG_INFINITY };
    let from_b = if j > 0 { b(j - 1) } else { f64::NEG_INFINITY };
    from_a.max(from_b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Small deterministic generator for tests and benches (SplitMix64 + Box–Muller).
    pub(crate) struct Gaussian {
        state: u64,
        spare: Option<f64>,
    }

    impl Gaussian {
        pub(crate) fn new(seed: u64) -> Self {
            Gaussian { state: seed, spare: None }
        }

        pub(crate) fn uniform(&mut self) -> f64 {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }

        pub(crate) fn sample(&mut self) -> f64 {
            if let Some(spare) = self.spare.take() {
                return spare;
            }
            let u1 = self.uniform().max(f64::MIN_POSITIVE);
            let u2 = self.uniform();
            let r = (-2.0 * u1.ln()).sqrt();
            let theta = std::f64::consts::TAU * u2;
            self.spare = Some(r * theta.sin());
            r * theta.cos()
        }
    }

    fn run(detector: &mut SensorDetector, values: impl IntoIterator<Item = f64>) -> Vec<SensorScore> {
        values.into_iter().map(|v| detector.observe(v)).collect()
    }

    fn raised(scores: &[SensorScore]) -> Vec<usize> {
        scores.iter().enumerate().filter(|(_, s)| s.alarm == AlarmChange::Raised).map(|(i, _)| i).collect()
    }

    fn noise(seed: u64, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        let mut g = Gaussian::new(seed);
        (0..n).map(|_| mean + sd * g.sample()).collect()
    }

    #[test]
    fn default_config_validates() {
        assert_eq!(SensorDetectorConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let config = SensorDetectorConfig { persistence_k: 4, persistence_n: 3, ..Default::default() };
        let error = config.validate().unwrap_err();
        assert!(error.to_string().starts_with("persistence_k"), "{error}");
        let config = SensorDetectorConfig { ewma_alpha: 0.0, ..Default::default() };
        assert!(config.validate().unwrap_err().to_string().starts_with("ewma_alpha"));
    }

    #[test]
    fn median_and_mad_match_brute_force() {
        let mut g = Gaussian::new(7);
        for n in 1..60 {
            for round in 0..20 {
                // Ties matter (quantised sensors): round half of the cases to a coarse grid.
                let mut values: Vec<f64> = (0..n).map(|_| g.sample() * 3.0).collect();
                if round % 2 == 0 {
                    values.iter_mut().for_each(|v| *v = v.round());
                }
                values.sort_by(f64::total_cmp);
                let median = median_of_sorted(&values);
                let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
                deviations.sort_by(f64::total_cmp);
                let expected = median_of_sorted(&deviations);
                let got = mad_of_sorted(&values, median);
                assert!((got - expected).abs() < 1e-12, "n={n}: {got} != {expected} for {values:?}");
            }
        }
    }

    #[test]
    fn no_score_during_warm_up() {
        let config = SensorDetectorConfig { warmup: 30, ..Default::default() };
        let mut detector = SensorDetector::new(config);
        let mut values = noise(1, 29, 10.0, 1.0);
        values.push(1e6); // 29th value is far off, still in warm-up
        let scores = run(&mut detector, values);
        assert!(scores.iter().all(|s| s.score == 0.0 && !s.exceeded && s.alarm == AlarmChange::None));
        assert!(detector.is_warm());
        // The first warm score counts.
        assert!(detector.observe(10.0).score >= 0.0);
    }

    #[test]
    fn a_single_spike_below_persistence_does_not_raise() {
        let config = SensorDetectorConfig { persistence_k: 2, persistence_n: 3, ..Default::default() };
        let mut detector = SensorDetector::new(config);
        let mut values = noise(2, 500, 50.0, 2.0);
        values[300] = 50.0 + 2.0 * 12.0;
        let scores = run(&mut detector, values);
        assert!(scores[300].exceeded, "the spike itself is scored as exceeding");
        assert_eq!(raised(&scores), Vec::<usize>::new());
    }

    #[test]
    fn with_k_1_a_big_spike_raises_exactly_once_then_clears() {
        let mut detector = SensorDetector::new(SensorDetectorConfig::default());
        let mut values = noise(3, 600, 50.0, 2.0);
        values[400] = 50.0 + 2.0 * 8.0;
        let scores = run(&mut detector, values);
        assert_eq!(raised(&scores), vec![400]);
        let cleared: Vec<usize> =
            scores.iter().enumerate().filter(|(_, s)| s.alarm == AlarmChange::Cleared).map(|(i, _)| i).collect();
        assert_eq!(cleared, vec![400 + SensorDetectorConfig::default().clear_after]);
        assert!(severity(scores[400].score, scores[400].threshold) >= 1);
    }

    #[test]
    fn spikes_of_6_to_10_sigma_are_found_with_the_defaults() {
        for (i, sigmas) in [6.0, 7.0, 8.0, 10.0].into_iter().enumerate() {
            for sign in [1.0, -1.0] {
                let mut detector = SensorDetector::new(SensorDetectorConfig::default());
                let mut values = noise(10 + i as u64, 800, 20.0, 0.5);
                values[700] = 20.0 + sign * 0.5 * sigmas;
                let scores = run(&mut detector, values);
                assert!(raised(&scores).contains(&700), "{sigmas} sigma spike (sign {sign}) missed");
            }
        }
    }

    #[test]
    fn a_level_shift_raises_one_alarm_and_the_detector_rebaselines() {
        let (mut found, mut noise_alarms) = (0, 0);
        for seed in 0..30 {
            let sigmas = [4.0, 5.0, 6.0][seed % 3];
            let mut detector = SensorDetector::new(SensorDetectorConfig::default());
            let mut values = noise(100 + seed as u64, 2_000, 100.0, 1.0);
            values[1_000..].iter_mut().for_each(|v| *v += sigmas);
            let scores = run(&mut detector, values);
            // The shift's alarm is in the first half-window after it; the rest is noise (a
            // Gaussian passes the default gate about once in 70,000 points), counted below.
            let (raised, other): (Vec<usize>, Vec<usize>) =
                raised(&scores).into_iter().partition(|i| (1_000..1_360).contains(i));
            noise_alarms += other.len();
            assert!(raised.len() <= 1, "{sigmas} sigma shift (seed {seed}): {raised:?}");
            if raised.first().is_some_and(|&at| (1_000..1_030).contains(&at)) {
                found += 1;
            }
            if !raised.is_empty() {
                assert!(
                    scores[1_000..].iter().any(|s| s.alarm == AlarmChange::Cleared),
                    "{sigmas} sigma shift never cleared: the baseline did not move"
                );
            }
            assert!(!detector.alarm_active());
            // The new level is the baseline now.
            let expected = detector.observe(100.0 + sigmas).expected;
            assert!(expected.0 < 100.0 + sigmas && 100.0 + sigmas < expected.1);
        }
        // A 4 sigma shift crosses 5 sigma only when the noise adds 1 sigma (16 % of points);
        // the new level stays news for its first 16 values, so nearly every shift is caught.
        assert!(found >= 27, "{found} of 30 level shifts found within 30 points");
        assert!(noise_alarms <= 3, "{noise_alarms} alarms on 30 x 1,640 points of noise around the shifts");
    }

    #[test]
    fn a_level_visited_every_cycle_is_not_news_but_one_between_levels_is() {
        // A square daily cycle: 60 % of the time near 20, 40 % near 80 (the MAD sees only the
        // lower level, so the upper one is 20 robust scales off).
        let cycle = 200;
        let mut g = Gaussian::new(11);
        let mut values: Vec<f64> =
            (0..5 * cycle).map(|i| if i % cycle < 120 { 20.0 } else { 80.0 } + g.sample()).collect();
        let mut detector = SensorDetector::new(SensorDetectorConfig::default());
        let scores = run(&mut detector, values.drain(..));
        // Only the first visit to the upper level, while it is still new, may alarm.
        assert!(raised(&scores).iter().all(|&i| i < cycle), "{:?}", raised(&scores));
        // The same cycle with the upper level replaced by a flat 50 once: found.
        let flat: Vec<f64> = (0..cycle).map(|i| if i < 120 { 20.0 + g.sample() } else { 50.0 }).collect();
        let scores = run(&mut detector, flat);
        assert_eq!(raised(&scores).len(), 1, "{:?}", raised(&scores));
        assert!(raised(&scores)[0] >= 120);
    }

    #[test]
    fn stationary_gaussian_noise_raises_very_few_alarms() {
        let config = SensorDetectorConfig::default();
        let mut detector = SensorDetector::new(config);
        let scores = run(&mut detector, noise(5, 100_000, 0.0, 1.0));
        let alarms = raised(&scores).len();
        // A Gaussian passes 5 sigma with p = 5.7e-7; the window's own estimation error widens
        // the tails a little, so allow a handful in 100k points.
        assert!(alarms <= 5, "{alarms} alarms on 100k points of stationary noise");
        // A more sensitive config, held back by persistence, is also quiet.
        let config = SensorDetectorConfig {
            z_threshold: 3.5,
            ewma_threshold: 3.5,
            persistence_k: 3,
            persistence_n: 5,
            ..Default::default()
        };
        let mut detector = SensorDetector::new(config);
        let alarms = raised(&run(&mut detector, noise(6, 100_000, 0.0, 1.0))).len();
        assert!(alarms <= 5, "{alarms} alarms on 100k points with 3.5 sigma and 3 of 5");
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut detector = SensorDetector::new(SensorDetectorConfig::default());
        run(&mut detector, noise(7, 300, 5.0, 1.0));
        let before = serde_json::to_string(&detector).unwrap();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let score = detector.observe(bad);
            assert_eq!(score.score, 0.0);
            assert!(!score.exceeded);
            assert_eq!(score.alarm, AlarmChange::None);
            assert!(score.expected.0.is_finite() && score.expected.1.is_finite());
        }
        assert_eq!(serde_json::to_string(&detector).unwrap(), before);
        let score = detector.observe(5.5);
        assert!(score.score.is_finite() && score.score < 3.0);
    }

    #[test]
    fn a_constant_sensor_does_not_divide_by_zero() {
        let mut detector = SensorDetector::new(SensorDetectorConfig::default());
        let scores = run(&mut detector, std::iter::repeat_n(0.0, 500));
        assert!(scores.iter().all(|s| s.score == 0.0 && !s.exceeded));
        let step = detector.observe(1.0);
        assert!(step.score.is_finite() && step.exceeded && step.alarm == AlarmChange::Raised);
        // Mostly idle with occasional small readings: the mean absolute deviation is the scale.
        let mut detector = SensorDetector::new(SensorDetectorConfig::default());
        let values = (0..2_000).map(|i| if i % 10 == 0 { 1.0 } else { 0.0 });
        assert!(raised(&run(&mut detector, values)).is_empty());
    }

    #[test]
    fn serde_round_trip_continues_identically() {
        let mut detector = SensorDetector::new(SensorDetectorConfig::default());
        let values = noise(8, 1_000, 3.0, 0.2);
        run(&mut detector, values[..600].iter().copied());
        let json = serde_json::to_vec(&detector).unwrap();
        let mut restored: SensorDetector = serde_json::from_slice(&json).unwrap();
        for &v in &values[600..] {
            assert_eq!(detector.observe(v), restored.observe(v));
        }
        // Bounded: the window and a few scalars, no sorted copy.
        let json = serde_json::to_string(&detector).unwrap();
        assert!(json.len() < 40 * detector.config.window + 500, "{} bytes", json.len());
        assert!(!json.contains("sorted"));
    }

    #[test]
    fn severity_grows_with_the_ratio() {
        assert_eq!(severity(3.0, 5.0), 1);
        assert_eq!(severity(5.1, 5.0), 1);
        assert_eq!(severity(7.5, 5.0), 2);
        assert_eq!(severity(10.0, 5.0), 3);
        assert_eq!(severity(15.0, 5.0), 4);
        assert_eq!(severity(20.0, 5.0), 5);
        assert_eq!(severity(f64::INFINITY, 5.0), 5);
        assert_eq!(severity(f64::NAN, 5.0), 1);
    }
}
