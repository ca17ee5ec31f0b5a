//! The alert, drift and anomaly services against the real local stack: the server runs
//! in-process on 127.0.0.1:0 and the tests talk to it with the generated clients.
//!
//! As in `tests/query.rs`, each test gets its own PostgreSQL schema migrated with the
//! projector's migrations, and alert rows are written by the projector's own
//! `AlertsProjection`, so the service reads exactly what production writes. `StreamAlerts` is
//! fed from the real `sm.anomalies.v1` and `sm.drift.v1` topics (the names are constants):
//! each test uses its own asset ids and filters on them, so parallel tests and anything else
//! publishing there never interfere. The stack must be up (`deploy/local/stack up`); a missing
//! stack is a panic, never a skip.

mod common;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sm_analytics::drift::DriftConfig;
use sm_analytics::sensor::{SensorDetector, SensorDetectorConfig};
use sm_domain::{
    AlertEvent, AnomalyDetected, Codec, Contribution, DomainEvent, DriftDetected, Envelope, EnvelopeHeader,
    SensorStale, Timestamp, topics,
};
use sm_kafka::KafkaConfig;
use sm_proto::auth::AuthChannel as Channel;
use sm_proto::convert::{from_timestamp, to_timestamp};
use sm_proto::v1;
use sm_proto::{AlertServiceClient, AnomalyServiceClient, DriftServiceClient};
use sm_query::db::PgTimestamp;
use sm_query::{QueryConfig, QuerySettings};
use sm_storage::{Flavor, Pool, PostgresConfig, Projection};
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::{Record, Stack, stack_from_env_file, unique};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tonic::Code;

const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000 * SECOND;

/// A running server on its own schema, and a pool on that schema to write fixtures with.
struct Fixture {
    stack: Stack,
    pool: Pool,
    server: common::Server,
    _schema: ScratchSchema,
}

impl Fixture {
    async fn start() -> Self {
        let stack = stack_from_env_file();
        let guard = ScratchSchema::create(&stack, "sm_alerts_test").await;
        let url = guard.url.clone();

        let kafka = KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..KafkaConfig::default() };
        let config = QueryConfig {
            kafka: kafka.clone(),
            postgres: PostgresConfig { url: Secret(url), pool_size: 4, ..Default::default() },
            telemetry: Default::default(),
            artifacts: Default::default(),
            auth: common::auth(&stack),
            query: QuerySettings { assets_topic: unique("sm.assets.test"), ..QuerySettings::default() },
        };
        config.validate().unwrap();
        let pool = sm_storage::connect(&config.postgres).unwrap();
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
        // The alert feed follows these; they exist in any deployment (the agents create them).
        sm_kafka::ensure_topics(&kafka, &[(topics::ANOMALIES, false), (topics::DRIFT, false)]).await.unwrap();

        let server = common::Server::start(&config, &guard).await;
        Self { stack, pool, server, _schema: guard }
    }

    async fn channel(&self) -> Channel {
        self.server.channel().await
    }

    /// Writes alert events with the projector's own projection, in one transaction.
    async fn project(&self, events: &[Envelope<AlertEvent>]) {
        let mut client = self.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        sm_projector::alerts::AlertsProjection.write(&tx, events).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// Inserts `(at, value)` readings of `sensor` as the projector does, in one statement.
    async fn insert_readings(&self, asset: &str, sensor: &str, readings: &[(i64, f64)]) {
        let times: Vec<PgTimestamp> = readings.iter().map(|(at, _)| PgTimestamp(*at)).collect();
        let values: Vec<f64> = readings.iter().map(|(_, v)| *v).collect();
        let sequences: Vec<i64> = (0..readings.len() as i64).collect();
        let event_ids: Vec<String> = readings.iter().map(|_| sm_domain::EventId::new().to_string()).collect();
        self.pool
            .get()
            .await
            .unwrap()
            .execute(
                "INSERT INTO readings (tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
                                       quality_flags, backfill, event_id, recorded_at)
                 SELECT 'test', $1, $2, 'temperature', t, v, 'degC', q, '{}', false, e, t + interval '1 second'
                 FROM unnest($3::timestamptz[], $4::float8[], $5::int8[], $6::text[]) AS u(t, v, q, e)",
                &[&asset, &sensor, &times, &values, &sequences, &event_ids],
            )
            .await
            .unwrap();
    }

    /// Waits until gRPC health reports `sm.v1.AlertService` serving: the alert feed is
    /// assigned at the end of the topics, so everything published from now on is streamed.
    async fn wait_for_alert_feed(&self) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel().await);
        let started = Instant::now();
        loop {
            let request = tonic_health::pb::HealthCheckRequest { service: "sm.v1.AlertService".into() };
            if let Ok(response) = health.check(request).await
                && response.into_inner().status() == tonic_health::pb::health_check_response::ServingStatus::Serving
            {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "alert feed not live after 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

fn header(event_type: &str, asset: &str, occurred_at: i64) -> EnvelopeHeader {
    EnvelopeHeader::origin(event_type, "test".into(), asset.into(), Timestamp(occurred_at), "test")
}

fn anomaly_event(
    asset: &str,
    sensor: Option<&str>,
    severity: i32,
    backfill: bool,
    at: i64,
) -> Envelope<AnomalyDetected> {
    let scope = if sensor.is_some() { AnomalyDetected::SCOPE_SENSOR } else { AnomalyDetected::SCOPE_ASSET };
    let payload = AnomalyDetected {
        scope: scope.into(),
        sensor_id: sensor.map(Into::into),
        sensor_type: sensor.map(|_| "temperature".into()),
        detector: if sensor.is_some() { "robust_z" } else { "kmeans" }.into(),
        score: 5.0 + f64::from(severity),
        threshold: 5.0,
        severity,
        value: sensor.map(|_| 91.5),
        expected_low: sensor.map(|_| 18.0),
        expected_high: sensor.map(|_| 22.0),
        contributing: match sensor {
            Some(_) => vec![],
            None => vec![
                Contribution { sensor_id: format!("{asset}.vib").into(), share: 0.75, value: 9.5 },
                Contribution { sensor_id: format!("{asset}.temp").into(), share: 0.25, value: 71.0 },
            ],
        },
        triggered_by: vec![sm_domain::EventId::new().to_string()],
        window_start: sensor.is_none().then_some(Timestamp(at - 10 * SECOND)),
        backfill,
    };
    Envelope { header: header(AnomalyDetected::EVENT_TYPE, asset, at), payload }
}

fn drift_event(asset: &str, sensor: &str, backfill: bool, at: i64) -> Envelope<DriftDetected> {
    let payload = DriftDetected {
        sensor_id: sensor.into(),
        sensor_type: "temperature".into(),
        test: "ks_psi".into(),
        statistic: 0.4,
        p_value: Some(1e-9),
        psi: Some(0.31),
        reference_start: Timestamp(at - 2 * HOUR),
        reference_end: Timestamp(at - HOUR),
        reference_size: 300,
        current_start: Timestamp(at - HOUR),
        current_end: Timestamp(at),
        current_size: 200,
        backfill,
    };
    Envelope { header: header(DriftDetected::EVENT_TYPE, asset, at), payload }
}

fn as_alert<T>(event: Envelope<T>, variant: fn(T) -> AlertEvent) -> Envelope<AlertEvent> {
    Envelope { header: event.header, payload: variant(event.payload) }
}

/// The key the lists order by, descending.
fn position(occurred_at: &Option<prost_types::Timestamp>, event_id: &str) -> (i64, String) {
    (from_timestamp(occurred_at.as_ref().unwrap()).unwrap().as_micros(), event_id.to_owned())
}

/// Follows next_page_token to the end; returns every anomaly.
async fn all_anomalies(client: &mut AlertServiceClient<Channel>, first: v1::ListAnomaliesRequest) -> Vec<v1::Anomaly> {
    let (mut all, mut request) = (Vec::new(), first);
    loop {
        let page = client.list_anomalies(request.clone()).await.unwrap().into_inner();
        assert!(page.anomalies.len() <= request.page_size as usize);
        all.extend(page.anomalies);
        if page.next_page_token.is_empty() {
            return all;
        }
        request.page_token = page.next_page_token;
    }
}

/// Which projected events a case expects.
type Keep<'a> = Box<dyn Fn(&Envelope<AlertEvent>) -> bool + 'a>;

/// The reference answer: the projected events that pass `keep`, in list order, as messages.
fn expected(events: &[Envelope<AlertEvent>], keep: impl Fn(&Envelope<AlertEvent>) -> bool) -> Vec<v1::Anomaly> {
    let mut kept: Vec<v1::Anomaly> = events
        .iter()
        .filter(|e| keep(e))
        .filter_map(|e| match v1::Alert::from(e.clone()).kind {
            Some(v1::alert::Kind::Anomaly(a)) => Some(a),
            _ => None,
        })
        .collect();
    kept.sort_by_key(|a| std::cmp::Reverse(position(&a.occurred_at, &a.event_id)));
    kept
}

fn anomaly_of(event: &Envelope<AlertEvent>) -> &AnomalyDetected {
    match &event.payload {
        AlertEvent::Anomaly(a) => a,
        other => panic!("not an anomaly: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_pages_have_no_gap_or_repeat_and_honour_every_filter() {
    let fixture = Fixture::start().await;
    let (asset, other) = (unique("pump"), unique("other"));
    // 400 anomalies of one asset, three per second (ties on occurred_at on every page), of
    // both scopes, every severity, some backfill; and another asset's, interleaved in time.
    let mut events = Vec::new();
    for i in 0..400_i64 {
        let sensor = (i % 4 != 3).then(|| format!("{asset}.s{}", i % 3));
        let event = anomaly_event(&asset, sensor.as_deref(), 1 + (i % 5) as i32, i % 7 == 0, T0 + (i / 3) * SECOND);
        events.push(as_alert(event, AlertEvent::Anomaly));
    }
    for i in 0..50_i64 {
        let event = anomaly_event(&other, Some(&format!("{other}.s0")), 5, false, T0 + i * SECOND);
        events.push(as_alert(event, AlertEvent::Anomaly));
    }
    fixture.project(&events).await;
    let mut client = AlertServiceClient::new(fixture.channel().await);
    let of_asset = |e: &Envelope<AlertEvent>| e.header.asset_id.as_str() == asset;
    let at = |micros| Some(to_timestamp(Timestamp(micros)));
    let base = v1::ListAnomaliesRequest { asset_id: asset.clone(), page_size: 7, ..Default::default() };

    // Every field round-trips: the first page equals the events converted directly.
    let got = all_anomalies(&mut client, base.clone()).await;
    let want = expected(&events, |e| of_asset(e) && !anomaly_of(e).backfill);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "pages differ from the reference");
    let ids: HashSet<&str> = got.iter().map(|a| a.event_id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "an anomaly was returned twice");
    assert!(got.iter().any(|a| a.scope == "asset" && a.contributing.len() == 2 && a.window_start.is_some()));

    let cases: Vec<(&str, v1::ListAnomaliesRequest, Keep)> = vec![
        (
            "with backfill",
            v1::ListAnomaliesRequest { include_backfill: true, ..base.clone() },
            Box::new(|e: &Envelope<AlertEvent>| of_asset(e)),
        ),
        (
            "one sensor",
            v1::ListAnomaliesRequest { asset_id: String::new(), sensor_id: format!("{asset}.s1"), ..base.clone() },
            Box::new(|e: &Envelope<AlertEvent>| {
                let a = anomaly_of(e);
                a.sensor_id.as_ref().is_some_and(|s| s.as_str() == format!("{asset}.s1")) && !a.backfill
            }),
        ),
        (
            "severity 4 and up",
            v1::ListAnomaliesRequest { min_severity: 4, ..base.clone() },
            Box::new(|e: &Envelope<AlertEvent>| of_asset(e) && anomaly_of(e).severity >= 4 && !anomaly_of(e).backfill),
        ),
        (
            "asset scope",
            v1::ListAnomaliesRequest { scope: "asset".into(), page_size: 5, ..base.clone() },
            Box::new(|e: &Envelope<AlertEvent>| {
                of_asset(e) && anomaly_of(e).scope == "asset" && !anomaly_of(e).backfill
            }),
        ),
        (
            "time range [from, to)",
            v1::ListAnomaliesRequest { from: at(T0 + 10 * SECOND), to: at(T0 + 40 * SECOND), ..base.clone() },
            Box::new(|e: &Envelope<AlertEvent>| {
                let t = e.header.occurred_at.as_micros();
                of_asset(e) && (T0 + 10 * SECOND..T0 + 40 * SECOND).contains(&t) && !anomaly_of(e).backfill
            }),
        ),
        (
            "every asset, severity 5, from",
            v1::ListAnomaliesRequest {
                asset_id: String::new(),
                min_severity: 5,
                from: at(T0),
                page_size: 13,
                ..base.clone()
            },
            Box::new(|e: &Envelope<AlertEvent>| anomaly_of(e).severity == 5 && !anomaly_of(e).backfill),
        ),
    ];
    for (case, request, keep) in cases {
        let got = all_anomalies(&mut client, request).await;
        let want = expected(&events, keep);
        assert!(!want.is_empty(), "{case}: empty reference");
        assert_eq!(got.len(), want.len(), "{case}: count");
        assert!(got == want, "{case}: pages differ from the reference");
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_paging_neither_skips_nor_repeats_while_anomalies_arrive() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let sensor = format!("{asset}.t");
    let mut events: Vec<Envelope<AlertEvent>> = (0..200)
        .map(|i| as_alert(anomaly_event(&asset, Some(&sensor), 2, false, T0 + (i / 2) * SECOND), AlertEvent::Anomaly))
        .collect();
    fixture.project(&events).await;

    let mut client = AlertServiceClient::new(fixture.channel().await);
    let mut request = v1::ListAnomaliesRequest { asset_id: asset.clone(), page_size: 20, ..Default::default() };
    let mut seen = Vec::new();
    for page_number in 0.. {
        let page = client.list_anomalies(request.clone()).await.unwrap().into_inner();
        seen.extend(page.anomalies);
        if page_number == 3 {
            // Newer than everything (sorts before the cursor: never in this paging), and
            // back-dated, older than everything (after the cursor: must show up).
            let newer: Vec<_> = (0..10)
                .map(|i| {
                    as_alert(
                        anomaly_event(&asset, Some(&sensor), 2, false, T0 + (200 + i) * SECOND),
                        AlertEvent::Anomaly,
                    )
                })
                .collect();
            let older: Vec<_> = (0..10)
                .map(|i| {
                    as_alert(anomaly_event(&asset, Some(&sensor), 2, false, T0 - (i + 1) * SECOND), AlertEvent::Anomaly)
                })
                .collect();
            fixture.project(&newer).await;
            fixture.project(&older).await;
            events.extend(older);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let want = expected(&events, |_| true);
    assert_eq!(seen.len(), want.len(), "anomalies missing or extra");
    assert!(seen == want, "paging while inserting differs from the reference");
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_pages_in_order_with_filters() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let mut events = Vec::new();
    for i in 0..60_i64 {
        let sensor = format!("{asset}.s{}", i % 2);
        events.push(as_alert(drift_event(&asset, &sensor, i % 5 == 0, T0 + (i / 2) * MINUTE), AlertEvent::Drift));
    }
    events.push(as_alert(drift_event(&unique("other"), "x.s0", false, T0), AlertEvent::Drift));
    fixture.project(&events).await;
    let mut client = AlertServiceClient::new(fixture.channel().await);

    for (case, request, keep) in [
        (
            "asset",
            v1::ListDriftRequest { asset_id: asset.clone(), page_size: 4, ..Default::default() },
            Box::new(|d: &DriftDetected, a: &str| a == asset && !d.backfill)
                as Box<dyn Fn(&DriftDetected, &str) -> bool>,
        ),
        (
            "sensor with backfill",
            v1::ListDriftRequest {
                sensor_id: format!("{asset}.s1"),
                include_backfill: true,
                page_size: 6,
                ..Default::default()
            },
            Box::new(|d: &DriftDetected, _: &str| d.sensor_id.as_str() == format!("{asset}.s1")),
        ),
    ] {
        let (mut got, mut request) = (Vec::new(), request);
        loop {
            let page = client.list_drift(request.clone()).await.unwrap().into_inner();
            got.extend(page.drift);
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        let mut want: Vec<v1::Drift> = events
            .iter()
            .filter_map(|e| match &e.payload {
                AlertEvent::Drift(d) if keep(d, e.header.asset_id.as_str()) => {
                    Some(sm_proto::convert::drift((&e.header).into(), d.clone()))
                }
                _ => None,
            })
            .collect();
        want.sort_by_key(|d| std::cmp::Reverse(position(&d.occurred_at, &d.event_id)));
        assert!(!want.is_empty());
        assert!(got == want, "{case}: pages differ from the reference");
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_alert_requests_are_refused_with_the_field_named() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let events: Vec<_> =
        (0..5).map(|i| as_alert(anomaly_event(&asset, None, 3, false, T0 + i * SECOND), AlertEvent::Anomaly)).collect();
    fixture.project(&events).await;
    let mut client = AlertServiceClient::new(fixture.channel().await);
    let base = v1::ListAnomaliesRequest { asset_id: asset.clone(), page_size: 2, ..Default::default() };
    let token = client.list_anomalies(base.clone()).await.unwrap().into_inner().next_page_token;
    assert!(!token.is_empty());
    let at = |micros| Some(to_timestamp(Timestamp(micros)));
    let cases = [
        ("scope", v1::ListAnomaliesRequest { scope: "sensors".into(), ..base.clone() }, "scope"),
        ("severity", v1::ListAnomaliesRequest { min_severity: 6, ..base.clone() }, "min_severity"),
        ("range", v1::ListAnomaliesRequest { from: at(T0), to: at(T0), ..base.clone() }, "to:"),
        ("page size", v1::ListAnomaliesRequest { page_size: 1001, ..base.clone() }, "page_size"),
        (
            "token with other filters",
            v1::ListAnomaliesRequest { min_severity: 2, page_token: token.clone(), ..base.clone() },
            "other filters",
        ),
    ];
    for (case, request, mentions) in cases {
        let status = client.list_anomalies(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(status.message().contains(mentions), "{case}: {}", status.message());
    }
    let status = client
        .list_drift(v1::ListDriftRequest { asset_id: asset.clone(), page_token: token, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("issued by ListAnomalies"), "{}", status.message());
    let status =
        client.stream_alerts(v1::StreamAlertsRequest { min_severity: -1, ..Default::default() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    fixture.stop().await;
}

/// `n` values of N(mean, sd), seeded so the test is deterministic (Box–Muller).
fn normal(rng: &mut StdRng, n: usize, mean: f64, sd: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
            mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

/// `values` spread evenly over `[start, start + span)`.
fn spread(values: &[f64], start: i64, span: i64) -> Vec<(i64, f64)> {
    let step = span / values.len() as i64;
    values.iter().enumerate().map(|(i, v)| (start + i as i64 * step, *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_drift_agrees_with_the_analytics_and_flags_a_shift() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let (steady, shifted) = (format!("{asset}.steady"), format!("{asset}.shifted"));
    let mut rng = StdRng::seed_from_u64(7);
    // Reference: the 24 hours before the current hour (the default when unset).
    let current_from = T0 + 24 * HOUR;
    let reference = normal(&mut rng, 1500, 20.0, 1.0);
    let same = normal(&mut rng, 600, 20.0, 1.0);
    let moved = normal(&mut rng, 600, 21.5, 1.0);
    for (sensor, current) in [(&steady, &same), (&shifted, &moved)] {
        fixture.insert_readings(&asset, sensor, &spread(&reference, T0, 24 * HOUR)).await;
        fixture.insert_readings(&asset, sensor, &spread(current, current_from, HOUR)).await;
    }
    let mut client = DriftServiceClient::new(fixture.channel().await);
    let request = |sensor: &str| v1::CheckDriftRequest {
        sensor_id: sensor.into(),
        current_from: Some(to_timestamp(Timestamp(current_from))),
        current_to: Some(to_timestamp(Timestamp(current_from + HOUR))),
        ..Default::default()
    };

    for (sensor, current, drifted) in [(&steady, &same, false), (&shifted, &moved, true)] {
        let response = client.check_drift(request(sensor)).await.unwrap().into_inner();
        let direct = sm_analytics::drift::check(&reference, current, &DriftConfig::default());
        assert_eq!(response.drifted, drifted, "{sensor}: {response:?}");
        assert_eq!(response.drifted, direct.drifted);
        assert_eq!(response.p_value, direct.ks.p_value, "the p-value is the analytics' own");
        assert_eq!(response.ks_statistic, direct.ks.statistic);
        assert_eq!(response.psi, direct.psi);
        assert_eq!((response.reference_size, response.current_size), (1500, 600));
        assert_eq!((response.reference_readings, response.current_readings), (1500, 600));
        assert_eq!(response.reference_from, Some(to_timestamp(Timestamp(T0))), "24 h before current_from");
        assert_eq!(response.reference_to, Some(to_timestamp(Timestamp(current_from))));
    }

    // More PSI bins change PSI, not KS.
    let response = client
        .check_drift(v1::CheckDriftRequest { psi_bins: Some(20), ..request(&shifted) })
        .await
        .unwrap()
        .into_inner();
    let twenty = DriftConfig { psi_bins: 20, ..DriftConfig::default() };
    assert_eq!(response.psi, sm_analytics::drift::check(&reference, &moved, &twenty).psi);

    // An empty current window of a known sensor: fix the window. An unknown sensor: not found.
    let empty = v1::CheckDriftRequest {
        current_from: Some(to_timestamp(Timestamp(current_from + 5 * HOUR))),
        current_to: Some(to_timestamp(Timestamp(current_from + 6 * HOUR))),
        ..request(&steady)
    };
    let status = client.check_drift(empty).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("current window [2025-11-25T21:00:00Z"), "{}", status.message());
    let status = client.check_drift(request(&unique("ghost"))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client.check_drift(v1::CheckDriftRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_above_the_cap_are_sampled_evenly_and_deterministically() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let sensor = format!("{asset}.t");
    // Values 0..35 at increasing times: a value is its rank - 1.
    let readings: Vec<(i64, f64)> = (0..35).map(|i| (T0 + i * SECOND, i as f64)).collect();
    fixture.insert_readings(&asset, &sensor, &readings).await;
    let client = fixture.pool.get().await.unwrap();
    let sample = |cap: i64| {
        let client = &client;
        let sensor = sensor.clone();
        async move {
            let rows = client
                .query(sm_query::drift::WINDOW_VALUES, &[&sensor, &PgTimestamp(T0), &PgTimestamp(T0 + HOUR), &cap])
                .await
                .unwrap();
            let total: i64 = rows[0].get(1);
            (rows.iter().map(|r| r.get::<_, f64>(0)).collect::<Vec<f64>>(), total)
        }
    };
    let (values, total) = sample(10).await;
    assert_eq!(total, 35);
    // Rank i is kept when floor(10 i / 35) steps up: ranks 4, 7, 11, 14, 18, 21, 25, 28, 32, 35.
    assert_eq!(values, [3.0, 6.0, 10.0, 13.0, 17.0, 20.0, 24.0, 27.0, 31.0, 34.0]);
    assert_eq!(sample(10).await.0, values, "the same data gives the same sample");
    assert_eq!(sample(35).await.0.len(), 35, "at the cap: every reading");
    assert_eq!(sample(1000).await.0.len(), 35);
    drop(client);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_readings_flags_an_injected_spike_as_the_agent_would() {
    let fixture = Fixture::start().await;
    let asset = unique("pump");
    let sensor = format!("{asset}.t");
    let mut rng = StdRng::seed_from_u64(11);
    let history = normal(&mut rng, 1500, 60.0, 0.5);
    let history_at = spread(&history, T0, 1500 * SECOND);
    fixture.insert_readings(&asset, &sensor, &history_at).await;
    let first_at = T0 + 1500 * SECOND;
    let mut batch = normal(&mut rng, 30, 60.0, 0.5);
    batch[12] = 75.0; // a 30 σ spike
    let values: Vec<v1::ScoredValue> = batch
        .iter()
        .enumerate()
        .map(|(i, v)| v1::ScoredValue { at: Some(to_timestamp(Timestamp(first_at + i as i64 * SECOND))), value: *v })
        .collect();
    let mut client = AnomalyServiceClient::new(fixture.channel().await);
    let request = v1::ScoreReadingsRequest { sensor_id: sensor.clone(), values: values.clone(), warmup_from: None };
    let response = client.score_readings(request.clone()).await.unwrap().into_inner();

    // The latest readings before the first value: the detector's window, at least 500.
    let warmup = SensorDetectorConfig::default().window.max(sm_query::anomaly::WARMUP_READINGS);
    assert_eq!(response.warmup_size as usize, warmup);
    assert_eq!(response.scores.len(), 30);
    let flagged: Vec<usize> = (0..30).filter(|i| response.scores[*i].exceeded).collect();
    assert_eq!(flagged, [12], "only the spike: {:?}", response.scores);
    let spike = &response.scores[12];
    assert_eq!((spike.severity, spike.value, spike.at), (5, 75.0, values[12].at));
    assert!(spike.expected_low < 60.0 && spike.expected_high > 60.0 && spike.expected_high < 75.0, "{spike:?}");

    // The same detector, warmed on the same readings, gives the very same scores.
    let mut detector = SensorDetector::new(SensorDetectorConfig::default());
    for value in &history[history.len() - warmup..] {
        detector.observe(*value);
    }
    for (got, value) in response.scores.iter().zip(&batch) {
        let want = detector.observe(*value);
        assert_eq!((got.score, got.threshold, got.exceeded), (want.score, want.threshold, want.exceeded));
        assert_eq!(got.detector, want.detector.name());
    }

    // warmup_from: every reading since then.
    let since = v1::ScoreReadingsRequest { warmup_from: Some(to_timestamp(Timestamp(T0 + 100 * SECOND))), ..request };
    assert_eq!(client.score_readings(since).await.unwrap().into_inner().warmup_size, 1400);

    let too_many =
        v1::ScoreReadingsRequest { sensor_id: sensor.clone(), values: vec![values[0]; 10_001], warmup_from: None };
    let status = client.score_readings(too_many).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("10000"), "{}", status.message());
    let ghost =
        v1::ScoreReadingsRequest { sensor_id: unique("ghost"), values: values[..1].to_vec(), warmup_from: None };
    assert_eq!(client.score_readings(ghost).await.unwrap_err().code(), Code::NotFound);
    fixture.stop().await;
}

/// Publishes `events` to `topic`, keyed by asset as the agents do, and waits for the acks.
async fn publish<T: DomainEvent>(bootstrap: &str, topic: &'static str, events: Vec<Envelope<T>>) {
    let codec = Codec::embedded().unwrap();
    let records: Vec<Record> = events
        .iter()
        .map(|e| Record {
            key: e.header.asset_id.as_str().as_bytes().to_vec(),
            value: codec.encode(e).unwrap(),
            headers: vec![],
        })
        .collect();
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || sm_testkit::produce(&bootstrap, topic, records)).await.unwrap();
}

/// The next alert of `stream`, within 30 s.
async fn next(stream: &mut tonic::Streaming<v1::Alert>) -> v1::Alert {
    let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
    next.expect("an alert within 30 s").expect("stream open").expect("no error")
}

fn kind_of(alert: &v1::Alert) -> (&'static str, String) {
    match alert.kind.as_ref().unwrap() {
        v1::alert::Kind::Anomaly(a) => ("anomaly", a.event_id.clone()),
        v1::alert::Kind::Drift(d) => ("drift", d.event_id.clone()),
        v1::alert::Kind::SensorStale(s) => ("sensor_stale", s.event_id.clone()),
        v1::alert::Kind::RetrainRequest(r) => ("retrain_request", r.event_id.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_alerts_delivers_new_live_alerts_that_match_and_nothing_else() {
    let fixture = Fixture::start().await;
    fixture.wait_for_alert_feed().await;
    let (asset, other) = (unique("pump"), unique("other"));
    let sensor = format!("{asset}.t");
    let now = Timestamp::now().as_micros();
    let mut client = AlertServiceClient::new(fixture.channel().await);
    let mut severe = client
        .stream_alerts(v1::StreamAlertsRequest { asset_id: asset.clone(), min_severity: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut stale_too = client
        .stream_alerts(v1::StreamAlertsRequest { sensor_id: sensor.clone(), include_stale: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();

    // Same key (asset), so one partition: what is filtered out was published before what must
    // arrive, and would have arrived first.
    let mild = anomaly_event(&asset, Some(&sensor), 2, false, now);
    let backfill = anomaly_event(&asset, Some(&sensor), 5, true, now);
    let elsewhere = anomaly_event(&other, Some(&format!("{other}.t")), 5, false, now);
    let stale = Envelope {
        header: header(SensorStale::EVENT_TYPE, &asset, now),
        payload: SensorStale {
            sensor_id: sensor.as_str().into(),
            sensor_type: "temperature".into(),
            last_reading_at: Timestamp(now - 60 * SECOND),
            silent_for_ms: 60_000,
            expected_interval_ms: 1000,
            stale_after_ms: 10_000,
        },
    };
    let wanted = anomaly_event(&asset, Some(&sensor), 4, false, now);
    let old_drift = drift_event(&asset, &sensor, true, now);
    let drift = drift_event(&asset, &sensor, false, now);
    let bootstrap = fixture.stack.kafka.clone();
    publish(&bootstrap, topics::ANOMALIES, vec![elsewhere, mild.clone(), backfill]).await;
    publish(&bootstrap, topics::ANOMALIES, vec![stale.clone()]).await;
    publish(&bootstrap, topics::ANOMALIES, vec![wanted.clone()]).await;
    publish(&bootstrap, topics::DRIFT, vec![old_drift, drift.clone()]).await;

    // The anomaly and the drift come from two topics: either may come first.
    let mut got: Vec<(&str, String)> = vec![kind_of(&next(&mut severe).await), kind_of(&next(&mut severe).await)];
    got.sort();
    assert_eq!(
        got,
        [("anomaly", wanted.header.event_id.to_string()), ("drift", drift.header.event_id.to_string())],
        "the severe live anomaly and the live drift, nothing filtered out before them"
    );

    // The sensor stream also wants stale sensors and every severity, but never backfill.
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(kind_of(&next(&mut stale_too).await));
    }
    got.sort();
    let mut want = vec![
        ("anomaly", mild.header.event_id.to_string()),
        ("anomaly", wanted.header.event_id.to_string()),
        ("drift", drift.header.event_id.to_string()),
        ("sensor_stale", stale.header.event_id.to_string()),
    ];
    want.sort();
    assert_eq!(got, want);

    // Nothing else arrives: not the other asset's, not backfill, not a repeat.
    for stream in [&mut severe, &mut stale_too] {
        let extra = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
        assert!(extra.is_err(), "unexpected alert: {extra:?}");
    }

    // Shutting down ends open streams (the server would otherwise wait for them forever).
    let ending = tokio::spawn(async move { severe.next().await });
    fixture.stop().await;
    let last = tokio::time::timeout(Duration::from_secs(5), ending).await.unwrap().unwrap();
    match last {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        None => {}
        Some(Ok(alert)) => panic!("unexpected alert at shutdown: {alert:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_services_report_health_and_appear_in_reflection() {
    let fixture = Fixture::start().await;
    fixture.wait_for_alert_feed().await;
    common::assert_served_and_listed(
        fixture.channel().await,
        &["sm.v1.AlertService", "sm.v1.DriftService", "sm.v1.AnomalyService"],
        &["sm.v1.AlertService", "sm.v1.DriftService", "sm.v1.AnomalyService", "sm.v1.ReadingService"],
    )
    .await;
    fixture.stop().await;
}
