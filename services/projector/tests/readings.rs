//! The readings projection against the real stack: rows, latest-by-event-time (late data
//! never overwrites newer), rollups equal to the raw data, and a replay that changes nothing.

use sm_domain::{AssetId, Codec, Envelope, TenantId, Timestamp, ValidatedReading};
use sm_kafka::{KafkaConfig, Runtime};
use sm_projector::readings::ReadingsProjection;
use sm_projector::schema;
use sm_storage::{PostgresConfig, ProjectionWriter, connect, migrate};
use sm_telemetry::Secret;
use sm_testkit::{Record, create_topic, produce, stack_from_env_file, unique};
use std::time::{Duration, Instant};

fn reading(asset: &str, sensor: &str, at_micros: i64, value: f64, sequence: i64) -> Envelope<ValidatedReading> {
    Envelope::origin(
        TenantId::from("t"),
        AssetId::from(asset),
        Timestamp(at_micros),
        "test",
        ValidatedReading {
            sensor_id: sensor.into(),
            sensor_type: "temperature".into(),
            value,
            unit: "degC".into(),
            sequence,
            quality_flags: if sequence % 2 == 0 { vec!["late".into(), "converted".into()] } else { vec![] },
            backfill: false,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_rows_latest_and_rollups_and_ignores_late_data_for_latest() {
    let stack = stack_from_env_file();
    let pool = connect(&PostgresConfig { url: Secret(stack.postgres_url.clone()), pool_size: 2, ..Default::default() })
        .unwrap();
    let flavor = migrate(&pool, schema::COMPONENT, schema::MIGRATIONS).await.unwrap();
    let topic = unique("validated");
    create_topic(&stack.kafka, &topic, 3).await;
    let asset = unique("asset");
    let (s1, s2) = (format!("{asset}.a"), format!("{asset}.b"));
    let codec = Codec::embedded().unwrap();
    // Two sensors, 10 readings each a second apart across a minute boundary, then a late
    // reading of s1 older than its latest.
    let base = 1_764_000_030_000_000; // :30 s past a minute
    let mut events = Vec::new();
    for i in 0..60 {
        events.push(reading(&asset, &s1, base + i * 1_000_000, i as f64, i));
        events.push(reading(&asset, &s2, base + i * 1_000_000, 100.0 + i as f64, i));
    }
    let late = reading(&asset, &s1, base + 5_500_000, -50.0, 1000);
    events.push(late.clone());
    produce(
        &stack.kafka,
        &topic,
        events.iter().map(|e| Record {
            key: asset.as_bytes().to_vec(),
            value: codec.encode(e).unwrap(),
            headers: vec![],
        }),
    );

    let run = |group: String| {
        let config = KafkaConfig {
            bootstrap_servers: stack.kafka.clone(),
            group_id: group,
            session_timeout_ms: 6000,
            ..Default::default()
        };
        Runtime::new(config, "projector-test", &[&topic], &format!("{topic}-dlq")).unwrap()
    };
    let client = pool.get().await.unwrap();
    let count = |sql: &'static str| {
        let client = &client;
        let asset = asset.clone();
        async move { client.query_one(sql, &[&asset]).await.unwrap().get::<_, i64>(0) }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(unique("g")).run_projection(
        ProjectionWriter::new(pool.clone(), ReadingsProjection::new(flavor)),
        async {
            let _ = stopped.await;
        },
    ));
    let started = Instant::now();
    while count("SELECT count(*) FROM readings WHERE asset_id = $1").await < events.len() as i64 {
        assert!(started.elapsed() < Duration::from_secs(60), "projection too slow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    // Latest is by event time: the late reading (t+5.5 s) did not replace t+59 s.
    let row = client
        .query_one(
            "SELECT value, sequence, (extract(epoch from occurred_at) * 1000000)::bigint FROM latest_readings WHERE sensor_id = $1",
            &[&s1],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, f64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (59.0, 59, base + 59_000_000));
    // Timestamps and flags survive exactly.
    let row = client
        .query_one(
            "SELECT (extract(epoch from occurred_at) * 1000000)::bigint, quality_flags FROM readings WHERE sensor_id = $1 AND sequence = 1000",
            &[&s1],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), late.header.occurred_at.as_micros());
    assert!(row.get::<_, Vec<String>>(1).contains(&"late".to_owned()));

    // Rollups equal the raw rows, per sensor and bucket.
    for table in ["readings_1m", "readings_1h"] {
        let width = if table == "readings_1m" { "1 minute" } else { "1 hour" };
        let mismatches: i64 = client
            .query_one(
                &format!(
                    "WITH raw AS (
                         SELECT sensor_id, date_bin(interval '{width}', occurred_at, timestamptz 'epoch') AS bucket,
                                min(value) mn, max(value) mx, sum(value) sm, count(*) n,
                                (array_agg(value ORDER BY occurred_at, sequence))[1] fv,
                                (array_agg(value ORDER BY occurred_at DESC, sequence DESC))[1] lv
                         FROM readings WHERE asset_id = $1 GROUP BY 1, 2)
                     SELECT count(*) FROM raw FULL JOIN {table} r USING (sensor_id, bucket)
                     WHERE (r.asset_id = $1 OR raw.sensor_id IS NOT NULL)
                       AND (r.count IS DISTINCT FROM raw.n OR r.min_value IS DISTINCT FROM raw.mn
                            OR r.max_value IS DISTINCT FROM raw.mx OR r.sum_value IS DISTINCT FROM raw.sm
                            OR r.first_value IS DISTINCT FROM raw.fv OR r.last_value IS DISTINCT FROM raw.lv)"
                ),
                &[&asset],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(mismatches, 0, "{table} disagrees with the raw rows");
    }
    let buckets = count("SELECT count(*) FROM readings_1m WHERE asset_id = $1").await;
    assert_eq!(buckets, 4, "two sensors, two minutes");

    // Replay the whole topic from scratch with new offsets (another group, offsets cleared):
    // rows, latest and rollups stay the same.
    let before: Vec<(String, i64, f64)> = client
        .query("SELECT sensor_id, count, sum_value FROM readings_1m WHERE asset_id = $1 ORDER BY 1, bucket", &[&asset])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    client.execute("DELETE FROM sm_projection_offsets WHERE topic = $1", &[&topic]).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(unique("g")).run_projection(
        ProjectionWriter::new(pool.clone(), ReadingsProjection::new(flavor)),
        async {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let _ = stop.send(());
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.consumed as usize, events.len(), "the replay read everything again");
    assert_eq!(count("SELECT count(*) FROM readings WHERE asset_id = $1").await, events.len() as i64);
    let after: Vec<(String, i64, f64)> = client
        .query("SELECT sensor_id, count, sum_value FROM readings_1m WHERE asset_id = $1 ORDER BY 1, bucket", &[&asset])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(before, after, "a replay must not count rows twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_asset_registrations_and_replaces_sensor_lists() {
    use sm_domain::{AssetRegistered, SensorSpec};
    use sm_projector::assets::AssetsProjection;
    let stack = stack_from_env_file();
    let pool = connect(&PostgresConfig { url: Secret(stack.postgres_url.clone()), pool_size: 2, ..Default::default() })
        .unwrap();
    migrate(&pool, schema::COMPONENT, schema::MIGRATIONS).await.unwrap();
    let topic = unique("assets");
    create_topic(&stack.kafka, &topic, 1).await;
    let asset = unique("pump");
    let spec = |suffix: &str| SensorSpec {
        sensor_id: format!("{asset}.{suffix}").into(),
        sensor_type: "temperature".into(),
        unit: "degC".into(),
        min_value: -40.0,
        max_value: 160.0,
        expected_interval_ms: 1000,
    };
    let register = |name: &str, sensors: Vec<SensorSpec>| {
        Envelope::origin(
            TenantId::from("t"),
            AssetId(asset.clone()),
            Timestamp::now(),
            "test",
            AssetRegistered { name: name.into(), asset_type: "pump".into(), site: "plant-a".into(), sensors },
        )
    };
    let codec = Codec::embedded().unwrap();
    let events = [register("first", vec![spec("a"), spec("b")]), register("renamed", vec![spec("b"), spec("c")])];
    produce(
        &stack.kafka,
        &topic,
        events.iter().map(|e| Record {
            key: asset.as_bytes().to_vec(),
            value: codec.encode(e).unwrap(),
            headers: vec![],
        }),
    );
    let config = KafkaConfig { bootstrap_servers: stack.kafka.clone(), group_id: unique("g"), ..Default::default() };
    let runtime = Runtime::new(config, "projector-assets-test", &[&topic], &format!("{topic}-dlq")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_projection(ProjectionWriter::new(pool.clone(), AssetsProjection), async {
        let _ = stopped.await;
    }));
    let client = pool.get().await.unwrap();
    let started = Instant::now();
    loop {
        let name: Option<String> =
            client.query_opt("SELECT name FROM assets WHERE asset_id = $1", &[&asset]).await.unwrap().map(|r| r.get(0));
        if name.as_deref() == Some("renamed") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "asset not projected: {name:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.rejected, 0);
    let sensors: Vec<String> = client
        .query("SELECT sensor_id FROM sensors WHERE asset_id = $1 ORDER BY 1", &[&asset])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sensors, vec![format!("{asset}.b"), format!("{asset}.c")], "the latest registration's sensors only");
}
