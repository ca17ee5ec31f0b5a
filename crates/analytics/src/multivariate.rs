//! Per-asset anomaly detection: an asset's sensors aligned in event-time buckets, scored
//! together against a model of the asset's healthy behaviour (k-means distance, PCA T² and
//! PCA Q), with the sensors that drove each score.
//!
//! Per-sensor detectors ([`crate::sensor`]) see each reading alone; this module sees the
//! combination. A pump whose flow falls while its power draw holds may have every sensor in
//! range, yet the pair is off the healthy pattern, which PCA's Q statistic measures.
//!
//! - [`BucketAligner`] turns one asset's out-of-order readings into one vector per bucket;
//! - [`AssetDetector`] collects `warmup_buckets` vectors, fits once (standardisation,
//!   seeded k-means with linfa, PCA keeping ~95 % of the variance) and then scores. The model
//!   is not refitted in place: refitting (after maintenance, say) is a new detector.
//!
//! All three statistics are distances normalised by their own 99th percentile on the training
//! vectors, so that one threshold fits every asset and every detector. What this is not: a
//! model of time (buckets are scored independently) or of drift (see [`crate::drift`]).

use crate::sensor::{AlarmChange, ConfigError};
use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::KMeans;
use linfa_linalg::eigh::Eigh;
use ndarray::Array2;
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// Sensors per asset this module accepts; readings of higher dimensions are ignored, so that a
/// misnumbered sensor cannot grow the state without bound.
pub const MAX_DIMS: usize = 64;
/// The training quantile each statistic is normalised by.
const TRAINING_QUANTILE: f64 = 0.99;
/// Share of the variance the kept principal components explain.
const PCA_VARIANCE: f64 = 0.95;
/// Smallest standard deviation, eigenvalue or training quantile divided by (standardised units).
const EPSILON: f64 = 1e-9;
/// Hysteresis, as for sensors: a bucket is calm below this share of the threshold.
const CLEAR_RATIO: f64 = 0.5;

/// One closed bucket of an asset: per dimension, the mean of its readings in the bucket, or
/// the last known value carried forward.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedBucket {
    pub start_ms: i64,
    pub values: Vec<f64>,
}

/// A bucket still accepting readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenBucket {
    start_ms: i64,
    sums: Vec<f64>,
    counts: Vec<u32>,
}

/// Pure event-time bucketing of one asset's sensors (dimension = the agent's index of the
/// sensor within the asset).
///
/// A bucket `[start, start + bucket_ms)` closes when event time (the largest timestamp seen)
/// reaches its end plus `grace_ms`; later readings for it are ignored. Buckets close in order.
/// A closed bucket is emitted only once every dimension has been seen at least once, with the
/// dimensions it has no reading for carried forward. A bucket with no reading at all is not
/// emitted: a gap (gateway offline) yields no vectors rather than a flood of carried-forward
/// copies of the last one. State: the open buckets (at most `grace_ms / bucket_ms + 2`) and the
/// last value per dimension.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketAligner {
    bucket_ms: i64,
    grace_ms: i64,
    /// Last known value per dimension (None: never seen).
    last: Vec<Option<f64>>,
    /// Set by [`BucketAligner::freeze_dims`]: readings of dimensions at or past it are ignored.
    frozen_dims: Option<usize>,
    /// Open buckets, oldest first.
    open: Vec<OpenBucket>,
    /// Buckets starting before this are closed.
    closed_before_ms: i64,
    /// Largest event time seen.
    watermark_ms: i64,
}

impl BucketAligner {
    /// `bucket_ms` is clamped to at least 1 ms and `grace_ms` to at least 0.
    pub fn new(bucket_ms: i64, grace_ms: i64) -> Self {
        BucketAligner {
            bucket_ms: bucket_ms.max(1),
            grace_ms: grace_ms.max(0),
            last: Vec::new(),
            frozen_dims: None,
            open: Vec::new(),
            closed_before_ms: i64::MIN,
            watermark_ms: i64::MIN,
        }
    }

    /// Adds one reading; returns the buckets it closed, oldest first. Non-finite values, late
    /// readings and readings of ignored dimensions change nothing.
    pub fn push(&mut self, dim: usize, ts_ms: i64, value: f64) -> Vec<AlignedBucket> {
        let limit = self.frozen_dims.unwrap_or(MAX_DIMS).min(MAX_DIMS);
        if dim >= limit || !value.is_finite() {
            return Vec::new();
        }
        let start_ms = ts_ms.div_euclid(self.bucket_ms).saturating_mul(self.bucket_ms);
        if start_ms < self.closed_before_ms {
            return Vec::new(); // late: its bucket is closed
        }
        if dim >= self.last.len() {
            self.last.resize(dim + 1, None);
        }
        let at = self.open.partition_point(|b| b.start_ms < start_ms);
        if self.open.get(at).is_none_or(|b| b.start_ms != start_ms) {
            self.open.insert(at, OpenBucket { start_ms, sums: Vec::new(), counts: Vec::new() });
        }
        let bucket = &mut self.open[at];
        if dim >= bucket.sums.len() {
            bucket.sums.resize(dim + 1, 0.0);
            bucket.counts.resize(dim + 1, 0);
        }
        bucket.sums[dim] += value;
        bucket.counts[dim] += 1;
        self.watermark_ms = self.watermark_ms.max(ts_ms);
        self.close_until(self.watermark_ms.saturating_sub(self.grace_ms))
    }

    /// Closes every open bucket (end of a replay); returns those that can be emitted.
    pub fn flush(&mut self) -> Vec<AlignedBucket> {
        self.close_until(i64::MAX)
    }

    /// Fixes the dimensions at their current count, once the asset model is fitted on them:
    /// from now on readings of new dimensions are ignored.
    pub fn freeze_dims(&mut self) {
        self.frozen_dims = Some(self.last.len());
    }

    /// Dimensions seen so far (or frozen).
    pub fn dims(&self) -> usize {
        self.last.len()
    }

    /// Closes the open buckets that end at or before `time_ms`.
    fn close_until(&mut self, time_ms: i64) -> Vec<AlignedBucket> {
        let mut emitted = Vec::new();
        let closing = self.open.partition_point(|b| b.start_ms.saturating_add(self.bucket_ms) <= time_ms);
        for bucket in self.open.drain(..closing) {
            for (dim, (&sum, &count)) in bucket.sums.iter().zip(&bucket.counts).enumerate() {
                if count > 0 {
                    self.last[dim] = Some(sum / f64::from(count));
                }
            }
            self.closed_before_ms = bucket.start_ms.saturating_add(self.bucket_ms);
            if let Some(values) = self.last.iter().copied().collect::<Option<Vec<f64>>>() {
                emitted.push(AlignedBucket { start_ms: bucket.start_ms, values });
            }
        }
        emitted
    }
}

/// Settings of an asset's detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssetDetectorConfig {
    /// Healthy vectors collected before the model is fitted.
    pub warmup_buckets: usize,
    /// k-means clusters (operating modes: idle, part load, full load, ...).
    pub clusters: usize,
    /// Threshold on the normalised score (1.0 = the training vectors' 99th percentile).
    pub threshold: f64,
    /// Raise when `persistence_k` of the last `persistence_n` buckets exceed the threshold.
    pub persistence_k: usize,
    /// See `persistence_k`; at most 64.
    pub persistence_n: usize,
    /// An active alarm clears after this many calm buckets in a row.
    pub clear_after: usize,
    /// Seed of k-means' initialisation: the same seed and vectors give the same model.
    pub seed: u64,
}

impl Default for AssetDetectorConfig {
    /// - `warmup_buckets` 256: enough vectors for a 99th percentile (~2-3 beyond it) and for a
    ///   covariance of up to ~20 sensors; 4 hours of 1-minute buckets;
    /// - `clusters` 3: a few operating modes; a single-mode asset just gets close centroids;
    /// - `threshold` 1.5: half as far again as the farthest 1 % of healthy vectors;
    /// - 2 of 3 buckets: one odd bucket (a reading lost and carried forward) is not an alarm;
    /// - `clear_after` 5 calm buckets.
    fn default() -> Self {
        AssetDetectorConfig {
            warmup_buckets: 256,
            clusters: 3,
            threshold: 1.5,
            persistence_k: 2,
            persistence_n: 3,
            clear_after: 5,
            seed: 42,
        }
    }
}

impl AssetDetectorConfig {
    /// Checks every setting; the agents call this once at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.warmup_buckets < 10 {
            return Err(ConfigError::invalid("warmup_buckets", "at least 10", self.warmup_buckets));
        }
        if self.clusters == 0 || self.clusters > self.warmup_buckets {
            return Err(ConfigError::invalid("clusters", "in 1..=warmup_buckets", self.clusters));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(ConfigError::invalid("threshold", "finite and > 0", self.threshold));
        }
        if self.persistence_n == 0 || self.persistence_n > 64 {
            return Err(ConfigError::invalid("persistence_n", "in 1..=64", self.persistence_n));
        }
        if self.persistence_k == 0 || self.persistence_k > self.persistence_n {
            return Err(ConfigError::invalid("persistence_k", "in 1..=persistence_n", self.persistence_k));
        }
        if self.clear_after == 0 {
            return Err(ConfigError::invalid("clear_after", "at least 1", self.clear_after));
        }
        Ok(())
    }

    fn sanitised(mut self) -> Self {
        let defaults = AssetDetectorConfig::default();
        self.warmup_buckets = self.warmup_buckets.max(10);
        self.clusters = self.clusters.clamp(1, self.warmup_buckets);
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            self.threshold = defaults.threshold;
        }
        self.persistence_n = self.persistence_n.clamp(1, 64);
        self.persistence_k = self.persistence_k.clamp(1, self.persistence_n);
        self.clear_after = self.clear_after.max(1);
        self
    }
}

/// Which statistic gave an asset's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssetDetectorKind {
    /// Distance to the nearest k-means centroid: off every known operating mode.
    KMeans,
    /// Hotelling's T² in the principal subspace: an unusual *amount* of a usual pattern.
    PcaT2,
    /// Q (squared prediction error) off the principal subspace: sensors no longer moving together.
    PcaQ,
}

impl AssetDetectorKind {
    /// Stable name, for events and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            AssetDetectorKind::KMeans => "kmeans",
            AssetDetectorKind::PcaT2 => "pca_t2",
            AssetDetectorKind::PcaQ => "pca_q",
        }
    }
}

/// One bucket's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetScore {
    /// The largest of the three normalised statistics (1.0 = training 99th percentile).
    pub score: f64,
    /// The statistic that gave it.
    pub detector: AssetDetectorKind,
    pub threshold: f64,
    /// Per dimension, >= 0 and summing to 1: each sensor's share of the winning statistic.
    pub contributions: Vec<f64>,
    pub exceeded: bool,
    pub alarm: AlarmChange,
}

/// The fitted model: everything scoring needs and nothing of the training vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AssetModel {
    means: Vec<f64>,
    /// Standard deviations, floored: a constant sensor divides by a tiny number, so any
    /// change of it stands out (and is named in the contributions).
    stds: Vec<f64>,
    /// k-means centroids in standardised units, row-major (`clusters × dims`).
    centroids: Vec<f64>,
    /// Kept principal directions, row-major (`kept × dims`), and their variances.
    components: Vec<f64>,
    eigenvalues: Vec<f64>,
    /// 99th percentiles on the training vectors of the k-means distance, √T² and √Q.
    kmeans_scale: f64,
    t2_scale: f64,
    q_scale: f64,
}

/// One asset's detector; checkpointed as JSON by the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssetDetector {
    config: AssetDetectorConfig,
    dims: usize,
    /// Warm-up vectors, row-major; emptied once the model is fitted.
    training: Vec<f64>,
    model: Option<AssetModel>,
    exceed_bits: u64,
    alarm_active: bool,
    calm_run: usize,
}

impl AssetDetector {
    /// A detector collecting its training vectors. A bad setting is replaced by the nearest one
    /// that works; call [`AssetDetectorConfig::validate`] first to report it.
    pub fn new(config: AssetDetectorConfig) -> Self {
        AssetDetector {
            config: config.sanitised(),
            dims: 0,
            training: Vec::new(),
            model: None,
            exceed_bits: 0,
            alarm_active: false,
            calm_run: 0,
        }
    }

    /// Collects healthy vectors during warm-up, then fits (standardisation, seeded k-means,
    /// PCA keeping ~95 % of variance) and scores. None while warming up, and for a vector that
    /// cannot be scored (a non-finite value, or not the fitted number of dimensions). A change
    /// of dimension during warm-up (a new sensor) restarts the warm-up.
    pub fn observe(&mut self, values: &[f64]) -> Option<AssetScore> {
        if values.is_empty() || values.len() > MAX_DIMS || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let Some(model) = &self.model else {
            if values.len() != self.dims {
                self.dims = values.len();
                self.training.clear();
            }
            self.training.extend_from_slice(values);
            if self.training.len() >= self.config.warmup_buckets * self.dims {
                self.model = Some(fit(&self.training, self.dims, &self.config));
                self.training = Vec::new();
            }
            return None;
        };
        if values.len() != self.dims {
            return None;
        }
        let statistics = model.statistics(values);
        let (detector, score, contributions) =
            statistics.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("three statistics");
        let threshold = self.config.threshold;
        let exceeded = score > threshold;
        let alarm = self.update_alarm(exceeded, score < CLEAR_RATIO * threshold);
        Some(AssetScore { score, detector, threshold, contributions, exceeded, alarm })
    }

    /// Whether the model is fitted (the agent then freezes its aligner's dimensions).
    pub fn is_fitted(&self) -> bool {
        self.model.is_some()
    }

    /// Whether an alarm is raised and not yet cleared.
    pub fn alarm_active(&self) -> bool {
        self.alarm_active
    }

    fn update_alarm(&mut self, exceeded: bool, calm: bool) -> AlarmChange {
        let n = self.config.persistence_n;
        let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        self.exceed_bits = ((self.exceed_bits << 1) | u64::from(exceeded)) & mask;
        self.calm_run = if calm { self.calm_run.saturating_add(1) } else { 0 };
        if !self.alarm_active && self.exceed_bits.count_ones() as usize >= self.config.persistence_k {
            self.alarm_active = true;
            return AlarmChange::Raised;
        }
        if self.alarm_active && self.calm_run >= self.config.clear_after {
            self.alarm_active = false;
            self.exceed_bits = 0;
            return AlarmChange::Cleared;
        }
        AlarmChange::None
    }
}

/// Fits the model on `rows` (row-major, `dims` columns).
fn fit(rows: &[f64], dims: usize, config: &AssetDetectorConfig) -> AssetModel {
    let n = rows.len() / dims;
    let data = Array2::from_shape_vec((n, dims), rows.to_vec()).expect("rows are n × dims");
    let means: Vec<f64> = (0..dims).map(|j| data.column(j).sum() / n as f64).collect();
    let stds: Vec<f64> = (0..dims)
        .map(|j| {
            let variance = data.column(j).iter().map(|v| (v - means[j]).powi(2)).sum::<f64>() / n as f64;
            variance.sqrt().max(std_floor(means[j]))
        })
        .collect();
    let mut z = data;
    for mut row in z.rows_mut() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - means[j]) / stds[j];
        }
    }

    // k-means on the standardised vectors. linfa's k-means++ is seeded, so the same seed and
    // vectors give the same centroids. If it fails (degenerate data), one centroid: the mean.
    let clusters = config.clusters.min(n).max(1);
    let centroids = KMeans::params_with_rng(clusters, Xoshiro256Plus::seed_from_u64(config.seed))
        .max_n_iterations(200)
        .tolerance(1e-6)
        .fit(&DatasetBase::from(z.clone()))
        .ok()
        .map(|model| model.centroids().iter().copied().collect::<Vec<f64>>())
        .filter(|c| c.iter().all(|v| v.is_finite()))
        .unwrap_or_else(|| vec![0.0; dims]);

    // PCA: eigen decomposition of the covariance (= correlation, as z is standardised) with
    // linfa-linalg's pure-Rust symmetric solver; keep the largest components up to 95 % of
    // the variance, never a zero-variance one.
    let covariance = z.t().dot(&z) / n as f64;
    let (components, eigenvalues) = match covariance.eigh() {
        Ok((values, vectors)) => principal_components(values.to_vec(), &vectors, dims),
        Err(_) => (Vec::new(), Vec::new()),
    };

    let mut model =
        AssetModel { means, stds, centroids, components, eigenvalues, kmeans_scale: 1.0, t2_scale: 1.0, q_scale: 1.0 };
    // Normalise each statistic by its own training quantile, computed on the standardised rows.
    let mut kmeans = Vec::with_capacity(n);
    let mut t2 = Vec::with_capacity(n);
    let mut q = Vec::with_capacity(n);
    for row in z.rows() {
        let row: Vec<f64> = row.to_vec();
        kmeans.push(model.nearest_centroid(&row).1.sqrt());
        let (t2_value, q_value) = model.pca_distances(&row);
        t2.push(t2_value);
        q.push(q_value);
    }
    model.kmeans_scale = quantile(&mut kmeans, TRAINING_QUANTILE).max(EPSILON.sqrt());
    model.t2_scale = quantile(&mut t2, TRAINING_QUANTILE).max(EPSILON.sqrt());
    model.q_scale = quantile(&mut q, TRAINING_QUANTILE).max(EPSILON.sqrt());
    model
}

/// Sorts eigenpairs by decreasing eigenvalue and keeps those up to [`PCA_VARIANCE`] of the
/// total. Returns the kept eigenvectors row-major and their eigenvalues.
fn principal_components(values: Vec<f64>, vectors: &Array2<f64>, dims: usize) -> (Vec<f64>, Vec<f64>) {
    let total: f64 = values.iter().filter(|v| v.is_finite() && **v > 0.0).sum();
    if total <= EPSILON {
        return (Vec::new(), Vec::new());
    }
    let mut order: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_finite()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let (mut components, mut kept, mut explained) = (Vec::new(), Vec::new(), 0.0);
    for i in order {
        if explained >= PCA_VARIANCE * total || values[i] <= EPSILON * total {
            break;
        }
        components.extend(vectors.column(i).iter().copied());
        kept.push(values[i]);
        explained += values[i];
    }
    debug_assert_eq!(components.len(), kept.len() * dims);
    (components, kept)
}

/// The `q` quantile (nearest rank) of `values`, reordering them.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
    *values.select_nth_unstable_by(rank, f64::total_cmp).1
}

/// Smallest standard deviation of a dimension: a millionth of its level (or 1e-9 near zero).
fn std_floor(mean: f64) -> f64 {
    (mean.abs() * 1e-6).max(EPSILON)
}

impl AssetModel {
    fn dims(&self) -> usize {
        self.means.len()
    }

    /// The three normalised statistics of a raw vector, each with its per-dimension shares.
    fn statistics(&self, values: &[f64]) -> [(AssetDetectorKind, f64, Vec<f64>); 3] {
        let z: Vec<f64> = values.iter().enumerate().map(|(j, v)| (v - self.means[j]) / self.stds[j]).collect();

        let (centroid, _) = self.nearest_centroid(&z);
        let c = &self.centroids[centroid * self.dims()..(centroid + 1) * self.dims()];
        let kmeans_parts: Vec<f64> = z.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).collect();

        let (t2_parts, q_parts) = self.pca_parts(&z);
        let distance = |parts: &[f64], scale: f64| parts.iter().sum::<f64>().sqrt() / scale;
        [
            (AssetDetectorKind::KMeans, distance(&kmeans_parts, self.kmeans_scale), shares(kmeans_parts)),
            (AssetDetectorKind::PcaT2, distance(&t2_parts, self.t2_scale), shares(t2_parts)),
            (AssetDetectorKind::PcaQ, distance(&q_parts, self.q_scale), shares(q_parts)),
        ]
    }

    /// Index and squared distance of the nearest centroid to a standardised vector.
    fn nearest_centroid(&self, z: &[f64]) -> (usize, f64) {
        self.centroids
            .chunks_exact(self.dims())
            .map(|c| z.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum::<f64>())
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0))
    }

    /// √T² and √Q of a standardised vector.
    fn pca_distances(&self, z: &[f64]) -> (f64, f64) {
        let (t2, q) = self.pca_parts(z);
        (t2.iter().sum::<f64>().sqrt(), q.iter().sum::<f64>().sqrt())
    }

    /// Per-dimension parts of T² and Q, each >= 0 and summing to the statistic.
    ///
    /// With scores `t = Pᵀz` on the kept directions P (eigenvalues λ): T² = Σ t²/λ equals
    /// ‖P Λ^-½ t‖², so its parts are the squared coordinates of that (zero-phase whitened)
    /// vector; Q = ‖z - P t‖², whose parts are the squared residuals.
    fn pca_parts(&self, z: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = self.dims();
        let mut whitened = vec![0.0; d];
        let mut reconstructed = vec![0.0; d];
        for (direction, &eigenvalue) in self.components.chunks_exact(d).zip(&self.eigenvalues) {
            let t: f64 = direction.iter().zip(z).map(|(p, v)| p * v).sum();
            let w = t / eigenvalue.max(EPSILON).sqrt();
            for j in 0..d {
                whitened[j] += direction[j] * w;
                reconstructed[j] += direction[j] * t;
            }
        }
        let t2_parts = whitened.iter().map(|w| w * w).collect();
        let q_parts = z.iter().zip(&reconstructed).map(|(v, r)| (v - r) * (v - r)).collect();
        (t2_parts, q_parts)
    }
}

/// Parts normalised to sum to 1 (equal shares when they are all zero).
fn shares(parts: Vec<f64>) -> Vec<f64> {
    let total: f64 = parts.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        let n = parts.len().max(1) as f64;
        return vec![1.0 / n; parts.len()];
    }
    parts.into_iter().map(|p| p / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::tests::Gaussian;

    /// Healthy 4-sensor vectors: flow and power move together (one latent load), temperature
    /// follows load loosely, vibration is independent noise. Two operating modes.
    fn healthy(g: &mut Gaussian) -> Vec<f64> {
        let high_load = g.uniform() < 0.4;
        let load = if high_load { 80.0 } else { 40.0 } + 3.0 * g.sample();
        let flow = 2.0 * load + 1.5 * g.sample();
        let power = 0.5 * load + 0.8 * g.sample();
        let temperature = 30.0 + 0.2 * load + 1.0 * g.sample();
        let vibration = 1.0 + 0.1 * g.sample();
        vec![flow, power, temperature, vibration]
    }

    fn fitted(seed: u64) -> (AssetDetector, Gaussian) {
        let mut g = Gaussian::new(seed);
        let mut detector = AssetDetector::new(AssetDetectorConfig::default());
        for _ in 0..AssetDetectorConfig::default().warmup_buckets {
            assert_eq!(detector.observe(&healthy(&mut g)), None);
        }
        assert!(detector.is_fitted());
        (detector, g)
    }

    #[test]
    fn default_config_validates() {
        assert_eq!(AssetDetectorConfig::default().validate(), Ok(()));
        let bad = AssetDetectorConfig { persistence_k: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().starts_with("persistence_k"));
    }

    #[test]
    fn aligner_averages_carries_forward_and_waits_for_every_dim() {
        let mut aligner = BucketAligner::new(1_000, 0);
        assert!(aligner.push(0, 100, 1.0).is_empty());
        assert!(aligner.push(0, 900, 3.0).is_empty());
        // Dim 1 not seen yet: bucket 0 closes without being emitted.
        assert!(aligner.push(1, 1_100, 10.0).is_empty());
        assert_eq!(aligner.dims(), 2);
        // Bucket 1 closes: dim 0 carried forward from bucket 0's mean (2.0), dim 1 = 10.
        let out = aligner.push(1, 2_000, 20.0);
        assert_eq!(out, vec![AlignedBucket { start_ms: 1_000, values: vec![2.0, 10.0] }]);
        // Bucket 2 has only dim 1: dim 0 carried forward again.
        assert_eq!(aligner.flush(), vec![AlignedBucket { start_ms: 2_000, values: vec![2.0, 20.0] }]);
    }

    #[test]
    fn aligner_waits_for_grace_and_ignores_late_readings() {
        let mut aligner = BucketAligner::new(1_000, 500);
        aligner.push(0, 0, 1.0);
        // 1_200 < end (1_000) + grace (500): bucket 0 still open and accepts a late reading.
        assert!(aligner.push(0, 1_200, 5.0).is_empty());
        assert!(aligner.push(0, 999, 3.0).is_empty());
        let out = aligner.push(0, 1_500, 5.0);
        assert_eq!(out, vec![AlignedBucket { start_ms: 0, values: vec![2.0] }]);
        // Bucket 0 is closed now: a reading for it is ignored.
        assert!(aligner.push(0, 10, 100.0).is_empty());
        assert_eq!(aligner.flush(), vec![AlignedBucket { start_ms: 1_000, values: vec![5.0] }]);
    }

    #[test]
    fn aligner_emits_nothing_for_a_gap_and_buckets_in_order() {
        let mut aligner = BucketAligner::new(1_000, 0);
        aligner.push(0, 0, 1.0);
        // A day without readings, then one: only the bucket that had readings is emitted.
        let out = aligner.push(0, 86_400_000, 2.0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].start_ms, 0);
        // Out-of-order readings within the grace period still come out in order.
        let mut aligner = BucketAligner::new(1_000, 5_000);
        for ts in [3_500, 1_200, 2_700, 100] {
            aligner.push(0, ts, ts as f64);
        }
        let starts: Vec<i64> = aligner.push(0, 20_000, 0.0).iter().map(|b| b.start_ms).collect();
        assert_eq!(starts, vec![0, 1_000, 2_000, 3_000]);
    }

    #[test]
    fn aligner_ignores_dims_past_the_frozen_count_and_survives_serde() {
        let mut aligner = BucketAligner::new(1_000, 0);
        aligner.push(0, 0, 1.0);
        aligner.push(1, 0, 2.0);
        aligner.freeze_dims();
        aligner.push(2, 10, 3.0);
        assert_eq!(aligner.dims(), 2);
        let mut restored: BucketAligner = serde_json::from_str(&serde_json::to_string(&aligner).unwrap()).unwrap();
        assert_eq!(aligner.push(0, 1_000, 4.0), restored.push(0, 1_000, 4.0));
        assert_eq!(restored.flush(), vec![AlignedBucket { start_ms: 1_000, values: vec![4.0, 2.0] }]);
    }

    #[test]
    fn healthy_data_scores_below_threshold_almost_always() {
        let (mut detector, mut g) = fitted(1);
        let (mut exceeded, mut raised) = (0, 0);
        for _ in 0..10_000 {
            let score = detector.observe(&healthy(&mut g)).unwrap();
            assert!((score.contributions.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(score.contributions.iter().all(|c| *c >= 0.0));
            exceeded += usize::from(score.exceeded);
            raised += usize::from(score.alarm == AlarmChange::Raised);
        }
        assert!(exceeded < 100, "{exceeded} of 10,000 healthy buckets exceeded");
        assert!(raised <= 3, "{raised} alarms on 10,000 healthy buckets");
    }

    #[test]
    fn a_vector_far_off_in_one_dim_is_flagged_and_named() {
        let (mut detector, mut g) = fitted(2);
        let mut off = healthy(&mut g);
        off[3] += 2.0; // vibration: 20 standard deviations
        let score = detector.observe(&off).unwrap();
        assert!(score.exceeded, "{score:?}");
        let top = score.contributions.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(top, 3, "{score:?}");
        // A broken correlation: flow drops while power holds. Every value is in its usual range,
        // but the pair is off the healthy pattern (Q), and flow is the sensor named.
        let mut broken = healthy(&mut g);
        broken[0] -= 60.0;
        let score = detector.observe(&broken).unwrap();
        assert!(score.exceeded, "{score:?}");
        let top = score.contributions.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(top, 0, "{score:?}");
    }

    #[test]
    fn a_slow_ramp_in_two_correlated_dims_raises_exactly_one_alarm() {
        let (mut detector, mut g) = fitted(3);
        let mut raised = Vec::new();
        for i in 0..500 {
            let mut values = healthy(&mut g);
            // Flow falls and power rises, slowly: opposite to their healthy correlation.
            let drift = i as f64 * 0.1;
            values[0] -= drift;
            values[1] += drift * 0.25;
            let score = detector.observe(&values).unwrap();
            if score.alarm == AlarmChange::Raised {
                raised.push(i);
            }
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert!(raised[0] > 10, "raised before the ramp was visible: {raised:?}");
        assert!(detector.alarm_active());
    }

    #[test]
    fn the_same_seed_fits_the_same_model() {
        let (mut a, mut g) = fitted(4);
        let (mut b, _) = fitted(4);
        assert_eq!(a.model, b.model);
        for _ in 0..100 {
            let values = healthy(&mut g);
            assert_eq!(a.observe(&values), b.observe(&values));
        }
    }

    #[test]
    fn serde_round_trip_of_a_fitted_detector_scores_identically() {
        let (mut detector, mut g) = fitted(5);
        let json = serde_json::to_vec(&detector).unwrap();
        let mut restored: AssetDetector = serde_json::from_slice(&json).unwrap();
        for _ in 0..200 {
            let values = healthy(&mut g);
            assert_eq!(detector.observe(&values), restored.observe(&values));
        }
        // Compact: the model, not the training vectors.
        assert!(json.len() < 4_000, "{} bytes", json.len());
    }

    #[test]
    fn constant_sensors_do_not_produce_nan() {
        let mut g = Gaussian::new(6);
        let mut detector = AssetDetector::new(AssetDetectorConfig { warmup_buckets: 50, ..Default::default() });
        for _ in 0..50 {
            detector.observe(&[5.0, 10.0 + g.sample(), 0.0]);
        }
        let score = detector.observe(&[5.0, 10.0, 0.0]).unwrap();
        assert!(score.score.is_finite() && !score.exceeded, "{score:?}");
        assert!(score.contributions.iter().all(|c| c.is_finite()));
        // The constant sensor moving is news, and it is the one named.
        let score = detector.observe(&[6.0, 10.0, 0.0]).unwrap();
        assert!(score.exceeded && score.contributions[0] > 0.9, "{score:?}");
        // All sensors constant: still no NaN.
        let mut flat = AssetDetector::new(AssetDetectorConfig { warmup_buckets: 20, ..Default::default() });
        for _ in 0..20 {
            flat.observe(&[1.0, 2.0]);
        }
        let score = flat.observe(&[1.0, 2.0]).unwrap();
        assert!(score.score.is_finite() && score.contributions.iter().all(|c| c.is_finite()), "{score:?}");
    }

    #[test]
    fn unscorable_vectors_return_none() {
        let (mut detector, mut g) = fitted(8);
        assert_eq!(detector.observe(&[1.0, 2.0]), None);
        let mut values = healthy(&mut g);
        values[1] = f64::NAN;
        assert_eq!(detector.observe(&values), None);
    }
}
