//! `smctl demo predictions`: a pump model trained on simulated run-to-failure fleets and
//! promoted; a fleet of pumps (a quarter of them wearing out towards failure at the end of
//! the run) through the running ingestion agent, prediction agent and projector; halfway, a
//! second version is trained and promoted over gRPC (`ModelService.Promote`) while the agent
//! runs; then each pump's predicted remaining useful life over the run, read back over gRPC
//! (`PredictionService.ListPredictions`), next to what the simulation did to it.

use crate::SmctlConfig;
use crate::simulate::Summary;
use anyhow::Context;
use clap::Parser;
use sm_domain::topics;
use sm_proto::v1::{ListPredictionsRequest, Prediction, PromoteRequest, ResolveRequest};
use sm_proto::{ModelServiceClient, PredictionServiceClient};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Settings of `smctl demo predictions`.
#[derive(Debug, clap::Args)]
pub struct PredictionDemoArgs {
    /// Seconds of simulated traffic: the wearing pumps fail at its end.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Readings per second of the fleet.
    #[arg(long, default_value_t = 400.0)]
    pub rate: f64,
    /// Pumps in the fleet.
    #[arg(long, default_value_t = 8)]
    pub assets: usize,
    /// Simulated training runs per model version.
    #[arg(long, default_value_t = 24)]
    pub runs: u64,
    #[command(flatten)]
    pub endpoint: crate::query::Endpoint,
    /// Give up waiting for the read model after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

/// The built-in pump template alone, written where `--catalog` can read it.
fn pump_catalog(run: &str) -> anyhow::Result<std::path::PathBuf> {
    let builtin = include_str!("builtin_templates.toml");
    let pump = builtin
        .split("[[asset_types]]")
        .find(|s| s.trim_start().starts_with("name = \"pump\""))
        .context("the built-in templates have a pump")?;
    let path = std::env::temp_dir().join(format!("{run}-pumps.toml"));
    std::fs::write(&path, format!("[[asset_types]]{pump}")).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn train(
    config: &SmctlConfig,
    args: &PredictionDemoArgs,
    catalog: &str,
    seed: u64,
    promote: bool,
) -> anyhow::Result<()> {
    #[derive(Parser)]
    struct Train {
        #[command(flatten)]
        args: crate::train::TrainRulArgs,
    }
    let mut argv = vec![
        "train".to_owned(),
        "--simulated".to_owned(),
        format!("--catalog={catalog}"),
        format!("--assets={}", args.assets),
        format!("--rate={}", args.rate),
        format!("--duration={}", args.duration),
        format!("--runs={}", args.runs),
        format!("--first-seed={seed}"),
        "--asset-type=pump".to_owned(),
    ];
    if promote {
        argv.push("--promote".to_owned());
    }
    let train = Train::try_parse_from(argv).context("building the training run")?;
    crate::train::rul(config, train.args).await
}

pub async fn predictions(config: &SmctlConfig, args: PredictionDemoArgs) -> anyhow::Result<()> {
    #[derive(Parser)]
    struct Simulate {
        #[command(flatten)]
        args: crate::simulate::SimulateArgs,
    }
    sm_kafka::ensure_topics(&config.kafka, topics::ALL).await.context("creating topics")?;
    let run = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let catalog = pump_catalog(&run)?;
    let catalog = catalog.to_str().context("temporary path is not UTF-8")?.to_owned();
    println!(
        "== training rul-pump on {} simulated failure runs ({} pumps, {} readings/s, {} s) and promoting it",
        args.runs, args.assets, args.rate, args.duration
    );
    train(config, &args, &catalog, 1_000, true).await?;
    let channel = args.endpoint.channel().await?;
    let mut models = ModelServiceClient::new(channel.clone());
    let mut predictions = PredictionServiceClient::new(channel);
    let first = models
        .resolve(ResolveRequest { name: "rul-pump".into(), selector: "production".into() })
        .await
        .context("resolving rul-pump")?
        .into_inner();
    let first_version = first.version.map(|v| v.version).unwrap_or_default();

    println!("\n== simulating {} pumps for {} s (scenario failure, tenant {run})", args.assets, args.duration);
    let simulate = Simulate::try_parse_from([
        "simulate".to_owned(),
        format!("--duration={}", args.duration),
        format!("--rate={}", args.rate),
        format!("--assets={}", args.assets),
        format!("--catalog={catalog}"),
        "--scenario=failure".to_owned(),
        "--seed=17".to_owned(),
        format!("--tenant={run}"),
        format!("--fleet-prefix={run}"),
        "--quiet".to_owned(),
    ])
    .context("building the simulation")?;
    let kafka = config.kafka.clone();
    let fleet = tokio::spawn(async move { crate::simulate::run(&kafka, simulate.args).await });

    // Halfway: a second version, trained on other runs, promoted over gRPC while the agent runs.
    tokio::time::sleep(Duration::from_secs_f64(args.duration / 2.0)).await;
    println!("\n== halfway: training a second version on other runs and promoting it with ModelService.Promote");
    train(config, &args, &catalog, 5_000, false).await?;
    let staging = models
        .resolve(ResolveRequest { name: "rul-pump".into(), selector: "staging".into() })
        .await
        .context("resolving the new staging version")?
        .into_inner();
    let second_version = staging.version.map(|v| v.version).context("no staging version after training")?;
    let promoted_at = sm_domain::Timestamp::now();
    models
        .promote(PromoteRequest {
            name: "rul-pump".into(),
            version: second_version,
            reason: "demo: retrained on other runs".into(),
            tenant_id: String::new(),
        })
        .await
        .context("promoting the new version")?;
    println!(
        "promoted rul-pump version {second_version} (was {first_version}); the agent reloads it without a restart"
    );

    let summary: Summary = fleet.await.context("the simulation task")??;
    let wearing: BTreeSet<String> =
        summary.injections.iter().filter(|i| i.kind == "wear").map(|i| i.asset_id.clone()).collect();

    println!("\n== waiting for the prediction agent and the projector");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut last = (0usize, Instant::now());
    let by_asset = loop {
        let mut by_asset: BTreeMap<String, Vec<Prediction>> = BTreeMap::new();
        for n in 1..=args.assets {
            let asset_id = format!("{run}-pump-{n:04}");
            let mut page_token = String::new();
            loop {
                let page = predictions
                    .list_predictions(ListPredictionsRequest {
                        asset_id: asset_id.clone(),
                        page_size: 1_000,
                        page_token: page_token.clone(),
                        ..Default::default()
                    })
                    .await
                    .context("ListPredictions")?
                    .into_inner();
                by_asset.entry(asset_id.clone()).or_default().extend(page.predictions);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        let count: usize = by_asset.values().map(Vec::len).sum();
        if count != last.0 {
            last = (count, Instant::now());
        } else if count > 0 && last.1.elapsed() > Duration::from_secs(3) {
            break by_asset;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {count} predictions projected after {} s", args.timeout_secs);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    println!("\n== predicted remaining useful life (s) through the run; wear = the simulation degrades it");
    println!(
        "{:<26} {:>5} {:>7} {:>7} {:>7} {:>7}  {:>9}  models",
        "ASSET", "WEAR", "25%", "50%", "75%", "END", "P(<30s)"
    );
    let mut first_v2_us = None;
    for (asset, mut list) in by_asset {
        list.sort_by_key(|p| p.occurred_at.map(|t| (t.seconds, t.nanos)));
        if list.is_empty() {
            println!("{asset:<26} no predictions");
            continue;
        }
        let at = |f: f64| list[((list.len() - 1) as f64 * f) as usize].rul_seconds;
        let versions: BTreeSet<String> =
            list.iter().map(|p| format!("{} v{}", p.model_name, p.model_version)).collect();
        for p in list.iter().filter(|p| p.model_name == "rul-pump" && p.model_version == second_version) {
            let us = p.occurred_at.map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000);
            first_v2_us = Some(first_v2_us.map_or(us, |f: i64| f.min(us)));
        }
        let end = list.last().expect("not empty");
        println!(
            "{asset:<26} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1}  {:>9.3}  {}",
            if wearing.contains(&asset) { "yes" } else { "-" },
            at(0.25),
            at(0.5),
            at(0.75),
            end.rul_seconds,
            end.failure_probability,
            versions.into_iter().collect::<Vec<_>>().join(", ")
        );
        if wearing.contains(&asset) {
            let why: Vec<String> =
                end.contributions.iter().take(3).map(|c| format!("{} {:+.1} s", c.feature, c.contribution)).collect();
            println!("{:<26} why (last): {}", "", why.join(", "));
        }
    }
    if let Some(first) = first_v2_us {
        println!(
            "\nversion {second_version} predicted its first cycle {:.1} s after the promotion (event time)",
            (first - promoted_at.as_micros()) as f64 / 1e6
        );
    }
    Ok(())
}
