//! `smctl demo analytics`: three simulated fleets at once (one with injected anomalies, one
//! drifting, one healthy) through the running ingestion, anomaly, drift and projector
//! services; then what the detectors found is scored against what was injected.
//!
//! [`evaluate`] is the scoring, pure and unit-tested; the rest runs the fleets and reads the
//! read models.

use crate::simulate::{Injection, Summary};
use anyhow::Context;
use sm_domain::topics;
use sm_kafka::KafkaConfig;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Settings of `smctl demo analytics`.
#[derive(Debug, clap::Args)]
pub struct AnalyticsDemoArgs {
    /// Seconds of simulated traffic (each fleet).
    #[arg(long, default_value_t = 120.0)]
    pub duration: f64,
    /// Readings per second of each fleet.
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Assets per fleet.
    #[arg(long, default_value_t = 8)]
    pub assets: usize,
    /// Give up waiting for the read models after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// How long after an onset a finding still counts for a spike, and for a level shift.
const SPIKE_WINDOW_US: i64 = 10_000_000;
const SHIFT_WINDOW_US: i64 = 60_000_000;

/// An anomaly as the demo reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundAnomaly {
    pub asset_id: String,
    pub scope: String,
    pub sensor_id: Option<String>,
    pub detector: String,
    pub severity: i16,
    /// Contributing sensors, largest share first.
    pub contributors: Vec<String>,
    pub occurred_us: i64,
    /// Start of the scored bucket (asset scope), else the reading's time.
    pub from_us: i64,
    pub backfill: bool,
}

impl FoundAnomaly {
    /// Whether this anomaly is about `sensor` (its own, or among the asset model's drivers).
    fn concerns(&self, sensor: &str) -> bool {
        self.sensor_id.as_deref() == Some(sensor) || self.contributors.iter().any(|c| c == sensor)
    }
}

/// A drift event as the demo reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundDrift {
    pub sensor_id: String,
    pub test: String,
    pub occurred_us: i64,
}

/// Whether `anomaly` is explained by `injection`: about its sensor, and soon enough after it
/// began (a spike within 10 s, a level shift within 60 s, wear or drift any time after).
fn explains(injection: &Injection, anomaly: &FoundAnomaly) -> bool {
    if !anomaly.concerns(&injection.sensor_id) || anomaly.occurred_us < injection.at_micros {
        return false;
    }
    let horizon = match injection.kind.as_str() {
        "spike" => SPIKE_WINDOW_US,
        "shift" => SHIFT_WINDOW_US,
        _ => i64::MAX,
    };
    anomaly.from_us <= injection.at_micros.saturating_add(horizon)
}

/// Recall of one kind of injected effect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recall {
    pub injected: usize,
    pub found: usize,
}

impl Recall {
    pub fn ratio(&self) -> f64 {
        if self.injected == 0 { f64::NAN } else { self.found as f64 / self.injected as f64 }
    }
}

/// What the detectors found against what was injected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// By kind: `spike`, `shift`, `wear` (anomalies), `drift` (drift events).
    pub recall: BTreeMap<String, Recall>,
    /// Live anomalies that no injection explains.
    pub false_anomalies: usize,
    /// Drift events on sensors whose distribution was not changed (no drift, shift or wear).
    pub false_drifts: usize,
}

/// Scores `anomalies` and `drifts` against `injections` (all of one fleet, or several: ids
/// are unique per fleet). Backfill anomalies are not live alerts and are left out.
pub fn evaluate(injections: &[Injection], anomalies: &[FoundAnomaly], drifts: &[FoundDrift]) -> Evaluation {
    let mut evaluation = Evaluation::default();
    let live: Vec<&FoundAnomaly> = anomalies.iter().filter(|a| !a.backfill).collect();
    for injection in injections {
        let found = if injection.kind == "drift" {
            drifts.iter().any(|d| d.sensor_id == injection.sensor_id && d.occurred_us >= injection.at_micros)
        } else {
            live.iter().any(|a| explains(injection, a))
        };
        let recall = evaluation.recall.entry(injection.kind.clone()).or_default();
        recall.injected += 1;
        recall.found += usize::from(found);
    }
    // A drifting sensor really is leaving its healthy range, so an anomaly about it after the
    // drift began is not a false alarm; likewise drift found on a shifted or wearing sensor.
    evaluation.false_anomalies = live.iter().filter(|a| !injections.iter().any(|i| explains(i, a))).count();
    evaluation.false_drifts = drifts
        .iter()
        .filter(|d| {
            !injections.iter().any(|i| i.kind != "spike" && i.sensor_id == d.sensor_id && d.occurred_us >= i.at_micros)
        })
        .count();
    evaluation
}

/// `smctl demo analytics`.
pub async fn analytics(
    kafka: &KafkaConfig,
    postgres: &sm_storage::PostgresConfig,
    args: AnalyticsDemoArgs,
) -> anyhow::Result<()> {
    use clap::Parser;
    #[derive(Parser)]
    struct Simulate {
        #[command(flatten)]
        args: crate::simulate::SimulateArgs,
    }
    sm_kafka::ensure_topics(kafka, topics::ALL).await.context("creating topics")?;
    let run = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let fleets = [("anomaly", 11u64), ("drift", 12), ("normal", 13)];
    println!(
        "== simulating 3 fleets of {} assets for {} s at {} readings/s each: anomaly, drift, normal (tenant {run})",
        args.assets, args.duration, args.rate
    );
    let runs = fleets.iter().map(|(scenario, seed)| {
        let simulate = Simulate::try_parse_from([
            "simulate".to_owned(),
            format!("--duration={}", args.duration),
            format!("--rate={}", args.rate),
            format!("--assets={}", args.assets),
            format!("--scenario={scenario}"),
            format!("--seed={seed}"),
            format!("--tenant={run}"),
            format!("--fleet-prefix={run}-{scenario}"),
            "--quiet".to_owned(),
        ]);
        async move { crate::simulate::run(kafka, simulate.context("building the simulation")?.args).await }
    });
    let summaries: Vec<Summary> = futures::future::try_join_all(runs).await?;

    println!("== waiting for ingestion, the analytics agents and the projector");
    let pool = sm_storage::connect(postgres).context("SM_POSTGRES__URL")?;
    let client = pool.get().await.context("connecting to PostgreSQL (SM_POSTGRES__URL)")?;
    let valid: u64 = summaries.iter().map(|s| s.tally.valid).sum();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    // Done when the readings are all projected and the findings stop changing for a while.
    let mut last = (-1i64, Instant::now());
    loop {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM readings WHERE tenant_id = $1),
                        (SELECT count(*) FROM anomalies WHERE tenant_id = $1)
                      + (SELECT count(*) FROM drift_events WHERE tenant_id = $1)",
                &[&run],
            )
            .await?;
        let (projected, findings): (i64, i64) = (row.get(0), row.get(1));
        if findings != last.0 {
            last = (findings, Instant::now());
        }
        if projected as u64 >= valid && last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        if Instant::now() > deadline {
            println!("   (timed out: {projected} of {valid} readings projected)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let anomalies: Vec<FoundAnomaly> = client
        .query(
            "SELECT asset_id, scope, sensor_id, detector, severity,
                    ARRAY(SELECT c->>'sensor_id' FROM jsonb_array_elements(contributing) c),
                    (extract(epoch FROM occurred_at) * 1e6)::bigint,
                    (extract(epoch FROM coalesce(window_start, occurred_at)) * 1e6)::bigint, backfill
             FROM anomalies WHERE tenant_id = $1 ORDER BY occurred_at",
            &[&run],
        )
        .await?
        .iter()
        .map(|r| FoundAnomaly {
            asset_id: r.get(0),
            scope: r.get(1),
            sensor_id: r.get(2),
            detector: r.get(3),
            severity: r.get(4),
            contributors: r.get(5),
            occurred_us: r.get(6),
            from_us: r.get(7),
            backfill: r.get(8),
        })
        .collect();
    let drifts: Vec<FoundDrift> = client
        .query(
            "SELECT sensor_id, test, (extract(epoch FROM occurred_at) * 1e6)::bigint
             FROM drift_events WHERE tenant_id = $1 ORDER BY occurred_at",
            &[&run],
        )
        .await?
        .iter()
        .map(|r| FoundDrift { sensor_id: r.get(0), test: r.get(1), occurred_us: r.get(2) })
        .collect();
    let latency = client
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM recorded_at - occurred_at)),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM recorded_at - occurred_at)),
                    (SELECT count(*) FROM stale_sensors WHERE tenant_id = $1),
                    (SELECT count(*) FROM retrain_requests WHERE tenant_id = $1)
             FROM anomalies WHERE tenant_id = $1 AND scope = 'sensor'",
            &[&run],
        )
        .await?;
    let (p50, p99): (Option<f64>, Option<f64>) = (latency.get(0), latency.get(1));
    let (stale, retrains): (i64, i64) = (latency.get(2), latency.get(3));

    println!();
    for (summary, (scenario, _)) in summaries.iter().zip(fleets) {
        let prefix = format!("{run}-{scenario}");
        let fleet_anomalies: Vec<FoundAnomaly> =
            anomalies.iter().filter(|a| a.asset_id.starts_with(&prefix)).cloned().collect();
        let fleet_drifts: Vec<FoundDrift> =
            drifts.iter().filter(|d| d.sensor_id.starts_with(&prefix)).cloned().collect();
        let evaluation = evaluate(&summary.injections, &fleet_anomalies, &fleet_drifts);
        let hours = (summary.finished_at_micros - summary.started_at_micros) as f64 / 3.6e9;
        let asset_hours = summary.assets as f64 * hours;
        println!(
            "{scenario} fleet: {} assets, {} valid readings, {} anomalies ({} sensor, {} asset-level), {} drift events",
            summary.assets,
            summary.tally.valid,
            fleet_anomalies.len(),
            fleet_anomalies.iter().filter(|a| a.scope == "sensor").count(),
            fleet_anomalies.iter().filter(|a| a.scope == "asset").count(),
            fleet_drifts.len()
        );
        for (kind, recall) in &evaluation.recall {
            println!(
                "  recall {kind:<6} {:>3} of {:>3} injected found ({:.0} %)",
                recall.found,
                recall.injected,
                100.0 * recall.ratio()
            );
        }
        println!(
            "  false alarms: {} anomalies ({:.1} per asset-hour), {} drift events on sensors left unchanged",
            evaluation.false_anomalies,
            evaluation.false_anomalies as f64 / asset_hours.max(f64::EPSILON),
            evaluation.false_drifts
        );
    }
    if let (Some(p50), Some(p99)) = (p50, p99) {
        println!("reading → anomaly recorded (sensor detectors): p50 {:.0} ms, p99 {:.0} ms", p50 * 1e3, p99 * 1e3);
    }
    println!("stale-sensor reports: {stale}; model retrain requests: {retrains}");
    let mut examples: Vec<&FoundAnomaly> = anomalies.iter().filter(|a| a.scope == "asset").take(2).collect();
    examples.extend(anomalies.iter().filter(|a| a.scope == "sensor").max_by_key(|a| a.severity));
    if !examples.is_empty() {
        println!("\nexamples:");
        for a in examples {
            println!(
                "  {} {} detector={} severity={} drivers={}",
                a.asset_id,
                a.sensor_id.as_deref().unwrap_or("(asset)"),
                a.detector,
                a.severity,
                a.contributors.join(",")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injection(kind: &str, sensor: &str, at: i64) -> Injection {
        Injection { kind: kind.into(), asset_id: "a".into(), sensor_id: sensor.into(), at_micros: at }
    }

    fn anomaly(sensor: Option<&str>, contributors: &[&str], at: i64) -> FoundAnomaly {
        FoundAnomaly {
            asset_id: "a".into(),
            scope: if sensor.is_some() { "sensor" } else { "asset" }.into(),
            sensor_id: sensor.map(Into::into),
            detector: "robust_z".into(),
            severity: 3,
            contributors: contributors.iter().map(|c| (*c).to_owned()).collect(),
            occurred_us: at,
            from_us: at,
            backfill: false,
        }
    }

    #[test]
    fn findings_count_only_on_their_sensor_and_soon_enough_after_the_onset() {
        let injections = [
            injection("spike", "s1", 1_000_000),
            injection("shift", "s2", 5_000_000),
            injection("wear", "s3", 9_000_000),
            injection("drift", "s4", 0),
        ];
        let anomalies = [
            anomaly(Some("s1"), &["s1"], 1_000_000),   // the spike
            anomaly(Some("s1"), &["s1"], 40_000_000),  // too late for the spike: false
            anomaly(None, &["s3", "s2"], 900_000_000), // wear, found by the asset model
            anomaly(Some("s5"), &["s5"], 2_000_000),   // nothing injected there: false
            anomaly(Some("s4"), &["s4"], 3_000_000),   // the drifting sensor: explained
            FoundAnomaly { backfill: true, ..anomaly(Some("s2"), &["s2"], 6_000_000) }, // not live
        ];
        let drifts = [
            FoundDrift { sensor_id: "s4".into(), test: "ks_psi".into(), occurred_us: 10 },
            FoundDrift { sensor_id: "s1".into(), test: "ks_psi".into(), occurred_us: 10 }, // a spike is no drift
            FoundDrift { sensor_id: "s2".into(), test: "page_hinkley".into(), occurred_us: 7_000_000 }, // the shift
        ];
        let evaluation = evaluate(&injections, &anomalies, &drifts);
        assert_eq!(evaluation.recall["spike"], Recall { injected: 1, found: 1 });
        assert_eq!(evaluation.recall["shift"], Recall { injected: 1, found: 0 });
        assert_eq!(evaluation.recall["wear"], Recall { injected: 1, found: 1 });
        assert_eq!(evaluation.recall["drift"], Recall { injected: 1, found: 1 });
        assert_eq!(evaluation.false_anomalies, 2);
        assert_eq!(evaluation.false_drifts, 1);
    }
}
