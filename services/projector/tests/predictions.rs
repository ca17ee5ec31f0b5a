//! The predictions projection against the real stack: `FailurePredicted` events from a topic
//! into `predictions` through the runtime (rows and offsets in one PostgreSQL transaction),
//! every field kept, a duplicate event stored once, and a replay from scratch that changes
//! nothing. Its own PostgreSQL schema, topic and group.

use sm_domain::{AssetId, Codec, Envelope, FailurePredicted, FeatureContribution, TenantId, Timestamp};
use sm_kafka::{KafkaConfig, Runtime};
use sm_projector::predictions::PredictionsProjection;
use sm_projector::schema;
use sm_storage::{Pool, PostgresConfig, ProjectionWriter, connect, migrate};
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::{Record, create_topic, produce, stack_from_env_file, unique};
use std::time::{Duration, Instant};

/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000_000;

fn prediction(asset: &str, cycle: i64, rul_seconds: f64) -> Envelope<FailurePredicted> {
    Envelope::origin(
        TenantId::from("acme"),
        AssetId::from(asset),
        Timestamp(T0 + cycle * 2_000_000),
        "prediction",
        FailurePredicted {
            model_name: "rul-pump".into(),
            model_version: 3,
            model_kind: "remaining_useful_life".into(),
            asset_type: "pump".into(),
            rul_seconds,
            rul_low_seconds: rul_seconds - 10.0,
            rul_high_seconds: rul_seconds + 12.5,
            coverage: 0.9,
            horizon_seconds: 60.0,
            failure_probability: 1.0 / (1.0 + cycle as f64),
            cycles: cycle as i32,
            contributions: vec![
                FeatureContribution { feature: "vibration_rms_slope150".into(), value: 0.04, contribution: -12.5 },
                FeatureContribution { feature: "temperature_last".into(), value: 71.25, contribution: 3.0 },
            ],
        },
    )
}

/// Runs the projection on `topic` in a new group until `done` holds, then stops it.
async fn project_until(stack_kafka: &str, topic: &str, pool: &Pool, done: impl AsyncFn() -> bool) -> u64 {
    let config = KafkaConfig {
        bootstrap_servers: stack_kafka.to_owned(),
        group_id: unique("g"),
        session_timeout_ms: 6000,
        ..Default::default()
    };
    let runtime = Runtime::new(config, "projector-predictions-test", &[topic], &format!("{topic}-dlq")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task =
        tokio::spawn(runtime.run_projection(ProjectionWriter::new(pool.clone(), PredictionsProjection), async {
            let _ = stopped.await;
        }));
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(60), "projection too slow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.rejected, 0, "nothing dead-lettered");
    summary.consumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_every_field_once_and_a_replay_changes_nothing() {
    let stack = stack_from_env_file();
    let schema = ScratchSchema::create(&stack, "sm_predictions_projection").await;
    let pool =
        connect(&PostgresConfig { url: Secret(schema.url.clone()), pool_size: 2, ..Default::default() }).unwrap();
    migrate(&pool, schema::COMPONENT, schema::MIGRATIONS).await.unwrap();
    let topic = unique("predictions");
    create_topic(&stack.kafka, &topic, 3).await;

    let (pump, fan) = (unique("pump"), unique("fan"));
    let mut events: Vec<Envelope<FailurePredicted>> =
        (0..40).map(|i| prediction(if i % 2 == 0 { &pump } else { &fan }, i, 500.0 - i as f64)).collect();
    // The agent's transaction was retried: the same event (same id) published twice.
    events.push(events[7].clone());
    let codec = Codec::embedded().unwrap();
    produce(
        &stack.kafka,
        &topic,
        events.iter().map(|e| Record {
            key: e.header.asset_id.as_str().as_bytes().to_vec(),
            value: codec.encode(e).unwrap(),
            headers: vec![],
        }),
    );

    let client = pool.get().await.unwrap();
    let count = async || client.query_one("SELECT count(*) FROM predictions", &[]).await.unwrap().get::<_, i64>(0);
    // Until every record (the duplicate included) is written: the stored next offsets add up
    // to the records on the topic.
    let written = async || {
        client
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM sm_projection_offsets WHERE topic = $1",
                &[&topic],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let consumed = project_until(&stack.kafka, &topic, &pool, async || written().await == events.len() as i64).await;
    assert_eq!(consumed as usize, events.len());
    assert_eq!(count().await, 40, "the duplicate event is stored once");

    // Every field survives exactly (timestamps to the microsecond, contributions in order).
    let sample = &events[9];
    let row = client
        .query_one(
            "SELECT tenant_id, asset_id, asset_type, (extract(epoch from occurred_at) * 1000000)::bigint,
                    (extract(epoch from recorded_at) * 1000000)::bigint, model_name, model_version, model_kind,
                    rul_seconds, rul_low_seconds, rul_high_seconds, coverage, horizon_seconds, failure_probability,
                    cycles, contributions::text
             FROM predictions WHERE event_id = $1",
            &[&sample.header.event_id.to_string()],
        )
        .await
        .unwrap();
    let p = &sample.payload;
    assert_eq!(row.get::<_, String>(0), "acme");
    assert_eq!(row.get::<_, String>(1), fan);
    assert_eq!(row.get::<_, String>(2), p.asset_type);
    assert_eq!(row.get::<_, i64>(3), sample.header.occurred_at.as_micros());
    assert_eq!(row.get::<_, i64>(4), sample.header.recorded_at.as_micros());
    assert_eq!(
        (row.get::<_, String>(5), row.get::<_, i32>(6), row.get::<_, String>(7)),
        (p.model_name.clone(), p.model_version, p.model_kind.clone())
    );
    let numbers: Vec<f64> = (8..14).map(|i| row.get::<_, f64>(i)).collect();
    assert_eq!(
        numbers,
        [p.rul_seconds, p.rul_low_seconds, p.rul_high_seconds, p.coverage, p.horizon_seconds, p.failure_probability]
    );
    assert_eq!(row.get::<_, i32>(14), p.cycles);
    let contributions: Vec<FeatureContribution> = serde_json::from_str(&row.get::<_, String>(15)).unwrap();
    assert_eq!(contributions, p.contributions);

    // An index serves one asset's newest-first pages (what ListPredictions and Latest ask):
    // with sorting priced out, the plan still needs no sort.
    client.batch_execute("SET enable_seqscan = off; SET enable_sort = off").await.unwrap();
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT event_id FROM predictions WHERE asset_id = $1
             ORDER BY occurred_at DESC, event_id DESC LIMIT 10",
            &[&pump],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    client.batch_execute("RESET enable_seqscan; RESET enable_sort").await.unwrap();
    assert!(plan.iter().any(|line| line.contains("predictions_asset_time")), "{plan:?}");
    assert!(plan.iter().all(|line| !line.contains("Sort")), "no sort needed: {plan:?}");

    // Replay the whole topic from scratch (offsets forgotten, another group): same rows.
    let before: Vec<(String, f64)> = client
        .query("SELECT event_id, rul_seconds FROM predictions ORDER BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    client.execute("DELETE FROM sm_projection_offsets WHERE topic = $1", &[&topic]).await.unwrap();
    let replayed = project_until(&stack.kafka, &topic, &pool, async || {
        tokio::time::sleep(Duration::from_secs(8)).await;
        true
    })
    .await;
    assert_eq!(replayed as usize, events.len(), "the replay read everything again");
    let after: Vec<(String, f64)> = client
        .query("SELECT event_id, rul_seconds FROM predictions ORDER BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(before, after, "a replay must not add or change rows");
    drop(client);
    drop(pool);
    drop(schema);
}
