//! `/readyz` of the ingestion binary means "making progress": Redis going away (cut by a
//! proxy in front of the stack's server) turns it 503 within seconds, naming Redis, and
//! recovery turns it 200 again.

use sm_testkit::process::{Service, smctl, wait_readyz};
use sm_testkit::proxy::FaultProxy;
use sm_testkit::stack_from_env_file;
use std::net::ToSocketAddrs;
use std::time::Duration;

#[test]
fn readyz_fails_while_redis_is_down_and_recovers() {
    let stack = stack_from_env_file();
    smctl(&stack, &["topics", "create"]);
    let rest = stack.redis_url.strip_prefix("redis://").expect("a redis:// URL");
    let (host_port, db) = rest.split_once('/').map_or((rest, String::new()), |(h, d)| (h, format!("/{d}")));
    let upstream = host_port.to_socket_addrs().unwrap().next().unwrap();
    let proxy = FaultProxy::start(upstream);
    let ingestion = Service::start("ingestion", &stack, &[("SM_REDIS__URL", format!("redis://{}{db}", proxy.addr))]);
    let port = ingestion.http_port;
    wait_readyz(port, "HTTP/1.1 200", Duration::from_secs(30));

    proxy.cut();
    let (down, took) = wait_readyz(port, "HTTP/1.1 503", Duration::from_secs(10));
    assert!(down.contains("redis: unavailable"), "the reason names Redis: {down}");
    eprintln!("ingestion /readyz 503 {took:?} after Redis went away");

    proxy.restore();
    let (up, took) = wait_readyz(port, "HTTP/1.1 200", Duration::from_secs(30));
    assert!(up.contains("redis: ok"), "{up}");
    eprintln!("ingestion /readyz 200 {took:?} after Redis came back");
}
