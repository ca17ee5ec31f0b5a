//! smctl: the operator's command line. This file only parses arguments and dispatches; each
//! command lives in its own module.
//!
//! - `smctl topics create`: creates every platform topic (idempotent);
//! - `smctl assets apply FILE`: registers a catalog's assets ([`assets`], [`catalog`]);
//! - `smctl simulate`: a fleet of gateways sending readings, with scenarios, bad records and
//!   duplicates ([`simulate`], planned by [`plan`] and [`scenario`]);
//! - `smctl ingest-file FILE`: bulk import of historical readings ([`ingest_file`]);
//! - `smctl demo passthrough`: publishes generated readings (with a share of undecodable
//!   ones) to the pass-through agent's input and reports what came out the other side;
//! - `smctl eval`: scores the detectors and models on public data ([`eval`], [`eval_models`]);
//! - `smctl train failure|rul`: trains, scores and registers a model ([`train`]);
//! - `smctl train serve`: the trainer, retraining RUL models on drift ([`trainer`]).
//!
//! [`publish`] holds the producer the bulk commands share; [`rfc3339`] the timestamps.

mod analytics_demo;
mod assets;
mod catalog;
mod demo;
mod eval;
mod eval_models;
mod ingest_file;
mod keys;
mod plan;
mod prediction_demo;
mod publish;
mod query;
mod scenario;
mod simulate;
mod technicians;
mod train;
mod trainer;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use sm_kafka::KafkaConfig;

#[derive(Parser)]
#[command(name = "smctl", version, about = "Smart Maintenance command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Platform topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// The asset registry (sm.assets.v1).
    Assets {
        #[command(subcommand)]
        action: AssetsAction,
    },
    /// The technician roster (sm.technicians.v1).
    Technicians {
        #[command(subcommand)]
        action: TechniciansAction,
    },
    /// API keys (gRPC KeyService; admins), and `generate` for a bootstrap key.
    Keys {
        #[command(subcommand)]
        action: keys::KeysAction,
    },
    /// Readings of an asset or sensor, newest first (gRPC ListReadings).
    Readings(query::ReadingsArgs),
    /// The latest reading of each sensor of an asset (gRPC Latest).
    Latest(query::LatestArgs),
    /// Simulates a fleet of gateways sending readings to sm.readings.raw.v1.
    Simulate(simulate::SimulateArgs),
    /// Imports historical readings (backfill) from CSV or JSON lines.
    IngestFile(ingest_file::IngestFileArgs),
    /// Scores the platform's detectors and models on public benchmark data (no stack needed).
    Eval {
        #[command(subcommand)]
        what: EvalWhat,
    },
    /// Trains a model, scores it on held-out units and registers it (artifact store, registry,
    /// sm.models.v1); or runs the trainer.
    Train {
        #[command(subcommand)]
        what: TrainWhat,
    },
    /// End-to-end demonstrations against a running stack.
    Demo {
        #[command(subcommand)]
        scenario: DemoScenario,
    },
}

#[derive(Subcommand)]
enum EvalWhat {
    /// The anomaly detector on a Numenta Anomaly Benchmark folder: NAB score (standard
    /// profile), window recall and false alarms per 1,000 points, per series and in total.
    Anomaly(eval::AnomalyArgs),
    /// The failure classifier on the AI4I 2020 file: precision, recall, F1 and ROC-AUC on
    /// held-out units (the failure-mode flags are never inputs).
    Failure(eval_models::FailureArgs),
    /// The remaining-useful-life regressor on a C-MAPSS file: RMSE and PHM08 score on a split
    /// by engine, and k-fold by engine.
    Rul(eval_models::RulArgs),
}

#[derive(Subcommand)]
enum TrainWhat {
    /// The failure classifier on AI4I 2020 (or synthetic AI4I-like processes).
    Failure(train::TrainFailureArgs),
    /// The remaining-useful-life regressor on C-MAPSS, or the live-stream one of an asset type
    /// on simulated run-to-failure trajectories.
    Rul(train::TrainRulArgs),
    /// The trainer: retrains an asset type's RUL model when sm.drift.v1 asks for it
    /// (ModelRetrainRequested), promoting the challenger only if it beats the champion.
    Serve(trainer::ServeArgs),
}

#[derive(Subcommand)]
enum AssetsAction {
    /// Registers every asset of a catalog file: one AssetRegistered each, keyed by asset id.
    Apply(assets::ApplyArgs),
}

#[derive(Subcommand)]
enum TechniciansAction {
    /// Registers every technician of a roster file: one TechnicianRegistered each, keyed by id.
    Apply(technicians::ApplyArgs),
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Creates every platform topic that does not exist (partitions: SM_KAFKA__TOPIC_PARTITIONS).
    Create,
}

#[derive(Subcommand)]
enum DemoScenario {
    /// Simulates a small fleet through the running ingestion agent, projector and query
    /// service; reads the readings back over gRPC and checks every one is accounted for.
    Readings(demo::ReadingsDemoArgs),
    /// Three simulated fleets (injected anomalies, drift, healthy) through the running
    /// ingestion, anomaly, drift and projector services; prints recall per injected kind and
    /// false alarms per asset-hour.
    Analytics(analytics_demo::AnalyticsDemoArgs),
    /// A pump model trained on simulated failure runs; a fleet of pumps (a quarter wearing
    /// out) through the running ingestion and prediction agents and the projector, a second
    /// version promoted halfway over gRPC; prints each pump's predicted RUL over the run.
    Predictions(prediction_demo::PredictionDemoArgs),
    /// Sends readings through the running pass-through agent and checks every one came out
    /// once: forwarded if valid, dead-lettered with a reason if not.
    Passthrough {
        /// Readings to send.
        #[arg(long, default_value_t = 20_000)]
        readings: u64,
        /// Share of undecodable readings.
        #[arg(long, default_value_t = 0.01)]
        bad_fraction: f64,
        /// Give up waiting for results after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
}

/// smctl reads the same `SM_KAFKA__*`, `SM_POSTGRES__*`, `SM_ARTIFACTS__*` and
/// `SM_TELEMETRY__*` settings as the services.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SmctlConfig {
    kafka: KafkaConfig,
    postgres: sm_storage::PostgresConfig,
    /// Where `smctl train` and the trainer put model artifacts.
    artifacts: sm_registry::ArtifactStoreConfig,
    /// Logs and `/metrics` of `smctl train serve` (the one long-running mode).
    telemetry: sm_telemetry::TelemetryConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let config: SmctlConfig = sm_telemetry::load_config(&env).context("loading configuration")?;
    config.kafka.validate().map_err(anyhow::Error::msg).context("checking SM_KAFKA__* settings")?;
    match cli.command {
        Command::Topics { action: TopicsAction::Create } => {
            sm_kafka::ensure_topics(&config.kafka, sm_domain::topics::ALL).await.context("creating topics")?;
            for (topic, compacted) in sm_domain::topics::ALL {
                println!("{topic}{}", if *compacted { " (compacted)" } else { "" });
            }
            Ok(())
        }
        Command::Assets { action: AssetsAction::Apply(args) } => assets::apply(&config.kafka, args).await,
        Command::Technicians { action: TechniciansAction::Apply(args) } => {
            technicians::apply(&config.kafka, args).await
        }
        Command::Keys { action } => keys::run(action).await,
        Command::Readings(args) => query::readings(args).await,
        Command::Latest(args) => query::latest(args).await,
        Command::Demo { scenario: DemoScenario::Readings(args) } => {
            demo::readings(&config.kafka, &config.postgres, args).await
        }
        Command::Eval { what: EvalWhat::Anomaly(args) } => eval::anomaly(args),
        Command::Eval { what: EvalWhat::Failure(args) } => eval_models::failure(args),
        Command::Eval { what: EvalWhat::Rul(args) } => eval_models::rul(args),
        Command::Train { what: TrainWhat::Failure(args) } => train::failure(&config, args).await,
        Command::Train { what: TrainWhat::Rul(args) } => train::rul(&config, args).await,
        Command::Train { what: TrainWhat::Serve(args) } => {
            trainer::serve(&config, args, sm_telemetry::shutdown_signal()).await
        }
        Command::Demo { scenario: DemoScenario::Analytics(args) } => {
            analytics_demo::analytics(&config.kafka, &config.postgres, args).await
        }
        Command::Demo { scenario: DemoScenario::Predictions(args) } => {
            prediction_demo::predictions(&config, args).await
        }
        Command::Simulate(args) => simulate::run(&config.kafka, args).await.map(|_| ()),
        Command::IngestFile(args) => ingest_file::run(&config.kafka, args).await,
        Command::Demo { scenario: DemoScenario::Passthrough { readings, bad_fraction, timeout_secs } } => {
            anyhow::ensure!((0.0..1.0).contains(&bad_fraction), "--bad-fraction must be in [0, 1)");
            demo::passthrough(&config.kafka, readings, bad_fraction, std::time::Duration::from_secs(timeout_secs)).await
        }
    }
}
