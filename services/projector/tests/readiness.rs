//! `/readyz` of the projector binary means "making progress": PostgreSQL going away (cut by
//! a proxy in front of the stack's server) turns it 503 within seconds, naming PostgreSQL,
//! and recovery turns it 200 again; readings sent during the outage are all projected once
//! it is back.

use sm_domain::{AssetId, Codec, Envelope, TenantId, Timestamp, ValidatedReading, topics};
use sm_testkit::process::{Service, smctl, wait_readyz, wait_unready_because};
use sm_testkit::proxy::FaultProxy;
use sm_testkit::{Record, produce, stack_from_env_file, unique};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

/// `postgres://user:pw@host:port/db` with `host:port` replaced by `addr`.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, std::net::SocketAddr) {
    let at = url.find('@').expect("credentials in the stack's URL") + 1;
    let slash = at + url[at..].find('/').expect("a database in the stack's URL");
    let upstream = url[at..slash].to_socket_addrs().unwrap().next().unwrap();
    (format!("{}{addr}{}", &url[..at], &url[slash..]), upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_postgres_is_down_and_recovers() {
    let stack = stack_from_env_file();
    smctl(&stack, &["topics", "create"]);
    let (_, upstream) = through(&stack.postgres_url, "127.0.0.1:1".parse().unwrap());
    let proxy = FaultProxy::start(upstream);
    let (url, _) = through(&stack.postgres_url, proxy.addr);
    let projector = Service::start(
        "projector",
        &stack,
        &[("SM_POSTGRES__URL", url), ("SM_KAFKA__STATISTICS_INTERVAL_MS", "1000".into())],
    );
    let port = projector.http_port;
    wait_readyz(port, "HTTP/1.1 200", Duration::from_secs(30));

    proxy.cut();
    let (down, took) = wait_readyz(port, "HTTP/1.1 503", Duration::from_secs(10));
    assert!(down.to_lowercase().contains("postgres"), "the reason names PostgreSQL: {down}");
    eprintln!("projector /readyz 503 {took:?} after PostgreSQL went away");
    // The probe says so too, also while nothing is being written.
    wait_unready_because(port, "\npostgres: unavailable: postgres", Duration::from_secs(10));

    // Readings arrive while the database is unreachable.
    let tenant = unique("readiness");
    let codec = Codec::embedded().unwrap();
    let asset = format!("{tenant}-pump");
    let base = Timestamp::now().as_micros();
    let records: Vec<Record> = (0..50)
        .map(|i| {
            let event = Envelope::origin(
                TenantId(tenant.clone()),
                AssetId(asset.clone()),
                Timestamp(base + i * 1_000),
                "test",
                ValidatedReading {
                    sensor_id: format!("{asset}.temp").into(),
                    sensor_type: "temperature".into(),
                    value: i as f64,
                    unit: "degC".into(),
                    sequence: i,
                    quality_flags: vec![],
                    backfill: false,
                },
            );
            Record { key: asset.clone().into_bytes(), value: codec.encode(&event).unwrap(), headers: vec![] }
        })
        .collect();
    produce(&stack.kafka, topics::READINGS_VALIDATED, records);
    // The readings projection cannot commit them: it says so (its check, not only the probe).
    wait_unready_because(port, "projector-readings: unavailable", Duration::from_secs(15));

    proxy.restore();
    let (_, took) = wait_readyz(port, "HTTP/1.1 200", Duration::from_secs(30));
    eprintln!("projector /readyz 200 {took:?} after PostgreSQL came back");

    let (client, connection) = tokio_postgres::connect(&stack.postgres_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 =
            client.query_one("SELECT count(*) FROM readings WHERE tenant_id = $1", &[&tenant]).await.unwrap().get(0);
        if n == 50 {
            break;
        }
        assert!(n < 50, "readings doubled: {n}");
        assert!(Instant::now() < deadline, "only {n} of 50 readings projected after recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
