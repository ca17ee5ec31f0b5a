//! The query service against the real local stack: the server runs in-process on
//! 127.0.0.1:0 and the tests talk to it with the generated clients, as `smctl` would.
//!
//! Each test gets its own PostgreSQL schema (selected with `search_path` in the connection
//! URL), migrated with the projector's own migrations, so the tables are exactly the ones the
//! service reads in production and no test sees another's rows. Rows are written the way the
//! projector writes them. The stack must be up (`deploy/local/stack up`); a missing stack is
//! a panic, never a skip.

mod common;

use futures::StreamExt;
use rand::Rng;
use sm_domain::{AssetRegistered, Codec};
use sm_kafka::KafkaConfig;
use sm_proto::auth::AuthChannel as Channel;
use sm_proto::convert::{from_timestamp, to_timestamp};
use sm_proto::v1;
use sm_proto::{AssetServiceClient, ReadingServiceClient};
use sm_query::db::PgTimestamp;
use sm_query::{QueryConfig, QuerySettings};
use sm_storage::{Flavor, Pool, PostgresConfig};
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::{Stack, stack_from_env_file, unique};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use tonic::Code;

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
/// 2025-11-24T16:00:00Z: a whole hour, so rollups line up with it.
const T0: i64 = 1_764_000_000 * SECOND;

/// One reading as the test generated it: the reference the service's answers are checked
/// against.
#[derive(Debug, Clone, PartialEq)]
struct Reading {
    asset: String,
    sensor: String,
    at: i64,
    sequence: i64,
    value: f64,
}

/// `ListReadings` order: occurred_at, sensor_id, sequence, all descending.
fn list_order(a: &Reading, b: &Reading) -> std::cmp::Ordering {
    (b.at, &b.sensor, b.sequence).cmp(&(a.at, &a.sensor, a.sequence))
}

fn from_wire(reading: &v1::Reading) -> Reading {
    Reading {
        asset: reading.asset_id.clone(),
        sensor: reading.sensor_id.clone(),
        at: from_timestamp(reading.occurred_at.as_ref().unwrap()).unwrap().as_micros(),
        sequence: reading.sequence,
        value: reading.value,
    }
}

/// A running server on its own schema, and a pool on that schema to write fixtures with.
struct Fixture {
    stack: Stack,
    pool: Pool,
    flavor: Flavor,
    assets_topic: String,
    server: common::Server,
    _schema: ScratchSchema,
}

impl Fixture {
    async fn start() -> Self {
        let stack = stack_from_env_file();
        let guard = ScratchSchema::create(&stack, "sm_query_test").await;
        let url = guard.url.clone();

        let assets_topic = unique("sm.assets.test");
        let kafka = KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..KafkaConfig::default() };
        let config = QueryConfig {
            kafka: kafka.clone(),
            postgres: PostgresConfig { url: Secret(url), pool_size: 4, ..Default::default() },
            telemetry: Default::default(),
            auth: common::auth(&stack),
            artifacts: Default::default(),
            query: QuerySettings { assets_topic: assets_topic.clone(), ..QuerySettings::default() },
        };
        config.validate().unwrap();
        let pool = sm_storage::connect(&config.postgres).unwrap();
        // The projector owns the schema; its migrations make exactly its tables.
        let flavor = sm_storage::migrate(&pool, sm_projector::schema::COMPONENT, sm_projector::schema::MIGRATIONS)
            .await
            .unwrap();
        if flavor == Flavor::Native {
            // The projector creates daily partitions as readings arrive; one default
            // partition takes every test row instead.
            pool.get()
                .await
                .unwrap()
                .batch_execute("CREATE TABLE readings_default PARTITION OF readings DEFAULT")
                .await
                .unwrap();
        }
        sm_kafka::ensure_topics(&kafka, &[(&assets_topic, true)]).await.unwrap();

        let server = common::Server::start(&config, &guard).await;
        Self { stack, pool, flavor, assets_topic, server, _schema: guard }
    }

    async fn channel(&self) -> Channel {
        self.server.channel().await
    }

    async fn readings_client(&self) -> ReadingServiceClient<Channel> {
        ReadingServiceClient::new(self.channel().await)
    }

    async fn assets_client(&self) -> AssetServiceClient<Channel> {
        AssetServiceClient::new(self.channel().await)
    }

    /// Inserts readings as the projector does, in one statement.
    async fn insert(&self, readings: &[Reading]) {
        let column = |f: fn(&Reading) -> String| readings.iter().map(f).collect::<Vec<String>>();
        let assets = column(|r| r.asset.clone());
        let sensors = column(|r| r.sensor.clone());
        let event_ids = column(|_| sm_domain::EventId::new().to_string());
        let times: Vec<PgTimestamp> = readings.iter().map(|r| PgTimestamp(r.at)).collect();
        let values: Vec<f64> = readings.iter().map(|r| r.value).collect();
        let sequences: Vec<i64> = readings.iter().map(|r| r.sequence).collect();
        self.pool
            .get()
            .await
            .unwrap()
            .execute(
                "INSERT INTO readings (tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
                                       quality_flags, backfill, event_id, recorded_at)
                 SELECT 'test', a, s, 'temperature', t, v, 'degC', q, '{late}', false, e, t + interval '1 second'
                 FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::int8[], $6::text[])
                      AS u(a, s, t, v, q, e)",
                &[&assets, &sensors, &times, &values, &sequences, &event_ids],
            )
            .await
            .unwrap();
    }

    /// Derives the latest values and both rollups of `asset` from its readings, with the
    /// projector's definitions (epoch-aligned buckets; first/last by event time, then sequence).
    async fn project_derived(&self, asset: &str) {
        let client = self.pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO latest_readings (sensor_id, tenant_id, asset_id, sensor_type, occurred_at, value, unit,
                                              sequence, quality_flags, backfill, event_id)
                 SELECT DISTINCT ON (sensor_id) sensor_id, tenant_id, asset_id, sensor_type, occurred_at, value, unit,
                        sequence, quality_flags, backfill, event_id
                 FROM readings WHERE asset_id = $1
                 ORDER BY sensor_id, occurred_at DESC, sequence DESC",
                &[&asset],
            )
            .await
            .unwrap();
        if self.flavor == Flavor::Timescale {
            // Continuous aggregates: materialise instead of inserting.
            for view in ["readings_1m", "readings_1h"] {
                client
                    .batch_execute(&format!("CALL refresh_continuous_aggregate('{view}', NULL, NULL)"))
                    .await
                    .unwrap();
            }
            return;
        }
        for (table, width) in [("readings_1m", "1 minute"), ("readings_1h", "1 hour")] {
            client
                .execute(
                    &format!(
                        "INSERT INTO {table} (sensor_id, asset_id, bucket, min_value, max_value, sum_value, count,
                                              first_at, first_value, last_at, last_value)
                         SELECT sensor_id, min(asset_id), date_bin(interval '{width}', occurred_at, timestamptz 'epoch') AS b,
                                min(value), max(value), sum(value), count(*),
                                min(occurred_at), (array_agg(value ORDER BY occurred_at, sequence))[1],
                                max(occurred_at), (array_agg(value ORDER BY occurred_at DESC, sequence DESC))[1]
                         FROM readings WHERE asset_id = $1
                         GROUP BY sensor_id, b"
                    ),
                    &[&asset],
                )
                .await
                .unwrap();
        }
    }

    /// Registers an asset directly in the projector's tables.
    async fn insert_asset(&self, asset: &str, sensors: &[&str]) {
        let client = self.pool.get().await.unwrap();
        client
            .execute(
                "INSERT INTO assets (asset_id, tenant_id, name, asset_type, site, registered_at, updated_at)
                 VALUES ($1, 'test', 'Pump ' || $1, 'pump', 'plant-a', $2, $2)",
                &[&asset, &PgTimestamp(T0)],
            )
            .await
            .unwrap();
        for sensor in sensors {
            client
                .execute(
                    "INSERT INTO sensors (sensor_id, asset_id, sensor_type, unit, min_value, max_value, expected_interval_ms)
                     VALUES ($1, $2, 'temperature', 'degC', -40, 150, 1000)",
                    &[sensor, &asset],
                )
                .await
                .unwrap();
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// `sensors` sensors of `asset`, `per_sensor` readings each, one second apart with every
/// timestamp used twice (two sequence numbers) and shared by all sensors: ties on
/// occurred_at and on (occurred_at, sensor_id) are the norm, so the order's tie-breaks are
/// exercised on every page.
fn history(asset: &str, sensors: usize, per_sensor: i64, first_at: i64) -> Vec<Reading> {
    let mut rng = rand::rng();
    (0..sensors)
        .flat_map(|s| {
            let sensor = format!("{asset}.s{s}");
            let asset = asset.to_owned();
            (0..per_sensor)
                .map(|i| Reading {
                    asset: asset.clone(),
                    sensor: sensor.clone(),
                    at: first_at + (i / 2) * SECOND,
                    sequence: i,
                    value: 20.0 + rng.random_range(-5.0..5.0),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn request(asset: &str, page_size: i32, page_token: &str) -> v1::ListReadingsRequest {
    v1::ListReadingsRequest { asset_id: asset.into(), page_size, page_token: page_token.into(), ..Default::default() }
}

/// Follows next_page_token to the end; returns every reading and each call's latency.
async fn page_through(
    client: &mut ReadingServiceClient<Channel>,
    first: v1::ListReadingsRequest,
) -> (Vec<Reading>, Vec<Duration>) {
    let (mut all, mut latencies) = (Vec::new(), Vec::new());
    let mut request = first;
    loop {
        let started = Instant::now();
        let page = client.list_readings(request.clone()).await.unwrap().into_inner();
        latencies.push(started.elapsed());
        assert!(page.readings.len() <= request.page_size as usize);
        all.extend(page.readings.iter().map(from_wire));
        if page.next_page_token.is_empty() {
            return (all, latencies);
        }
        assert_eq!(page.readings.len(), request.page_size as usize, "only the last page is short");
        request.page_token = page.next_page_token;
    }
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_every_reading_once_in_order() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let mut expected = history(&asset, 5, 500, T0);
    fixture.insert(&expected).await;
    // Another asset's readings, interleaved in time, must never show up.
    fixture.insert(&history(&unique("other"), 2, 100, T0)).await;
    expected.sort_by(list_order);
    assert_eq!(expected.len(), 2_500);

    let mut client = fixture.readings_client().await;
    let (got, mut latencies) = page_through(&mut client, request(&asset, 100, "")).await;
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "pages differ from the reference order");
    assert_eq!(latencies.len(), 25);

    // One sensor, a page size that does not divide the count.
    let sensor = format!("{asset}.s3");
    let first = v1::ListReadingsRequest { sensor_id: sensor.clone(), page_size: 37, ..Default::default() };
    let (got, more) = page_through(&mut client, first).await;
    let of_sensor: Vec<Reading> = expected.iter().filter(|r| r.sensor == sensor).cloned().collect();
    assert!(got == of_sensor, "sensor pages differ from the reference");
    latencies.extend(more);

    // A half-open time range: start included, end excluded.
    let (start, end) = (T0 + 10 * SECOND, T0 + 20 * SECOND);
    let first = v1::ListReadingsRequest {
        start: Some(to_timestamp(sm_domain::Timestamp(start))),
        end: Some(to_timestamp(sm_domain::Timestamp(end))),
        ..request(&asset, 7, "")
    };
    let (got, _) = page_through(&mut client, first).await;
    let in_range: Vec<Reading> = expected.iter().filter(|r| r.at >= start && r.at < end).cloned().collect();
    assert_eq!(in_range.len(), 5 * 2 * 10);
    assert!(got == in_range, "range pages differ from the reference");

    let (p50, p99) = (percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.99));
    println!(
        "ListReadings over {} calls (page 100 or 37, 2,500 rows, debug build): p50 {p50:?}, p99 {p99:?}",
        latencies.len()
    );
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_has_no_gap_and_no_repeat_while_readings_arrive() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let original = history(&asset, 5, 500, T0);
    fixture.insert(&original).await;
    let oldest = T0;
    let newest = original.iter().map(|r| r.at).max().unwrap();

    let mut client = fixture.readings_client().await;
    let mut seen = Vec::new();
    let mut request = request(&asset, 100, "");
    let mut late_rows = Vec::new();
    for page_number in 0.. {
        let page = client.list_readings(request.clone()).await.unwrap().into_inner();
        seen.extend(page.readings.iter().map(from_wire));
        if page_number == 4 {
            let cursor_at = seen.last().unwrap().at;
            // Newer than everything: sorts before the cursor, so never in this paging.
            let newer: Vec<Reading> = (0..100)
                .map(|i| Reading {
                    at: newest + (i + 1) * SECOND,
                    sequence: 10_000 + i,
                    ..original[i as usize].clone()
                })
                .collect();
            // Back-dated (late) data, older than everything: after the cursor, so it must show up.
            let older: Vec<Reading> = (0..50)
                .map(|i| Reading {
                    at: oldest - (i + 1) * SECOND,
                    sequence: 20_000 + i,
                    ..original[i as usize].clone()
                })
                .collect();
            // Late data into the part not read yet, between existing rows: must show up too.
            let between: Vec<Reading> = (0..30)
                .map(|i| Reading {
                    at: oldest + i * SECOND + 500_000,
                    sequence: 30_000 + i,
                    ..original[i as usize].clone()
                })
                .collect();
            assert!(between.iter().all(|r| r.at < cursor_at), "inserted below the cursor");
            fixture.insert(&newer).await;
            fixture.insert(&older).await;
            fixture.insert(&between).await;
            late_rows.extend(older);
            late_rows.extend(between);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let mut expected = original;
    expected.extend(late_rows);
    expected.sort_by(list_order);
    let keys: HashSet<(String, i64, i64)> = seen.iter().map(|r| (r.sensor.clone(), r.at, r.sequence)).collect();
    assert_eq!(keys.len(), seen.len(), "a reading was returned twice");
    assert_eq!(seen.len(), expected.len(), "readings missing or extra");
    assert!(seen == expected, "paging while inserting differs from the reference");
    fixture.stop().await;
}

/// The reference aggregate: per sensor and bucket `start + k * width`.
fn reference_buckets(
    readings: &[Reading],
    subject: impl Fn(&Reading) -> bool,
    start: i64,
    end: i64,
    width: i64,
) -> Vec<v1::AggregateBucket> {
    let mut groups: BTreeMap<(String, i64), Vec<&Reading>> = BTreeMap::new();
    for r in readings.iter().filter(|r| subject(r) && r.at >= start && r.at < end) {
        let bucket = start + (r.at - start) / width * width;
        groups.entry((r.sensor.clone(), bucket)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((sensor, bucket), rows)| {
            let first = rows.iter().min_by_key(|r| (r.at, r.sequence)).unwrap();
            let last = rows.iter().max_by_key(|r| (r.at, r.sequence)).unwrap();
            v1::AggregateBucket {
                sensor_id: sensor,
                bucket_start: Some(to_timestamp(sm_domain::Timestamp(bucket))),
                min: rows.iter().map(|r| r.value).fold(f64::INFINITY, f64::min),
                max: rows.iter().map(|r| r.value).fold(f64::NEG_INFINITY, f64::max),
                avg: rows.iter().map(|r| r.value).sum::<f64>() / rows.len() as f64,
                count: rows.len() as i64,
                first: first.value,
                last: last.value,
            }
        })
        .collect()
}

fn assert_buckets_equal(got: &[v1::AggregateBucket], expected: &[v1::AggregateBucket], case: &str) {
    assert_eq!(got.len(), expected.len(), "{case}: bucket count");
    for (g, e) in got.iter().zip(expected) {
        let same = g.sensor_id == e.sensor_id
            && g.bucket_start == e.bucket_start
            && g.count == e.count
            && g.min == e.min
            && g.max == e.max
            && g.first == e.first
            && g.last == e.last
            && (g.avg - e.avg).abs() <= 1e-9 * e.avg.abs().max(1.0);
        assert!(same, "{case}:\n got      {g:?}\n expected {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_match_a_reference_from_every_source() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let mut rng = rand::rng();
    // Three sensors over three hours at random times; some readings share a timestamp.
    let mut readings = Vec::new();
    for s in 0..3 {
        for sequence in 0..600 {
            let at = if sequence % 10 == 9 {
                readings.last().map(|r: &Reading| r.at).unwrap()
            } else {
                T0 + rng.random_range(0..3 * HOUR)
            };
            readings.push(Reading {
                asset: asset.clone(),
                sensor: format!("{asset}.s{s}"),
                at,
                sequence,
                value: rng.random_range(0.0..100.0),
            });
        }
    }
    fixture.insert(&readings).await;
    fixture.project_derived(&asset).await;
    let mut client = fixture.readings_client().await;
    let sensor = format!("{asset}.s1");

    let cases: [(&str, bool, i64, i64, i64, &str); 5] = [
        ("hourly rollup, one sensor", false, T0, T0 + 3 * HOUR, HOUR, "readings_1h"),
        ("minute rollup, asset", true, T0, T0 + 3 * HOUR, 15 * MINUTE, "readings_1m"),
        ("minute rollup, unaligned hour range", true, T0 + 7 * MINUTE, T0 + 2 * HOUR + 7 * MINUTE, HOUR, "readings_1m"),
        ("raw, one sensor, odd range", false, T0 + 7 * SECOND, T0 + 2 * HOUR + 13 * SECOND, 90 * SECOND, "readings"),
        ("raw, asset, seconds", true, T0 + 500_000, T0 + 3 * HOUR, 7 * SECOND, "readings"),
    ];
    for (case, by_asset, start, end, width, source) in cases {
        let request = v1::AggregateRequest {
            sensor_id: if by_asset { String::new() } else { sensor.clone() },
            asset_id: if by_asset { asset.clone() } else { String::new() },
            start: Some(to_timestamp(sm_domain::Timestamp(start))),
            end: Some(to_timestamp(sm_domain::Timestamp(end))),
            bucket_width: Some(prost_types::Duration { seconds: width / SECOND, nanos: 0 }),
        };
        let response = client.aggregate(request).await.unwrap().into_inner();
        assert_eq!(response.source, source, "{case}");
        let expected = reference_buckets(
            &readings,
            |r| if by_asset { r.asset == asset } else { r.sensor == sensor },
            start,
            end,
            width,
        );
        assert!(!expected.is_empty());
        assert_buckets_equal(&response.buckets, &expected, case);
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_returns_one_reading_per_sensor() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let readings = history(&asset, 4, 50, T0);
    fixture.insert(&readings).await;
    fixture.project_derived(&asset).await;
    let mut client = fixture.readings_client().await;

    let latest = client.latest(v1::LatestRequest { asset_id: asset.clone() }).await.unwrap().into_inner().readings;
    assert_eq!(latest.len(), 4);
    for (i, reading) in latest.iter().enumerate() {
        let sensor = format!("{asset}.s{i}");
        let newest = readings.iter().filter(|r| r.sensor == sensor).max_by_key(|r| (r.at, r.sequence)).unwrap().clone();
        assert_eq!(from_wire(reading), newest, "sensors come in sensor_id order with their newest reading");
        assert_eq!(reading.recorded_at, None, "latest_readings keeps no recorded_at");
        assert_eq!(reading.quality_flags, ["late"]);
    }

    // Registered but silent: an empty answer. Neither registered nor reporting: NOT_FOUND.
    let silent = unique("silent");
    fixture.insert_asset(&silent, &[]).await;
    assert!(client.latest(v1::LatestRequest { asset_id: silent }).await.unwrap().into_inner().readings.is_empty());
    let error = client.latest(v1::LatestRequest { asset_id: unique("ghost") }).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused_with_the_field_named() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    fixture.insert(&history(&asset, 2, 20, T0)).await;
    let mut client = fixture.readings_client().await;
    let at = |micros| Some(to_timestamp(sm_domain::Timestamp(micros)));

    let token = client.list_readings(request(&asset, 5, "")).await.unwrap().into_inner().next_page_token;
    assert!(!token.is_empty());
    let mut edited = token.clone();
    edited.insert(10, 'x');
    let cases: Vec<(&str, v1::ListReadingsRequest, &str)> = vec![
        ("page size above the maximum", request(&asset, 1001, ""), "page_size"),
        ("negative page size", request(&asset, -1, ""), "page_size"),
        ("asset and sensor", v1::ListReadingsRequest { sensor_id: "s".into(), ..request(&asset, 5, "") }, "sensor_id"),
        ("neither asset nor sensor", request("", 5, ""), "asset_id"),
        ("garbage token", request(&asset, 5, "not-a-token"), "page_token"),
        ("edited token", request(&asset, 5, &edited), "page_token"),
        ("token with another asset", request(&unique("pump"), 5, &token), "other filters"),
        (
            "token with another range",
            v1::ListReadingsRequest { start: at(T0), ..request(&asset, 5, &token) },
            "other filters",
        ),
        (
            "end before start",
            v1::ListReadingsRequest { start: at(T0 + HOUR), end: at(T0), ..request(&asset, 5, "") },
            "end",
        ),
        ("end equal to start", v1::ListReadingsRequest { start: at(T0), end: at(T0), ..request(&asset, 5, "") }, "end"),
    ];
    for (case, request, mentions) in cases {
        let status = client.list_readings(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(status.message().contains(mentions), "{case}: {}", status.message());
    }
    // The same token with the same filters still works: refusals changed nothing.
    assert!(client.list_readings(request(&asset, 5, &token)).await.is_ok());

    let aggregate =
        |sensor: &str, start: Option<i64>, end: Option<i64>, width: Option<(i64, i32)>| v1::AggregateRequest {
            sensor_id: sensor.into(),
            asset_id: String::new(),
            start: start.and_then(at),
            end: end.and_then(at),
            bucket_width: width.map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
        };
    let sensor = format!("{asset}.s0");
    let cases = vec![
        ("no subject", aggregate("", Some(T0), Some(T0 + HOUR), Some((60, 0))), "asset_id"),
        ("no start", aggregate(&sensor, None, Some(T0 + HOUR), Some((60, 0))), "start"),
        ("no end", aggregate(&sensor, Some(T0), None, Some((60, 0))), "end"),
        ("end before start", aggregate(&sensor, Some(T0 + HOUR), Some(T0), Some((60, 0))), "end"),
        ("no width", aggregate(&sensor, Some(T0), Some(T0 + HOUR), None), "bucket_width"),
        ("width under a second", aggregate(&sensor, Some(T0), Some(T0 + HOUR), Some((0, 500_000_000))), "bucket_width"),
        ("too many buckets", aggregate(&sensor, Some(T0), Some(T0 + 3 * HOUR), Some((1, 0))), "10800 buckets"),
    ];
    for (case, request, mentions) in cases {
        let status = client.aggregate(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(status.message().contains(mentions), "{case}: {}", status.message());
    }
    let status = client.latest(v1::LatestRequest { asset_id: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // A ListReadings token is not a ListAssets token, and the other way round.
    let mut assets = fixture.assets_client().await;
    let status =
        assets.list_assets(v1::ListAssetsRequest { page_size: 5, page_token: token.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("issued by ListReadings"), "{}", status.message());
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_page_by_id_and_get_returns_sensors() {
    let fixture = Fixture::start().await;
    let prefix = unique("site");
    let mut ids: Vec<String> = (0..23).map(|i| format!("{prefix}-{i:03}")).collect();
    for (i, id) in ids.iter().enumerate() {
        // Every third asset has no sensor yet; the others two, inserted out of order.
        let sensors: Vec<String> = if i % 3 == 0 { vec![] } else { vec![format!("{id}.vib"), format!("{id}.temp")] };
        fixture.insert_asset(id, &sensors.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }
    ids.sort();
    let mut client = fixture.assets_client().await;

    let (mut listed, mut token) = (Vec::new(), String::new());
    loop {
        let page =
            client.list_assets(v1::ListAssetsRequest { page_size: 5, page_token: token }).await.unwrap().into_inner();
        listed.extend(page.assets);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed.iter().map(|a| a.asset_id.clone()).collect::<Vec<_>>(), ids);
    for asset in &listed {
        let sensor_ids: Vec<&str> = asset.sensors.iter().map(|s| s.sensor_id.as_str()).collect();
        if sensor_ids.is_empty() {
            continue;
        }
        assert_eq!(sensor_ids, [format!("{}.temp", asset.asset_id), format!("{}.vib", asset.asset_id)]);
    }
    assert_eq!(listed.iter().filter(|a| a.sensors.is_empty()).count(), 8);

    let got = client.get_asset(v1::GetAssetRequest { asset_id: ids[1].clone() }).await.unwrap().into_inner();
    let asset = got.asset.unwrap();
    assert_eq!(asset.name, format!("Pump {}", ids[1]));
    assert_eq!(asset.sensors.len(), 2);
    assert_eq!(asset.sensors[0].unit, "degC");
    assert_eq!(asset.registered_at, Some(to_timestamp(sm_domain::Timestamp(T0))));
    let status = client.get_asset(v1::GetAssetRequest { asset_id: unique("ghost") }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status =
        client.list_assets(v1::ListAssetsRequest { page_size: 1001, page_token: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_asset_publishes_an_asset_registered_event() {
    let fixture = Fixture::start().await;
    let mut client = fixture.assets_client().await;
    let asset_id = unique("pump");
    let sensor = |id: &str, sensor_type: &str, unit: &str| v1::Sensor {
        sensor_id: format!("{asset_id}.{id}"),
        sensor_type: sensor_type.into(),
        unit: unit.into(),
        min_value: 0.0,
        max_value: 100.0,
        expected_interval_ms: 500,
    };
    let request = v1::RegisterAssetRequest {
        asset_id: asset_id.clone(),
        name: "Feed pump".into(),
        asset_type: "pump".into(),
        site: "plant-a".into(),
        sensors: vec![sensor("vib", "vibration_rms", "mm/s"), sensor("temp", "temperature", "degC")],
        tenant_id: "acme".into(),
    };

    // Invalid first: refused, and nothing is published.
    let mut bad = request.clone();
    bad.sensors[1].unit = "degF".into();
    let status = client.register_asset(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("sensors[1].unit:"), "{}", status.message());

    let response = client.register_asset(request).await.unwrap().into_inner();
    let asset = response.asset.unwrap();
    assert_eq!(asset.tenant_id, "acme");
    assert_eq!(
        asset.sensors.iter().map(|s| s.sensor_id.clone()).collect::<Vec<_>>(),
        [format!("{asset_id}.temp"), format!("{asset_id}.vib")]
    );

    let (bootstrap, topic) = (fixture.stack.kafka.clone(), fixture.assets_topic.clone());
    let records = tokio::task::spawn_blocking(move || {
        sm_testkit::read_committed(&bootstrap, &topic, 1, Duration::from_millis(500), Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(records.len(), 1, "exactly the valid registration was published");
    let record = &records[0];
    assert_eq!(record.key, asset_id.as_bytes());
    assert!(record.headers.iter().any(|(k, _)| k == "traceparent"), "the event starts a trace");
    let event = Codec::embedded().unwrap().decode::<AssetRegistered>(&record.value, None).unwrap();
    assert_eq!(event.header.event_id.to_string(), response.event_id);
    assert_eq!(event.header.event_type, "AssetRegistered");
    assert_eq!(event.header.asset_id.as_str(), asset_id);
    assert_eq!(event.header.tenant_id.as_str(), "acme");
    assert_eq!(event.header.producer, "query");
    assert_eq!(event.payload.name, "Feed pump");
    assert_eq!(event.payload.sensors.len(), 2);
    assert_eq!(event.payload.sensors[1].unit, "mm/s");
    assert_eq!(event.payload.sensors[1].expected_interval_ms, 500);
    assert_eq!(asset.registered_at, Some(to_timestamp(event.header.recorded_at)));
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_serving_and_reflection_lists_the_services() {
    let fixture = Fixture::start().await;
    common::assert_served_and_listed(
        fixture.channel().await,
        &["", "sm.v1.ReadingService", "sm.v1.AssetService"],
        &["sm.v1.ReadingService", "sm.v1.AssetService", "grpc.health.v1.Health"],
    )
    .await;

    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_client::ServerReflectionClient};
    let mut reflection = ServerReflectionClient::new(fixture.channel().await);

    // The descriptor of a message resolves too (grpcurl describe needs it).
    let describe = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("sm.v1.ListReadingsRequest".into())),
    };
    let mut responses =
        reflection.server_reflection_info(futures::stream::iter([describe])).await.unwrap().into_inner();
    let response = responses.next().await.unwrap().unwrap().message_response;
    assert!(matches!(response, Some(MessageResponse::FileDescriptorResponse(_))), "{response:?}");

    // The older protocol version, which some tools still speak.
    use tonic_reflection::pb::v1alpha;
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(fixture.channel().await);
    let list = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses = alpha.server_reflection_info(futures::stream::iter([list])).await.unwrap().into_inner();
    assert!(responses.next().await.unwrap().is_ok());
    fixture.stop().await;
}
