//! `smctl eval`: the platform's models and detectors scored on public benchmark data, with
//! the same code the agents run.
//!
//! `smctl eval anomaly --nab DIR` runs `sm_analytics::nab::detect` (the anomaly agent's
//! per-sensor detector, with the agent's default settings unless flags override them) over
//! every labelled series of a Numenta Anomaly Benchmark folder and scores the raised alarms
//! with NAB v1.1's scorer. The headline figure is the default config; `--sweep` also reports
//! the best threshold on this corpus, labelled as tuned (that is how NAB's leaderboard is
//! made, and it flatters the detector).

use anyhow::{Context, bail};
use sm_analytics::nab::{self, Profile, Series, SeriesScore};
use sm_analytics::sensor::SensorDetectorConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `smctl eval anomaly --nab DIR`.
#[derive(Debug, clap::Args)]
pub struct AnomalyArgs {
    /// A folder in NAB's layout: `data/<category>/<series>.csv` (or the CSVs anywhere below it)
    /// and `labels/combined_windows.json` (or `combined_windows.json` at its top).
    #[arg(long, value_name = "DIR")]
    pub nab: PathBuf,
    /// Rolling median/MAD window, in values (default: the agent's).
    #[arg(long)]
    pub window: Option<usize>,
    /// Values before any score counts.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Robust z-score threshold.
    #[arg(long)]
    pub z_threshold: Option<f64>,
    /// EWMA smoothing factor.
    #[arg(long)]
    pub ewma_alpha: Option<f64>,
    /// EWMA threshold, in EWMA standard deviations.
    #[arg(long)]
    pub ewma_threshold: Option<f64>,
    /// Raise when k of the last n points exceed a threshold: k.
    #[arg(long)]
    pub persistence_k: Option<usize>,
    /// Raise when k of the last n points exceed a threshold: n.
    #[arg(long)]
    pub persistence_n: Option<usize>,
    /// Calm points after which an active alarm clears.
    #[arg(long)]
    pub clear_after: Option<usize>,
    /// Also scale both thresholds over a grid and report the best (tuned on this corpus).
    #[arg(long)]
    pub sweep: bool,
}

impl AnomalyArgs {
    fn config(&self) -> SensorDetectorConfig {
        let d = SensorDetectorConfig::default();
        SensorDetectorConfig {
            window: self.window.unwrap_or(d.window),
            warmup: self.warmup.unwrap_or(d.warmup),
            z_threshold: self.z_threshold.unwrap_or(d.z_threshold),
            ewma_alpha: self.ewma_alpha.unwrap_or(d.ewma_alpha),
            ewma_threshold: self.ewma_threshold.unwrap_or(d.ewma_threshold),
            persistence_k: self.persistence_k.unwrap_or(d.persistence_k),
            persistence_n: self.persistence_n.unwrap_or(d.persistence_n),
            clear_after: self.clear_after.unwrap_or(d.clear_after),
        }
    }
}

pub fn anomaly(args: AnomalyArgs) -> anyhow::Result<()> {
    let config = args.config();
    config.validate().context("checking the detector flags")?;
    let corpus = load_corpus(&args.nab)?;
    for name in &corpus.unlabelled {
        eprintln!("skipped {name}: no entry in the windows file (NAB scores labelled series only)");
    }
    println!("NAB corpus {}: {} labelled series", args.nab.display(), corpus.series.len());
    println!("detector config: {config:?}");
    println!();
    let evaluation = evaluate(&corpus.series, &config);
    print_table(&evaluation);
    if args.sweep {
        println!();
        sweep(&corpus.series, &config);
    }
    Ok(())
}

/// The labelled series of a NAB folder, sorted by name.
#[derive(Debug)]
struct Corpus {
    series: Vec<Series>,
    /// CSVs with no entry in the windows file.
    unlabelled: Vec<String>,
}

fn load_corpus(dir: &Path) -> anyhow::Result<Corpus> {
    if !dir.is_dir() {
        bail!("{} is not a folder; pass a NAB checkout (or a folder in its layout) with --nab", dir.display());
    }
    let windows_path = find_windows_file(dir)?;
    let windows_text =
        std::fs::read_to_string(&windows_path).with_context(|| format!("reading {}", windows_path.display()))?;
    let windows = nab::parse_windows(&windows_text).with_context(|| {
        format!("parsing {}: expected NAB's {{\"series.csv\": [[start, end], ...]}}", windows_path.display())
    })?;

    let mut csvs = Vec::new();
    collect_csvs(dir, &mut csvs)?;
    let mut series = Vec::new();
    let mut unlabelled = Vec::new();
    for path in csvs {
        let name = series_name(dir, &path);
        let Some(limits) = windows.get(&name) else {
            unlabelled.push(name);
            continue;
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let (timestamps, values) = nab::parse_series_csv(&text).with_context(|| {
            format!("{}: not a NAB series (expected `timestamp,value` rows); fix or remove the file", path.display())
        })?;
        series.push(Series { name, timestamps, values, windows: limits.clone() });
    }
    if series.is_empty() {
        bail!(
            "no CSV under {} matches a key of {} (keys look like `realKnownCause/nyc_taxi.csv`, relative to `data/`)",
            dir.display(),
            windows_path.display()
        );
    }
    series.sort_by(|a, b| a.name.cmp(&b.name));
    unlabelled.sort();
    Ok(Corpus { series, unlabelled })
}

/// `labels/combined_windows.json`, else `combined_windows.json`, at the top of `dir`.
fn find_windows_file(dir: &Path) -> anyhow::Result<PathBuf> {
    for candidate in [dir.join("labels").join("combined_windows.json"), dir.join("combined_windows.json")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no labels in {}: expected labels/combined_windows.json or combined_windows.json \
         (NAB's labels/combined_windows.json from github.com/numenta/NAB)",
        dir.display()
    )
}

/// Every `*.csv` below `dir`, hidden entries skipped, in a stable order.
fn collect_csvs(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    entries.sort();
    for path in entries {
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_csvs(&path, out)?;
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            out.push(path);
        }
    }
    Ok(())
}

/// The NAB key of a data file: its path relative to the innermost `data/` folder if there is
/// one (NAB's layout), else relative to `root`; always with `/`.
fn series_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let components: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let start = components.iter().rposition(|c| c == "data").map_or(0, |i| i + 1);
    components[start..].join("/")
}

/// One series' figures.
#[derive(Debug)]
struct Row {
    name: String,
    standard: SeriesScore,
    low_fp: SeriesScore,
    low_fn: SeriesScore,
}

/// The corpus' figures.
#[derive(Debug)]
struct Evaluation {
    rows: Vec<Row>,
    standard: f64,
    low_fp: f64,
    low_fn: f64,
    windows: usize,
    detected: usize,
    false_alarms: usize,
    points: usize,
}

impl Evaluation {
    fn recall(&self) -> f64 {
        if self.windows == 0 { 0.0 } else { self.detected as f64 / self.windows as f64 }
    }

    fn false_alarms_per_1k(&self) -> f64 {
        per_1k(self.false_alarms, self.points)
    }
}

fn per_1k(count: usize, points: usize) -> f64 {
    if points == 0 { 0.0 } else { 1000.0 * count as f64 / points as f64 }
}

fn evaluate(series: &[Series], config: &SensorDetectorConfig) -> Evaluation {
    let rows: Vec<Row> = series
        .iter()
        .map(|s| {
            let detections = nab::detect(s, config);
            Row {
                name: s.name.clone(),
                standard: nab::score(s, &detections, &Profile::STANDARD),
                low_fp: nab::score(s, &detections, &Profile::REWARD_LOW_FP),
                low_fn: nab::score(s, &detections, &Profile::REWARD_LOW_FN),
            }
        })
        .collect();
    let total = |pick: fn(&Row) -> &SeriesScore| {
        let (raw, null, perfect) =
            rows.iter().map(pick).fold((0.0, 0.0, 0.0), |(r, n, p), s| (r + s.raw, n + s.null, p + s.perfect));
        nab::normalised(raw, null, perfect)
    };
    Evaluation {
        standard: total(|r| &r.standard),
        low_fp: total(|r| &r.low_fp),
        low_fn: total(|r| &r.low_fn),
        windows: rows.iter().map(|r| r.standard.windows).sum(),
        detected: rows.iter().map(|r| r.standard.tp).sum(),
        false_alarms: rows.iter().map(|r| r.standard.fp).sum(),
        points: rows.iter().map(|r| r.standard.points).sum(),
        rows,
    }
}

fn print_table(evaluation: &Evaluation) {
    let width = evaluation.rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    println!(
        "{:<width$} {:>7} {:>7} {:>8} {:>12} {:>8} {:>9}",
        "series", "points", "windows", "detected", "false alarms", "FA/1k", "raw score"
    );
    for row in &evaluation.rows {
        let s = &row.standard;
        println!(
            "{:<width$} {:>7} {:>7} {:>8} {:>12} {:>8.2} {:>9.3}",
            row.name,
            s.points,
            s.windows,
            s.tp,
            s.fp,
            per_1k(s.fp, s.points),
            s.raw
        );
    }
    println!();
    println!("NAB score, standard profile:       {:6.1}", evaluation.standard);
    println!("NAB score, reward low FP profile:  {:6.1}", evaluation.low_fp);
    println!("NAB score, reward low FN profile:  {:6.1}", evaluation.low_fn);
    println!(
        "window recall:                     {:6.1} % ({} of {} windows)",
        100.0 * evaluation.recall(),
        evaluation.detected,
        evaluation.windows
    );
    println!(
        "false alarms per 1,000 points:     {:6.2} ({} false alarms after NAB's probationary period, {} points)",
        evaluation.false_alarms_per_1k(),
        evaluation.false_alarms,
        evaluation.points
    );
    println!("(published, standard profile: windowed Gaussian 39.6, Random Cut Forest 51.7, HTM ~70)");
}

/// Both thresholds multiplied by a common factor over a grid; the best standard score is
/// reported as tuned on this corpus, never as the detector's figure.
fn sweep(series: &[Series], base: &SensorDetectorConfig) {
    let mut best: Option<(f64, Evaluation)> = None;
    let mut results = BTreeMap::new();
    for step in 0..=24 {
        let threshold = 2.0 + 0.25 * f64::from(step);
        let config = SensorDetectorConfig {
            z_threshold: threshold,
            ewma_threshold: threshold * base.ewma_threshold / base.z_threshold,
            ..*base
        };
        let evaluation = evaluate(series, &config);
        results.insert(step, (threshold, evaluation.standard));
        if best.as_ref().is_none_or(|(_, b)| evaluation.standard > b.standard) {
            best = Some((threshold, evaluation));
        }
    }
    println!("threshold sweep (z threshold; EWMA threshold scaled alike), standard profile:");
    for (threshold, score) in results.values() {
        println!("  z {threshold:5.2}: {score:6.1}");
    }
    if let Some((threshold, evaluation)) = best {
        println!(
            "TUNED on this corpus (not the detector's figure): z threshold {threshold:.2} gives standard {:.1}, \
             low FP {:.1}, low FN {:.1}, recall {:.1} %, {:.2} false alarms per 1,000 points",
            evaluation.standard,
            evaluation.low_fp,
            evaluation.low_fn,
            100.0 * evaluation.recall(),
            evaluation.false_alarms_per_1k()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!("smctl-eval-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// 5-minute points from 2014-04-01: a noisy level with a jump in the middle.
    fn series_csv(points: usize, jump_at: usize) -> String {
        let mut text = String::from("timestamp,value\n");
        let mut state = 12345u64;
        for i in 0..points {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5;
            let value = if (jump_at..jump_at + 50).contains(&i) { 40.0 } else { 10.0 } + noise;
            let minutes = 5 * i;
            let (day, hour, minute) = (1 + minutes / 1440, (minutes / 60) % 24, minutes % 60);
            text.push_str(&format!("2014-04-{day:02} {hour:02}:{minute:02}:00,{value}\n"));
        }
        text
    }

    #[test]
    fn names_series_relative_to_the_data_folder() {
        let root = Path::new("/nab");
        assert_eq!(series_name(root, Path::new("/nab/data/realKnownCause/x.csv")), "realKnownCause/x.csv");
        assert_eq!(series_name(root, Path::new("/nab/artificialNoAnomaly/y.csv")), "artificialNoAnomaly/y.csv");
    }

    #[test]
    fn scores_a_small_generated_corpus() {
        let scratch = Scratch::new("corpus");
        // 2,000 points: a jump at point 1,500, inside the labelled window 1,450..=1,550.
        scratch.write("data/synthetic/jump.csv", &series_csv(2_000, 1_500));
        scratch.write("data/synthetic/unlabelled.csv", &series_csv(100, 50));
        let start = 1_450 * 5;
        let end = 1_550 * 5;
        let stamp = |m: usize| format!("2014-04-{:02} {:02}:{:02}:00.000000", 1 + m / 1440, (m / 60) % 24, m % 60);
        scratch.write(
            "labels/combined_windows.json",
            &format!(r#"{{"synthetic/jump.csv": [["{}", "{}"]]}}"#, stamp(start), stamp(end)),
        );
        let corpus = load_corpus(&scratch.0).unwrap();
        assert_eq!(corpus.series.len(), 1);
        assert_eq!(corpus.unlabelled, vec!["synthetic/unlabelled.csv".to_string()]);
        let evaluation = evaluate(&corpus.series, &SensorDetectorConfig::default());
        assert_eq!((evaluation.windows, evaluation.detected, evaluation.false_alarms), (1, 1, 0));
        // Found near the middle of the window: well above the null detector's 0.
        assert!(evaluation.standard > 50.0, "{}", evaluation.standard);
    }

    #[test]
    fn missing_labels_and_bad_csvs_say_what_to_do() {
        let scratch = Scratch::new("errors");
        scratch.write("data/a/x.csv", "timestamp,value\n2014-04-01 00:00:00,1\n");
        let error = format!("{:#}", load_corpus(&scratch.0).unwrap_err());
        assert!(error.contains("combined_windows.json"), "{error}");

        scratch.write("combined_windows.json", r#"{"a/x.csv": []}"#);
        scratch.write("data/a/x.csv", "timestamp,value\n2014-04-01 00:00:00,one\n");
        let error = format!("{:#}", load_corpus(&scratch.0).unwrap_err());
        assert!(error.contains("x.csv") && error.contains("line 2"), "{error}");

        scratch.write("combined_windows.json", r#"{"b/other.csv": []}"#);
        let error = format!("{:#}", load_corpus(&scratch.0).unwrap_err());
        assert!(error.contains("matches a key"), "{error}");
    }
}
