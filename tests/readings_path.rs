//! The readings path end to end, on the real stack, with the service binaries as separate
//! processes: `smctl simulate` sends 100,000 readings (1 % invalid, of every reason, and 1 %
//! duplicates); the ingestion agent and the projector are killed with SIGKILL mid-run and
//! restarted; PostgreSQL must end with exactly the valid unique readings, the dead-letter
//! topic with every invalid one under the right reason, and `ListReadings` must page through
//! them with no gap and no repeat. A late reading must not change `Latest`.
//!
//! The binaries are taken from the target directory: build them first (`cargo build --bins`;
//! `make test` does). The run has its own tenant and asset ids, so other data on the shared
//! topics and tables does not count.

use sm_domain::{AssetId, Codec, Envelope, RejectedReading, SensorReading, TenantId, Timestamp, topics};
use sm_proto::v1::{LatestRequest, ListReadingsRequest};
use sm_system_tests::{end_offsets, projected_readings, read_after};
use sm_testkit::process::{Service, binary, free_port, smctl};
use sm_testkit::{Record, produce, stack_from_env_file, unique};
use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const READINGS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_path_end_to_end_across_sigkill() {
    let stack = stack_from_env_file();
    smctl(&stack, &["topics", "create"]);
    let dead_letters_from = end_offsets(&stack.kafka, topics::READINGS_REJECTED);
    let grpc_port = free_port();
    let mut ingestion = Service::start("ingestion", &stack, &[]);
    let mut projector = Service::start("projector", &stack, &[]);
    // As it is deployed: logged in as sm_query, which owns nothing (it would not be ready
    // as the owner, which row-level security does not apply to).
    let mut query = Service::start(
        "query",
        &stack,
        &[
            ("SM_QUERY__GRPC_ADDR", format!("127.0.0.1:{grpc_port}")),
            ("SM_POSTGRES__URL", stack.query_postgres_url.clone()),
        ],
    );

    let tenant = unique("e2e");
    let summary_path = std::env::temp_dir().join(format!("{tenant}.json"));
    let mut simulate = Command::new(binary("smctl"))
        .envs(&stack.vars)
        .args(["simulate", "--count", &READINGS.to_string(), "--rate", "8000", "--seed", "7", "--quiet"])
        .args(["--tenant", &tenant, "--fleet-prefix", &tenant, "--summary-json", summary_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Kill each agent mid-stream and bring it back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ingestion.kill_9();
    ingestion.spawn();
    tokio::time::sleep(Duration::from_secs(3)).await;
    projector.kill_9();
    projector.spawn();
    assert!(simulate.wait().unwrap().success(), "simulate failed");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let valid = summary["valid"].as_i64().unwrap();
    let invalid: BTreeMap<String, u64> = serde_json::from_value(summary["invalid_by_reason"].clone()).unwrap();
    assert_eq!(summary["sent"].as_u64().unwrap(), READINGS);
    assert!(summary["duplicates"].as_u64().unwrap() >= READINGS / 200, "about 1 % duplicates");
    assert!(invalid.values().all(|n| *n > 0), "every reason exercised: {invalid:?}");

    // PostgreSQL ends with exactly the valid unique readings.
    let (client, connection) = tokio_postgres::connect(&stack.postgres_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let projected = projected_readings(&stack.postgres_url, &tenant, valid, Duration::from_secs(240)).await;
    assert_eq!(projected, valid, "exactly the valid unique readings, none lost, none doubled");

    // Every invalid reading is dead-lettered with its reason.
    let expected_dead: u64 = invalid.values().sum();
    let kafka = stack.kafka.clone();
    let letters = tokio::task::spawn_blocking(move || {
        read_after(
            &kafka,
            topics::READINGS_REJECTED,
            &dead_letters_from,
            expected_dead as usize,
            Duration::from_secs(1),
            |b| Some(b.to_vec()),
        )
    })
    .await
    .unwrap();
    let codec = Codec::embedded().unwrap();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for value in &letters {
        let letter: Envelope<RejectedReading> = codec.decode(value, None).unwrap();
        // This run's records are keyed by its own assets (`<tenant>-pump-0001`, ...).
        let key = String::from_utf8_lossy(letter.payload.original_key.as_deref().unwrap_or_default()).into_owned();
        if key.starts_with(&tenant) {
            *reasons.entry(letter.payload.reason_code).or_default() += 1;
        }
    }
    let invalid_nonzero: BTreeMap<String, u64> = invalid.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(reasons, invalid_nonzero, "dead letters by reason");

    // ListReadings pages through every reading of each asset: no gap, no repeat.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let credentials = sm_proto::auth::Credentials::bearer(&stack.api_key()).unwrap();
    let mut readings = sm_proto::ReadingServiceClient::new(credentials.on(channel));
    let assets: Vec<String> = client
        .query("SELECT DISTINCT asset_id FROM readings WHERE tenant_id = $1", &[&tenant])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let start = summary["started_at_micros"].as_i64().unwrap() - 1_000_000;
    let end = summary["finished_at_micros"].as_i64().unwrap() + 120_000_000;
    let mut paged_total = 0;
    for asset in &assets {
        let mut seen = HashSet::new();
        let mut token = String::new();
        let mut previous: Option<(i64, String, i64)> = None;
        loop {
            let page = readings
                .list_readings(ListReadingsRequest {
                    asset_id: asset.clone(),
                    start: Some(sm_proto::convert::to_timestamp(Timestamp(start))),
                    end: Some(sm_proto::convert::to_timestamp(Timestamp(end))),
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            for r in &page.readings {
                let at = sm_proto::convert::from_timestamp(r.occurred_at.as_ref().unwrap()).unwrap().as_micros();
                let key = (at, r.sensor_id.clone(), r.sequence);
                if let Some(p) = &previous {
                    assert!(key < *p, "newest first, strictly: {key:?} after {p:?}");
                }
                assert!(seen.insert(key.clone()), "repeated reading {key:?}");
                previous = Some(key);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let in_db: i64 = client
            .query_one(
                "SELECT count(*) FROM readings WHERE asset_id = $1
                 AND occurred_at >= timestamptz 'epoch' + $2::bigint * interval '1 microsecond'
                 AND occurred_at < timestamptz 'epoch' + $3::bigint * interval '1 microsecond'",
                &[asset, &start, &end],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen.len() as i64, in_db, "paging {asset} skipped readings");
        paged_total += seen.len() as i64;
    }
    assert!(paged_total >= valid, "every reading of the run was paged");

    // A late reading (older than the latest) is stored but does not change Latest.
    let row = client
        .query_one(
            "SELECT asset_id, sensor_id, value, unit, (extract(epoch from occurred_at) * 1000000)::bigint
             FROM latest_readings WHERE tenant_id = $1 ORDER BY sensor_id LIMIT 1",
            &[&tenant],
        )
        .await
        .unwrap();
    let (asset, sensor, latest_value, unit, latest_at): (String, String, f64, String, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let late = Envelope::origin(
        TenantId(tenant.clone()),
        AssetId(asset.clone()),
        Timestamp(latest_at - 120_000_000),
        "e2e",
        SensorReading {
            sensor_id: sensor.clone().into(),
            value: latest_value + 1.0,
            unit,
            sequence: 9_999_999,
            backfill: false,
        },
    );
    produce(
        &stack.kafka,
        topics::READINGS_RAW,
        [Record { key: asset.clone().into_bytes(), value: codec.encode(&late).unwrap(), headers: vec![] }],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored: i64 = client
            .query_one("SELECT count(*) FROM readings WHERE sensor_id = $1 AND sequence = 9999999", &[&sensor])
            .await
            .unwrap()
            .get(0);
        if stored == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "late reading was not projected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let latest = readings.latest(LatestRequest { asset_id: asset.clone() }).await.unwrap().into_inner();
    let current = latest.readings.iter().find(|r| r.sensor_id == sensor).expect("sensor in Latest");
    assert_eq!(
        sm_proto::convert::from_timestamp(current.occurred_at.as_ref().unwrap()).unwrap().as_micros(),
        latest_at
    );
    assert_eq!(current.value, latest_value, "a late reading must not replace the latest");

    eprintln!("sent {READINGS}, projected {projected}, dead-lettered {reasons:?}, paged {paged_total}");
    for service in [&mut query, &mut projector, &mut ingestion] {
        service.stop();
    }
}
