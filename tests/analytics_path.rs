//! The analytics agents end to end, on the real stack, with the binaries as processes:
//! `smctl simulate` sends a fleet with injected anomalies (spikes, level shifts, a degrading
//! bearing) and a drifting fleet through the ingestion agent; the anomaly and drift agents
//! are killed with SIGKILL mid-stream and restarted.
//!
//! What comes out must be exactly what the same detector code finds when it replays the
//! validated readings in one uninterrupted pass (`AnomalyAgent::detect`,
//! `DriftAgent::observe`): a restart that forgot a baseline would miss or add anomalies, one
//! that re-handled committed readings would duplicate them. On top of that, the injected
//! effects must be found.
//!
//! The binaries are taken from the target directory: build them first (`cargo build --bins`;
//! `make test` does). The run has its own tenant and asset ids.

use sm_anomaly::AnomalySettings;
use sm_domain::{AlertEvent, Codec, Decode, Envelope, ValidatedReading, topics};
use sm_drift::{DriftAgent, DriftSettings};
use sm_system_tests::{
    Finding, committed_anomalies, end_offsets, read_after, replayed_anomalies, validated_readings_of,
};
use sm_testkit::process::{Service, binary, smctl};
use sm_testkit::{stack_from_env_file, unique};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Readings per fleet, sent at [`RATE`] per second: 24 s of traffic.
const READINGS: u64 = 60_000;
const RATE: u64 = 2_500;

fn anomaly_settings() -> AnomalySettings {
    let mut settings = AnomalySettings { bucket_ms: 250, ..AnomalySettings::default() };
    settings.asset.warmup_buckets = 20;
    settings
}

fn drift_settings() -> DriftSettings {
    let mut settings = DriftSettings::default();
    settings.monitor.reference_ms = 4_000;
    settings.monitor.current_ms = 4_000;
    settings
}

fn simulate(stack: &sm_testkit::Stack, scenario: &str, tenant: &str, prefix: &str) -> (std::process::Child, String) {
    let summary = std::env::temp_dir().join(format!("{prefix}.json")).to_str().unwrap().to_owned();
    let child = Command::new(binary("smctl"))
        .envs(&stack.vars)
        .args(["simulate", "--count", &READINGS.to_string(), "--rate", &RATE.to_string(), "--assets", "6"])
        .args(["--scenario", scenario, "--seed", "5", "--quiet", "--bad-fraction", "0.005"])
        .args(["--tenant", tenant, "--fleet-prefix", prefix, "--summary-json", &summary])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_agents_find_the_same_across_sigkill() {
    let stack = stack_from_env_file();
    smctl(&stack, &["topics", "create"]);
    let validated_from = end_offsets(&stack.kafka, topics::READINGS_VALIDATED);
    let anomalies_from = end_offsets(&stack.kafka, topics::ANOMALIES);
    let drift_from = end_offsets(&stack.kafka, topics::DRIFT);
    let _ingestion = Service::start("ingestion", &stack, &[]);
    let anomaly_env = [
        ("SM_ANOMALY__BUCKET_MS", "250".to_owned()),
        ("SM_ANOMALY__ASSET__WARMUP_BUCKETS", "20".to_owned()),
        ("SM_KAFKA__COMMIT_INTERVAL_MS", "200".to_owned()),
    ];
    let mut anomaly = Service::start("anomaly", &stack, &anomaly_env);
    let drift_env =
        [("SM_DRIFT__MONITOR__REFERENCE_MS", "4000".to_owned()), ("SM_DRIFT__MONITOR__CURRENT_MS", "4000".to_owned())];
    let mut drift = Service::start("drift", &stack, &drift_env);

    let tenant = unique("e2e-analytics");
    let (anomaly_prefix, drift_prefix) = (format!("{tenant}-a"), format!("{tenant}-d"));
    let (mut anomaly_fleet, anomaly_summary) = simulate(&stack, "anomaly", &tenant, &anomaly_prefix);
    let (mut drift_fleet, drift_summary) = simulate(&stack, "drift", &tenant, &drift_prefix);
    // Kill each agent mid-stream (its state and offsets in some committed transaction, more
    // work in flight) and bring it back.
    tokio::time::sleep(Duration::from_secs(9)).await;
    anomaly.kill_9();
    anomaly.spawn();
    tokio::time::sleep(Duration::from_secs(4)).await;
    drift.kill_9();
    drift.spawn();
    assert!(anomaly_fleet.wait().unwrap().success(), "simulate (anomaly) failed");
    assert!(drift_fleet.wait().unwrap().success(), "simulate (drift) failed");
    let summary =
        |path: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() };
    let (anomaly_summary, drift_summary) = (summary(&anomaly_summary), summary(&drift_summary));
    let valid = anomaly_summary["valid"].as_u64().unwrap() + drift_summary["valid"].as_u64().unwrap();

    // The validated readings of this run, in partition order: what the agents consumed.
    let (kafka, run) = (stack.kafka.clone(), tenant.clone());
    let readings: Vec<Envelope<ValidatedReading>> = tokio::task::spawn_blocking(move || {
        validated_readings_of(&kafka, &validated_from, &run, valid as usize, Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert_eq!(readings.len() as u64, valid, "ingestion passed every valid reading once");

    // One uninterrupted pass of the same detector code.
    let expected_anomalies = replayed_anomalies(&readings, anomaly_settings());
    let mut drifts = DriftAgent::new(drift_settings());
    let mut expected_drift: BTreeMap<Finding, usize> = BTreeMap::new();
    for reading in &readings {
        let trigger = reading.header.event_id.to_string();
        if let Some(found) = drifts.observe(reading) {
            let key = (found.drift.test.clone(), found.drift.sensor_id.0.clone(), trigger.clone(), "drift".to_owned());
            *expected_drift.entry(key).or_default() += 1;
            let key = (
                found.retrain.expect("live drift asks for a retrain").reason,
                found.drift.sensor_id.0,
                trigger,
                "retrain".to_owned(),
            );
            *expected_drift.entry(key).or_default() += 1;
        }
    }
    assert!(!expected_anomalies.is_empty(), "the replay finds anomalies in the anomaly scenario");
    assert!(expected_drift.len() >= 2, "the replay finds drift in the drift scenario");

    // What the killed-and-restarted agents committed.
    let codec = Codec::embedded().unwrap();
    let by_event_id: BTreeMap<String, String> =
        readings.iter().map(|r| (r.header.event_id.to_string(), r.header.asset_id.0.clone())).collect();
    let (kafka, run) = (stack.kafka.clone(), tenant.clone());
    let expected = expected_anomalies.values().sum::<usize>();
    let actual_anomalies =
        tokio::task::spawn_blocking(move || committed_anomalies(&kafka, &anomalies_from, &run, expected))
            .await
            .unwrap();
    for finding in actual_anomalies.keys() {
        assert!(by_event_id.contains_key(&finding.2), "an anomaly names a reading of this run: {finding:?}");
    }
    let doubled: Vec<_> = actual_anomalies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "anomalies reported twice: {doubled:?}");
    let missed: Vec<_> = expected_anomalies.keys().filter(|k| !actual_anomalies.contains_key(*k)).collect();
    let extra: Vec<_> = actual_anomalies.keys().filter(|k| !expected_anomalies.contains_key(*k)).collect();
    assert!(missed.is_empty() && extra.is_empty(), "missed {missed:?}; not in the replay {extra:?}");

    let (kafka, run) = (stack.kafka.clone(), tenant.clone());
    let expected = expected_drift.values().sum::<usize>();
    let actual: Vec<Finding> = tokio::task::spawn_blocking(move || {
        read_after(&kafka, topics::DRIFT, &drift_from, expected, Duration::from_secs(5), |b| {
            let event = AlertEvent::decode(&codec, b, None).ok()?;
            if event.header.tenant_id.as_str() != run {
                return None;
            }
            let trigger = event.header.causation_id.map(|c| c.to_string()).unwrap_or_default();
            match event.payload {
                AlertEvent::Drift(d) => Some((d.test, d.sensor_id.0, trigger, "drift".to_owned())),
                AlertEvent::Retrain(r) => Some((r.reason, r.sensor_id.0, trigger, "retrain".to_owned())),
                _ => None,
            }
        })
    })
    .await
    .unwrap();
    let mut actual_drift: BTreeMap<Finding, usize> = BTreeMap::new();
    for finding in actual {
        *actual_drift.entry(finding).or_default() += 1;
    }
    assert_eq!(actual_drift, expected_drift, "drift events: exactly those of one uninterrupted pass, once each");

    // The injected effects are found (sensor or asset level, after their onset).
    let injections = anomaly_summary["injections"].as_array().unwrap();
    let found_on = |sensor: &str| expected_anomalies.keys().any(|(_, about, _, _)| about == sensor);
    for kind in ["spike", "shift"] {
        let of_kind: Vec<&str> =
            injections.iter().filter(|i| i["kind"] == kind).map(|i| i["sensor_id"].as_str().unwrap()).collect();
        let found = of_kind.iter().filter(|s| found_on(s)).count();
        assert!(!of_kind.is_empty(), "the scenario injects {kind}s");
        assert!(found * 10 >= of_kind.len() * 8, "{kind}s found on {found} of {} sensors", of_kind.len());
    }
    let drifting: Vec<&str> = drift_summary["injections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "drift")
        .map(|i| i["sensor_id"].as_str().unwrap())
        .collect();
    let drift_found = drifting.iter().filter(|s| expected_drift.keys().any(|(_, sensor, _, _)| sensor == *s)).count();
    assert!(drift_found * 10 >= drifting.len() * 7, "drift found on {drift_found} of {} sensors", drifting.len());
}
