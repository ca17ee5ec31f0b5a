//! `sm.v1.PredictionService/Predict` latency through the gRPC service (in-process, loopback),
//! with baselines measured in the same run on the same server, reported as ratios because
//! these machines are noisy:
//! - a trivial gRPC round trip: `grpc.health.v1.Health/Check`, an in-memory map lookup on the
//!   same server (every `ModelService` call reads PostgreSQL, so none is cheaper);
//! - the model call alone, in-process: `RulRegressor::predict_features` and
//!   `FailureClassifier::predict` on the same inputs, timed the same way;
//! - and `Registry::resolve` alone, in-process: the PostgreSQL query that picks the version,
//!   which `Predict` makes at most once per `SM_QUERY__RESOLVE_CACHE_MS` (1 s by default) per
//!   model and selector, so it is what a call would cost without that cache.
//!
//! Each is run from 1 client sequentially and from 16 concurrent clients (each on its own
//! HTTP/2 connection, as separate callers would be), `SM_BENCH_REQUESTS` requests in all
//! (default 5,000), after an unmeasured warm-up. The first `Predict` of each model (the
//! artifact fetched from the store, its SHA-256 checked, parsed and cached) is timed once.
//!
//! Models, trained here on `sm_models::synthetic` data with the realistic default parameters
//! (300 trees each): a live-stream RUL model (as `smctl train rul` makes: no age feature) on
//! 100 synthetic engines, and an AI4I failure classifier on 10,000 synthetic processes. They
//! are registered with `Registry::register` in a scratch PostgreSQL schema (dropped at the end)
//! and their artifacts put in the stack's S3 server, as the trainer does;
//! `SM_BENCH_ARTIFACTS=local` uses a temporary directory instead.
//!
//! Needs the local stack (`deploy/local/stack up`). Run with
//! `cargo bench -p sm-query --bench predict`.
//!
//! The server runs in this process on a runtime of its own (as many workers as cores), the
//! clients on the main one, and all of it shares the cores with PostgreSQL.

use sm_kafka::KafkaConfig;
use sm_models::ai4i::{ProcessSample, ProductType};
use sm_models::cmapss::trajectories;
use sm_models::failure::{FailureExample, FailureParams};
use sm_models::{Artifact, FailureClassifier, Model, ModelCard, RulParams, RulRegressor, StreamLayout, TrainingData};
use sm_proto::auth::{AuthChannel, Credentials};
use sm_proto::v1;
use sm_proto::v1::prediction_service_client::PredictionServiceClient;
use sm_query::{QueryConfig, QueryServer, QuerySettings};
use sm_registry::{ArtifactStore, ArtifactStoreConfig, NewVersion, Registry, Selector};
use sm_storage::PostgresConfig;
use sm_telemetry::Secret;
use sm_testkit::bench::machine;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::{stack_from_env_file, unique};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CONCURRENT_CLIENTS: usize = 16;
/// The service's default pool size (`SM_POSTGRES__POOL_SIZE`).
const POOL_SIZE: usize = 8;
/// Distinct inputs of each model, cycled through by the requests.
const INPUTS: usize = 256;
/// Cycle length of the stream RUL model, as in the tests.
const CYCLE_MS: i64 = 2_000;
/// One request taking this long means something is broken: the bench panics.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Thread name of the query server's runtime.
const SERVER_THREADS: &str = "query-server";

/// What one measured call does.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Health,
    PredictRul,
    PredictFailure,
    Resolve,
    ModelRul,
    ModelFailure,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::Health => "gRPC Health/Check (trivial round trip)",
            Self::PredictRul => "gRPC Predict, RUL model",
            Self::PredictFailure => "gRPC Predict, failure classifier",
            Self::Resolve => "in-process Registry::resolve (auto)",
            Self::ModelRul => "in-process RulRegressor::predict_features",
            Self::ModelFailure => "in-process FailureClassifier::predict",
        }
    }
}

/// Everything the callers share: the requests, and the models and registry for the in-process
/// baselines.
struct Inputs {
    rul_requests: Vec<v1::PredictRequest>,
    failure_requests: Vec<v1::PredictRequest>,
    rul_features: Vec<Vec<f64>>,
    failure_samples: Vec<ProcessSample>,
    rul: RulRegressor,
    failure: FailureClassifier,
    registry: Registry,
    rul_name: String,
}

/// One client: its own HTTP/2 connection.
struct Caller {
    health: HealthClient<AuthChannel>,
    predict: PredictionServiceClient<AuthChannel>,
    inputs: Arc<Inputs>,
}

impl Caller {
    async fn connect(addr: SocketAddr, inputs: Arc<Inputs>) -> Self {
        let channel = authed(addr).await;
        Self { health: HealthClient::new(channel.clone()), predict: PredictionServiceClient::new(channel), inputs }
    }

    /// Makes call `i` of `target`; returns how long it took. Requests are built before the
    /// clock starts.
    async fn call(&mut self, target: Target, i: usize) -> Duration {
        let inputs = &*self.inputs;
        match target {
            Target::Health => {
                let request = HealthCheckRequest { service: "sm.v1.PredictionService".into() };
                let started = Instant::now();
                let response = timeout(self.health.check(request)).await.unwrap_or_else(|s| panic!("Check: {s}"));
                let elapsed = started.elapsed();
                assert_eq!(response.into_inner().status, 1, "SERVING");
                elapsed
            }
            Target::PredictRul | Target::PredictFailure => {
                let requests =
                    if target == Target::PredictRul { &inputs.rul_requests } else { &inputs.failure_requests };
                let request = requests[i % requests.len()].clone();
                let started = Instant::now();
                let response = timeout(self.predict.predict(request)).await.unwrap_or_else(|s| panic!("Predict: {s}"));
                let elapsed = started.elapsed();
                assert!(response.into_inner().estimate.is_some());
                elapsed
            }
            Target::Resolve => {
                let started = Instant::now();
                let version = timeout(inputs.registry.resolve(&inputs.rul_name, Selector::Auto)).await.unwrap();
                let elapsed = started.elapsed();
                assert_eq!(version.version, 1);
                elapsed
            }
            Target::ModelRul => {
                let features = &inputs.rul_features[i % inputs.rul_features.len()];
                let started = Instant::now();
                black_box(inputs.rul.predict_features(black_box(features)).unwrap());
                let elapsed = started.elapsed();
                // CPU-bound: let the other clients' tasks run between calls, as between requests.
                tokio::task::yield_now().await;
                elapsed
            }
            Target::ModelFailure => {
                let sample = &inputs.failure_samples[i % inputs.failure_samples.len()];
                let started = Instant::now();
                black_box(inputs.failure.predict(black_box(sample)).unwrap());
                let elapsed = started.elapsed();
                tokio::task::yield_now().await;
                elapsed
            }
        }
    }
}

async fn timeout<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(REQUEST_TIMEOUT, future).await.expect("a request timed out")
}

/// One phase's measured calls.
struct Phase {
    latencies: Vec<Duration>,
    secs: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    /// Nearest-rank percentile, in microseconds.
    fn percentile(&self, p: f64) -> f64 {
        let rank = ((p * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1e6
    }

    fn mean(&self) -> f64 {
        self.latencies.iter().map(Duration::as_secs_f64).sum::<f64>() / self.latencies.len() as f64 * 1e6
    }

    fn line(&self, name: &str) -> String {
        format!(
            "  {name:<44} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
            self.latencies.last().unwrap().as_secs_f64() * 1e6,
            self.mean(),
        )
    }
}

/// `total` calls of `target` spread over `callers` running concurrently (each its share in
/// sequence), after `warmup` unmeasured calls each.
async fn run(callers: &mut Vec<Caller>, target: Target, total: usize, warmup: usize) -> Phase {
    let n = callers.len();
    let tasks: Vec<_> = std::mem::take(callers)
        .into_iter()
        .enumerate()
        .map(|(c, mut caller)| {
            let share = total / n + usize::from(c < total % n);
            tokio::spawn(async move {
                for i in 0..warmup {
                    caller.call(target, c * 7 + i).await;
                }
                (caller, share)
            })
        })
        .collect();
    // Warm-up of every caller first, then the measured calls all start together.
    let mut warmed = Vec::with_capacity(n);
    for task in tasks {
        warmed.push(task.await.unwrap());
    }
    let started = Instant::now();
    let tasks: Vec<_> = warmed
        .into_iter()
        .enumerate()
        .map(|(c, (mut caller, share))| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(share);
                for i in 0..share {
                    latencies.push(caller.call(target, c * 131 + i).await);
                }
                (caller, latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        let (caller, mut own) = task.await.unwrap();
        callers.push(caller);
        latencies.append(&mut own);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Phase { latencies, secs }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn product_code(product_type: ProductType) -> &'static str {
    match product_type {
        ProductType::Low => "L",
        ProductType::Medium => "M",
        ProductType::High => "H",
    }
}

fn card(name: &str, model: &Model, rows: usize, units: usize) -> ModelCard {
    ModelCard {
        name: name.to_owned(),
        kind: model.kind(),
        features: model.feature_names(),
        training: TrainingData { source: "synthetic".into(), from: None, to: None, rows, units },
        metrics: BTreeMap::from([("bench".to_owned(), 1.0)]),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

#[tokio::main]
async fn main() {
    let total = std::env::var("SM_BENCH_REQUESTS").ok().map_or(5_000, |v| {
        v.parse::<usize>().unwrap_or_else(|e| panic!("SM_BENCH_REQUESTS={v}: {e}")).max(CONCURRENT_CLIENTS)
    });
    let local_artifacts = std::env::var("SM_BENCH_ARTIFACTS").is_ok_and(|v| v == "local");
    let load_before = load_average();
    let stack = stack_from_env_file();

    // Both models at once, one per core.
    let started = Instant::now();
    let (rul_trained, failure_trained) = std::thread::scope(|scope| {
        let rul = scope.spawn(|| {
            let mut fleet = trajectories(&sm_models::synthetic::degradation_fleet(100, 2));
            let held_out = fleet.split_off(fleet.len() - 8);
            let params = RulParams { use_age: false, ..RulParams::default() };
            let cycles = fleet.iter().map(|t| t.cycles.len()).sum::<usize>();
            let (model, _) = RulRegressor::train(&fleet, &params).unwrap();
            let channels = (0..sm_models::cmapss::SENSORS).map(|s| format!("ch{s}")).collect();
            let model = model.for_stream(StreamLayout { channels, cycle_ms: CYCLE_MS }).unwrap();
            let window = model.history_cycles();
            let features: Vec<Vec<f64>> = held_out
                .iter()
                .flat_map(|t| (window..=t.cycles.len()).step_by(3).map(move |end| &t.cycles[..end]))
                .take(INPUTS)
                .map(|history| model.features(history).unwrap())
                .collect();
            (model, features, cycles, fleet.len())
        });
        let failure = scope.spawn(|| {
            let rows = sm_models::synthetic::ai4i_like(10_000, 1);
            let examples: Vec<FailureExample> = rows.iter().map(FailureExample::from).collect();
            let (model, _) = FailureClassifier::train(&examples, &FailureParams::default()).unwrap();
            let samples: Vec<ProcessSample> =
                sm_models::synthetic::ai4i_like(INPUTS, 99).into_iter().map(|r| r.sample).collect();
            (model, samples, rows.len())
        });
        (rul.join().unwrap(), failure.join().unwrap())
    });
    let training_secs = started.elapsed().as_secs_f64();
    let (rul, rul_features, rul_rows, rul_units) = rul_trained;
    let (failure, failure_samples, failure_rows) = failure_trained;

    // The server, on a scratch schema, with the stack's artifact store (or a directory).
    let schema = ScratchSchema::create(&stack, "sm_bench_predict").await;
    let directory = tempfile::tempdir().unwrap();
    let artifacts = if local_artifacts {
        ArtifactStoreConfig { url: format!("file://{}", directory.path().display()), ..ArtifactStoreConfig::default() }
    } else {
        let vars: HashMap<String, String> = stack
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with("SM_ARTIFACTS__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        QueryConfig::load_from(&vars).unwrap().artifacts
    };
    let config = QueryConfig {
        kafka: KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..KafkaConfig::default() },
        postgres: PostgresConfig { url: Secret(schema.url.clone()), pool_size: POOL_SIZE, ..Default::default() },
        telemetry: Default::default(),
        auth: sm_query::auth::AuthConfig { bootstrap_key: Secret(stack.api_key()), ..Default::default() },
        artifacts,
        query: QuerySettings {
            assets_topic: unique("sm.assets.bench"),
            models_topic: unique("sm.models.bench"),
            ..QuerySettings::default()
        },
    };
    config.validate().unwrap();
    let store_kind = if local_artifacts { "local directory" } else { "the stack's S3 server" };
    let store: ArtifactStore = config.artifacts.build().unwrap();

    // Registered as the trainer does; the in-process baselines get a pool of their own.
    let baseline_pool = sm_storage::connect(&config.postgres).unwrap();
    let registry = Registry::open(baseline_pool).await.unwrap();
    let (rul_name, failure_name) = (unique("bench-rul"), unique("bench-failure"));
    let mut sizes = Vec::new();
    let (rul, failure) = {
        let rul_model = Model::RemainingUsefulLife(rul);
        let failure_model = Model::FailureClassifier(failure);
        for (name, model, rows, units) in
            [(&rul_name, &rul_model, rul_rows, rul_units), (&failure_name, &failure_model, failure_rows, failure_rows)]
        {
            let card = card(name, model, rows, units);
            let new = NewVersion::from_card(&card, "pump", sm_domain::Timestamp(1_764_000_000_000_000));
            let copy: Model = serde_json::from_slice(&serde_json::to_vec(model).unwrap()).unwrap();
            let bytes = Artifact::new(card, copy).unwrap().to_bytes().unwrap();
            sizes.push(bytes.len());
            registry.register(&store, &new, &bytes).await.unwrap();
        }
        let (Model::RemainingUsefulLife(rul), Model::FailureClassifier(failure)) = (rul_model, failure_model) else {
            unreachable!()
        };
        (rul, failure)
    };

    let names = rul.feature_names();
    let rul_requests = rul_features
        .iter()
        .map(|values| v1::PredictRequest {
            model: rul_name.clone(),
            selector: String::new(),
            features: names.iter().cloned().zip(values.iter().copied()).collect(),
            product_type: None,
        })
        .collect();
    let failure_requests = failure_samples
        .iter()
        .map(|s| v1::PredictRequest {
            model: failure_name.clone(),
            selector: String::new(),
            features: HashMap::from([
                ("air_temperature_k".to_owned(), s.air_temperature_k),
                ("process_temperature_k".to_owned(), s.process_temperature_k),
                ("rotational_speed_rpm".to_owned(), s.rotational_speed_rpm),
                ("torque_nm".to_owned(), s.torque_nm),
                ("tool_wear_min".to_owned(), s.tool_wear_min),
            ]),
            product_type: Some(product_code(s.product_type).into()),
        })
        .collect();
    let (rul_trees, failure_trees, rul_inputs) = (rul.trees(), failure.trees(), names.len());
    let inputs = Arc::new(Inputs {
        rul_requests,
        failure_requests,
        rul_features,
        failure_samples,
        rul,
        failure,
        registry: registry.clone(),
        rul_name: rul_name.clone(),
    });

    // Logged in as deployed: sm_query, which reads the registry the owner migrated above.
    let server_pool =
        sm_storage::connect(&PostgresConfig { url: Secret(schema.query_url.clone()), ..config.postgres.clone() })
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = QueryServer::new(&config, server_pool).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .expect("server runtime");
    let server = runtime.spawn(async move {
        server
            .serve(listener, sm_telemetry::Health::new(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });

    // Cold first calls: connection up and the server's registry opened first (a ModelService
    // Resolve), so the time is the version lookup, the artifact's fetch and SHA-256 check, its
    // parse, and the prediction.
    let mut first = Caller::connect(addr, inputs.clone()).await;
    let mut models = sm_proto::v1::model_service_client::ModelServiceClient::new(authed(addr).await);
    models.resolve(v1::ResolveRequest { name: rul_name.clone(), selector: String::new() }).await.unwrap();
    let mut cold = Vec::new();
    for target in [Target::PredictRul, Target::PredictFailure] {
        let cold_call = first.call(target, 0).await;
        let warm_call = first.call(target, 0).await;
        cold.push((target, cold_call, warm_call));
    }
    // The service answers what the model says.
    let response = first.predict.predict(inputs.rul_requests[0].clone()).await.unwrap().into_inner();
    let Some(v1::predict_response::Estimate::RemainingUsefulLife(estimate)) = response.estimate else {
        panic!("not a RUL estimate: {response:?}")
    };
    assert_eq!(estimate.rul_cycles, inputs.rul.predict_features(&inputs.rul_features[0]).unwrap().rul_cycles);
    let response = first.predict.predict(inputs.failure_requests[0].clone()).await.unwrap().into_inner();
    let Some(v1::predict_response::Estimate::Failure(estimate)) = response.estimate else {
        panic!("not a failure estimate: {response:?}")
    };
    assert_eq!(estimate.probability, inputs.failure.predict(&inputs.failure_samples[0]).unwrap().probability);

    // What the cold call's artifact work costs in-process (the store is warm by now).
    let mut artifact_work = Vec::new();
    for name in [&rul_name, &failure_name] {
        let version = registry.resolve(name, Selector::Auto).await.unwrap();
        let started = Instant::now();
        let bytes = store.get(&version.artifact).await.unwrap();
        let fetched = started.elapsed();
        let loaded = sm_models::load(&bytes, &version.artifact.sha256).unwrap();
        let parsed = started.elapsed() - fetched;
        black_box(loaded);
        artifact_work.push((fetched, parsed));
    }

    let mut sequential = vec![first];
    let mut concurrent = Vec::new();
    for _ in 0..CONCURRENT_CLIENTS {
        concurrent.push(Caller::connect(addr, inputs.clone()).await);
    }
    let targets = [
        Target::Health,
        Target::PredictRul,
        Target::PredictFailure,
        Target::Resolve,
        Target::ModelRul,
        Target::ModelFailure,
    ];
    let warmup = (total / 20).clamp(50, 500);
    let started = Instant::now();
    let mut results: HashMap<(usize, u8), Phase> = HashMap::new();
    for (t, &target) in targets.iter().enumerate() {
        results.insert((t, 1), run(&mut sequential, target, total, warmup).await);
        let each = warmup.div_ceil(CONCURRENT_CLIENTS).max(10);
        results.insert((t, 16), run(&mut concurrent, target, total, each).await);
    }
    let measuring_secs = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    server.await.unwrap();
    runtime.shutdown_background();
    drop(sequential);
    drop(concurrent);

    println!("machine: {}; load average {load_before} before, {} after", machine(), load_average());
    println!(
        "models (trained here in {training_secs:.1} s, 2 threads): RUL {rul_trees} trees, {rul_inputs} window features, \
         stream layout ({CYCLE_MS} ms cycles), on {rul_units} synthetic engines ({rul_rows} cycles), artifact {:.0} KiB; \
         failure classifier {failure_trees} trees on {failure_rows} synthetic AI4I processes, artifact {:.0} KiB",
        sizes[0] as f64 / 1024.0,
        sizes[1] as f64 / 1024.0
    );
    println!(
        "server: in-process QueryServer on 127.0.0.1 (own runtime, {} workers), pool of {POOL_SIZE}, artifacts in \
         {store_kind}; {INPUTS} distinct inputs per model, cycled",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!();
    println!("cold first Predict (version lookup + artifact fetch + SHA-256 check + parse + predict), once each:");
    for ((target, cold_call, warm_call), (fetched, parsed)) in cold.iter().zip(&artifact_work) {
        println!(
            "  {:<33} {:>8.2} ms   (the next call {:.2} ms; in-process, store warm: fetch {:.2} ms, check + parse {:.2} ms)",
            target.label(),
            cold_call.as_secs_f64() * 1e3,
            warm_call.as_secs_f64() * 1e3,
            fetched.as_secs_f64() * 1e3,
            parsed.as_secs_f64() * 1e3,
        );
    }
    println!();
    println!(
        "warm: {total} calls per line, after {warmup} unmeasured ({} per client when concurrent); latencies in µs",
        warmup.div_ceil(CONCURRENT_CLIENTS).max(10)
    );
    for clients in [1u8, 16] {
        let title = if clients == 1 { "1 client, sequential" } else { "16 concurrent clients (a connection each)" };
        println!(
            "{title}:\n  {:<44} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "req/s", "p50", "p90", "p99", "max", "mean"
        );
        for (t, target) in targets.iter().enumerate() {
            println!("{}", results[&(t, clients)].line(target.label()));
        }
    }
    println!();
    println!(
        "ratios (same run; shares are of the mean Predict latency; the registry lookup is cached, so its line is what each call would add without the cache):"
    );
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    for clients in [1u8, 16] {
        for (name, predict, model) in [("RUL", 1, 4), ("failure", 2, 5)] {
            let (predict, model) = (&results[&(predict, clients)], &results[&(model, clients)]);
            let (health, resolve) = (&results[&(0, clients)], &results[&(3, clients)]);
            println!(
                "  {clients:>2} client{} {name:<8} Predict p99 / Health p99 {:>5.2} (p50 {:>5.2});  model share {:>4.1} %, \
                 uncached lookup would add {:>4.1} %;  model CPU at the Predict rate {:>4.1} % of {cores} cores",
                if clients == 1 { " " } else { "s" },
                predict.percentile(0.99) / health.percentile(0.99),
                predict.percentile(0.50) / health.percentile(0.50),
                100.0 * model.mean() / predict.mean(),
                100.0 * resolve.mean() / predict.mean(),
                100.0 * model.mean() * 1e-6 * predict.rate() / cores,
            );
        }
    }
    println!("measured phases took {measuring_secs:.1} s");
    drop(schema);
}

/// A channel calling as the stack's bootstrap admin.
async fn authed(addr: SocketAddr) -> AuthChannel {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    Credentials::bearer(&sm_testkit::stack_from_env_file().api_key()).unwrap().on(channel)
}
