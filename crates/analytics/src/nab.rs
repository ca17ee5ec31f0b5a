//! The Numenta Anomaly Benchmark (NAB v1.1) scorer, so that `smctl eval anomaly` reports
//! the figure the literature quotes, computed the way NAB computes it.
//!
//! Pure: the caller reads the files and hands over their text. Where each rule comes from
//! (numenta/NAB, Python 3 code base of v1.1):
//! - per-series scoring: `nab/sweeper.py`, `Sweeper.calcSweepScore` and
//!   `calcScoreByThreshold` (which v1.1's `nab/scorer.py::scoreDataSet` calls);
//! - the probationary period `min(floor(0.15 n), 0.15 * 5000)`: `Sweeper._getProbationaryLength`;
//! - the scaled sigmoid `2 sigmoid(-5x) - 1`, `-1` beyond 3: `sweeper.scaledSigmoid`;
//! - normalisation `100 (raw - null) / (perfect - null)`, with perfect = windows × tpWeight,
//!   over the whole corpus: `nab/runner.py`, `Runner.normalize`;
//! - the profiles: `config/profiles.json`;
//! - window file and timestamp formats: `labels/combined_windows.json`, `nab/labeler.py`.
//!
//! Not here: NAB's threshold optimiser (we score binary detections, not a score stream) and
//! its label-combining tools.

use crate::sensor::{AlarmChange, SensorDetector, SensorDetectorConfig};
use std::collections::BTreeMap;

/// NAB's probationary fraction: detections in the first 15 % of a series are not scored.
const PROBATION_PERCENT: f64 = 0.15;

/// Weights of one NAB application profile (`config/profiles.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub tp_weight: f64,
    pub fp_weight: f64,
    pub fn_weight: f64,
}

impl Profile {
    /// NAB's "standard" profile, the figure usually quoted.
    pub const STANDARD: Profile = Profile { tp_weight: 1.0, fp_weight: 0.11, fn_weight: 1.0 };
    /// "reward_low_FP_rate": false positives cost twice as much.
    pub const REWARD_LOW_FP: Profile = Profile { tp_weight: 1.0, fp_weight: 0.22, fn_weight: 1.0 };
    /// "reward_low_FN_rate": a missed window costs twice as much.
    pub const REWARD_LOW_FN: Profile = Profile { tp_weight: 1.0, fp_weight: 0.11, fn_weight: 2.0 };
}

/// One labelled NAB series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Path relative to NAB's `data/`, e.g. `realKnownCause/nyc_taxi.csv`.
    pub name: String,
    /// Epoch milliseconds, UTC.
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
    /// Labelled anomaly windows, epoch milliseconds, inclusive at both ends.
    pub windows: Vec<(i64, i64)>,
}

/// Why a NAB file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NabError {
    #[error("line {line}: {reason}")]
    Csv { line: usize, reason: String },
    #[error("the file is empty; expected a `timestamp,value` header")]
    Empty,
    #[error("windows file: {0}")]
    Windows(String),
}

/// A series' NAB result under one profile.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SeriesScore {
    /// The detector's NAB score (sum of window and false-positive contributions).
    pub raw: f64,
    /// What the null detector (never fires) scores: `-fn_weight` per scorable window.
    pub null: f64,
    /// What the perfect detector scores: `tp_weight` per window (`Runner.normalize`).
    pub perfect: f64,
    /// Windows with at least one detection (only the first one in a window counts).
    pub tp: usize,
    /// Detections outside every window, after the probationary period.
    pub fp: usize,
    /// Scorable windows without a detection.
    pub fn_: usize,
    /// Labelled windows.
    pub windows: usize,
    /// Points in the series.
    pub points: usize,
}

/// Parses a NAB data file: a `timestamp,value` header, then `2014-04-01 00:00:00,18.3` rows
/// (UTC). Returns epoch milliseconds and values.
pub fn parse_series_csv(text: &str) -> Result<(Vec<i64>, Vec<f64>), NabError> {
    let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
    let (_, header) = lines.next().ok_or(NabError::Empty)?;
    let columns: Vec<&str> = header.trim_start_matches('\u{feff}').split(',').map(str::trim).collect();
    if columns != ["timestamp", "value"] {
        return Err(NabError::Csv {
            line: 1,
            reason: format!("expected the header `timestamp,value`, found `{header}`"),
        });
    }
    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    for (index, line) in lines {
        let csv_error = |reason: String| NabError::Csv { line: index + 1, reason };
        let (timestamp, value) =
            line.split_once(',').ok_or_else(|| csv_error(format!("expected `timestamp,value`, found `{line}`")))?;
        let timestamp =
            parse_timestamp_ms(timestamp.trim()).ok_or_else(|| csv_error(format!("bad timestamp `{timestamp}`")))?;
        let value: f64 = value.trim().parse().map_err(|_| csv_error(format!("bad value `{}`", value.trim())))?;
        timestamps.push(timestamp);
        values.push(value);
    }
    Ok((timestamps, values))
}

/// Parses `combined_windows.json`: `{"series.csv": [["2014-04-10 07:15:00.000000", "..."]]}`.
pub fn parse_windows(json: &str) -> Result<BTreeMap<String, Vec<(i64, i64)>>, NabError> {
    let raw: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(json).map_err(|e| NabError::Windows(e.to_string()))?;
    let mut windows = BTreeMap::new();
    for (name, limits) in raw {
        let mut parsed = Vec::with_capacity(limits.len());
        for (start, end) in limits {
            let parse = |text: &str| {
                parse_timestamp_ms(text).ok_or_else(|| NabError::Windows(format!("{name}: bad timestamp `{text}`")))
            };
            let (start, end) = (parse(&start)?, parse(&end)?);
            if end < start {
                return Err(NabError::Windows(format!("{name}: window ends before it starts")));
            }
            parsed.push((start, end));
        }
        parsed.sort_unstable();
        windows.insert(name, parsed);
    }
    Ok(windows)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (or with `T`), UTC, to epoch milliseconds.
fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut date_parts = date.splitn(3, '-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time_parts = hms.splitn(3, ':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let second: i64 = time_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Milliseconds: the first three digits of the fraction, right-padded.
    let millis =
        fraction.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// NAB's scaled sigmoid: +0.987 at the start of a window (x = -1), 0 at its end (x = 0),
/// -0.987 one window length after it, and -1 from 3 lengths on (`sweeper.scaledSigmoid`).
fn scaled_sigmoid(x: f64) -> f64 {
    if x > 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * x).exp()) - 1.0 }
}

/// Points NAB ignores at the start of a series: `min(floor(0.15 n), 0.15 * 5000)`
/// (`Sweeper._getProbationaryLength`). A float, compared with the index as NAB does.
pub fn probationary_length(points: usize) -> f64 {
    (PROBATION_PERCENT * points as f64).floor().min(PROBATION_PERCENT * 5000.0)
}

/// A window as point indices, inclusive.
#[derive(Debug, Clone, Copy)]
struct IndexWindow {
    left: usize,
    right: usize,
}

impl IndexWindow {
    fn width(self) -> f64 {
        (self.right - self.left + 1) as f64
    }
}

/// The windows as index ranges: first point at or after the start to last point at or before the
/// end. NAB looks the limits up by exact timestamp (`timestamps.index`); on NAB's own files, whose
/// limits are data timestamps, this is the same, and it also copes with limits between points.
/// Windows holding no point are dropped.
fn index_windows(timestamps: &[i64], windows: &[(i64, i64)]) -> Vec<IndexWindow> {
    let mut out: Vec<IndexWindow> = windows
        .iter()
        .filter_map(|&(start, end)| {
            let left = timestamps.partition_point(|&t| t < start);
            let right = timestamps.partition_point(|&t| t <= end).checked_sub(1)?;
            (left <= right).then_some(IndexWindow { left, right })
        })
        .collect();
    out.sort_by_key(|w| w.left);
    out
}

/// Scores one series' binary detections (true = the detector alarmed at that point) as NAB
/// v1.1's sweeper does at a threshold between "no" and "yes":
/// - a detection inside a window scores `tp_weight · S(-(right - i + 1)/width) / S(-1)`, where
///   S is the scaled sigmoid: `tp_weight` at the window's first point, ~0 at its last. Only the
///   best (= earliest) detection of a window counts; later ones add nothing;
/// - a window without detection scores `-fn_weight`, once;
/// - a detection outside windows scores `fp_weight · S(|i - prev_right| / (prev_width - 1))`
///   relative to the closest preceding window (nearly free just after it, `-fp_weight` from 3
///   widths on), and `-fp_weight` when no window precedes it;
/// - points in the probationary period count for nothing, and a window lying wholly inside
///   it is neither a TP nor an FN.
///
/// `detections` shorter than the series is padded with `false`.
pub fn score(series: &Series, detections: &[bool], profile: &Profile) -> SeriesScore {
    let points = series.timestamps.len();
    let probation = probationary_length(points);
    let windows = index_windows(&series.timestamps, &series.windows);
    let max_tp = scaled_sigmoid(-1.0);

    // Per window: None = wholly probationary; Some(score) otherwise, starting at the FN penalty.
    let mut window_scores: Vec<Option<f64>> =
        windows.iter().map(|w| (w.right as f64 >= probation).then_some(-profile.fn_weight)).collect();
    let mut detected = vec![false; windows.len()];
    let (mut fp_score, mut fp) = (0.0, 0usize);
    let mut next_window = 0; // the first window not yet passed
    for (i, _) in detections.iter().enumerate().take(points).filter(|(_, d)| **d) {
        if (i as f64) < probation {
            continue;
        }
        while next_window < windows.len() && windows[next_window].right < i {
            next_window += 1;
        }
        let inside = windows.get(next_window).filter(|w| w.left <= i);
        if let Some(window) = inside {
            let position = -((window.right - i + 1) as f64) / window.width();
            let tp_score = scaled_sigmoid(position) * profile.tp_weight / max_tp;
            if let Some(best) = window_scores[next_window].as_mut() {
                *best = best.max(tp_score);
                detected[next_window] = true;
            }
        } else {
            let unweighted = match next_window.checked_sub(1).map(|w| windows[w]) {
                None => -1.0,
                // NAB divides by zero for a one-point window; treat the FP as far away instead.
                Some(previous) if previous.right == previous.left => -1.0,
                Some(previous) => scaled_sigmoid((i - previous.right) as f64 / (previous.width() - 1.0)),
            };
            fp_score += unweighted * profile.fp_weight;
            fp += 1;
        }
    }

    let scorable = window_scores.iter().filter(|s| s.is_some()).count();
    let tp = detected.iter().filter(|d| **d).count();
    SeriesScore {
        raw: window_scores.iter().flatten().sum::<f64>() + fp_score,
        null: -profile.fn_weight * scorable as f64,
        perfect: profile.tp_weight * series.windows.len() as f64,
        tp,
        fp,
        fn_: scorable - tp,
        windows: series.windows.len(),
        points,
    }
}

/// NAB's normalised score over a corpus: 0 for the null detector, 100 for the perfect one
/// (`Runner.normalize`). Sum `raw`, `null` and `perfect` over every series first.
pub fn normalised(total_raw: f64, total_null: f64, total_perfect: f64) -> f64 {
    let range = total_perfect - total_null;
    if range.abs() < f64::EPSILON { 0.0 } else { 100.0 * (total_raw - total_null) / range }
}

/// Runs a fresh [`SensorDetector`] over the series; a detection is a point where an alarm is
/// raised (what the anomaly agent publishes), not every point that exceeds a threshold.
pub fn detect(series: &Series, config: &SensorDetectorConfig) -> Vec<bool> {
    let mut detector = SensorDetector::new(*config);
    series.values.iter().map(|&v| detector.observe(v).alarm == AlarmChange::Raised).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    /// `n` points one minute apart with the given windows as (first, last) indices.
    fn series(n: usize, windows: &[(usize, usize)]) -> Series {
        let timestamps: Vec<i64> = (0..n as i64).map(|i| i * MINUTE).collect();
        Series {
            name: "test.csv".into(),
            windows: windows.iter().map(|&(a, b)| (timestamps[a], timestamps[b])).collect(),
            values: vec![0.0; n],
            timestamps,
        }
    }

    fn at(n: usize, indices: &[usize]) -> Vec<bool> {
        let mut d = vec![false; n];
        indices.iter().for_each(|&i| d[i] = true);
        d
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn parses_nab_csv_and_timestamps() {
        let text = "timestamp,value\n2014-04-01 00:00:00,18.3\n2014-04-01 00:05:00,-1e3\n";
        let (ts, values) = parse_series_csv(text).unwrap();
        assert_eq!(ts, vec![1_396_310_400_000, 1_396_310_700_000]); // date -u -d 2014-04-01 +%s
        assert_eq!(values, vec![18.3, -1000.0]);
        assert_eq!(parse_timestamp_ms("1970-01-01 00:00:00.250000"), Some(250));
        assert_eq!(parse_timestamp_ms("2000-03-01 00:00:00"), Some(951_868_800_000));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let error = parse_series_csv("timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n").unwrap_err();
        assert_eq!(error, NabError::Csv { line: 3, reason: "bad value `abc`".into() });
        assert!(matches!(parse_series_csv("time,v\n"), Err(NabError::Csv { line: 1, .. })));
        assert_eq!(parse_series_csv(""), Err(NabError::Empty));
        assert!(matches!(parse_series_csv("timestamp,value\nyesterday,1\n"), Err(NabError::Csv { line: 2, .. })));
    }

    #[test]
    fn parses_combined_windows() {
        let json = r#"{"a/x.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"]], "b.csv": []}"#;
        let windows = parse_windows(json).unwrap();
        let start = parse_timestamp_ms("2014-04-10 07:15:00").unwrap();
        let end = parse_timestamp_ms("2014-04-11 16:45:00").unwrap();
        assert_eq!(windows["a/x.csv"], vec![(start, end)]);
        assert!(windows["b.csv"].is_empty());
        assert!(matches!(parse_windows("[1]"), Err(NabError::Windows(_))));
    }

    #[test]
    fn probation_is_15_percent_capped_at_750() {
        assert_eq!(probationary_length(100), 15.0);
        assert_eq!(probationary_length(4032), 604.0);
        assert_eq!(probationary_length(18050), 750.0);
    }

    #[test]
    fn perfect_detector_scores_100_and_null_0() {
        // Windows at 40..=49 and 70..=79 of 100 points (probation: 15 points).
        let s = series(100, &[(40, 49), (70, 79)]);
        // A detection on a window's first point: position -(49 - 40 + 1)/10 = -1, so it scores
        // S(-1)/S(-1) = tp_weight. Two windows: raw 2 = perfect.
        let perfect = score(&s, &at(100, &[40, 70]), &Profile::STANDARD);
        assert!(close(perfect.raw, 2.0) && close(perfect.perfect, 2.0) && close(perfect.null, -2.0));
        assert_eq!((perfect.tp, perfect.fp, perfect.fn_), (2, 0, 0));
        assert!(close(normalised(perfect.raw, perfect.null, perfect.perfect), 100.0));
        // The null detector misses both windows: raw -2 = null, normalised 0.
        let null = score(&s, &[false; 100], &Profile::STANDARD);
        assert!(close(null.raw, -2.0));
        assert_eq!((null.tp, null.fp, null.fn_), (0, 0, 2));
        assert!(close(normalised(null.raw, null.null, null.perfect), 0.0));
    }

    #[test]
    fn one_false_positive_before_any_window_costs_fp_weight() {
        // Detection at 20: after probation (15), before the only window: S = -1, times 0.11.
        // The window is missed: -1. Raw = -1.11.
        let s = series(100, &[(40, 49)]);
        let result = score(&s, &at(100, &[20]), &Profile::STANDARD);
        assert!(close(result.raw, -1.0 - 0.11), "{}", result.raw);
        assert_eq!((result.tp, result.fp, result.fn_), (0, 1, 1));
        // Under the low-FP profile it costs 0.22.
        assert!(close(score(&s, &at(100, &[20]), &Profile::REWARD_LOW_FP).raw, -1.22));
    }

    #[test]
    fn detections_in_probation_are_ignored() {
        let s = series(100, &[(40, 49)]);
        let result = score(&s, &at(100, &[0, 14]), &Profile::STANDARD);
        assert!(close(result.raw, -1.0));
        assert_eq!(result.fp, 0);
        // A window wholly inside the probationary period is neither a TP nor an FN.
        let early = series(100, &[(2, 10)]);
        let result = score(&early, &at(100, &[5]), &Profile::STANDARD);
        assert!(close(result.raw, 0.0) && close(result.null, 0.0));
        assert_eq!((result.tp, result.fn_), (0, 0));
    }

    #[test]
    fn only_the_first_detection_in_a_window_counts() {
        // Window 40..=49 (width 10). Detection at 45: position -(49 - 45 + 1)/10 = -0.5,
        // S(-0.5) = 2/(1 + e^-2.5) - 1 = 0.848284, over S(-1) = 0.986614: 0.859793.
        // Adding detections at 47 and 49 changes nothing (the window keeps its best).
        let s = series(100, &[(40, 49)]);
        let one = score(&s, &at(100, &[45]), &Profile::STANDARD);
        let expected = (2.0 / (1.0 + (-2.5f64).exp()) - 1.0) / (2.0 / (1.0 + (-5.0f64).exp()) - 1.0);
        assert!(close(one.raw, expected), "{} vs {expected}", one.raw);
        assert!((one.raw - 0.859793).abs() < 1e-6, "{}", one.raw);
        let three = score(&s, &at(100, &[45, 47, 49]), &Profile::STANDARD);
        assert!(close(three.raw, one.raw));
        assert_eq!((three.tp, three.fp), (1, 0));
    }

    #[test]
    fn false_positives_are_weighted_by_distance_from_the_preceding_window() {
        // Window 40..=49 (width 10, width - 1 = 9), detected at its start (+1).
        // FP at 52: x = 3/9, S(1/3) = 2/(1 + e^(5/3)) - 1 = -0.682, times 0.11 = -0.0750.
        // FP at 90: x = 41/9 > 3, S = -1, times 0.11 = -0.11.
        let s = series(100, &[(40, 49)]);
        let result = score(&s, &at(100, &[40, 52, 90]), &Profile::STANDARD);
        let near = 2.0 / (1.0 + (5.0f64 / 3.0).exp()) - 1.0;
        assert!(close(result.raw, 1.0 + 0.11 * near - 0.11), "{}", result.raw);
        assert_eq!((result.tp, result.fp, result.fn_), (1, 2, 0));
    }

    #[test]
    fn low_fn_profile_doubles_the_miss() {
        let s = series(100, &[(40, 49), (70, 79)]);
        // One window found at its start (+1), the other missed (-2): raw -1, null -4, perfect 2.
        let result = score(&s, &at(100, &[40]), &Profile::REWARD_LOW_FN);
        assert!(close(result.raw, -1.0) && close(result.null, -4.0) && close(result.perfect, 2.0));
        // Normalised: 100 (-1 + 4) / (2 + 4) = 50.
        assert!(close(normalised(result.raw, result.null, result.perfect), 50.0));
    }

    #[test]
    fn detect_flags_raised_alarms_only() {
        let mut s = series(1_000, &[(800, 850)]);
        let mut g = crate::sensor::tests::Gaussian::new(9);
        s.values = (0..1_000).map(|i| if (800..900).contains(&i) { 30.0 } else { 10.0 } + g.sample()).collect();
        let detections = detect(&s, &SensorDetectorConfig::default());
        let raised: Vec<usize> = detections.iter().enumerate().filter(|(_, d)| **d).map(|(i, _)| i).collect();
        // One incident, one alarm: it stays active through the plateau (hysteresis) and the
        // step back down, and clears once both baselines are calm again.
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert!((800..805).contains(&raised[0]));
        let result = score(&s, &detections, &Profile::STANDARD);
        assert_eq!((result.tp, result.fn_), (1, 0));
    }
}
