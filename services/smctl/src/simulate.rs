//! `smctl simulate`: a fleet of gateways. Sends a planned run of readings (`plan.rs`) to
//! `sm.readings.raw.v1` at a steady rate, after registering the fleet, and reports what it
//! sent so a test or `make demo` can check ingestion's output against it.
//!
//! This is the sender only: what to send is decided by [`crate::plan::Plan`] (pure and
//! seeded); here are the clock, the rate, Kafka and the progress bar.
//!
//! Rate control: a tokio interval ticks every [`TICK`]; each tick sends the readings that are
//! due by then (`rate × elapsed − sent`), so the average rate holds even when a tick is late
//! or the producer briefly blocks, and nothing sleeps per reading.

use crate::catalog::{Catalog, Fleet};
use crate::plan::{Body, Plan, PlanOptions, Renderer, Tally};
use crate::publish::{Publisher, reading_headers};
use crate::scenario::ScenarioKind;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sm_domain::{Codec, TenantId, Timestamp, topics};
use sm_kafka::KafkaConfig;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;

/// `smctl simulate`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("amount").required(true).args(["duration", "count"])))]
pub struct SimulateArgs {
    /// Assets in the simulated fleet, cycling through the templates (pump-0001, motor-0002, ...).
    #[arg(long, default_value_t = 12)]
    pub assets: usize,
    /// Readings per second, all sensors together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Run for this many seconds (rate × duration readings).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Send exactly this many readings, duplicates and bad ones included.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// What the machines do over the run.
    #[arg(long, value_enum, default_value_t = ScenarioKind::Normal)]
    pub scenario: ScenarioKind,
    /// Seed of every random choice: the same seed sends the same values, bad records and
    /// duplicates (event times and ids are fresh).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of readings built to be dead-lettered, cycling through every reason.
    #[arg(long, default_value_t = 0.01)]
    pub bad_fraction: f64,
    /// Share of readings that re-send an exact copy of a recent valid reading.
    #[arg(long, default_value_t = 0.01)]
    pub duplicate_fraction: f64,
    /// Share of valid readings sent as JSON (header content-type: application/json).
    #[arg(long, default_value_t = 0.1)]
    pub json_fraction: f64,
    /// Register the fleet on sm.assets.v1 first, then wait 2 s for ingestion to see it (default).
    #[arg(long, overrides_with = "no_register")]
    pub register: bool,
    /// Do not register the fleet (it is registered already).
    #[arg(long, overrides_with = "register")]
    pub no_register: bool,
    /// Send 10 % of valid readings in a non-canonical unit (degF, in/s, psi, ...) (default).
    #[arg(long, overrides_with = "no_unit_variants")]
    pub unit_variants: bool,
    /// Send every valid reading in its canonical unit.
    #[arg(long, overrides_with = "unit_variants")]
    pub no_unit_variants: bool,
    /// Put in front of every generated asset id (`PREFIX-pump-0001`), so that concurrent or
    /// repeated runs (tests, demos) do not share assets.
    #[arg(long, default_value = "")]
    pub fleet_prefix: String,
    /// Tenant of every reading and registration.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Asset-type templates (TOML, as deploy/catalog/demo-fleet.toml); default: the built-in
    /// pump, motor, compressor and bearing.
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// How often the sender wakes up to send what is due.
const TICK: Duration = Duration::from_millis(10);
/// How long ingestion gets to read the registrations before the first reading.
const REGISTRY_GRACE: Duration = Duration::from_secs(2);
/// Longest wait for outstanding acknowledgements at the end.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Site of the generated assets.
const SIMULATED_SITE: &str = "simulated";

/// What a run sent: printed at the end, and written by `--summary-json` for tests and
/// `make demo`, which compare it with what ingestion produced.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub tally: Tally,
    /// Records built to be dead-lettered (the sum of `invalid_by_reason`).
    pub invalid: u64,
    pub tenant: String,
    pub scenario: &'static str,
    pub seed: u64,
    pub assets: usize,
    /// Wall clock just before the first send and after the last acknowledgement (µs since the
    /// epoch); every reading's event time (before planned offsets) lies between them.
    pub started_at_micros: i64,
    pub finished_at_micros: i64,
    /// Target and achieved readings per second (achieved: sent over the time from the first
    /// send to the last, before waiting for the final acknowledgements).
    pub target_rate: f64,
    pub achieved_rate: f64,
    /// Stopped early by SIGINT/SIGTERM; the counts are what was sent until then.
    pub interrupted: bool,
    /// Sensor id → what the scenario does to it (`drift`, `wear`, `spike`, `shift`); empty
    /// for `normal`. Ground truth for checking the analytics agents.
    pub affected_sensors: BTreeMap<String, Vec<&'static str>>,
    /// Each effect with the event time of the reading it began with, in sending order. A
    /// spike whose reading was built to be dead-lettered never reached the detectors and is
    /// not listed.
    pub injections: Vec<Injection>,
}

/// One scenario effect as sent: what, where, from when.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Injection {
    pub kind: String,
    pub asset_id: String,
    pub sensor_id: String,
    /// Event time of the first affected reading (µs since the epoch).
    pub at_micros: i64,
}

impl SimulateArgs {
    fn total(&self) -> anyhow::Result<u64> {
        anyhow::ensure!(self.rate.is_finite() && self.rate > 0.0, "--rate must be a positive number");
        match (self.count, self.duration) {
            (Some(count), None) => Ok(count),
            (None, Some(secs)) => {
                anyhow::ensure!(secs.is_finite() && secs > 0.0, "--duration must be a positive number of seconds");
                Ok((self.rate * secs).round() as u64)
            }
            _ => anyhow::bail!("give exactly one of --duration and --count"),
        }
    }

    fn plan_options(&self, total: u64) -> PlanOptions {
        PlanOptions {
            total,
            seed: self.seed,
            scenario: self.scenario,
            bad_fraction: self.bad_fraction,
            duplicate_fraction: self.duplicate_fraction,
            json_fraction: self.json_fraction,
            unit_variants: !self.no_unit_variants,
        }
    }
}

pub async fn run(config: &KafkaConfig, args: SimulateArgs) -> anyhow::Result<Summary> {
    let total = args.total()?;
    let templates = match &args.catalog {
        Some(path) => Catalog::load(path).with_context(|| format!("loading templates from {}", path.display()))?,
        None => Catalog::builtin().context("built-in templates")?,
    };
    let fleet = templates
        .generated_fleet(args.assets, SIMULATED_SITE, &args.fleet_prefix)
        .context("--assets/--fleet-prefix")?;
    let plan = Plan::new(&fleet, args.plan_options(total)).context("planning the run")?;
    let affected_sensors = plan.affected_sensors();
    let tenant = TenantId(args.tenant.clone());
    let show_progress = !args.quiet && std::io::stdout().is_terminal();

    sm_kafka::ensure_topics(config, topics::ALL).await.context("creating topics")?;
    if !args.no_register {
        let registered = crate::assets::register(config, &fleet, &tenant).await.context("registering the fleet")?;
        println!(
            "registered {} assets ({} sensors) on {}; waiting {} s for ingestion to read them",
            registered.len(),
            fleet.sensor_count(),
            topics::ASSETS,
            REGISTRY_GRACE.as_secs()
        );
        tokio::time::sleep(REGISTRY_GRACE).await;
    }

    let publisher = Publisher::new(config).context("creating the producer")?;
    let renderer = Renderer::new(Codec::embedded().context("loading schemas")?, tenant);
    let progress = progress_bar(total, show_progress)?;
    let started_at = Timestamp::now();
    let started = Instant::now();
    let (tally, injections, interrupted) =
        send(&publisher, plan, renderer, args.rate, &progress, sm_telemetry::shutdown_signal()).await?;
    let sending = started.elapsed();
    progress.finish_and_clear();
    let deliveries = tokio::task::block_in_place(|| publisher.finish(FLUSH_TIMEOUT)).context("flushing readings")?;
    let elapsed = started.elapsed();
    let finished_at = Timestamp::now();
    anyhow::ensure!(
        deliveries.failed == 0,
        "{} of {} readings were not delivered to {}: {}",
        deliveries.failed,
        deliveries.failed + deliveries.delivered,
        topics::READINGS_RAW,
        deliveries.first_error.unwrap_or_default()
    );
    let summary = Summary {
        invalid: tally.invalid(),
        tenant: args.tenant.clone(),
        scenario: args.scenario.name(),
        seed: args.seed,
        assets: fleet.assets.len(),
        started_at_micros: started_at.as_micros(),
        finished_at_micros: finished_at.as_micros(),
        target_rate: args.rate,
        achieved_rate: tally.sent as f64 / sending.as_secs_f64().max(f64::EPSILON),
        interrupted,
        affected_sensors,
        injections,
        tally,
    };
    print_summary(&summary, &fleet, sending, elapsed);
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_vec_pretty(&summary).context("encoding the summary")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    // A partial run is not a success: scripts comparing counts must not take it for one.
    anyhow::ensure!(!summary.interrupted, "interrupted after {} of {total} readings", summary.tally.sent);
    Ok(summary)
}

/// Sends the whole plan at `rate` readings/s, or until `shutdown` completes; returns what it
/// queued, the scenario effects it began, and whether it was interrupted.
async fn send(
    publisher: &Publisher,
    mut plan: Plan,
    mut renderer: Renderer,
    rate: f64,
    progress: &ProgressBar,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<(Tally, Vec<Injection>, bool)> {
    tokio::pin!(shutdown);
    let total = plan.size_hint().0 as u64;
    let mut tally = Tally::default();
    let mut injections = Vec::new();
    let mut ticks = tokio::time::interval(TICK);
    // A late tick is not followed by a burst of catch-up ticks: the next one simply finds
    // more readings due.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    while tally.sent < total {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => return Ok((tally, injections, true)),
        }
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).clamp(1, total);
        while tally.sent < due {
            let Some(record) = plan.next() else { break };
            let now = Timestamp::now();
            let rendered = renderer.render(&record, now).context("rendering a reading")?;
            if let Body::Reading { reading, invalid } = &record.body {
                for kind in &reading.onsets {
                    // A dead-lettered spike never happened as far as the detectors know; a
                    // shift or trend goes on in the next readings.
                    if invalid.is_none() || *kind != "spike" {
                        injections.push(Injection {
                            kind: (*kind).to_owned(),
                            asset_id: record.asset_id.as_str().to_owned(),
                            sensor_id: reading.sensor_id.as_str().to_owned(),
                            at_micros: now.as_micros() + reading.time_offset_micros,
                        });
                    }
                }
            }
            let headers = reading_headers(&rendered.traceparent, rendered.json);
            publisher
                .send(topics::READINGS_RAW, &rendered.key, &rendered.payload, headers)
                .await
                .context("queueing a reading")?;
            tally.add(&record);
        }
        progress.set_position(tally.sent);
    }
    Ok((tally, injections, false))
}

fn progress_bar(total: u64, visible: bool) -> anyhow::Result<ProgressBar> {
    if !visible {
        return Ok(ProgressBar::hidden());
    }
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {human_pos}/{human_len} readings  {per_sec}  eta {eta}",
    )
    .context("progress bar template")?
    .progress_chars("=> ");
    Ok(ProgressBar::new(total).with_style(style))
}

fn print_summary(summary: &Summary, fleet: &Fleet, sending: Duration, elapsed: Duration) {
    let tally = &summary.tally;
    println!(
        "sent {} readings of {} assets ({} sensors) to {} in {:.2} s: {:.0} readings/s (target {:.0}); all acknowledged after {:.2} s",
        tally.sent,
        fleet.assets.len(),
        fleet.sensor_count(),
        topics::READINGS_RAW,
        sending.as_secs_f64(),
        summary.achieved_rate,
        summary.target_rate,
        elapsed.as_secs_f64()
    );
    println!("  scenario {}, seed {}, tenant {}", summary.scenario, summary.seed, summary.tenant);
    println!(
        "  valid       {:>9}   ({} as JSON, {} in non-canonical units)",
        tally.valid, tally.json, tally.non_canonical_units
    );
    println!("  duplicates  {:>9}   (exact re-sends; ingestion suppresses them)", tally.duplicates);
    println!("  invalid     {:>9}   (ingestion dead-letters them to {}):", summary.invalid, topics::READINGS_REJECTED);
    for (reason, count) in &tally.invalid_by_reason {
        println!("    {reason:<22}{count:>7}");
    }
    if !summary.affected_sensors.is_empty() {
        let mut by_effect: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (sensor, labels) in &summary.affected_sensors {
            for label in labels {
                by_effect.entry(label).or_default().push(sensor);
            }
        }
        for (label, sensors) in by_effect {
            println!("  {label}: {}", sensors.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied())).map(|cli| cli.args)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let args = parse(&["--count", "2000"]).unwrap();
        assert_eq!(args.total().unwrap(), 2000);
        let options = args.plan_options(2000);
        assert_eq!(
            options,
            PlanOptions {
                total: 2000,
                seed: 42,
                scenario: ScenarioKind::Normal,
                bad_fraction: 0.01,
                duplicate_fraction: 0.01,
                json_fraction: 0.1,
                unit_variants: true,
            }
        );
        assert_eq!((args.assets, args.rate, args.no_register, args.tenant.as_str()), (12, 1000.0, false, "default"));
    }

    #[test]
    fn needs_exactly_one_of_duration_and_count() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--count", "10", "--duration", "1"]).is_err());
        let args = parse(&["--duration", "2.5", "--rate", "400"]).unwrap();
        assert_eq!(args.total().unwrap(), 1000);
        assert!(parse(&["--duration=-1"]).unwrap().total().is_err());
        assert!(parse(&["--count", "1", "--rate", "0"]).unwrap().total().is_err());
    }

    #[test]
    fn negative_flags_win_when_last() {
        let args = parse(&["--count", "1", "--no-register", "--no-unit-variants"]).unwrap();
        assert!(args.no_register && !args.plan_options(1).unit_variants);
        let args = parse(&["--count", "1", "--no-register", "--register"]).unwrap();
        assert!(!args.no_register);
        let args = parse(&["--count", "1", "--scenario", "failure"]).unwrap();
        assert_eq!(args.scenario, ScenarioKind::Failure);
    }

    #[test]
    fn summary_json_has_the_fields_tests_read() {
        let summary = Summary {
            tally: Tally::default(),
            invalid: 0,
            tenant: "t".into(),
            scenario: "normal",
            seed: 1,
            assets: 12,
            started_at_micros: 1,
            finished_at_micros: 2,
            target_rate: 1000.0,
            achieved_rate: 990.0,
            interrupted: false,
            affected_sensors: BTreeMap::new(),
            injections: Vec::new(),
        };
        let json = serde_json::to_value(&summary).unwrap();
        for field in [
            "sent",
            "valid",
            "duplicates",
            "invalid_by_reason",
            "json",
            "started_at_micros",
            "finished_at_micros",
            "tenant",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {json}");
        }
        assert_eq!(json["invalid_by_reason"]["too_old"], 0);
    }
}
