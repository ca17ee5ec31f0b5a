//! Effectively-once projections against the real stack: a writer stopped abruptly mid-stream
//! and restarted applies every record exactly once (checked with a non-idempotent counter),
//! a second run re-reads nothing, and a rebuild replaying the topic leaves identical rows.

use sm_domain::{AssetId, Codec, Envelope, SensorReading, TenantId, Timestamp};
use sm_kafka::{KafkaConfig, RunSummary, Runtime};
use sm_storage::{Flavor, Migration, PostgresConfig, Projection, ProjectionWriter, StorageError, connect, migrate};
use sm_telemetry::Secret;
use sm_testkit::{Record, Stack, create_topic, produce, stack_from_env_file, unique};
use std::time::{Duration, Instant};

/// Readings as rows (idempotent on event id) plus a per-asset count (not idempotent: a record
/// applied twice shows).
struct ReadingRows {
    name: &'static str,
    rows: String,
    counts: String,
}

impl Projection for ReadingRows {
    type Event = SensorReading;

    fn name(&self) -> &'static str {
        self.name
    }

    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[Envelope<SensorReading>],
    ) -> Result<(), tokio_postgres::Error> {
        let ids: Vec<String> = events.iter().map(|e| e.header.event_id.to_string()).collect();
        let assets: Vec<&str> = events.iter().map(|e| e.header.asset_id.as_str()).collect();
        let sequences: Vec<i64> = events.iter().map(|e| e.payload.sequence).collect();
        let values: Vec<f64> = events.iter().map(|e| e.payload.value).collect();
        tx.execute(
            &format!(
                "INSERT INTO {} (event_id, asset_id, sequence, value)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::float8[])
                 ON CONFLICT (event_id) DO NOTHING",
                self.rows
            ),
            &[&ids, &assets, &sequences, &values],
        )
        .await?;
        tx.execute(
            &format!(
                "INSERT INTO {0} (asset_id, n) SELECT asset_id, count(*) FROM unnest($1::text[]) AS a(asset_id) GROUP BY asset_id
                 ON CONFLICT (asset_id) DO UPDATE SET n = {0}.n + EXCLUDED.n",
                self.counts
            ),
            &[&assets],
        )
        .await?;
        Ok(())
    }

    async fn clear(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!("TRUNCATE {}, {}", self.rows, self.counts)).await
    }
}

fn runtime(stack: &Stack, topic: &str, group: &str) -> Runtime {
    let config = KafkaConfig {
        bootstrap_servers: stack.kafka.clone(),
        group_id: group.to_owned(),
        session_timeout_ms: 6000,
        commit_interval_ms: 50,
        max_batch_records: 500,
        ..Default::default()
    };
    Runtime::new(config, "projector-test", &[topic], &format!("{topic}-dlq")).unwrap()
}

async fn snapshot(
    client: &tokio_postgres::Client,
    p: &ReadingRows,
) -> (Vec<(String, String, i64, f64)>, Vec<(String, i64)>) {
    let rows = client
        .query(&format!("SELECT event_id, asset_id, sequence, value FROM {} ORDER BY event_id", p.rows), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let counts = client
        .query(&format!("SELECT asset_id, n FROM {} ORDER BY asset_id", p.counts), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (rows, counts)
}

async fn row_count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

/// Runs the writer until the rows table holds `until` rows and nothing changed for a while.
async fn run_until(stack: &Stack, topic: &str, group: &str, projection: ReadingRows, until: i64) -> RunSummary {
    let pool = connect(&PostgresConfig { url: Secret(stack.postgres_url.clone()), pool_size: 2, ..Default::default() })
        .unwrap();
    let client = pool.get().await.unwrap();
    let rows_table = projection.rows.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let writer = ProjectionWriter::new(pool.clone(), projection);
    let task = tokio::spawn(runtime(stack, topic, group).run_projection(writer, async {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let n = row_count(&client, &rows_table).await;
        if n != last.0 {
            last = (n, Instant::now());
        }
        if n >= until && last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "projection stuck at {n} rows");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_topic_twice_leaves_identical_rows() {
    const TOTAL: i64 = 6_000;
    let stack = stack_from_env_file();
    let topic = unique("proj");
    create_topic(&stack.kafka, &topic, 6).await;
    let codec = Codec::embedded().unwrap();
    produce(
        &stack.kafka,
        &topic,
        (0..TOTAL).map(|i| {
            let event = Envelope::origin(
                TenantId::from("t"),
                AssetId(format!("asset-{}", i % 13)),
                Timestamp(i),
                "test",
                SensorReading {
                    sensor_id: "s".into(),
                    value: i as f64,
                    unit: "degC".into(),
                    sequence: i,
                    backfill: false,
                },
            );
            Record {
                key: event.header.asset_id.as_str().as_bytes().to_vec(),
                value: codec.encode(&event).unwrap(),
                headers: vec![],
            }
        }),
    );

    let suffix = topic.replace('-', "_");
    let make = || ReadingRows {
        name: Box::leak(format!("test_{suffix}").into_boxed_str()),
        rows: format!("rows_{suffix}"),
        counts: format!("counts_{suffix}"),
    };
    let pool = connect(&PostgresConfig { url: Secret(stack.postgres_url.clone()), pool_size: 2, ..Default::default() })
        .unwrap();
    migrate(&pool, "storage", &[]).await.unwrap();
    let client = pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE rows_{suffix} (event_id text PRIMARY KEY, asset_id text NOT NULL, sequence bigint NOT NULL, value float8 NOT NULL);
             CREATE TABLE counts_{suffix} (asset_id text PRIMARY KEY, n bigint NOT NULL);"
        ))
        .await
        .unwrap();

    // 1. Stop abruptly mid-stream (task aborted: no final commit), then resume.
    let group = unique("group");
    {
        let writer = ProjectionWriter::new(pool.clone(), make());
        let task = tokio::spawn(runtime(&stack, &topic, &group).run_projection(writer, std::future::pending()));
        let started = Instant::now();
        while row_count(&client, &make().rows).await < TOTAL / 3 {
            assert!(started.elapsed() < Duration::from_secs(60), "no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let _ = task.await;
    }
    let first = run_until(&stack, &topic, &group, make(), TOTAL).await;
    let (rows, counts) = snapshot(&client, &make()).await;
    assert_eq!(rows.len() as i64, TOTAL);
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<i64>(), TOTAL, "a record was applied twice or never");
    assert!(first.consumed < TOTAL as u64, "resumed from stored offsets, not from the start: {first:?}");

    // 2. Run again: stored offsets are at the end, nothing is re-read, nothing changes.
    let again = run_until(&stack, &topic, &group, make(), TOTAL).await;
    assert_eq!(again.consumed, 0, "{again:?}");
    assert_eq!(snapshot(&client, &make()).await, (rows.clone(), counts.clone()));

    // 3. Rebuild: clear and replay the whole topic; same rows, same counts.
    ProjectionWriter::new(pool.clone(), make()).rebuild().await.unwrap();
    assert_eq!(row_count(&client, &make().rows).await, 0);
    let replay = run_until(&stack, &topic, &unique("group"), make(), TOTAL).await;
    assert_eq!(replay.consumed, TOTAL as u64);
    assert_eq!(snapshot(&client, &make()).await, (rows, counts));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_even_when_instances_start_together() {
    let stack = stack_from_env_file();
    let pool = connect(&PostgresConfig { url: Secret(stack.postgres_url.clone()), pool_size: 4, ..Default::default() })
        .unwrap();
    let component: &'static str = Box::leak(unique("component").into_boxed_str());
    const MIGRATIONS: &[Migration] = &[
        Migration { version: 1, name: "create", sql: |_| "CREATE TEMP TABLE IF NOT EXISTS probe (x int)".into() },
        Migration {
            version: 2,
            name: "flavored",
            sql: |flavor| match flavor {
                Flavor::Timescale => "SELECT 'timescale'".into(),
                Flavor::Native => "SELECT 'native'".into(),
            },
        },
    ];
    let (a, b) = tokio::join!(migrate(&pool, component, MIGRATIONS), migrate(&pool, component, MIGRATIONS));
    assert_eq!(a.unwrap(), b.unwrap());
    let client = pool.get().await.unwrap();
    let applied: i64 = client
        .query_one("SELECT count(*) FROM sm_schema_migrations WHERE component = $1", &[&component])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 2, "each version recorded once");
    const EDITED: &[Migration] = &[Migration { version: 1, name: "create, edited", sql: |_| String::new() }];
    match migrate(&pool, component, EDITED).await {
        Err(StorageError::MigrationChanged { version: 1, .. }) => {}
        other => panic!("an edited migration must be refused, got {other:?}"),
    }
}
