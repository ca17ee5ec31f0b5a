//! The ingestion agent on the real stack (Kafka + Redis): every kind of bad reading is
//! dead-lettered with its reason, duplicates are suppressed across two instances, units are
//! normalised, and the same record handled twice is not mistaken for its own duplicate.
//!
//! Every record is keyed by its envelope's asset id, as every producer must key asset topics;
//! the cases that break that rule say so.

use sm_domain::{
    AssetId, AssetRegistered, Codec, Envelope, RejectedReading, SensorReading, SensorSpec, TenantId, Timestamp,
    ValidatedReading,
};
use sm_ingestion::{Ingestion, dedup::Deduplicator, registry, validate::Policy};
use sm_kafka::{KafkaConfig, Runtime, Source};
use sm_testkit::{Record, create_topic, produce, read_committed, stack_from_env_file, unique};
use std::collections::HashMap;
use std::time::Duration;

fn spec(asset: &str, suffix: &str, sensor_type: &str, unit: &str, min: f64, max: f64) -> SensorSpec {
    SensorSpec {
        sensor_id: format!("{asset}.{suffix}").into(),
        sensor_type: sensor_type.into(),
        unit: unit.into(),
        min_value: min,
        max_value: max,
        expected_interval_ms: 1000,
    }
}

fn reading(
    asset: &str,
    sensor: &str,
    value: f64,
    unit: &str,
    offset_ms: i64,
    sequence: i64,
) -> Envelope<SensorReading> {
    Envelope::origin(
        TenantId::from("t"),
        AssetId::from(asset),
        Timestamp(Timestamp::now().0 + offset_ms * 1000),
        "test",
        SensorReading { sensor_id: sensor.into(), value, unit: unit.into(), sequence, backfill: false },
    )
}

/// A record to send: key, value, headers, and the reason it must be dead-lettered with
/// (`None`: it must pass).
type Case = (Vec<u8>, Vec<u8>, Vec<(String, String)>, Option<&'static str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validates_normalises_dead_letters_and_deduplicates_across_instances() {
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let (raw, validated, rejected, assets) = (unique("raw"), unique("valid"), unique("rejected"), unique("assets"));
    for topic in [&raw, &validated, &rejected, &assets] {
        create_topic(&stack.kafka, topic, 3).await;
    }
    let pump = unique("pump");
    let temperature = format!("{pump}.temperature");
    let pressure = format!("{pump}.pressure");
    let registration = Envelope::origin(
        TenantId::from("t"),
        AssetId(pump.clone()),
        Timestamp::now(),
        "test",
        AssetRegistered {
            name: "pump".into(),
            asset_type: "pump".into(),
            site: "s".into(),
            sensors: vec![
                spec(&pump, "temperature", "temperature", "degC", -40.0, 160.0),
                spec(&pump, "pressure", "pressure", "kPa", 0.0, 2500.0),
            ],
        },
    );
    produce(
        &stack.kafka,
        &assets,
        [Record { key: pump.clone().into_bytes(), value: codec.encode(&registration).unwrap(), headers: vec![] }],
    );

    // (record, expected reason or None when valid)
    let mut cases: Vec<Case> = Vec::new();
    let mut keyed = |key: &str, e: Envelope<SensorReading>, reason: Option<&'static str>| {
        cases.push((key.as_bytes().to_vec(), codec.encode(&e).unwrap(), vec![], reason))
    };
    let mut avro = |e: Envelope<SensorReading>, reason: Option<&'static str>| {
        let key = e.header.asset_id.as_str().to_owned();
        keyed(&key, e, reason)
    };
    for i in 0..50 {
        avro(reading(&pump, &temperature, 20.0 + i as f64, "degC", -1000, i), None);
    }
    avro(reading(&pump, &pressure, 10.0, "psi", -1000, 1), None); // 68.9 kPa
    avro(reading(&pump, &temperature, 161.0, "degC", -1000, 900), None); // clamped
    avro(reading(&pump, &temperature, f64::NAN, "degC", 0, 901), Some("non_finite_value"));
    avro(reading(&pump, &format!("{pump}.humidity"), 1.0, "%", 0, 902), Some("unknown_sensor"));
    avro(reading("another-asset", &temperature, 1.0, "degC", 0, 903), Some("sensor_asset_mismatch"));
    avro(reading(&pump, &temperature, 1.0, "furlongs", 0, 904), Some("unknown_unit"));
    avro(reading(&pump, &temperature, 5000.0, "degC", 0, 905), Some("out_of_range"));
    avro(reading(&pump, &temperature, 1.0, "degC", 3_600_000, 906), Some("future_timestamp"));
    avro(reading(&pump, &temperature, 1.0, "degC", -7 * 86_400_000, 907), Some("too_old"));
    avro(reading(&pump, "", 1.0, "degC", 0, 908), Some("missing_field"));
    let mut ancient = reading(&pump, &temperature, 1.0, "degC", 0, 909);
    ancient.header.occurred_at = Timestamp(i64::MIN);
    avro(ancient, Some("invalid_timestamp"));
    let mut mislabelled = reading(&pump, &temperature, 1.0, "degC", 0, 910);
    mislabelled.header.event_type = "AnomalyDetected".into();
    avro(mislabelled, Some("wrong_event_type"));
    keyed("another-asset", reading(&pump, &temperature, 1.0, "degC", 0, 911), Some("key_mismatch"));
    // testkit sends an empty key where a producer would send none; both are no key.
    keyed("", reading(&pump, &temperature, 1.0, "degC", 0, 912), Some("missing_key"));
    let key = || pump.clone().into_bytes();
    cases.push((key(), b"\x00garbage".to_vec(), vec![], Some("unknown_schema")));
    cases.push((key(), b"not avro at all".to_vec(), vec![], Some("not_avro")));
    cases.push((key(), Vec::new(), vec![], Some("empty_record")));
    let text_header = vec![("content-type".to_owned(), "text/plain".to_owned())];
    let labelled = codec.encode(&reading(&pump, &temperature, 1.0, "degC", 0, 913)).unwrap();
    cases.push((key(), labelled, text_header, Some("unsupported_content_type")));
    let json_header = vec![("content-type".to_owned(), "application/json".to_owned())];
    let now_ms = Timestamp::now().0 / 1000;
    cases.push((
        key(),
        format!(r#"{{"asset_id":"{pump}","sensor_id":"{temperature}","timestamp_ms":{now_ms},"value":98.6,"unit":"degF","sequence":777}}"#).into_bytes(),
        json_header.clone(),
        None,
    ));
    cases.push((key(), br#"{"asset_id":"x"}"#.to_vec(), json_header, Some("invalid_json")));
    let valid = cases.iter().filter(|c| c.3.is_none()).count();
    let mut records: Vec<Record> = cases
        .iter()
        .map(|(key, value, headers, _)| Record { key: key.clone(), value: value.clone(), headers: headers.clone() })
        .collect();
    // Every valid Avro reading is sent a second time: byte-identical duplicates.
    let duplicates: Vec<Record> = records.iter().take(50).cloned().collect();
    records.extend(duplicates);
    produce(&stack.kafka, &raw, records);

    // Two instances in one group share the partitions, and the duplicates land on either.
    let group = unique("ingestion");
    let mut agents = Vec::new();
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    for instance in 0..2 {
        let config = KafkaConfig {
            bootstrap_servers: stack.kafka.clone(),
            group_id: group.clone(),
            instance_id: unique(&format!("i{instance}")),
            session_timeout_ms: 6000,
            ..Default::default()
        };
        let (registry, follower) = registry::follow(&config, &assets).await.unwrap();
        assert_eq!(registry.len(), 2, "registry loaded before the agent starts");
        let dedup = Deduplicator::connect(&stack.redis_url, 600).await.unwrap();
        let handler = Ingestion::new(registry, dedup, Policy::default()).with_output_topic(&validated);
        let runtime = Runtime::new(config, "ingestion", &[&raw], &rejected).unwrap();
        let mut stopped = stop.subscribe();
        agents.push((
            tokio::spawn(runtime.run(handler, async move {
                let _ = stopped.recv().await;
            })),
            follower,
        ));
    }
    let kafka = stack.kafka.clone();
    let (validated_topic, rejected_topic) = (validated.clone(), rejected.clone());
    let expected_rejected = cases.len() - valid;
    let (out, dead) = tokio::task::spawn_blocking(move || {
        (
            read_committed(&kafka, &validated_topic, valid, Duration::from_secs(3), Duration::from_secs(90)),
            read_committed(&kafka, &rejected_topic, expected_rejected, Duration::from_secs(1), Duration::from_secs(30)),
        )
    })
    .await
    .unwrap();
    let _ = stop.send(());
    for (agent, follower) in agents {
        agent.await.unwrap().unwrap();
        follower.abort();
    }

    assert_eq!(out.len(), valid, "each valid reading once; duplicates suppressed");
    let out: Vec<Envelope<ValidatedReading>> = out.iter().map(|r| codec.decode(&r.value, None).unwrap()).collect();
    let psi = out.iter().find(|e| e.payload.sensor_id.as_str() == pressure).unwrap();
    assert!((psi.payload.value - 68.947_572_931_68).abs() < 1e-6 && psi.payload.unit == "kPa");
    assert!(psi.payload.quality_flags.contains(&"converted".to_owned()));
    let clamped = out.iter().find(|e| e.payload.sequence == 900).unwrap();
    assert_eq!((clamped.payload.value, clamped.payload.quality_flags.clone()), (160.0, vec!["clamped".to_owned()]));
    let json = out.iter().find(|e| e.payload.sequence == 777).unwrap();
    assert!((json.payload.value - 37.0).abs() < 1e-9, "98.6 degF from a JSON gateway is 37 degC");

    let mut reasons: HashMap<String, usize> = HashMap::new();
    let mut details: HashMap<String, String> = HashMap::new();
    for record in &dead {
        let letter: Envelope<RejectedReading> = codec.decode(&record.value, None).unwrap();
        assert_eq!(letter.payload.agent, "ingestion");
        // Even for a reading at i64::MIN: every Avro reader must be able to read the letter.
        assert!(letter.header.occurred_at.in_range(), "dead letter at {:?}", letter.header.occurred_at);
        assert_eq!(letter.payload.original_size, letter.payload.original.len() as i64, "small records are kept whole");
        *reasons.entry(letter.payload.reason_code.clone()).or_default() += 1;
        details.insert(letter.payload.reason_code, letter.payload.detail);
    }
    let detail = |reason: &str| details.get(reason).map_or("", String::as_str);
    assert!(detail("empty_record").starts_with("the record has no value (0 bytes)"), "{details:?}");
    assert!(detail("unsupported_content_type").contains(r#""text/plain""#), "{details:?}");
    assert!(detail("wrong_event_type").contains(r#""AnomalyDetected""#), "{details:?}");
    assert!(detail("key_mismatch").contains(r#""another-asset""#), "{details:?}");
    assert!(detail("invalid_timestamp").contains(&i64::MIN.to_string()), "{details:?}");
    let mut expected: HashMap<String, usize> = HashMap::new();
    for (_, _, _, reason) in &cases {
        if let Some(reason) = reason {
            *expected.entry((*reason).to_owned()).or_default() += 1;
        }
    }
    assert_eq!(reasons, expected);
}

#[tokio::test]
async fn the_same_record_handled_again_is_not_its_own_duplicate() {
    let stack = stack_from_env_file();
    let mut dedup = Deduplicator::connect(&stack.redis_url, 60).await.unwrap();
    let sensor = unique("sensor").into();
    let at = Timestamp::now();
    let first = Source { topic: "raw", partition: 1, offset: 10, key: None };
    let resent = Source { topic: "raw", partition: 4, offset: 99, key: None };
    assert!(dedup.first_seen(&sensor, at, 1, &first).await.unwrap());
    assert!(dedup.first_seen(&sensor, at, 1, &first).await.unwrap(), "a retry of the same record");
    assert!(!dedup.first_seen(&sensor, at, 1, &resent).await.unwrap(), "a copy sent again");
    assert!(dedup.first_seen(&sensor, at, 2, &resent).await.unwrap(), "another sequence number");
}
