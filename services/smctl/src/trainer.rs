//! `smctl train serve`: the trainer. It follows `sm.drift.v1` (group `sm-trainer`) and, for
//! each `ModelRetrainRequested`, retrains the RUL model of the requesting asset's type on
//! the recent projected history, compares the challenger with the serving model (the
//! champion) on the same held-out trajectories, registers the challenger in `staging` with
//! that comparison, and promotes it only if its RMSE is lower.
//!
//! # Why the history re-bases a simulation instead of being the training set
//! A RUL model learns from run-to-failure trajectories: cycles labelled with how long the
//! machine had left. The projected history has no such labels: no failure is ever recorded
//! (maintenance is not an event yet), and an asset still running says nothing about when it
//! will fail. What the history does tell reliably is what *healthy* looks like now: each
//! sensor type's nominal level and noise on the assets that show no wear. Drift means that
//! baseline moved (a recalibrated sensor, a new operating point), and a model trained on the
//! old baseline reads the new one as wear, or misses wear. So the trainer
//!
//! 1. estimates each sensor type's healthy mean and noise from the last `--history` of
//!    projected readings of the asset type (robust: medians over 10 s buckets, on assets
//!    whose wear channels do not rise together; [`estimate_baseline`]);
//! 2. re-bases the failure simulation on it (the same wear physics, from the new nominal
//!    levels; [`rebase`]) and generates run-to-failure trajectories exactly as `smctl train
//!    rul --simulated` does;
//! 3. trains the challenger on runs seeded `--first-seed…` (with the champion's channels and
//!    cycle length, so it drops into the prediction agent's place; `--cycle-ms` is not used),
//!    and scores challenger and champion on the *same* held-out trajectories from seeds never
//!    used for training ([`EVAL_SEED_OFFSET`]), re-based too: the question is which model
//!    reads today's machines better;
//! 4. registers the challenger with `comparison = {champion_version, champion_rmse,
//!    challenger_rmse, decision}`, and promotes it only when it wins ([`Decision`]).
//!    A losing challenger stays in staging for the record; when the champion itself is only a
//!    staging version, the loser is archived so that `auto` keeps resolving to the champion.
//!
//! # Delivery
//! At least once: a request's offset is committed after it was handled (synchronously when
//! it registered a version; skips commit asynchronously, since redoing one is harmless), so a
//! crash redoes at most the request in hand. A retrain takes seconds, well inside the
//! consumer's `max.poll.interval.ms` (5 min). Requests are handled one at a time, in partition
//! order; training runs on the blocking pool. Retraining is debounced in memory: at most one
//! per asset type per `--min-interval` (the drift agent sends one request per drifting
//! sensor, so one drift episode brings several); a restart forgets the debounce. Requests
//! older than `--max-age` are stale and skipped, so a new group starting at the beginning of
//! the topic does not retrain on history long gone. A failure to reach PostgreSQL, the
//! artifact store or Kafka is retried a few times, then logged and skipped (no debounce is
//! recorded, so the next request retries).
//!
//! Not here: serving (the prediction agent loads what this registers) and the failure
//! classifier, which needs labelled process data the stream does not carry.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use sm_domain::{AlertEvent, Codec, Decode, EnvelopeHeader, ModelRetrainRequested, Timestamp, rfc3339, topics};
use sm_models::cmapss::{Trajectory, trajectories};
use sm_models::{
    Artifact, Model, ModelCard, ModelError, ModelKind, RulParams, RulRegressor, StreamLayout, TrainingData,
};
use sm_registry::{NewVersion, RegistryError, Selector, Stage};
use sm_storage::Pool;

use crate::SmctlConfig;
use crate::catalog::Fleet;
use crate::eval_models::BoostArgs;
use crate::train::{self, ModelPublisher, Origin, RunShape, SimulationArgs};

/// The agent name: consumer group `sm-trainer`, service name in logs and metrics.
const AGENT: &str = "trainer";
/// `producer` of the model events the trainer announces.
const PRODUCER: &str = "smctl-trainer";
/// Held-out runs are seeded this far above the training runs: never a training seed.
pub const EVAL_SEED_OFFSET: u64 = 1_000_000;
/// Width of the history buckets the baseline is estimated from.
const BUCKET_SECS: f64 = 10.0;
/// A series needs this many buckets before its trend is judged.
const MIN_BUCKETS: usize = 8;
/// Sensor types the failure scenario's wear moves (up, together).
pub const WEAR_CHANNELS: [&str; 3] = ["current", "temperature", "vibration_rms"];
/// Attempts at a request whose handling fails on PostgreSQL, the artifact store or Kafka.
const ATTEMPTS: u32 = 3;

/// `smctl train serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Seconds of projected readings, up to the request's `history_to`, that re-estimate the
    /// healthy baseline.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub history: u64,
    /// At most one retrain per asset type in this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub min_interval: u64,
    /// Requests older than this many seconds are stale and skipped.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub max_age: u64,
    /// Simulated runs (seeded --first-seed + 1,000,000, ...) held out to compare the models.
    #[arg(long, default_value_t = 20)]
    pub eval_runs: u64,
    /// An asset wears when its wear channels (temperature, vibration, current) rise by more
    /// than this many noise standard deviations over the history, two of them at least.
    #[arg(long, default_value_t = 3.0)]
    pub wear_threshold: f64,
    /// Put in front of the model names the trainer reads and writes (`<prefix>rul-<type>`).
    #[arg(long, default_value = "")]
    pub name_prefix: String,
    /// Cycles averaged for each channel's mean feature (default 10).
    #[arg(long)]
    pub mean_window: Option<usize>,
    /// Cycles over which each channel's slope is fitted (default 60).
    #[arg(long)]
    pub slope_window: Option<usize>,
    /// Seed of the challenger's training folds.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub simulation: SimulationArgs,
    #[command(flatten)]
    pub boost: BoostArgs,
}

impl ServeArgs {
    fn validate(&self) -> anyhow::Result<()> {
        self.simulation.shape()?;
        anyhow::ensure!(self.history > 0, "--history must be positive");
        anyhow::ensure!(self.eval_runs > 0, "--eval-runs must be at least 1");
        anyhow::ensure!(self.wear_threshold > 0.0, "--wear-threshold must be positive");
        Ok(())
    }
}

/// What became of one request: the label of `sm_trainer_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The challenger won and serves now.
    Promoted,
    /// The champion won; the challenger stays in staging (or was archived).
    Kept,
    /// The asset type was retrained less than `--min-interval` ago.
    Debounced,
    /// Older than `--max-age`.
    Stale,
    /// The asset is not in the projected `assets` table (not registered, or another tenant's
    /// projection).
    UnknownAsset,
    /// The asset type has no model (or none the trainer can retrain: not a live-stream RUL
    /// model, or a type the simulation has no template for).
    NoModel,
    /// The model does not read the drifting sensor's type.
    ChannelNotRead,
    /// The history shows no healthy asset to take a baseline from.
    NoBaseline,
    /// PostgreSQL, the artifact store or Kafka failed on every attempt.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promoted => "promoted",
            Self::Kept => "kept",
            Self::Debounced => "debounced",
            Self::Stale => "stale",
            Self::UnknownAsset => "unknown_asset",
            Self::NoModel => "no_model",
            Self::ChannelNotRead => "channel_not_read",
            Self::NoBaseline => "no_baseline",
            Self::Failed => "failed",
        }
    }
}

/// Whether the challenger replaces the champion: only with a strictly lower RMSE on the same
/// held-out trajectories (a tie, or a figure that is not a number, keeps what serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Promote,
    Keep,
}

impl Decision {
    pub fn between(champion_rmse: f64, challenger_rmse: f64) -> Self {
        if challenger_rmse < champion_rmse { Self::Promote } else { Self::Keep }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Keep => "keep",
        }
    }
}

/// At most one retrain per asset type per interval.
#[derive(Debug)]
pub struct Debounce {
    min_interval: Duration,
    last: HashMap<String, Instant>,
}

impl Debounce {
    pub fn new(min_interval: Duration) -> Self {
        Self { min_interval, last: HashMap::new() }
    }

    /// Whether `asset_type` may be retrained at `now`.
    pub fn allows(&self, asset_type: &str, now: Instant) -> bool {
        self.last.get(asset_type).is_none_or(|&at| now.saturating_duration_since(at) >= self.min_interval)
    }

    /// `asset_type` was retrained at `now`.
    pub fn record(&mut self, asset_type: &str, now: Instant) {
        self.last.insert(asset_type.to_owned(), now);
    }
}

/// One sensor's readings in one time bucket, as the history query aggregates them.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketStats {
    pub asset_id: String,
    pub sensor_id: String,
    pub sensor_type: String,
    /// Bucket number (start / bucket width); only the order matters.
    pub bucket: i64,
    pub count: i64,
    pub mean: f64,
    /// Sample standard deviation; `None` for a single reading.
    pub std: Option<f64>,
}

/// Healthy level and noise of one sensor type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SensorBaseline {
    pub nominal_mean: f64,
    pub noise_std: f64,
}

/// What the history says healthy looks like now, and which assets it took that from.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub sensors: BTreeMap<String, SensorBaseline>,
    pub healthy_assets: Vec<String>,
    pub wearing_assets: Vec<String>,
}

/// Estimates the healthy baseline from bucketed history.
///
/// Each sensor's series of buckets is judged by the rise of its wear channels: the median
/// of its last quarter's bucket means minus that of its first quarter, in noise standard
/// deviations (the median within-bucket standard deviation). An asset wears when at least
/// two of its wear channels (one, if it has only one) rise by more than `wear_threshold`;
/// single-sensor drift, which is what retrain requests usually report, moves one channel and
/// either way, so a drifted asset counts as healthy and its new level enters the baseline.
///
/// Over the healthy assets, a sensor type's nominal mean is the median of the bucket means of
/// the later half of each series (the newest normal), and its noise the median within-bucket
/// standard deviation. Medians keep a spike, a stuck bucket or an early-wearing asset from
/// moving either much. `None` when no asset is healthy.
pub fn estimate_baseline(stats: &[BucketStats], wear_threshold: f64) -> Option<Baseline> {
    // asset → sensor id → (sensor type, buckets in time order)
    let mut assets: BTreeMap<&str, BTreeMap<&str, (&str, Vec<&BucketStats>)>> = BTreeMap::new();
    for bucket in stats.iter().filter(|b| b.mean.is_finite() && b.count > 0) {
        let series = assets
            .entry(&bucket.asset_id)
            .or_default()
            .entry(&bucket.sensor_id)
            .or_insert_with(|| (&bucket.sensor_type, Vec::new()));
        series.1.push(bucket);
    }
    for series in assets.values_mut().flat_map(|sensors| sensors.values_mut()) {
        series.1.sort_by_key(|b| b.bucket);
    }
    let (mut healthy, mut wearing) = (Vec::new(), Vec::new());
    for (asset, sensors) in &assets {
        let judged: Vec<f64> = sensors
            .values()
            .filter(|(sensor_type, buckets)| WEAR_CHANNELS.contains(sensor_type) && buckets.len() >= MIN_BUCKETS)
            .map(|(_, buckets)| rise(buckets))
            .collect();
        let rising = judged.iter().filter(|&&r| r > wear_threshold).count();
        if !judged.is_empty() && rising >= judged.len().min(2) {
            wearing.push((*asset).to_owned());
        } else {
            healthy.push((*asset).to_owned());
        }
    }
    if healthy.is_empty() {
        return None;
    }
    let mut means: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut stds: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for asset in &healthy {
        for (sensor_type, buckets) in assets[asset.as_str()].values() {
            let later = &buckets[buckets.len() / 2..];
            means.entry(sensor_type).or_default().extend(later.iter().map(|b| b.mean));
            stds.entry(sensor_type).or_default().extend(buckets.iter().filter_map(|b| b.std.filter(|s| s.is_finite())));
        }
    }
    let sensors = means
        .into_iter()
        .filter_map(|(sensor_type, means)| {
            let noise_std = median(stds.get(sensor_type)?)?;
            Some((sensor_type.to_owned(), SensorBaseline { nominal_mean: median(&means)?, noise_std }))
        })
        .collect();
    Some(Baseline { sensors, healthy_assets: healthy, wearing_assets: wearing })
}

/// Rise of a series over its window in noise standard deviations (see [`estimate_baseline`]).
fn rise(buckets: &[&BucketStats]) -> f64 {
    let quarter = (buckets.len() / 4).max(2);
    let level = |part: &[&BucketStats]| median(&part.iter().map(|b| b.mean).collect::<Vec<_>>());
    let stds: Vec<f64> = buckets.iter().filter_map(|b| b.std.filter(|s| s.is_finite())).collect();
    let (Some(early), Some(late)) = (level(&buckets[..quarter]), level(&buckets[buckets.len() - quarter..])) else {
        return 0.0;
    };
    let noise = median(&stds).unwrap_or(0.0).max(1e-9);
    (late - early) / noise
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 })
}

/// Moves every `asset_type` sensor of `fleet` to the baseline of its type (kept within the
/// sensor's limits); returns how many sensors changed. Types the baseline lacks keep the
/// catalog's values.
pub fn rebase(fleet: &mut Fleet, asset_type: &str, baseline: &Baseline) -> usize {
    let mut changed = 0;
    for asset in fleet.assets.iter_mut().filter(|a| a.asset_type == asset_type) {
        for sensor in &mut asset.sensors {
            if let Some(b) = baseline.sensors.get(&sensor.sensor_type) {
                sensor.nominal_mean = b.nominal_mean.clamp(sensor.min, sensor.max);
                sensor.noise_std = b.noise_std.max(0.0);
                changed += 1;
            }
        }
    }
    changed
}

/// RMSE of `model` over every cycle of `trajectories`, each predicted from its own past;
/// truths capped at `cap_cycles`.
pub fn all_cycles_rmse(model: &RulRegressor, trajectories: &[Trajectory], cap_cycles: f64) -> Result<f64, ModelError> {
    let (mut predicted, mut truth) = (Vec::new(), Vec::new());
    for trajectory in trajectories {
        predicted.extend(model.rul_along(&trajectory.cycles)?);
        let last = trajectory.last_cycle();
        truth.extend(trajectory.cycles.iter().map(|c| f64::from(last - c.cycle).min(cap_cycles)));
    }
    Ok(sm_models::metrics::rmse(&predicted, &truth))
}

/// What one retrain produced, before it is registered.
struct Retrained {
    challenger: RulRegressor,
    out_of_fold_rmse: f64,
    champion_rmse: f64,
    challenger_rmse: f64,
    training_cycles: usize,
    training_trajectories: usize,
    eval_trajectories: usize,
}

/// The trainer's state: connections, settings and the debounce.
struct Trainer {
    args: ServeArgs,
    publisher: ModelPublisher,
    projections: Pool,
    debounce: Debounce,
    requests: prometheus::IntCounterVec,
}

/// `smctl train serve`: runs until `shutdown` completes (between requests).
pub async fn serve(config: &SmctlConfig, args: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    args.validate()?;
    let telemetry =
        sm_telemetry::start_service(AGENT, &config.telemetry, &args, &["kafka"]).await.context("starting telemetry")?;
    let publisher = ModelPublisher::connect(config, PRODUCER, topics::MODELS).await?;
    let projections = sm_storage::connect(&config.postgres).context("SM_POSTGRES__URL")?;
    let drift: Vec<(&str, bool)> = topics::ALL.iter().copied().filter(|(t, _)| *t == topics::DRIFT).collect();
    sm_kafka::ensure_topics(&config.kafka, &drift).await.context("creating sm.drift.v1")?;
    let consumer: StreamConsumer = config
        .kafka
        .consumer_config(&config.kafka.group_for(AGENT))
        // Statistics only feed the runtime's lag metric; the default context would log them.
        .set("statistics.interval.ms", "0")
        .create()
        .context("creating the sm.drift.v1 consumer")?;
    consumer.subscribe(&[topics::DRIFT]).context("subscribing to sm.drift.v1")?;
    let requests = prometheus::IntCounterVec::new(
        prometheus::Opts::new("sm_trainer_requests_total", "Retrain requests handled, by outcome"),
        &["outcome"],
    )
    .context("declaring metrics")?;
    let _ = prometheus::register(Box::new(requests.clone()));
    telemetry.health.set("kafka", true);
    tracing::info!(group = %config.kafka.group_for(AGENT), topic = topics::DRIFT, "waiting for retrain requests");

    let min_interval = Duration::from_secs(args.min_interval);
    let mut trainer = Trainer { args, publisher, projections, debounce: Debounce::new(min_interval), requests };
    let codec = Codec::embedded().context("loading schemas")?;
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            () = &mut shutdown => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(error = %error, "consuming sm.drift.v1 failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let content_type = message
            .headers()
            .and_then(|headers| {
                use rdkafka::message::Headers;
                headers.iter().find(|h| h.key == "content-type").and_then(|h| h.value)
            })
            .and_then(|value| std::str::from_utf8(value).ok());
        let decoded = message.payload().map(|payload| AlertEvent::decode(&codec, payload, content_type));
        let mode = match decoded {
            Some(Ok(event)) => match event.payload {
                // Only a request that registered something must not be redone after a crash;
                // skipping one again is harmless, so the rest commit without waiting.
                AlertEvent::Retrain(request) => match trainer.handle(&event.header, &request).await {
                    Outcome::Promoted | Outcome::Kept | Outcome::Failed => CommitMode::Sync,
                    _ => CommitMode::Async,
                },
                _ => CommitMode::Async,
            },
            Some(Err(error)) => {
                tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    reason_code = error.reason_code(),
                    error = %error,
                    "undecodable record on sm.drift.v1 skipped"
                );
                CommitMode::Async
            }
            None => CommitMode::Async,
        };
        // A synchronous commit waits for the broker: off the async threads.
        if let Err(error) = tokio::task::block_in_place(|| consumer.commit_message(&message, mode)) {
            tracing::warn!(error = %error, offset = message.offset(), "committing the offset failed");
        }
    }
    tracing::info!("trainer stopped");
    Ok(())
}

impl Trainer {
    /// Handles one request to the end, whatever happens; logs and counts the outcome.
    async fn handle(&mut self, header: &EnvelopeHeader, request: &ModelRetrainRequested) -> Outcome {
        let asset_id = header.asset_id.as_str();
        let age = Timestamp::now().as_micros() - header.occurred_at.as_micros();
        let outcome = if age > i64::try_from(self.args.max_age).unwrap_or(i64::MAX).saturating_mul(1_000_000) {
            Outcome::Stale
        } else {
            let mut attempt = 1;
            loop {
                match self.retrain(header, request).await {
                    Ok(outcome) => break outcome,
                    // A model that cannot be trained will not train on a second try either.
                    Err(error) if attempt < ATTEMPTS && error.downcast_ref::<ModelError>().is_none() => {
                        let wait = Duration::from_secs(2u64.pow(attempt));
                        tracing::warn!(asset_id, attempt, error = format!("{error:#}"), "retrain failed; retrying");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    Err(error) => {
                        tracing::error!(asset_id, error = format!("{error:#}"), "retrain failed; request skipped");
                        break Outcome::Failed;
                    }
                }
            }
        };
        self.requests.with_label_values(&[outcome.as_str()]).inc();
        let (sensor_id, reason) = (request.sensor_id.as_str(), request.reason.as_str());
        match outcome {
            // A backlog of old or foreign requests would flood the log at info.
            Outcome::Stale | Outcome::UnknownAsset | Outcome::Debounced => {
                tracing::debug!(asset_id, sensor_id, reason, outcome = outcome.as_str(), "retrain request handled");
            }
            _ => tracing::info!(asset_id, sensor_id, reason, outcome = outcome.as_str(), "retrain request handled"),
        }
        outcome
    }

    async fn retrain(&mut self, header: &EnvelopeHeader, request: &ModelRetrainRequested) -> anyhow::Result<Outcome> {
        let asset_id = header.asset_id.as_str();
        let Some((asset_type, tenant)) = asset_of(&self.projections, asset_id).await? else {
            return Ok(Outcome::UnknownAsset);
        };
        if !self.debounce.allows(&asset_type, Instant::now()) {
            return Ok(Outcome::Debounced);
        }
        let name = format!("{}rul-{asset_type}", self.args.name_prefix);
        let champion = match self.publisher.registry.resolve(&name, Selector::Auto).await {
            Ok(version) => version,
            Err(RegistryError::UnknownModel(_) | RegistryError::NoVersion { .. }) => {
                tracing::info!(model = %name, asset_type, "no model to retrain for this asset type");
                return Ok(Outcome::NoModel);
            }
            Err(error) => return Err(error).context("resolving the champion"),
        };
        // The store checks size and SHA-256 against the registry, and `load` checks the hash
        // again before parsing: altered bytes never become a champion.
        let bytes = self.publisher.store.get(&champion.artifact).await.context("fetching the champion")?;
        let loaded = sm_models::load(&bytes, &champion.artifact.sha256).context("loading the champion")?;
        let Model::RemainingUsefulLife(champion_model) = loaded.model else {
            return Ok(not_retrainable(&name, champion.version, "not a RUL model"));
        };
        let Some(layout) = champion_model.stream_layout() else {
            return Ok(not_retrainable(&name, champion.version, "not a live-stream model (trained on C-MAPSS?)"));
        };
        if !layout.channels.contains(&request.sensor_type) {
            return Ok(Outcome::ChannelNotRead);
        }
        let mut fleet = train::simulated_fleet(self.args.simulation.assets, self.args.simulation.catalog.as_deref())?;
        if train::stream_layout(&fleet, &asset_type, layout.cycle_ms).is_err() {
            return Ok(not_retrainable(&name, champion.version, "the simulation has no template for its asset type"));
        }

        let to = request.history_to;
        let from = Timestamp(to.as_micros() - i64::try_from(self.args.history)?.saturating_mul(1_000_000));
        let stats = history(&self.projections, &asset_type, &tenant, from, to).await?;
        let Some(baseline) = estimate_baseline(&stats, self.args.wear_threshold) else {
            tracing::warn!(asset_type, buckets = stats.len(), "no healthy asset in the history: no baseline");
            return Ok(Outcome::NoBaseline);
        };
        rebase(&mut fleet, &asset_type, &baseline);
        tracing::info!(
            asset_type,
            healthy = ?baseline.healthy_assets,
            wearing = ?baseline.wearing_assets,
            baseline = ?baseline.sensors,
            "healthy baseline re-estimated; training the challenger"
        );

        let simulation = SimulationArgs { cycle_ms: layout.cycle_ms, ..self.args.simulation.clone() };
        let shape = simulation.shape()?;
        let defaults = train::stream_params(simulation.run_cycles());
        let params = RulParams {
            boost: self.args.boost.apply(defaults.boost.clone()),
            mean_window_cycles: self.args.mean_window.unwrap_or(defaults.mean_window_cycles),
            slope_window_cycles: self.args.slope_window.unwrap_or(defaults.slope_window_cycles),
            seed: self.args.seed,
            ..defaults
        };
        let eval_first = simulation.first_seed + EVAL_SEED_OFFSET;
        let eval_seeds = eval_first..eval_first + self.args.eval_runs;
        let started = Instant::now();
        let challenge = {
            let (asset_type, training_seeds, eval_seeds) = (asset_type.clone(), simulation.seeds(), eval_seeds.clone());
            tokio::task::spawn_blocking(move || {
                challenge(&fleet, &shape, &asset_type, &layout, training_seeds, eval_seeds, &params, &champion_model)
            })
            .await
            .context("the training task panicked")??
        };
        let decision = Decision::between(challenge.champion_rmse, challenge.challenger_rmse);

        let now = Timestamp::now();
        let comparison = serde_json::json!({
            "champion_version": champion.version,
            "champion_rmse": challenge.champion_rmse,
            "challenger_rmse": challenge.challenger_rmse,
            "decision": decision.as_str(),
            "eval_trajectories": challenge.eval_trajectories,
            "eval_seeds": format!("{}..={}", eval_seeds.start, eval_seeds.end - 1),
        });
        let mut metrics = BTreeMap::from([
            ("all_cycles_rmse".to_owned(), challenge.challenger_rmse),
            ("champion_all_cycles_rmse".to_owned(), challenge.champion_rmse),
            ("out_of_fold_rmse".to_owned(), challenge.out_of_fold_rmse),
            ("eval_trajectories".to_owned(), challenge.eval_trajectories as f64),
        ]);
        for (sensor_type, b) in &baseline.sensors {
            metrics.insert(format!("baseline_{sensor_type}_mean"), b.nominal_mean);
            metrics.insert(format!("baseline_{sensor_type}_noise_std"), b.noise_std);
        }
        metrics.retain(|_, value| value.is_finite());
        let card = ModelCard {
            name: name.clone(),
            kind: ModelKind::RemainingUsefulLife,
            features: challenge.challenger.feature_names(),
            training: TrainingData {
                source: format!(
                    "trainer: {} simulated runs re-based on the projected {asset_type} history ({} healthy of {} \
                     assets); {} on {}",
                    simulation.runs,
                    baseline.healthy_assets.len(),
                    baseline.healthy_assets.len() + baseline.wearing_assets.len(),
                    request.reason,
                    request.sensor_id
                ),
                from: Some(rfc3339::format(from)),
                to: Some(rfc3339::format(to)),
                rows: challenge.training_cycles,
                units: challenge.training_trajectories,
            },
            metrics,
            created_at: rfc3339::format(now),
        };
        let artifact = Artifact::new(card, Model::RemainingUsefulLife(challenge.challenger))?;
        let bytes = artifact.to_bytes()?;
        let new =
            NewVersion { comparison: Some(comparison), ..NewVersion::from_card(&artifact.card, &asset_type, now) };
        let origin = Origin::Request(header.clone());
        let version = self.publisher.register(&new, &bytes, &origin).await?;
        // Registered: from here on, a failure is logged, never retried (a retry would register
        // a second challenger).
        self.debounce.record(&asset_type, Instant::now());
        tracing::info!(
            model = %name,
            version = version.version,
            champion = champion.version,
            champion_rmse = challenge.champion_rmse,
            challenger_rmse = challenge.challenger_rmse,
            decision = decision.as_str(),
            training_secs = started.elapsed().as_secs_f64(),
            "challenger registered"
        );
        let reason = format!(
            "trainer: {} on {}; challenger RMSE {:.2} vs champion v{} {:.2} on {} held-out simulated trajectories",
            request.reason,
            request.sensor_id,
            challenge.challenger_rmse,
            champion.version,
            challenge.champion_rmse,
            challenge.eval_trajectories
        );
        let finished = match decision {
            Decision::Promote => {
                let comparison = BTreeMap::from([
                    ("challenger_rmse".to_owned(), challenge.challenger_rmse),
                    ("champion_rmse".to_owned(), challenge.champion_rmse),
                ]);
                self.publisher
                    .promote(&name, version.version, &reason, comparison, &origin)
                    .await
                    .map(|_| Outcome::Promoted)
            }
            // A losing staging version would become what `auto` serves when the champion is
            // only staging itself: archive it then.
            Decision::Keep if champion.stage != Stage::Production => {
                self.publisher.archive(&name, version.version, &reason, &origin).await.map(|()| Outcome::Kept)
            }
            Decision::Keep => Ok(Outcome::Kept),
        };
        Ok(finished.unwrap_or_else(|error| {
            let error = format!("{error:#}");
            let version = version.version;
            tracing::error!(model = %name, version, error, "challenger registered but not promoted or archived");
            Outcome::Failed
        }))
    }
}

/// Logs why the serving model is not one the trainer can retrain.
fn not_retrainable(name: &str, version: u32, why: &str) -> Outcome {
    tracing::warn!(model = name, version, why, "the serving model cannot be retrained by the trainer");
    Outcome::NoModel
}

/// Trains a challenger on the runs `training_seeds` of the (re-based) `fleet` and scores it and
/// the champion on the runs `eval_seeds`: CPU only, for the blocking pool.
#[allow(clippy::too_many_arguments)]
fn challenge(
    fleet: &Fleet,
    shape: &RunShape,
    asset_type: &str,
    layout: &StreamLayout,
    training_seeds: std::ops::Range<u64>,
    eval_seeds: std::ops::Range<u64>,
    params: &RulParams,
    champion: &RulRegressor,
) -> anyhow::Result<Retrained> {
    let training = trajectories(&train::simulated_cycles(fleet, shape, asset_type, layout, training_seeds));
    let held_out = trajectories(&train::simulated_cycles(fleet, shape, asset_type, layout, eval_seeds));
    if held_out.is_empty() {
        return Err(ModelError::NotEnoughData("no wearing asset in the held-out runs: raise --eval-runs".into()).into());
    }
    let (challenger, report) = RulRegressor::train(&training, params)?;
    let challenger = challenger.for_stream(layout.clone())?;
    Ok(Retrained {
        challenger_rmse: all_cycles_rmse(&challenger, &held_out, params.cap_cycles)?,
        champion_rmse: all_cycles_rmse(champion, &held_out, params.cap_cycles)?,
        challenger,
        out_of_fold_rmse: report.out_of_fold_rmse,
        training_cycles: report.cycles,
        training_trajectories: report.units,
        eval_trajectories: held_out.len(),
    })
}

/// Per-sensor bucket statistics of the readings of `tenant`'s `asset_type` assets between
/// `from` (inclusive) and `to` (exclusive), from the projected `readings` and `assets` tables.
/// Aggregated in PostgreSQL: an hour of a fleet is hundreds of thousands of readings, its
/// buckets a few thousand rows.
async fn history(
    pool: &Pool,
    asset_type: &str,
    tenant: &str,
    from: Timestamp,
    to: Timestamp,
) -> anyhow::Result<Vec<BucketStats>> {
    const HISTORY: &str = "
        SELECT r.asset_id, r.sensor_id, r.sensor_type,
               floor(extract(epoch FROM r.occurred_at)::float8 / $3::float8)::bigint AS bucket,
               count(*), avg(r.value), stddev_samp(r.value)
        FROM readings r JOIN assets a ON a.asset_id = r.asset_id
        WHERE a.asset_type = $1 AND a.tenant_id = $2
          AND r.occurred_at >= (timestamptz 'epoch' + $4::bigint * interval '1 microsecond')
          AND r.occurred_at <  (timestamptz 'epoch' + $5::bigint * interval '1 microsecond')
        GROUP BY r.asset_id, r.sensor_id, r.sensor_type, bucket";
    let client = pool.get().await.context("connecting to PostgreSQL (projections)")?;
    let rows = client
        .query(HISTORY, &[&asset_type, &tenant, &BUCKET_SECS, &from.as_micros(), &to.as_micros()])
        .await
        .context("reading the projected readings")?;
    Ok(rows
        .iter()
        .map(|row| BucketStats {
            asset_id: row.get(0),
            sensor_id: row.get(1),
            sensor_type: row.get(2),
            bucket: row.get(3),
            count: row.get(4),
            mean: row.get(5),
            std: row.get(6),
        })
        .collect())
}

/// The asset's type and tenant from the projected `assets` table.
async fn asset_of(pool: &Pool, asset_id: &str) -> anyhow::Result<Option<(String, String)>> {
    let client = pool.get().await.context("connecting to PostgreSQL (projections)")?;
    let row = client
        .query_opt("SELECT asset_type, tenant_id FROM assets WHERE asset_id = $1", &[&asset_id])
        .await
        .context("reading the projected assets table")?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::simulated_fleet;

    /// 60 buckets of one sensor: `level(i)` as the mean, `noise` as the within-bucket std.
    fn series(asset: &str, sensor_type: &str, noise: f64, level: impl Fn(usize) -> f64) -> Vec<BucketStats> {
        (0..60)
            .map(|i| BucketStats {
                asset_id: asset.into(),
                sensor_id: format!("{asset}.{sensor_type}"),
                sensor_type: sensor_type.into(),
                bucket: 1_000 + i as i64,
                count: 130,
                // A small deterministic wobble, as bucket means have.
                mean: level(i) + 0.05 * noise * ((i * 7 % 5) as f64 - 2.0),
                std: Some(noise),
            })
            .collect()
    }

    /// A pump whose wear channels sit at `temperature`, 2.5 mm/s and 62 A, with pressure.
    fn healthy_pump(asset: &str, temperature: impl Fn(usize) -> f64) -> Vec<BucketStats> {
        let mut stats = series(asset, "temperature", 0.8, temperature);
        stats.extend(series(asset, "vibration_rms", 0.25, |_| 2.5));
        stats.extend(series(asset, "current", 1.2, |_| 62.0));
        stats.extend(series(asset, "pressure", 8.0, |_| 650.0));
        stats
    }

    fn wearing_pump(asset: &str) -> Vec<BucketStats> {
        let x = |i: usize| i as f64 / 59.0;
        let mut stats = series(asset, "temperature", 0.8, |i| 55.0 + 30.0 * x(i));
        stats.extend(series(asset, "vibration_rms", 0.25, |i| 2.5 + 12.5 * x(i).powi(3)));
        stats.extend(series(asset, "current", 1.2, |i| 62.0 + 15.0 * x(i)));
        stats.extend(series(asset, "pressure", 8.0, |_| 650.0));
        stats
    }

    #[test]
    fn baseline_comes_from_the_healthy_assets_and_their_newest_level() {
        let mut stats = healthy_pump("pump-1", |_| 60.0);
        stats.extend(wearing_pump("pump-2"));
        // Drift on one channel (4 noise std, up): still a healthy asset, at its new level.
        stats.extend(healthy_pump("pump-3", |i| if i < 30 { 60.0 } else { 63.2 }));
        stats.extend(healthy_pump("pump-4", |_| 61.0));
        let baseline = estimate_baseline(&stats, 3.0).unwrap();
        assert_eq!(baseline.healthy_assets, ["pump-1", "pump-3", "pump-4"]);
        assert_eq!(baseline.wearing_assets, ["pump-2"]);
        let temperature = baseline.sensors["temperature"];
        // The median of the later halves of 60, 63.2 and 61 °C.
        assert!((temperature.nominal_mean - 61.0).abs() < 0.05, "{temperature:?}");
        assert!((temperature.noise_std - 0.8).abs() < 1e-9);
        assert!((baseline.sensors["current"].nominal_mean - 62.0).abs() < 0.1);
        assert!((baseline.sensors["pressure"].noise_std - 8.0).abs() < 1e-9);
        assert_eq!(baseline.sensors.len(), 4);
    }

    #[test]
    fn spikes_do_not_move_the_baseline_and_all_wearing_gives_none() {
        let mut stats = healthy_pump("pump-1", |_| 55.0);
        for (i, bucket) in stats.iter_mut().enumerate().filter(|(_, b)| b.sensor_type == "temperature") {
            if i % 10 == 3 {
                bucket.mean += 40.0; // a spike inside the bucket
                bucket.std = Some(20.0);
            }
        }
        let baseline = estimate_baseline(&stats, 3.0).unwrap();
        assert!((baseline.sensors["temperature"].nominal_mean - 55.0).abs() < 0.1, "{baseline:?}");
        assert!((baseline.sensors["temperature"].noise_std - 0.8).abs() < 1e-9);

        let mut wearing = wearing_pump("pump-1");
        wearing.extend(wearing_pump("pump-2"));
        assert_eq!(estimate_baseline(&wearing, 3.0), None);
        assert_eq!(estimate_baseline(&[], 3.0), None);
    }

    #[test]
    fn a_short_series_is_not_judged_as_wearing() {
        let stats: Vec<BucketStats> = wearing_pump("pump-1").into_iter().filter(|b| b.bucket < 1_005).collect();
        let baseline = estimate_baseline(&stats, 3.0).unwrap();
        assert_eq!(baseline.healthy_assets, ["pump-1"]);
    }

    #[test]
    fn only_a_strictly_lower_rmse_promotes() {
        assert_eq!(Decision::between(5.0, 4.9), Decision::Promote);
        assert_eq!(Decision::between(5.0, 5.0), Decision::Keep);
        assert_eq!(Decision::between(5.0, 7.0), Decision::Keep);
        assert_eq!(Decision::between(5.0, f64::NAN), Decision::Keep);
        assert_eq!(Decision::between(f64::NAN, 1.0), Decision::Keep);
        assert_eq!((Decision::Promote.as_str(), Decision::Keep.as_str()), ("promote", "keep"));
    }

    #[test]
    fn debounce_allows_one_retrain_per_type_per_interval() {
        let mut debounce = Debounce::new(Duration::from_secs(600));
        let start = Instant::now();
        assert!(debounce.allows("pump", start));
        debounce.record("pump", start);
        assert!(!debounce.allows("pump", start + Duration::from_secs(599)));
        assert!(debounce.allows("motor", start + Duration::from_secs(1)));
        assert!(debounce.allows("pump", start + Duration::from_secs(600)));
    }

    #[test]
    fn rebase_moves_only_the_asset_types_sensors_within_their_limits() {
        let mut fleet = simulated_fleet(8, None).unwrap();
        let baseline = Baseline {
            sensors: BTreeMap::from([
                ("temperature".into(), SensorBaseline { nominal_mean: 61.0, noise_std: 0.9 }),
                ("pressure".into(), SensorBaseline { nominal_mean: 9_999.0, noise_std: 8.0 }),
            ]),
            healthy_assets: vec![],
            wearing_assets: vec![],
        };
        assert_eq!(rebase(&mut fleet, "pump", &baseline), 4, "two pumps, two types each");
        for asset in &fleet.assets {
            let temperature = asset.sensors.iter().find(|s| s.sensor_type == "temperature").unwrap();
            if asset.asset_type == "pump" {
                assert_eq!((temperature.nominal_mean, temperature.noise_std), (61.0, 0.9));
                let pressure = asset.sensors.iter().find(|s| s.sensor_type == "pressure").unwrap();
                assert_eq!(pressure.nominal_mean, pressure.max, "clamped to the sensor's limit");
            } else {
                assert_ne!(temperature.nominal_mean, 61.0);
            }
        }
    }

    /// A champion trained on the catalog's pumps reads pumps running 10 °C warmer as worn;
    /// the challenger trained on the re-based simulation does not, and wins on held-out runs.
    #[test]
    fn a_challenger_on_the_rebased_baseline_beats_a_champion_on_the_old_one() {
        let shape = RunShape { rate: 400.0, duration_secs: 90.0 };
        let fleet = simulated_fleet(8, None).unwrap();
        let layout = train::stream_layout(&fleet, "pump", 1_000).unwrap();
        let params = RulParams {
            boost: sm_models::BoostParams { trees: 60, learning_rate: 0.15, ..train::stream_params(90.0).boost },
            ..train::stream_params(90.0)
        };
        let old = trajectories(&train::simulated_cycles(&fleet, &shape, "pump", &layout, 0..16));
        let (champion, _) = RulRegressor::train(&old, &params).unwrap();
        let champion = champion.for_stream(layout.clone()).unwrap();

        let mut warmer = fleet.clone();
        let baseline = Baseline {
            sensors: BTreeMap::from([("temperature".into(), SensorBaseline { nominal_mean: 65.0, noise_std: 0.8 })]),
            healthy_assets: vec!["pump-0001".into()],
            wearing_assets: vec![],
        };
        rebase(&mut warmer, "pump", &baseline);
        let result = challenge(&warmer, &shape, "pump", &layout, 100..116, 200..208, &params, &champion).unwrap();
        assert!(result.eval_trajectories >= 2, "{}", result.eval_trajectories);
        assert!(
            result.challenger_rmse < 0.7 * result.champion_rmse,
            "challenger {} vs champion {}",
            result.challenger_rmse,
            result.champion_rmse
        );
        assert_eq!(Decision::between(result.champion_rmse, result.challenger_rmse), Decision::Promote);
        assert_eq!(result.challenger.stream_layout(), Some(layout));
    }
}
