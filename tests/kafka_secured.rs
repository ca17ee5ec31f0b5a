//! The readings path over Kafka's secured listener: the ingestion agent and the projector
//! connect with SASL_SSL (SCRAM-SHA-512, the stack's CA) as their own principals of
//! `deploy/kafka/access`, whose ACLs allow only their topics, groups and transactional ids.
//! `smctl`, as its own principal too, creates the topics and `smctl simulate` sends 20,000
//! readings (1 % invalid, 1 % duplicates) as a gateway would;
//! ingestion is killed with SIGKILL mid-run and restarted; PostgreSQL must end with exactly the
//! valid unique readings.
//!
//! Its own test binary: it runs the production topics and groups, as `readings_path` does, and
//! test binaries run one at a time.

use sm_system_tests::projected_readings;
use sm_testkit::process::{Service, binary};
use sm_testkit::{stack_from_env_file, unique};
use std::process::{Command, Stdio};
use std::time::Duration;

const READINGS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_and_projector_run_over_sasl_ssl_exactly_once() {
    let stack = stack_from_env_file();
    let secured = |principal: &str| {
        let mut env = stack.kafka_as(principal);
        env.push(("SM_KAFKA__INSTANCE_ID", "secured".into()));
        env
    };
    let topics = Command::new(binary("smctl"))
        .envs(&stack.vars)
        .envs(secured("smctl"))
        .args(["topics", "create"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(topics.success(), "smctl topics create over SASL_SSL failed: {topics}");
    let mut ingestion = Service::start("ingestion", &stack, &secured("ingestion"));
    let _projector = Service::start("projector", &stack, &secured("projector"));

    let tenant = unique("sasl");
    let summary_path = std::env::temp_dir().join(format!("{tenant}.json"));
    let mut simulate = Command::new(binary("smctl"))
        .envs(&stack.vars)
        .envs(secured("smctl"))
        .args(["simulate", "--count", &READINGS.to_string(), "--rate", "5000", "--seed", "11", "--quiet"])
        .args(["--tenant", &tenant, "--fleet-prefix", &tenant, "--summary-json", summary_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ingestion.kill_9();
    ingestion.spawn();
    assert!(simulate.wait().unwrap().success(), "simulate failed");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let valid = summary["valid"].as_i64().unwrap();
    assert_eq!(summary["sent"].as_u64().unwrap(), READINGS);
    assert!(valid < READINGS as i64, "some readings are invalid or duplicates");

    let projected = projected_readings(&stack.postgres_url, &tenant, valid, Duration::from_secs(180)).await;
    assert_eq!(projected, valid, "exactly the valid unique readings over SASL_SSL, none lost, none doubled");
}

/// A wrong SCRAM password, or a CA that does not sign the broker's certificate, is a clear
/// error at start naming what to check, not a request timeout 30 s later (librdkafka reports
/// both only on a queue the admin client never polls).
#[test]
fn a_wrong_password_or_ca_is_refused_at_start_with_what_to_check() {
    let stack = stack_from_env_file();
    let other_ca = std::env::temp_dir().join(format!("{}-ca.pem", unique("other")));
    let ca = rcgen::generate_simple_self_signed(vec!["elsewhere".to_owned()]).unwrap();
    std::fs::write(&other_ca, ca.cert.pem()).unwrap();
    for (setting, value, named) in [
        ("SM_KAFKA__SASL_PASSWORD", "not-the-password", ["SASL authentication error", "SM_KAFKA__SASL_PASSWORD"]),
        (
            "SM_KAFKA__SSL_CA_LOCATION",
            other_ca.to_str().unwrap(),
            ["SSL handshake failed", "SM_KAFKA__SSL_CA_LOCATION"],
        ),
    ] {
        let mut env = stack.kafka_as("smctl");
        env.iter_mut().filter(|(key, _)| *key == setting).for_each(|(_, v)| *v = value.to_owned());
        let output =
            Command::new(binary("smctl")).envs(&stack.vars).envs(env).args(["topics", "create"]).output().unwrap();
        assert!(!output.status.success(), "smctl topics create succeeded with a wrong {setting}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(named.iter().all(|n| stderr.contains(n)), "a wrong {setting} not named as such: {stderr}");
    }
    let _ = std::fs::remove_file(other_ca);
}
