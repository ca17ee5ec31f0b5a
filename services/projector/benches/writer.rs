//! Rows/s of the readings projection's write path (one statement per batch: rows, latest
//! values and both rollups, in a transaction with the offsets) against a raw binary `COPY` of
//! the same rows into the same `readings` table, in the same run. Needs the local stack.
//! `SM_BENCH_ROWS` (default 200,000). Run with `cargo bench -p sm-projector --bench writer`.

use sm_domain::{AssetId, Envelope, TenantId, Timestamp, ValidatedReading};
use sm_kafka::PartitionOffset;
use sm_projector::{readings::ReadingsProjection, schema};
use sm_storage::{PostgresConfig, Projection, connect, migrate, offsets};
use sm_telemetry::Secret;
use sm_testkit::bench::machine;
use sm_testkit::{stack_from_env_file, unique};
use std::time::{Duration, Instant, SystemTime};
use tokio_postgres::binary_copy::BinaryCopyInWriter;

const BATCH: usize = 5_000;

fn rows(prefix: &str, total: usize) -> Vec<Envelope<ValidatedReading>> {
    let start = Timestamp::now().0 - total as i64 * 100_000;
    (0..total)
        .map(|i| {
            let asset = format!("{prefix}-asset-{}", i % 100);
            Envelope::origin(
                TenantId::from("bench"),
                AssetId(asset.clone()),
                Timestamp(start + i as i64 * 100_000),
                "bench",
                ValidatedReading {
                    sensor_id: format!("{asset}.s{}", (i / 100) % 4).into(),
                    sensor_type: "temperature".into(),
                    value: (i % 1000) as f64 / 10.0,
                    unit: "degC".into(),
                    sequence: i as i64,
                    quality_flags: vec![],
                    backfill: false,
                },
            )
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("SM_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let stack = stack_from_env_file();
    let pool = connect(&PostgresConfig { url: Secret(stack.postgres_url.clone()), pool_size: 2, ..Default::default() })
        .unwrap();
    let flavor = migrate(&pool, schema::COMPONENT, schema::MIGRATIONS).await.unwrap();
    let mut client = pool.get().await.unwrap();

    // Raw COPY of the rows (partitions created up front so both sides find them).
    let copied = rows(&unique("copy"), total);
    let projection = ReadingsProjection::new(flavor);
    // Create the day partitions both sides need (the projector does this as data arrives)
    // with two rows of another prefix, outside the timed part.
    let warm = rows(&unique("warm"), total);
    let warmup = client.transaction().await.unwrap();
    projection.write(&warmup, &warm[..1]).await.unwrap();
    projection.write(&warmup, &warm[total - 1..]).await.unwrap();
    warmup.commit().await.unwrap();
    let started = Instant::now();
    for chunk in copied.chunks(BATCH) {
        let tx = client.transaction().await.unwrap();
        let sink = tx.copy_in(sm_projector::schema::READINGS_COPY).await.unwrap();
        let writer = BinaryCopyInWriter::new(sink, &sm_projector::schema::READINGS_COPY_TYPES);
        let mut writer = std::pin::pin!(writer);
        for e in chunk {
            let at = |t: Timestamp| SystemTime::UNIX_EPOCH + Duration::from_micros(t.0 as u64);
            writer
                .as_mut()
                .write(&[
                    &e.header.tenant_id.0,
                    &e.header.asset_id.0,
                    &e.payload.sensor_id.0,
                    &e.payload.sensor_type,
                    &at(e.header.occurred_at),
                    &e.payload.value,
                    &e.payload.unit,
                    &e.payload.sequence,
                    &e.payload.quality_flags,
                    &e.payload.backfill,
                    &e.header.event_id.to_string(),
                    &at(e.header.recorded_at),
                ])
                .await
                .unwrap();
        }
        writer.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    let copy_secs = started.elapsed().as_secs_f64();

    // The projection's write path, batch by batch with the offsets, as the projector commits.
    let projected = rows(&unique("proj"), total);
    let topic = unique("bench-topic");
    let started = Instant::now();
    for (n, chunk) in projected.chunks(BATCH).enumerate() {
        let tx = client.transaction().await.unwrap();
        projection.write(&tx, chunk).await.unwrap();
        let next_offset = ((n + 1) * BATCH) as i64;
        offsets::store(&tx, "bench", &[PartitionOffset { topic: topic.clone(), partition: 0, next_offset }])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let projection_secs = started.elapsed().as_secs_f64();

    println!("machine: {}", machine());
    println!("rows: {total} readings of 400 sensors, batches of {BATCH}, PostgreSQL ({flavor:?} partitioning)");
    println!(
        "raw binary COPY into readings:                    {:>8.0} rows/s ({copy_secs:.2} s)",
        total as f64 / copy_secs
    );
    println!(
        "projection write (rows + latest + 2 rollups + offsets): {:>8.0} rows/s ({projection_secs:.2} s)",
        total as f64 / projection_secs
    );
    println!("ratio projection / COPY: {:.2}", copy_secs / projection_secs);
}
