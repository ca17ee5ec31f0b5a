//! `smctl train failure|rul`: trains a model on a split by unit, scores it on the held-out
//! units, and registers it: the artifact goes to the artifact store (`SM_ARTIFACTS__*`: a
//! directory, or S3), the version to the registry in PostgreSQL in stage `staging`, and
//! `ModelRegistered` to `sm.models.v1` (then `ModelPromoted` with `--promote`).
//!
//! Training and scoring are [`crate::eval_models`]'s (the code `smctl eval` runs), so a model
//! card's figures are the ones `smctl eval` prints for the same data, split and settings.
//!
//! `smctl train rul --simulated` trains the live-stream RUL model of an asset type on the
//! machines `smctl simulate --scenario failure` simulates ([`failure_trajectories`]): each
//! run is seeded like a simulate run, the same assets wear from the same start, the readings
//! keep the plan's round-robin timing, and their cycles are built by the prediction agent's
//! own [`CycleBuilder`]. So the model is trained on exactly what the agent will see during a
//! `smctl simulate --scenario failure` run, apart from the noise draws. Only the wearing
//! assets are trained on: [`sm_models::RulRegressor`] takes each trajectory's last cycle as
//! its failure and has no notion of a censored one, so a healthy asset could only be added by
//! inventing a failure. A healthy asset then reads like a wearing one before its wear
//! starts (with the defaults: RUL ≈ 60–70 of 90 cycles, P(RUL < 30) ≈ 0).
//!
//! [`ModelPublisher`] is the write side shared with the trainer ([`crate::trainer`]):
//! registry first, then the event. Not here: serving models (the prediction agent) and the
//! registry's gRPC commands (the query service).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sm_domain::{AssetId, DomainEvent, Envelope, EnvelopeHeader, TenantId, Timestamp, rfc3339, topics};
use sm_kafka::Announcer;
use sm_models::cmapss::{Cycle, Trajectory};
use sm_models::{Artifact, CycleBuilder, Model, ModelCard, RulParams, StreamLayout, TrainingData, synthetic};
use sm_registry::{ArtifactStore, ModelVersion, NewVersion, Promotion, Registry, events};

use crate::SmctlConfig;
use crate::catalog::{Catalog, Fleet};
use crate::eval_models::{self, FailureTrainingArgs, RulTrainingArgs};
use crate::scenario::{Scenario, ScenarioKind, SensorProfile};

/// `producer` of the model events `smctl train` announces.
const PRODUCER: &str = "smctl";

/// Asset type of a failure classifier by default: AI4I is a milling process.
const DEFAULT_FAILURE_ASSET_TYPE: &str = "mill";
/// Asset type of a RUL model trained on C-MAPSS by default.
const DEFAULT_CMAPSS_ASSET_TYPE: &str = "turbofan";
/// Asset type of a simulated RUL model by default.
const DEFAULT_SIMULATED_ASSET_TYPE: &str = "pump";

/// Sensor types a live-stream RUL model may read, in the order its channels take (sorted).
/// Speed is left out: the failure scenario's wear never moves it.
pub const STREAM_CHANNELS: [&str; 5] = ["current", "flow", "pressure", "temperature", "vibration_rms"];

/// Where the new version goes and what happens to it.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Registry name of the model (default `failure-<asset type>` or `rul-<asset type>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Asset type the model predicts for (default: `mill` for AI4I and --synthetic,
    /// `turbofan` for C-MAPSS, `pump` for --simulated, which also trains on that type).
    #[arg(long)]
    pub asset_type: Option<String>,
    /// Promote the new version to production (archiving the current production version).
    #[arg(long)]
    pub promote: bool,
    /// Tenant of the announced model events.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Train and score only: register and announce nothing (no stack needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Topic the model events go to: `sm.models.v1`, unless a test or an isolated setup keeps
    /// its own registry stream (the prediction agent's `SM_PREDICTION__MODELS_TOPIC`).
    #[arg(long, default_value = topics::MODELS)]
    pub models_topic: String,
}

/// `smctl train failure (--ai4i FILE | --synthetic ROWS)`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ai4i", "synthetic"])))]
pub struct TrainFailureArgs {
    /// The AI4I 2020 CSV (UCI layout; the failure-mode flags are never inputs).
    #[arg(long, value_name = "FILE")]
    pub ai4i: Option<PathBuf>,
    /// Train on this many synthetic AI4I-like processes instead (known failure rules; seeded by
    /// --seed): for a stack without the data set.
    #[arg(long, value_name = "ROWS")]
    pub synthetic: Option<usize>,
    #[command(flatten)]
    pub training: FailureTrainingArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

/// `smctl train rul (--cmapss FILE | --simulated)`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["cmapss", "simulated"])))]
pub struct TrainRulArgs {
    /// A C-MAPSS run-to-failure file (e.g. train_FD001.txt).
    #[arg(long, value_name = "FILE")]
    pub cmapss: Option<PathBuf>,
    /// Train the live-stream model of --asset-type on simulated run-to-failure trajectories
    /// (`smctl simulate --scenario failure` runs; see the --runs, --assets, --rate, --duration
    /// and --cycle-ms flags).
    #[arg(long)]
    pub simulated: bool,
    #[command(flatten)]
    pub simulation: SimulationArgs,
    #[command(flatten)]
    pub training: RulTrainingArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

/// The simulated runs a live-stream RUL model is trained on: each is what `smctl simulate
/// --scenario failure --assets A --rate R --duration D --seed S` would send.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulationArgs {
    /// Simulated runs, seeded --first-seed, --first-seed + 1, ...
    #[arg(long, default_value_t = 40)]
    pub runs: u64,
    /// Seed of the first run (away from `smctl simulate`'s default 42, so a demo run is not a
    /// training run).
    #[arg(long, default_value_t = 1000)]
    pub first_seed: u64,
    /// Assets in each simulated fleet, as `smctl simulate --assets`.
    #[arg(long, default_value_t = 8)]
    pub assets: usize,
    /// Readings per second of the whole fleet, as `smctl simulate --rate`.
    #[arg(long, default_value_t = 400.0)]
    pub rate: f64,
    /// Seconds per run, as `smctl simulate --duration`: the wearing assets fail at its end.
    #[arg(long, value_name = "SECS", default_value_t = 90.0)]
    pub duration: f64,
    /// Event-time length of one model cycle (the prediction agent's windows).
    #[arg(long, default_value_t = 1000)]
    pub cycle_ms: i64,
    /// Asset-type templates, as `smctl simulate --catalog` (default: the built-in ones).
    #[arg(long, value_name = "FILE")]
    pub catalog: Option<PathBuf>,
}

impl SimulationArgs {
    /// The run shape, refusing values `smctl simulate` would refuse.
    pub fn shape(&self) -> anyhow::Result<RunShape> {
        anyhow::ensure!(self.rate.is_finite() && self.rate > 0.0, "--rate must be a positive number");
        anyhow::ensure!(
            self.duration.is_finite() && self.duration > 0.0,
            "--duration must be a positive number of seconds"
        );
        anyhow::ensure!(self.cycle_ms > 0, "--cycle-ms must be positive");
        anyhow::ensure!(self.runs > 0, "--runs must be at least 1");
        Ok(RunShape { rate: self.rate, duration_secs: self.duration })
    }

    /// Cycles in one run: the cap of the RUL target (nothing in a run lives longer).
    pub fn run_cycles(&self) -> f64 {
        (self.duration * 1000.0 / self.cycle_ms as f64).round().max(1.0)
    }

    pub fn seeds(&self) -> Range<u64> {
        self.first_seed..self.first_seed + self.runs
    }

    /// How the training data is described in the model card.
    fn source(&self, asset_type: &str) -> String {
        format!(
            "simulated: smctl simulate --scenario failure --assets {} --rate {} --duration {}, seeds {}..{}, \
             wearing {asset_type} assets, cycles of {} ms",
            self.assets,
            self.rate,
            self.duration,
            self.first_seed,
            self.first_seed + self.runs - 1,
            self.cycle_ms
        )
    }
}

/// Training settings of the live-stream RUL model before any flag: no age feature (the agent
/// never knows an asset's age), a mean over 10 cycles and a slope over 60, and the target
/// capped at one run (nothing in a run lives longer).
///
/// The slope window was chosen by 5-fold cross-validation by trajectory on the default runs
/// (all-cycles RMSE 4.1 with a 30-cycle slope, 3.3 with 60, seeds 1000…1039; 3.5 and 2.9 on
/// seeds 5000…5039): wear is a ramp over tens of cycles, and a longer fit measures its rate
/// through the noise. C-MAPSS's 150 would exceed a run.
pub fn stream_params(run_cycles: f64) -> RulParams {
    RulParams {
        use_age: false,
        mean_window_cycles: 10,
        slope_window_cycles: 60,
        cap_cycles: run_cycles,
        ..Default::default()
    }
}

pub async fn failure(config: &SmctlConfig, args: TrainFailureArgs) -> anyhow::Result<()> {
    let asset_type = args.publish.asset_type.clone().unwrap_or_else(|| DEFAULT_FAILURE_ASSET_TYPE.to_owned());
    let name = model_name(&args.publish, "failure", &asset_type)?;
    let (rows, source) = match (&args.ai4i, args.synthetic) {
        (Some(path), None) => (eval_models::read_ai4i(path)?, format!("AI4I 2020 {}", path.display())),
        (None, Some(n)) => {
            anyhow::ensure!(n >= 100, "--synthetic needs at least 100 processes");
            let seed = args.training.seed;
            (synthetic::ai4i_like(n, seed), format!("synthetic AI4I-like processes ({n}, seed {seed})"))
        }
        _ => anyhow::bail!("give exactly one of --ai4i and --synthetic"),
    };
    let failures = rows.iter().filter(|r| r.machine_failure).count();
    println!("training {name} on {source}: {} processes, {failures} failures", rows.len());
    let run = eval_models::train_failure(&rows, &args.training)?;
    eval_models::print_failure(&run, &rows);

    let split = &run.evaluation.split;
    let training = TrainingData {
        source: format!("{source}, split by unit (seed {}, {} held out)", split.seed, split.test_units),
        from: None,
        to: None,
        rows: split.train.len(),
        units: split.train_units,
    };
    let metrics = run.evaluation.metrics.clone();
    let model = Model::FailureClassifier(run.model);
    publish(config, &args.publish, &name, &asset_type, model, training, metrics).await
}

pub async fn rul(config: &SmctlConfig, args: TrainRulArgs) -> anyhow::Result<()> {
    let default_type = if args.simulated { DEFAULT_SIMULATED_ASSET_TYPE } else { DEFAULT_CMAPSS_ASSET_TYPE };
    let asset_type = args.publish.asset_type.clone().unwrap_or_else(|| default_type.to_owned());
    let name = model_name(&args.publish, "rul", &asset_type)?;
    let (cycles, params, source, layout) = match &args.cmapss {
        Some(path) => {
            let cycles = eval_models::read_cmapss(path)?;
            let source = format!("C-MAPSS {}", path.display());
            (cycles, args.training.params(RulParams::default()), source, None)
        }
        None => {
            let sim = &args.simulation;
            let shape = sim.shape()?;
            let fleet = simulated_fleet(sim.assets, sim.catalog.as_deref())?;
            let layout = stream_layout(&fleet, &asset_type, sim.cycle_ms)?;
            let started = std::time::Instant::now();
            let cycles = simulated_cycles(&fleet, &shape, &asset_type, &layout, sim.seeds());
            let trajectories = cycles.last().map_or(0, |c| c.unit);
            println!(
                "simulated {} runs of {} assets ({} readings/s for {} s): {trajectories} wearing {asset_type} \
                 trajectories, {} cycles of {} ms, channels {} ({:.1} s)",
                sim.runs,
                sim.assets,
                sim.rate,
                sim.duration,
                cycles.len(),
                sim.cycle_ms,
                layout.channels.join(" "),
                started.elapsed().as_secs_f64()
            );
            let params = args.training.params(stream_params(sim.run_cycles()));
            (cycles, params, sim.source(&asset_type), Some(layout))
        }
    };
    println!("training {name} on {source}");
    let mut run = eval_models::train_rul(&cycles, &args.training, params)?;
    if let Some(layout) = layout {
        run.model = run.model.for_stream(layout).context("marking the model as a live-stream model")?;
    }
    eval_models::print_rul(&run);
    eval_models::print_cross_validation(&run);
    println!("\ntop features (share of split gain):");
    for (feature, share) in run.model.feature_importance().iter().take(6) {
        println!("  {feature:<26} {share:>6.3}");
    }

    let split = &run.evaluation.split;
    let training = TrainingData {
        source: format!("{source}, split by unit (seed {}, {} held out)", split.seed, split.test_units),
        from: None,
        to: None,
        rows: split.train.len(),
        units: split.train_units,
    };
    let metrics = run.metrics();
    publish(config, &args.publish, &name, &asset_type, Model::RemainingUsefulLife(run.model), training, metrics).await
}

/// `--name`, or `<kind>-<asset type>`, checked before any training.
fn model_name(args: &PublishArgs, kind: &str, asset_type: &str) -> anyhow::Result<String> {
    let name = args.name.clone().unwrap_or_else(|| format!("{kind}-{asset_type}"));
    sm_registry::validate_model_name(&name).context("--name / --asset-type")?;
    Ok(name)
}

/// Packs the model with its card and registers it (unless `--dry-run`), then promotes it with
/// `--promote`; prints what it did.
async fn publish(
    config: &SmctlConfig,
    args: &PublishArgs,
    name: &str,
    asset_type: &str,
    model: Model,
    training: TrainingData,
    mut metrics: BTreeMap<String, f64>,
) -> anyhow::Result<()> {
    metrics.retain(|_, value| value.is_finite());
    let now = Timestamp::now();
    let card = ModelCard {
        name: name.to_owned(),
        kind: model.kind(),
        features: model.feature_names(),
        training,
        metrics,
        created_at: rfc3339::format(now),
    };
    let artifact = Artifact::new(card, model).context("packing the model with its card")?;
    let bytes = artifact.to_bytes().context("serialising the model")?;
    if args.dry_run {
        println!("\ndry run: {name} not registered ({} bytes, sha256 {})", bytes.len(), sm_models::sha256_hex(&bytes));
        print_metrics(&artifact.card.metrics);
        return Ok(());
    }
    let publisher = ModelPublisher::connect(config, PRODUCER, &args.models_topic).await?;
    let origin = Origin::Tenant(TenantId(args.tenant.clone()));
    let new = NewVersion::from_card(&artifact.card, asset_type, now);
    let version = publisher.register(&new, &bytes, &origin).await?;
    print_version(&version);
    if args.promote {
        let promotion =
            publisher.promote(name, version.version, "smctl train --promote", BTreeMap::new(), &origin).await?;
        print_promotion(name, version.version, &promotion);
    }
    Ok(())
}

/// What `smctl train` and the trainer print for a registered version.
pub fn print_version(version: &ModelVersion) {
    println!(
        "\nregistered {} version {} ({}, asset type {}); ModelRegistered announced",
        version.name,
        version.version,
        version.stage,
        if version.asset_type.is_empty() { "any" } else { &version.asset_type },
    );
    println!("  sha256    {}", version.artifact.sha256);
    println!("  artifact  {} ({} bytes)", version.artifact.location, version.artifact.size);
    print_metrics(&version.metrics);
}

fn print_metrics(metrics: &BTreeMap<String, f64>) {
    println!("  metrics");
    for (metric, value) in metrics {
        println!("    {metric:<28} {value:>12.4}");
    }
}

fn print_promotion(name: &str, version: u32, promotion: &Promotion) {
    match (promotion.change, promotion.archived) {
        (sm_registry::Change::Unchanged, _) => println!("{name} version {version} is already in production"),
        (_, Some(previous)) => println!(
            "promoted {name} version {version} to production (archived version {previous}); ModelPromoted announced"
        ),
        (_, None) => println!("promoted {name} version {version} to production; ModelPromoted announced"),
    }
}

/// Who the announced model events come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// An operator's command: a new causal chain in this tenant.
    Tenant(TenantId),
    /// A request (a `ModelRetrainRequested`): same tenant and correlation, caused by it.
    Request(EnvelopeHeader),
}

/// The command side of the model registry as `smctl train` and the trainer use it: write the
/// registry (and the artifact), then announce what was written on `sm.models.v1`, keyed by
/// model name. The registry is written first so that an announced version always exists; if
/// the announcement fails, the error says so and the version stays registered unannounced.
pub struct ModelPublisher {
    pub registry: Registry,
    pub store: ArtifactStore,
    announcer: Announcer,
    producer: &'static str,
    topic: String,
}

impl ModelPublisher {
    /// Opens the registry (applying its migrations), the artifact store and a producer, and
    /// makes sure `topic` (`sm.models.v1`) exists.
    pub async fn connect(config: &SmctlConfig, producer: &'static str, topic: &str) -> anyhow::Result<Self> {
        let store = config.artifacts.build().context("opening the artifact store (SM_ARTIFACTS__*)")?;
        let pool = sm_storage::connect(&config.postgres).context("SM_POSTGRES__URL")?;
        let registry = Registry::open(pool).await.context("opening the model registry in PostgreSQL")?;
        sm_kafka::ensure_topics(&config.kafka, &[(topic, false)]).await.with_context(|| format!("creating {topic}"))?;
        let announcer = Announcer::new(&config.kafka).context("creating the model-event producer")?;
        Ok(Self { registry, store, announcer, producer, topic: topic.to_owned() })
    }

    /// Registers `new` in staging with its artifact `bytes`, and announces `ModelRegistered`.
    pub async fn register(&self, new: &NewVersion, bytes: &[u8], origin: &Origin) -> anyhow::Result<ModelVersion> {
        let version = self
            .registry
            .register(&self.store, new, bytes)
            .await
            .with_context(|| format!("registering {} in the model registry", new.name))?;
        self.announce(&version.name, version.created_at, events::registered(&version), origin).await?;
        Ok(version)
    }

    /// Promotes `version` (archiving the production version) and announces `ModelPromoted`.
    pub async fn promote(
        &self,
        name: &str,
        version: u32,
        reason: &str,
        comparison: BTreeMap<String, f64>,
        origin: &Origin,
    ) -> anyhow::Result<Promotion> {
        let at = Timestamp::now();
        let promotion = self
            .registry
            .promote(name, version, at)
            .await
            .with_context(|| format!("promoting {name} version {version}"))?;
        if promotion.change == sm_registry::Change::Applied {
            let event = events::promoted(name, version, promotion.archived, reason, comparison);
            self.announce(name, at, event, origin).await?;
        }
        Ok(promotion)
    }

    /// Archives `version` and announces `ModelArchived`.
    pub async fn archive(&self, name: &str, version: u32, reason: &str, origin: &Origin) -> anyhow::Result<()> {
        let at = Timestamp::now();
        let change = self
            .registry
            .archive(name, version, at)
            .await
            .with_context(|| format!("archiving {name} version {version}"))?;
        if change == sm_registry::Change::Applied {
            self.announce(name, at, events::archived(name, version, reason), origin).await?;
        }
        Ok(())
    }

    async fn announce<T: DomainEvent>(
        &self,
        name: &str,
        at: Timestamp,
        payload: T,
        origin: &Origin,
    ) -> anyhow::Result<()> {
        let event = match origin {
            Origin::Tenant(tenant) => Envelope::origin(tenant.clone(), AssetId::from(name), at, self.producer, payload),
            Origin::Request(cause) => {
                let mut event =
                    Envelope::origin(cause.tenant_id.clone(), AssetId::from(name), at, self.producer, payload);
                event.header.correlation_id = cause.correlation_id;
                event.header.causation_id = Some(cause.event_id);
                event
            }
        };
        self.announcer.announce(&self.topic, name, &event).await.with_context(|| {
            format!("announcing {} of {name} (the registry has it; the event is missing)", T::EVENT_TYPE)
        })?;
        Ok(())
    }
}

/// The fleet `smctl simulate --assets N [--catalog FILE]` builds without `--fleet-prefix`.
pub fn simulated_fleet(assets: usize, catalog: Option<&std::path::Path>) -> anyhow::Result<Fleet> {
    let catalog = match catalog {
        Some(path) => Catalog::load(path).with_context(|| format!("loading templates from {}", path.display()))?,
        None => Catalog::builtin().context("built-in templates")?,
    };
    catalog.generated_fleet(assets, "simulated", "").context("--assets")
}

/// The live-stream layout of `asset_type`: its sensor types among [`STREAM_CHANNELS`], sorted.
pub fn stream_layout(fleet: &Fleet, asset_type: &str, cycle_ms: i64) -> anyhow::Result<StreamLayout> {
    let Some(asset) = fleet.assets.iter().find(|a| a.asset_type == asset_type) else {
        let mut types: Vec<&str> = fleet.assets.iter().map(|a| a.asset_type.as_str()).collect();
        types.dedup();
        anyhow::bail!(
            "no {asset_type} in the simulated fleet (it has {}): use --asset-type or --assets",
            types.join(", ")
        );
    };
    let channels: Vec<String> = STREAM_CHANNELS
        .iter()
        .filter(|channel| asset.sensors.iter().any(|s| s.sensor_type == **channel))
        .map(|channel| (*channel).to_owned())
        .collect();
    anyhow::ensure!(!channels.is_empty(), "{asset_type} has none of the sensor types {}", STREAM_CHANNELS.join(", "));
    Ok(StreamLayout { channels, cycle_ms })
}

/// The shape of one `smctl simulate` run: readings per second and seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunShape {
    pub rate: f64,
    pub duration_secs: f64,
}

impl RunShape {
    /// Readings in the run, as `smctl simulate --duration` counts them.
    pub fn total(&self) -> u64 {
        (self.rate * self.duration_secs).round() as u64
    }

    /// Readings of each sensor, as `Plan::new` tells the scenario.
    pub fn steps_per_sensor(&self, sensors: usize) -> u64 {
        self.total().div_ceil(sensors.max(1) as u64)
    }

    /// Event time of reading `k` of the run, ms after its first: the sender paces readings
    /// evenly at `rate`, and a reading's event time is its send time.
    pub fn event_ms(&self, k: u64) -> i64 {
        (k as f64 * 1000.0 / self.rate).floor() as i64
    }
}

/// The scenario's view of every sensor of `fleet`, asset by asset, as `Plan::new` builds it
/// (a test checks that both pick the same wearing sensors).
pub fn scenario_profiles(fleet: &Fleet) -> Vec<SensorProfile> {
    fleet
        .assets
        .iter()
        .enumerate()
        .flat_map(|(asset, a)| {
            a.sensors.iter().map(move |s| SensorProfile {
                asset,
                asset_type: a.asset_type.clone(),
                sensor_type: s.sensor_type.clone(),
                nominal_mean: s.nominal_mean,
                noise_std: s.noise_std,
                min: s.min,
                max: s.max,
            })
        })
        .collect()
}

/// The run-to-failure trajectories of one simulated run: the failure scenario of `seed` on
/// `fleet`, and for every asset of `asset_type` that wears in it, its readings turned into
/// cycles of `layout` by a [`CycleBuilder`]. Pure: the same arguments give the same cycles.
///
/// Timing follows the plan exactly: reading `k` of the run is sensor `k mod S` (S sensors in
/// the fleet, asset by asset) at its step `k div S`, sent at `k / rate` seconds; the run stops
/// after `rate × duration` readings. (That is the plan without duplicates: a duplicate takes a
/// send slot but no sensor step, so `smctl simulate`'s default 1 % stretches the live timing
/// by about 1 %; its 1 % of bad records are readings the agent never sees.) Values are [`Scenario::value`] with a standard normal
/// draw from a generator seeded by the run and the asset. The failure is at the end of the
/// run: a last push at the next cycle boundary closes the final cycle (as the asset's next
/// reading would), so the last cycle has RUL 0 and cycle `c` of `n` has RUL `n − c`.
///
/// Each trajectory's `unit` is the asset's index in the fleet; callers renumber.
pub fn failure_trajectories(
    fleet: &Fleet,
    shape: &RunShape,
    asset_type: &str,
    layout: &StreamLayout,
    seed: u64,
) -> Vec<Trajectory> {
    let profiles = scenario_profiles(fleet);
    let sensors = profiles.len();
    let steps = shape.steps_per_sensor(sensors);
    let total = shape.total();
    let scenario = Scenario::build(ScenarioKind::Failure, profiles, steps, seed);
    let cycles_in_run = (shape.event_ms(total) / layout.cycle_ms.max(1)) as usize + 2;
    let mut trajectories = Vec::new();
    let mut first_sensor = 0;
    for (index, asset) in fleet.assets.iter().enumerate() {
        let own = first_sensor..first_sensor + asset.sensors.len();
        first_sensor = own.end;
        if asset.asset_type != asset_type || own.clone().all(|g| scenario.effects(g).is_empty()) {
            continue;
        }
        let mut rng = StdRng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut builder = CycleBuilder::new(layout, cycles_in_run);
        let mut last_ms = None;
        for step in 0..steps {
            for g in own.clone() {
                let k = step * sensors as u64 + g as u64;
                if k >= total {
                    break;
                }
                let value = scenario.value(g, step, standard_normal(&mut rng));
                let at = shape.event_ms(k);
                builder.push(&asset.sensors[g - own.start].sensor_type, at, value);
                last_ms = Some(at);
            }
        }
        let Some(last_ms) = last_ms else { continue };
        let close_ms = (last_ms.div_euclid(layout.cycle_ms) + 1) * layout.cycle_ms;
        builder.push(&layout.channels[0], close_ms, f64::NAN);
        let cycles: Vec<Cycle> = builder.history().iter().map(|c| Cycle { unit: index as u32, ..*c }).collect();
        if !cycles.is_empty() {
            trajectories.push(Trajectory { unit: index as u32, cycles });
        }
    }
    trajectories
}

/// The cycles of every wearing `asset_type` asset over the runs `seeds`, units numbered 1, 2, …
/// in order (so the last cycle's unit is the number of trajectories).
pub fn simulated_cycles(
    fleet: &Fleet,
    shape: &RunShape,
    asset_type: &str,
    layout: &StreamLayout,
    seeds: Range<u64>,
) -> Vec<Cycle> {
    let mut unit = 0;
    let mut cycles = Vec::new();
    for seed in seeds {
        for trajectory in failure_trajectories(fleet, shape, asset_type, layout, seed) {
            unit += 1;
            cycles.extend(trajectory.cycles.into_iter().map(|c| Cycle { unit, ..c }));
        }
    }
    cycles
}

/// A standard normal draw (Box–Muller, one of the pair), as the plan draws its noise.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Body, Plan, PlanOptions};
    use std::collections::BTreeSet;

    const SHAPE: RunShape = RunShape { rate: 400.0, duration_secs: 90.0 };

    fn pump_layout(fleet: &Fleet) -> StreamLayout {
        stream_layout(fleet, "pump", 1_000).unwrap()
    }

    #[test]
    fn pump_channels_are_its_wear_and_process_sensor_types_sorted() {
        let fleet = simulated_fleet(8, None).unwrap();
        assert_eq!(pump_layout(&fleet).channels, STREAM_CHANNELS);
        // Motors have speed, which no model reads.
        let motor = stream_layout(&fleet, "motor", 1_000).unwrap();
        assert_eq!(motor.channels, ["current", "temperature", "vibration_rms"]);
        assert!(stream_layout(&fleet, "turbine", 1_000).unwrap_err().to_string().contains("pump, motor"));
    }

    #[test]
    fn same_seed_same_trajectories_other_seed_other_ones() {
        let fleet = simulated_fleet(8, None).unwrap();
        let layout = pump_layout(&fleet);
        let a = simulated_cycles(&fleet, &SHAPE, "pump", &layout, 0..6);
        assert_eq!(a, simulated_cycles(&fleet, &SHAPE, "pump", &layout, 0..6));
        assert_ne!(a, simulated_cycles(&fleet, &SHAPE, "pump", &layout, 6..12));
        assert!(a.last().unwrap().unit >= 1, "some pump wears in 6 runs");
    }

    #[test]
    fn trajectories_run_one_cycle_per_second_to_the_end_of_the_run() {
        let fleet = simulated_fleet(8, None).unwrap();
        let layout = pump_layout(&fleet);
        let mut seen = 0;
        for seed in 0..20 {
            for trajectory in failure_trajectories(&fleet, &SHAPE, "pump", &layout, seed) {
                seen += 1;
                assert_eq!(fleet.assets[trajectory.unit as usize].asset_type, "pump");
                // 90 s of cycles of 1 s, numbered 1..=90: RUL 89, 88, ..., 0.
                let numbers: Vec<u32> = trajectory.cycles.iter().map(|c| c.cycle).collect();
                assert_eq!(numbers, (1..=90).collect::<Vec<u32>>(), "seed {seed}");
                let rul: Vec<u32> = trajectory.cycles.iter().map(|c| trajectory.last_cycle() - c.cycle).collect();
                assert!(rul.windows(2).all(|w| w[1] + 1 == w[0]) && rul.last() == Some(&0));
            }
        }
        assert!(seen >= 5, "{seen} wearing pumps in 20 runs");
    }

    #[test]
    fn wear_is_visible_in_the_cycles_and_healthy_channels_stay_nominal() {
        let fleet = simulated_fleet(8, None).unwrap();
        let layout = pump_layout(&fleet);
        let slot = |name: &str| layout.channels.iter().position(|c| c == name).unwrap();
        let trajectory = (0..20)
            .flat_map(|seed| failure_trajectories(&fleet, &SHAPE, "pump", &layout, seed))
            .next()
            .expect("a wearing pump");
        let mean = |cycles: &[Cycle], s: usize| cycles.iter().map(|c| c.sensors[s]).sum::<f64>() / cycles.len() as f64;
        let (early, late) = (&trajectory.cycles[..5], &trajectory.cycles[trajectory.cycles.len() - 5..]);
        // Pump nominals: 55 °C ± 0.8, 2.5 mm/s ± 0.25, 62 A ± 1.2, 650 kPa ± 8, 1800 L/min ± 30.
        assert!((mean(early, slot("temperature")) - 55.0).abs() < 1.0);
        assert!(mean(late, slot("temperature")) > 55.0 + 20.0, "temperature rises by up to 30 °C");
        assert!(mean(late, slot("vibration_rms")) > 3.0 * mean(early, slot("vibration_rms")));
        assert!(mean(late, slot("current")) > 62.0 * 1.15);
        assert!((mean(late, slot("pressure")) - 650.0).abs() < 10.0, "pressure does not wear");
        assert!((mean(late, slot("flow")) - 1800.0).abs() < 30.0, "flow does not wear");
        // Each cycle averages ~13 readings, so its noise is well below one reading's.
        let temps: Vec<f64> = early.iter().map(|c| c.sensors[slot("temperature")]).collect();
        assert!(temps.iter().all(|t| (t - 55.0).abs() < 0.8), "{temps:?}");
    }

    #[test]
    fn wearing_assets_and_reading_order_are_the_plans() {
        let fleet = simulated_fleet(8, None).unwrap();
        let sensors = fleet.sensor_count();
        for seed in [3, 42, 1000] {
            let options = PlanOptions {
                total: SHAPE.total(),
                seed,
                scenario: ScenarioKind::Failure,
                bad_fraction: 0.0,
                duplicate_fraction: 0.0,
                json_fraction: 0.0,
                unit_variants: false,
            };
            let plan = Plan::new(&fleet, options.clone()).unwrap();
            let planned: BTreeSet<String> = plan.affected_sensors().into_keys().collect();
            let scenario = Scenario::build(
                ScenarioKind::Failure,
                scenario_profiles(&fleet),
                SHAPE.steps_per_sensor(sensors),
                seed,
            );
            let ids: Vec<String> =
                fleet.assets.iter().flat_map(|a| a.sensors.iter().map(|s| s.id.to_string())).collect();
            let ours: BTreeSet<String> =
                (0..sensors).filter(|&g| !scenario.effects(g).is_empty()).map(|g| ids[g].clone()).collect();
            assert_eq!(planned, ours, "seed {seed}");
            // Reading k is sensor k mod S at its step k div S.
            for (k, record) in Plan::new(&fleet, options).unwrap().enumerate().take(3 * sensors + 7) {
                let Body::Reading { reading, .. } = record.body else { panic!("no duplicates planned") };
                assert_eq!(reading.sensor_id.to_string(), ids[k % sensors]);
                assert_eq!(reading.sequence, (k / sensors) as i64);
            }
        }
    }

    #[test]
    fn run_shape_matches_simulate_and_the_cap_is_one_run() {
        assert_eq!(SHAPE.total(), 36_000);
        assert_eq!(SHAPE.steps_per_sensor(30), 1_200);
        assert_eq!(SHAPE.event_ms(400), 1_000);
        assert_eq!(SHAPE.event_ms(35_999), 89_997);
        let args = SimulationArgs {
            runs: 3,
            first_seed: 7,
            assets: 8,
            rate: 400.0,
            duration: 90.0,
            cycle_ms: 500,
            catalog: None,
        };
        assert_eq!(args.run_cycles(), 180.0);
        assert_eq!(args.seeds(), 7..10);
        let params = stream_params(args.run_cycles());
        assert!(!params.use_age);
        assert_eq!((params.mean_window_cycles, params.slope_window_cycles, params.cap_cycles), (10, 60, 180.0));
        assert!(SimulationArgs { rate: 0.0, ..args.clone() }.shape().is_err());
        assert!(SimulationArgs { cycle_ms: 0, ..args }.shape().is_err());
    }
}
