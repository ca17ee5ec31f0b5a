//! `ListReadings` under load: requests/s and p50/p99 latency of 32 concurrent clients paging
//! random assets' histories in a 10-million-row `readings` table, through the gRPC service
//! (in-process, loopback) against the very same keyset SQL run directly with tokio-postgres,
//! in the same run on the same rows, reported as ratios because these machines are noisy.
//!
//! Needs the local stack (`deploy/local/stack up`). `SM_BENCH_ROWS` sets the row count
//! (default 10,000,000), `SM_BENCH_SECS` the measured seconds of each phase (default 20).
//! Run with `cargo bench -p sm-query --bench list_readings`.
//!
//! The rows live in schema `bench_list_readings`, made by the projector's migrations with
//! daily partitions as the projector creates them (no DEFAULT partition, which would change
//! the plan: PostgreSQL only scans range partitions in order when none is the default). The
//! schema is kept and reused when it already holds the requested rows, so only the first run
//! pays for loading; `DROP SCHEMA bench_list_readings CASCADE` frees the disk.
//!
//! Both phases run the same workload: each client pages through one random asset at a time,
//! newest first, the first page then up to four more following the cursor (as a UI scrolling
//! back does), 100 readings a page. It is not a test of deep pages or of sensor pages.
//!
//! The server runs in this process on a runtime of its own, the clients on the main one, and
//! all of it shares the cores with PostgreSQL: each phase also prints where the CPU went,
//! which tells a saturated machine (and a disturbed run) from a slow path.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sm_domain::EventId;
use sm_kafka::KafkaConfig;
use sm_proto::ReadingServiceClient;
use sm_proto::auth::{AuthChannel, Credentials};
use sm_proto::convert::from_timestamp;
use sm_proto::v1::ListReadingsRequest;
use sm_query::cursor::ReadingPosition;
use sm_query::db::PgTimestamp;
use sm_query::readings::{LIST_BY_ASSET, LIST_BY_ASSET_AFTER};
use sm_query::{QueryConfig, QueryServer, QuerySettings};
use sm_storage::{Flavor, PostgresConfig};
use sm_telemetry::Secret;
use sm_testkit::bench::machine;
use sm_testkit::stack_from_env_file;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::{Client, NoTls};

const SCHEMA: &str = "bench_list_readings";
/// Bumped whenever the generated rows change, so an old schema is reloaded, not reused.
const LAYOUT: u32 = 1;
const ASSETS: usize = 1_000;
const SENSORS_PER_ASSET: usize = 4;
const SENSOR_TYPES: [(&str, &str); SENSORS_PER_ASSET] =
    [("temperature", "degC"), ("vibration", "mm/s"), ("pressure", "bar"), ("current", "A")];
/// The rows cover the last week, whatever their number: about 8 daily partitions.
const SPAN_MICROS: i64 = 7 * DAY_MICROS;
const DAY_MICROS: i64 = 86_400_000_000;
/// Rows per COPY transaction.
const COPY_CHUNK: usize = 500_000;

const CLIENTS: usize = 32;
const PAGE: usize = 100;
/// First page, then up to this many more following the cursor, before another asset.
const PAGES_PER_SESSION: usize = 5;
/// Unmeasured time at the start of each phase: connections, prepared statements, caches.
const WARMUP: Duration = Duration::from_secs(2);
/// One request taking this long means something is broken: the bench panics.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds each client's loop (and memory) if requests are unexpectedly fast.
const MAX_REQUESTS_PER_CLIENT: usize = 2_000_000;

fn asset_id(asset: usize) -> String {
    format!("asset-{asset:04}")
}

/// What the generated rows are; stored as the schema's comment once they are loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    /// Readings per sensor.
    per_sensor: usize,
    /// Time of each sensor's first reading (µs since the epoch, whole seconds).
    start: i64,
}

impl Layout {
    fn rows(self) -> usize {
        self.per_sensor * ASSETS * SENSORS_PER_ASSET
    }

    fn interval(self) -> i64 {
        SPAN_MICROS / self.per_sensor as i64
    }

    /// When reading `step` of global sensor `sensor` occurred: sensors are spread evenly over
    /// one interval, so every reading of the table has its own time and the rows, generated
    /// step by step, arrive in time order (as the projector writes them).
    fn at(self, step: usize, sensor: usize) -> i64 {
        let interval = self.interval();
        self.start + step as i64 * interval + sensor as i64 * interval / (ASSETS * SENSORS_PER_ASSET) as i64
    }

    /// Days the rows touch (from one past the last sensor's last reading: an upper bound).
    fn days(self) -> std::ops::RangeInclusive<i64> {
        self.start.div_euclid(DAY_MICROS)
            ..=self.at(self.per_sensor - 1, ASSETS * SENSORS_PER_ASSET).div_euclid(DAY_MICROS)
    }

    fn comment(self) -> String {
        format!("layout={LAYOUT} rows={} start={}", self.rows(), self.start)
    }

    /// The layout a schema comment describes, if it holds `rows` rows of this layout version.
    fn parse(comment: &str, rows: usize) -> Option<Self> {
        let mut fields = comment.split(' ').map(|f| f.split_once('=').map(|(_, v)| v));
        let layout: u32 = fields.next()??.parse().ok()?;
        let stored: usize = fields.next()??.parse().ok()?;
        let start: i64 = fields.next()??.parse().ok()?;
        (layout == LAYOUT && stored == rows).then_some(Self { per_sensor: rows / (ASSETS * SENSORS_PER_ASSET), start })
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}; start the stack"));
    tokio::spawn(connection);
    client
}

fn with_search_path(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{SCHEMA}")
}

/// Makes sure the schema holds `per_sensor` readings of every sensor; returns the layout and
/// the seconds spent loading (`None` when a previous run's rows were reused).
async fn ensure_rows(admin_url: &str, url: &str, per_sensor: usize) -> (Layout, Option<(f64, f64)>) {
    let admin = connect(admin_url).await;
    let rows = per_sensor * ASSETS * SENSORS_PER_ASSET;
    let comment: Option<String> = admin
        .query_opt("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1", &[&SCHEMA])
        .await
        .unwrap()
        .and_then(|row| row.get(0));
    if let Some(layout) = comment.as_deref().and_then(|c| Layout::parse(c, rows)) {
        return (layout, None);
    }

    admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")).await.unwrap();
    let pool = sm_storage::connect(&PostgresConfig { url: Secret(url.to_owned()), pool_size: 1, ..Default::default() })
        .unwrap();
    let flavor =
        sm_storage::migrate(&pool, sm_projector::schema::COMPONENT, sm_projector::schema::MIGRATIONS).await.unwrap();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64 * 1_000_000;
    let layout = Layout { per_sensor, start: now - SPAN_MICROS };
    if flavor == Flavor::Native {
        // As the projector's `ensure_partitions` does, one per day the rows touch.
        let client = pool.get().await.unwrap();
        for day in layout.days() {
            client
                .batch_execute(&format!(
                    "CREATE TABLE readings_d{day} PARTITION OF readings
                     FOR VALUES FROM (timestamptz 'epoch' + interval '1 day' * {day})
                                  TO (timestamptz 'epoch' + interval '1 day' * {next})",
                    next = day + 1
                ))
                .await
                .unwrap();
        }
    }
    drop(pool);

    // One COPY stream per core, each over its own stretch of time.
    let started = Instant::now();
    let loaders = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 4);
    let steps_each = per_sensor.div_ceil(loaders);
    let tasks: Vec<_> = (0..loaders)
        .map(|n| {
            let url = url.to_owned();
            let steps = n * steps_each..((n + 1) * steps_each).min(per_sensor);
            tokio::spawn(async move { copy_steps(&url, layout, steps).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let copy_secs = started.elapsed().as_secs_f64();

    // VACUUM too, not only ANALYZE: it sets hint bits and the visibility map now, so neither
    // the first reads nor an autovacuum of the fresh partitions lands inside a measurement.
    let started = Instant::now();
    let client = connect(url).await;
    client.batch_execute("VACUUM (ANALYZE) readings").await.unwrap();
    let analyze_secs = started.elapsed().as_secs_f64();
    let loaded: i64 = client.query_one("SELECT count(*) FROM readings", &[]).await.unwrap().get(0);
    assert_eq!(loaded as usize, rows, "rows in {SCHEMA}.readings after loading");
    admin.batch_execute(&format!("COMMENT ON SCHEMA {SCHEMA} IS '{}'", layout.comment())).await.unwrap();
    (layout, Some((copy_secs, analyze_secs)))
}

/// Binary COPY of every sensor's readings for `steps`, in transactions of [`COPY_CHUNK`] rows.
async fn copy_steps(url: &str, layout: Layout, steps: std::ops::Range<usize>) {
    let mut client = connect(url).await;
    client.batch_execute("SET synchronous_commit = off").await.unwrap();
    let sensors: Vec<(String, String, &str, &str)> = (0..ASSETS)
        .flat_map(|a| {
            SENSOR_TYPES
                .iter()
                .enumerate()
                .map(move |(s, (kind, unit))| (asset_id(a), format!("{}.s{s}", asset_id(a)), *kind, *unit))
        })
        .collect();
    let time = |micros: i64| SystemTime::UNIX_EPOCH + Duration::from_micros(micros as u64);
    let no_flags: Vec<String> = Vec::new();
    let steps_per_chunk = (COPY_CHUNK / sensors.len()).max(1);
    let mut step = steps.start;
    while step < steps.end {
        let last = (step + steps_per_chunk).min(steps.end);
        let tx = client.transaction().await.unwrap();
        let sink = tx.copy_in(sm_projector::schema::READINGS_COPY).await.unwrap();
        let writer = BinaryCopyInWriter::new(sink, &sm_projector::schema::READINGS_COPY_TYPES);
        let mut writer = std::pin::pin!(writer);
        for s in step..last {
            for (n, (asset, sensor, kind, unit)) in sensors.iter().enumerate() {
                let at = layout.at(s, n);
                let value = ((s * 31 + n * 17) % 1_000) as f64 / 10.0;
                writer
                    .as_mut()
                    .write(&[
                        &"bench",
                        asset,
                        sensor,
                        kind,
                        &time(at),
                        &value,
                        unit,
                        &(s as i64),
                        &no_flags,
                        &false,
                        &EventId::new().to_string(),
                        &time(at + 1_000_000),
                    ])
                    .await
                    .unwrap();
            }
        }
        writer.finish().await.unwrap();
        tx.commit().await.unwrap();
        step = last;
    }
}

/// One phase's measured requests.
struct Phase {
    latencies: Vec<Duration>,
    first_pages: usize,
    secs: f64,
}

impl Phase {
    /// This phase's throughput, p50 and p99 over `baseline`'s.
    fn ratio_line(&self, name: &str, baseline: &Phase) {
        println!(
            "ratio {name}: throughput {:.2}, p50 {:.2}, p99 {:.2}",
            self.rate() / baseline.rate(),
            self.percentile(0.50) / baseline.percentile(0.50),
            self.percentile(0.99) / baseline.percentile(0.99)
        );
    }

    /// Requests that started inside the window, over its length: the rate in steady state.
    fn collect(results: Vec<(Vec<Duration>, usize)>, window: Window) -> Self {
        let secs = (window.deadline - window.measured_from).as_secs_f64();
        let first_pages = results.iter().map(|(_, f)| f).sum();
        let mut latencies: Vec<Duration> = results.into_iter().flat_map(|(l, _)| l).collect();
        latencies.sort_unstable();
        assert!(!latencies.is_empty(), "no request completed in the measured window");
        Self { latencies, first_pages, secs }
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile(&self, p: f64) -> f64 {
        let rank = ((p * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1e3
    }

    fn line(&self, name: &str, cpu: &Cpu) -> String {
        format!(
            "{name:<46} {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests, {:.0}% first pages; CPU cores: clients {:.2}, query server {:.2}, PostgreSQL {:.2}, other {:.2})",
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.latencies.len(),
            100.0 * self.first_pages as f64 / self.latencies.len() as f64,
            cpu.clients,
            cpu.server,
            cpu.postgres,
            cpu.other,
        )
    }
}

/// The measured window of a phase: from `measured_from` until `deadline`. Requests started
/// before `measured_from` are warm-up; none start after `deadline`.
#[derive(Clone, Copy)]
struct Window {
    measured_from: Instant,
    deadline: Instant,
}

impl Window {
    fn new(secs: u64) -> Self {
        let measured_from = Instant::now() + WARMUP;
        Self { measured_from, deadline: measured_from + Duration::from_secs(secs) }
    }
}

/// Phase 1: `LIST_BY_ASSET` and `LIST_BY_ASSET_AFTER` on one connection, prepared once, with
/// the parameters the service binds; the cursor is the page's last row, as the service's.
async fn sql_client(url: String, seed: u64, window: Window, scoped: bool) -> (Vec<Duration>, usize) {
    let mut client = connect(&url).await;
    let first = client.prepare(LIST_BY_ASSET).await.unwrap();
    let after = client.prepare(LIST_BY_ASSET_AFTER).await.unwrap();
    let scope =
        client.prepare("SELECT set_config('role', $1, true), set_config('sm.tenant_id', $2, true)").await.unwrap();
    let (start, end, limit) = (PgTimestamp::NEG_INFINITY, PgTimestamp::INFINITY, PAGE as i64 + 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut latencies, mut first_pages) = (Vec::new(), 0);
    'sessions: while latencies.len() < MAX_REQUESTS_PER_CLIENT {
        let asset = asset_id(rng.random_range(0..ASSETS));
        let mut cursor: Option<ReadingPosition> = None;
        for _ in 0..PAGES_PER_SESSION {
            let started = Instant::now();
            if started >= window.deadline {
                break 'sessions;
            }
            let query = async {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)>;
                let position = cursor.as_ref().map(|c| PgTimestamp(c.occurred_at));
                let statement = match (&cursor, &position) {
                    (Some(c), Some(position)) => {
                        params = vec![&asset, &start, &end, position, &c.sensor_id, &c.sequence, &limit];
                        &after
                    }
                    _ => {
                        params = vec![&asset, &start, &end, &limit];
                        &first
                    }
                };
                if scoped {
                    // As the service reads (`sm_query::db::scoped`): a transaction with the
                    // reader role and the tenant set, dropped (rolled back) after the page.
                    let tx = client.transaction().await?;
                    tx.execute(&scope, &[&sm_query::db::READER_ROLE, &"*"]).await?;
                    tx.query(statement, &params).await
                } else {
                    client.query(statement, &params).await
                }
            };
            let rows = tokio::time::timeout(REQUEST_TIMEOUT, query).await.expect("SQL page timed out").unwrap();
            let next = (rows.len() > PAGE).then(|| {
                let last = &rows[PAGE - 1];
                ReadingPosition {
                    occurred_at: last.get::<_, PgTimestamp>("occurred_at").0,
                    sensor_id: last.get("sensor_id"),
                    sequence: last.get("sequence"),
                }
            });
            if started >= window.measured_from {
                latencies.push(started.elapsed());
                first_pages += usize::from(cursor.is_none());
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    (latencies, first_pages)
}

/// Phase 2: `ListReadings` on the client's own channel (one HTTP/2 connection each, as 32
/// separate callers would have), following `next_page_token`.
async fn grpc_client(target: Target, seed: u64, window: Window) -> (Vec<Duration>, usize) {
    let mut client = ReadingServiceClient::new(target.channel().await);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut latencies, mut first_pages) = (Vec::new(), 0);
    'sessions: while latencies.len() < MAX_REQUESTS_PER_CLIENT {
        let asset = asset_id(rng.random_range(0..ASSETS));
        let mut token = String::new();
        for _ in 0..PAGES_PER_SESSION {
            let started = Instant::now();
            if started >= window.deadline {
                break 'sessions;
            }
            let first = token.is_empty();
            let request = ListReadingsRequest {
                asset_id: asset.clone(),
                page_size: PAGE as i32,
                page_token: std::mem::take(&mut token),
                ..Default::default()
            };
            let response = tokio::time::timeout(REQUEST_TIMEOUT, client.list_readings(request))
                .await
                .expect("ListReadings timed out")
                .unwrap_or_else(|status| panic!("ListReadings: {status}"))
                .into_inner();
            if started >= window.measured_from {
                latencies.push(started.elapsed());
                first_pages += usize::from(first);
            }
            assert_eq!(response.readings.len(), PAGE, "every asset has more than {PAGES_PER_SESSION} pages");
            token = response.next_page_token;
            if token.is_empty() {
                break;
            }
        }
    }
    (latencies, first_pages)
}

/// CPU use over a phase's measured window, in cores, from /proc: the clients (this process
/// but the server's threads), the query server (its own runtime's threads, [`SERVER_THREADS`]),
/// the PostgreSQL server's processes, and everything else on the machine (kernel network
/// work not charged to a process, the broker, anyone else's build or tests: a large share
/// there means the figures were disturbed).
struct Cpu {
    clients: f64,
    server: f64,
    postgres: f64,
    other: f64,
}

/// Thread name of the query server's runtime, so its CPU can be told from the clients'.
const SERVER_THREADS: &str = "query-server";

/// CPU ticks so far: this process, its server threads, processes named `postgres`, and the
/// machine's busy time. /proc counts in USER_HZ, which is 100 on every Linux ABI.
#[derive(Clone, Copy)]
struct Ticks {
    process: u64,
    server: u64,
    postgres: u64,
    busy: u64,
}

/// (command, utime + stime) of a /proc `stat` file; the command may hold spaces and ')'.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<u64> = tail.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    Some((comm, fields.iter().sum()))
}

/// utime + stime of the entries of `dir` (`/proc` or `/proc/self/task`) whose command matches.
fn sum_ticks(dir: &str, matches: impl Fn(&str) -> bool) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
                .filter_map(|s| stat_ticks(&s))
                .filter(|(comm, _)| matches(comm))
                .map(|(_, t)| t)
                .sum()
        })
        .unwrap_or(0)
}

impl Ticks {
    fn now() -> Self {
        let process = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| stat_ticks(&s)).map_or(0, |t| t.1);
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let all: Vec<u64> =
                    s.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
                Some(all.iter().take(8).sum::<u64>() - all.get(3)? - all.get(4)?)
            })
            .unwrap_or(0);
        Self {
            process,
            server: sum_ticks("/proc/self/task", |comm| comm.starts_with(SERVER_THREADS)),
            postgres: sum_ticks("/proc", |comm| comm == "postgres"),
            busy,
        }
    }

    /// Cores used from `self` to `later`, over `secs`.
    fn cores_until(self, later: Self, secs: f64) -> Cpu {
        let cores = |before: u64, after: u64| after.saturating_sub(before) as f64 / 100.0 / secs;
        let process = cores(self.process, later.process);
        let server = cores(self.server, later.server);
        let postgres = cores(self.postgres, later.postgres);
        let other = (cores(self.busy, later.busy) - process - postgres).max(0.0);
        Cpu { clients: (process - server).max(0.0), server, postgres, other }
    }
}

/// Runs `clients` until the window closes. CPU is sampled at the window's edges, while every
/// connection (and its PostgreSQL backend) is still open.
async fn run_phase<F>(window: Window, clients: Vec<F>) -> (Phase, Cpu)
where
    F: std::future::Future<Output = (Vec<Duration>, usize)> + Send + 'static,
{
    let tasks: Vec<_> = clients.into_iter().map(tokio::spawn).collect();
    tokio::time::sleep_until(window.measured_from.into()).await;
    let before = Ticks::now();
    tokio::time::sleep_until(window.deadline.into()).await;
    let after = Ticks::now();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let phase = Phase::collect(results, window);
    let cpu = before.cores_until(after, phase.secs);
    (phase, cpu)
}

/// Both paths give the same first page of one asset: the bench compares like with like.
async fn check_same_page(url: &str, target: &Target) {
    let asset = asset_id(ASSETS / 2);
    let client = connect(url).await;
    let sql: Vec<(String, i64, i64)> = client
        .query(LIST_BY_ASSET, &[&asset, &PgTimestamp::NEG_INFINITY, &PgTimestamp::INFINITY, &(PAGE as i64)])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("sensor_id"), r.get::<_, PgTimestamp>("occurred_at").0, r.get("sequence")))
        .collect();
    let mut grpc = ReadingServiceClient::new(target.channel().await);
    let page = grpc
        .list_readings(ListReadingsRequest { asset_id: asset, page_size: PAGE as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let served: Vec<(String, i64, i64)> = page
        .readings
        .iter()
        .map(|r| {
            (r.sensor_id.clone(), from_timestamp(r.occurred_at.as_ref().unwrap()).unwrap().as_micros(), r.sequence)
        })
        .collect();
    assert_eq!(sql.len(), PAGE);
    assert_eq!(served, sql, "the service and the baseline SQL disagree on the first page");
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
    };
    let requested = env("SM_BENCH_ROWS", 10_000_000) as usize;
    let secs = env("SM_BENCH_SECS", 20).max(1);
    // Whole readings of every sensor, and more of them than one session pages through.
    let per_sensor = (requested / (ASSETS * SENSORS_PER_ASSET)).max(PAGE * PAGES_PER_SESSION / SENSORS_PER_ASSET + 1);
    let stack = stack_from_env_file();
    let url = with_search_path(&stack.postgres_url);

    let (layout, loading) = ensure_rows(&stack.postgres_url, &url, per_sensor).await;
    let partitions: i64 = connect(&url)
        .await
        .query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass", &[])
        .await
        .unwrap()
        .get(0);

    // Phase 1: the SQL alone, one connection per client.
    let window = Window::new(secs);
    let (sql, sql_cpu) =
        run_phase(window, (0..CLIENTS).map(|n| sql_client(url.clone(), n as u64, window, false)).collect()).await;
    // Phase 1b: the same, in the transaction with role and tenant set that every request of
    // the service runs in since row-level security: its cost without gRPC or the auth layer.
    let window = Window::new(secs);
    let (scoped, scoped_cpu) =
        run_phase(window, (0..CLIENTS).map(|n| sql_client(url.clone(), n as u64, window, true)).collect()).await;

    // Phase 2: the service in-process, with a connection in its pool for every client; then
    // the same handler without the auth layer (every call as a fixed admin: the key is sent
    // but nobody checks it; the tenant-scoped transaction is unchanged), then with TLS.
    let config = QueryConfig {
        kafka: KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..KafkaConfig::default() },
        // Logged in as deployed: sm_query, under row-level security.
        postgres: PostgresConfig {
            url: Secret(with_search_path(&stack.query_postgres_url)),
            pool_size: CLIENTS,
            ..Default::default()
        },
        telemetry: Default::default(),
        auth: sm_query::auth::AuthConfig { bootstrap_key: Secret(stack.api_key()), ..Default::default() },
        artifacts: Default::default(),
        query: QuerySettings::default(),
    };
    config.validate().unwrap();
    let served = Served::query_server(&config).await;
    let target = Target { addr: served.addr, tls: None, key: stack.api_key() };
    check_same_page(&url, &target).await;
    let (grpc, grpc_cpu) = measure_grpc(secs, &target).await;
    served.stop().await;

    let served = Served::without_auth(&config).await;
    let target = Target { addr: served.addr, tls: None, key: stack.api_key() };
    let (open, open_cpu) = measure_grpc(secs, &target).await;
    served.stop().await;

    let tls_dir = std::path::Path::new(&stack.vars["SM_STACK_DIR"]).join("tls");
    let mut tls_config = config.clone();
    tls_config.query.tls.cert_file = tls_dir.join("server.pem").display().to_string();
    tls_config.query.tls.key_file = tls_dir.join("server-key.pem").display().to_string();
    let served = Served::query_server(&tls_config).await;
    let target = Target { addr: served.addr, tls: Some(stack.vars["SM_TLS_CA_FILE"].clone()), key: stack.api_key() };
    let (tls, tls_cpu) = measure_grpc(secs, &target).await;
    served.stop().await;

    println!("machine: {}", machine());
    println!(
        "rows: {} readings of {ASSETS} assets x {SENSORS_PER_ASSET} sensors, one every {:.0} s per sensor over {} days, \
         {partitions} daily partitions (PostgreSQL native partitioning), schema {SCHEMA}",
        layout.rows(),
        layout.interval() as f64 / 1e6,
        SPAN_MICROS / DAY_MICROS,
    );
    match loading {
        Some((copy, analyze)) => println!(
            "loading: binary COPY {copy:.1} s ({:.0} rows/s), VACUUM (ANALYZE) {analyze:.1} s",
            layout.rows() as f64 / copy
        ),
        None => println!("loading: skipped, the rows of a previous run were reused"),
    }
    println!(
        "workload: {CLIENTS} concurrent clients, random asset, first page then up to {} more following the cursor, \
         {PAGE} readings a page, newest first; {secs} s measured per phase after {} s warm-up",
        PAGES_PER_SESSION - 1,
        WARMUP.as_secs()
    );
    println!("{}", sql.line("keyset SQL, tokio-postgres (connection each):", &sql_cpu));
    println!("{}", scoped.line("the same SQL in a tenant-scoped transaction:", &scoped_cpu));
    println!("{}", grpc.line("gRPC ListReadings, API key + RLS (channel each, pool of 32):", &grpc_cpu));
    println!("{}", open.line("the same without the auth layer (fixed admin principal):", &open_cpu));
    println!("{}", tls.line("the same with the auth layer, over TLS (rustls):", &tls_cpu));
    scoped.ratio_line("scoped SQL / SQL", &sql);
    grpc.ratio_line("gRPC / SQL", &sql);
    grpc.ratio_line("auth on / auth off", &open);
    tls.ratio_line("TLS on / TLS off (both with auth)", &grpc);
}

async fn measure_grpc(secs: u64, target: &Target) -> (Phase, Cpu) {
    let window = Window::new(secs);
    run_phase(window, (0..CLIENTS).map(|n| grpc_client(target.clone(), n as u64, window)).collect()).await
}

/// How a client reaches one of the bench's servers.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    /// The CA file, for TLS.
    tls: Option<String>,
    /// The API key every call carries (the server without the auth layer ignores it).
    key: String,
}

impl Target {
    async fn channel(&self) -> AuthChannel {
        let (url, ca) = match &self.tls {
            // The stack's certificate names 127.0.0.1.
            Some(ca) => (format!("https://127.0.0.1:{}", self.addr.port()), Some(ca.as_str())),
            None => (format!("http://{}", self.addr), None),
        };
        let channel = sm_proto::auth::connect_channel(&url, ca, None).await.unwrap();
        Credentials::bearer(&self.key).unwrap().on(channel)
    }
}

/// A server on its own runtime (as its own process would have; as many workers as cores),
/// so its CPU can be told from the clients'. Its pool's connections are driven there too.
struct Served {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

impl Served {
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name(SERVER_THREADS)
            .enable_all()
            .build()
            .expect("server runtime")
    }

    /// The query service as it runs: every service, the auth layer, TLS if configured.
    async fn query_server(config: &QueryConfig) -> Self {
        let pool = sm_storage::connect(&config.postgres).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = QueryServer::new(config, pool).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = Self::runtime();
        let task = runtime.spawn(async move {
            server
                .serve(listener, sm_telemetry::Health::new(), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self { addr, stop, task, runtime }
    }

    /// `ReadingService` alone, without the auth layer: each call runs as an admin of every
    /// tenant that nobody checked. Only for this comparison; the service has no such mode.
    async fn without_auth(config: &QueryConfig) -> Self {
        let pool = sm_storage::connect(&config.postgres).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readings = sm_query::readings::Readings::new(pool, std::sync::Arc::new(config.query.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = Self::runtime();
        let task = runtime.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tonic::transport::Server::builder()
                .layer(tower_layer::layer_fn(|inner| FixedPrincipal { inner }))
                .add_service(sm_proto::v1::reading_service_server::ReadingServiceServer::new(readings))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self { addr, stop, task, runtime }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        self.runtime.shutdown_background();
    }
}

/// Puts an unchecked admin principal on every request: what the auth layer leaves behind,
/// without its work.
#[derive(Clone)]
struct FixedPrincipal<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for FixedPrincipal<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(sm_identity::Principal {
            subject: "bench:unchecked".into(),
            kind: sm_identity::PrincipalKind::Bootstrap,
            tenants: sm_identity::TenantScope::parse("*"),
            roles: vec![sm_identity::Role::Admin],
        });
        self.inner.call(request)
    }
}
