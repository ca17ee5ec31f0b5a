//! The scheduling agent's handler without a broker: predictions and commands in, the orders'
//! events out, the plan on the tick, the checkpoint restoring the same orders, and nothing
//! planned for a site whose partition this instance does not own.

use sm_domain::roster::{TechnicianRegistered, TechnicianSkill, WeeklyShift};
use sm_domain::work_orders::{SchedulingRequest, WorkOrderCommand, WorkOrderEvent, WorkOrderRecord};
use sm_domain::{AssetId, Codec, Decode, Envelope, FailurePredicted, TenantId, Timestamp, topics};
use sm_kafka::changelog::Table;
use sm_kafka::{Handler, Outputs, Source};
use sm_scheduling::{SchedulingAgent, SchedulingSettings};
use sm_workorders::catalog::MaintenanceCatalog;

const CATALOG: &str = include_str!("../../../deploy/catalog/maintenance.toml");
const KEY: &[u8] = b"acme/plant-north";
const HOUR: f64 = 3600.0;

fn agent(roster: Table<TechnicianRegistered>) -> SchedulingAgent {
    let settings = SchedulingSettings { plan_time_limit_ms: 200, ..SchedulingSettings::default() };
    SchedulingAgent::new(settings, MaintenanceCatalog::parse(CATALOG).unwrap(), roster)
}

fn roster() -> Table<TechnicianRegistered> {
    let table = Table::default();
    let technician = TechnicianRegistered {
        technician_id: "t-anna".into(),
        name: "Anna".into(),
        site: "plant-north".into(),
        time_zone: "UTC".into(),
        skills: vec![
            TechnicianSkill { skill: "mechanical".into(), level: 3 },
            TechnicianSkill { skill: "vibration".into(), level: 3 },
        ],
        shifts: (1..=7).map(|weekday| WeeklyShift { weekday, start_minute: 0, end_minute: 1440 }).collect(),
        leave: vec![],
        max_minutes_per_day: 600,
        active: true,
        principal: "user:admin".into(),
    };
    let event = Envelope::origin(TenantId::from("acme"), AssetId::from("t-anna"), Timestamp::now(), "t", technician);
    table.set("t-anna".into(), Some(event));
    table
}

fn prediction(rul_hours: f64, at: Timestamp) -> Envelope<SchedulingRequest> {
    let rul = rul_hours * HOUR;
    let payload = FailurePredicted {
        model_name: "pump-rul".into(),
        model_version: 1,
        model_kind: "remaining_useful_life".into(),
        asset_type: "pump".into(),
        rul_seconds: rul,
        rul_low_seconds: 0.9 * rul,
        rul_high_seconds: 1.1 * rul,
        coverage: 0.8,
        horizon_seconds: 30.0,
        failure_probability: 0.1,
        cycles: 10,
        contributions: vec![],
    };
    let e = Envelope::origin(TenantId::from("acme"), AssetId::from("pump-7"), at, "scheduling", payload);
    Envelope { header: e.header, payload: SchedulingRequest::Prediction(e.payload) }
}

fn approve(order: &str, request_id: &str) -> Envelope<SchedulingRequest> {
    let command = WorkOrderCommand {
        command: "Approve".into(),
        work_order_id: order.into(),
        site: "plant-north".into(),
        principal: "user:planner".into(),
        request_id: request_id.into(),
        reason: "checked".into(),
        until: Timestamp(0),
        technician_id: String::new(),
        start: Timestamp(0),
        outcome: None,
    };
    let e = Envelope::origin(TenantId::from("acme"), AssetId::from(order), Timestamp::now(), "query", command);
    Envelope { header: e.header, payload: SchedulingRequest::Command(e.payload) }
}

fn source(offset: i64) -> Source<'static> {
    Source { topic: topics::COMMANDS, partition: 0, offset, key: Some(KEY) }
}

fn records(outputs: &Outputs, cause: Option<&Envelope<SchedulingRequest>>) -> Vec<(String, WorkOrderRecord)> {
    let codec = Codec::embedded().unwrap();
    outputs
        .encode_all(cause.map(|c| &c.header), "scheduling", &codec)
        .unwrap()
        .into_iter()
        .map(|(topic, key, bytes)| {
            assert_eq!(topic, topics::WORKORDERS);
            (key, WorkOrderRecord::decode(&codec, &bytes, None).unwrap().payload)
        })
        .collect()
}

#[tokio::test]
async fn a_wearing_pump_gets_one_order_approved_planned_and_restored_from_its_checkpoint() {
    let mut agent = agent(roster());
    agent.assigned(&[(topics::COMMANDS.to_owned(), 0)]);
    let now = Timestamp::now();
    let first = prediction(100.0, now);
    let out = agent.handle(&first, &source(0)).await.unwrap();
    let events = records(&out, Some(&first));
    let [
        (key, WorkOrderRecord::Event(WorkOrderEvent::Proposed(proposed))),
        (_, WorkOrderRecord::Event(WorkOrderEvent::Approved(approved))),
    ] = &events[..]
    else {
        panic!("a proposal and the policy's approval: {events:?}")
    };
    assert_eq!(key, &proposed.work_order_id, "keyed by order id");
    assert!(approved.automatic);
    let order = proposed.work_order_id.clone();
    assert_eq!(proposed.evidence.prediction_event_ids, [first.header.event_id.to_string()]);

    // A later, worse prediction updates the order; it never opens a second one.
    let later = prediction(40.0, Timestamp(now.0 + 60_000_000));
    let events = records(&agent.handle(&later, &source(1)).await.unwrap(), Some(&later));
    assert!(
        matches!(&events[..], [(_, WorkOrderRecord::Event(WorkOrderEvent::Updated(u)))] if u.work_order_id == order),
        "{events:?}"
    );

    // The tick plans it into Anna's shift.
    let events = records(&agent.tick(Timestamp::now()), None);
    let [(_, WorkOrderRecord::Event(WorkOrderEvent::Scheduled(booked)))] = &events[..] else { panic!("{events:?}") };
    assert_eq!((booked.technician_id.as_str(), booked.plan_version), ("t-anna", 1));
    assert!(records(&agent.tick(Timestamp::now()), None).is_empty(), "an unchanged site is not re-planned");

    // A person's approval of an approved order is refused, saying why.
    let command = approve(&order, "r-1");
    let events = records(&agent.handle(&command, &source(2)).await.unwrap(), Some(&command));
    let [(_, WorkOrderRecord::Rejected(rejected))] = &events[..] else { panic!("{events:?}") };
    assert_eq!((rejected.code.as_str(), rejected.command_id.as_str()), ("failed_precondition", "r-1"));
    assert!(rejected.reason.contains("approved already"), "{}", rejected.reason);
    // An unknown order: not_found.
    let command = approve("wo-nope", "r-2");
    let events = records(&agent.handle(&command, &source(3)).await.unwrap(), Some(&command));
    assert!(matches!(&events[..], [(_, WorkOrderRecord::Rejected(r))] if r.code == "not_found"), "{events:?}");

    // The checkpoint restores the same order in a fresh instance.
    let checkpoint = agent.checkpoint();
    agent.committed();
    let mut restored = self::agent(roster());
    for (key, value) in &checkpoint {
        restored.restore(key.as_bytes(), value.as_deref());
    }
    let before = agent.order(&order).unwrap();
    let after = restored.order(&order).unwrap();
    assert_eq!((&before.tenant, &before.order), (&after.tenant, &after.order));
    // Only the owner of the site's partition plans it.
    let mut other = self::agent(roster());
    for (key, value) in &checkpoint {
        other.restore(key.as_bytes(), value.as_deref());
    }
    assert!(records(&other.tick(Timestamp::now()), None).is_empty(), "partition 0 is not this instance's");
    // The same command redone after an aborted transaction is applied once.
    let retry = approve(&order, "r-3");
    let mut redo = self::agent(roster());
    for (key, value) in &checkpoint {
        redo.restore(key.as_bytes(), value.as_deref());
    }
    redo.assigned(&[(topics::COMMANDS.to_owned(), 0)]);
    let cancel = |request: &str| {
        let mut c = retry.clone();
        if let SchedulingRequest::Command(command) = &mut c.payload {
            command.command = "Cancel".into();
            command.request_id = request.into();
        }
        c
    };
    let once = cancel("c-1");
    let first = records(&redo.handle(&once, &source(4)).await.unwrap(), Some(&once));
    assert!(matches!(&first[..], [(_, WorkOrderRecord::Event(WorkOrderEvent::Cancelled(_)))]), "{first:?}");
    assert!(
        records(&redo.handle(&cancel("c-1"), &source(5)).await.unwrap(), None).is_empty(),
        "a retry yields nothing"
    );
}
