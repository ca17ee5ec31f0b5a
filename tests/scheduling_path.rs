//! The acting path end to end, on the real stack, with the scheduling agent as a process: a
//! fleet of pumps (three wearing towards failure, three healthy) sends predictions as the
//! prediction agent does, a roster of technicians with different skills and shifts is
//! registered, and a planner approves the one order the policy leaves to a person, with a
//! retry and a second approval. The agent is SIGKILLed mid-stream and restarted.
//!
//! What must hold:
//! - every wearing pump gets exactly one work order (later predictions update it), healthy
//!   pumps none; nothing is doubled: no order has two events of one request id;
//! - the two confident orders are approved by the policy, the unsure one by the planner,
//!   once, although the command came twice; the second approval is refused with
//!   `CommandRejected` (`failed_precondition`);
//! - every approved order is booked, to a qualified technician, inside one of their shifts,
//!   never overlapping another booking, and before its deadline (the roster allows it).
//!
//! The binaries are taken from the target directory: build them first (`cargo build --bins`;
//! `make test` does). The run has its own tenant, site, asset ids and registry topics.

use sm_domain::roster::{TechnicianRegistered, TechnicianSkill, WeeklyShift};
use sm_domain::work_orders::{WorkOrderCommand, WorkOrderEvent, WorkOrderRecord};
use sm_domain::{AssetId, AssetRegistered, Codec, Decode, Envelope, FailurePredicted, TenantId, Timestamp, topics};
use sm_system_tests::{end_offsets, read_after};
use sm_testkit::process::Service;
use sm_testkit::{Record, create_topic, produce, stack_from_env_file, unique};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const HOUR: f64 = 3600.0;
const PREDICTIONS: usize = 24;

fn technician(id: &str, skills: &[(&str, i32)], from: i32, to: i32) -> TechnicianRegistered {
    TechnicianRegistered {
        technician_id: id.into(),
        name: id.into(),
        site: String::new(),
        time_zone: "UTC".into(),
        skills: skills.iter().map(|(s, l)| TechnicianSkill { skill: (*s).into(), level: *l }).collect(),
        shifts: (1..=7).map(|weekday| WeeklyShift { weekday, start_minute: from, end_minute: to }).collect(),
        leave: vec![],
        max_minutes_per_day: 8 * 60,
        active: true,
        principal: "user:admin".into(),
    }
}

/// RUL in hours at step `i`: wearing pumps fall from 200 h to about 60 h, healthy ones stay
/// far above the catalog's week; `spread` is the interval's half-width relative to the RUL.
fn prediction(wearing: bool, spread: f64, i: usize) -> FailurePredicted {
    let rul = if wearing { 200.0 - 6.0 * i as f64 } else { 2000.0 } * HOUR;
    FailurePredicted {
        model_name: "pump-rul".into(),
        model_version: 1,
        model_kind: "remaining_useful_life".into(),
        asset_type: "pump".into(),
        rul_seconds: rul,
        rul_low_seconds: rul * (1.0 - spread),
        rul_high_seconds: rul * (1.0 + spread),
        coverage: 0.8,
        horizon_seconds: 30.0,
        failure_probability: if wearing { 0.2 } else { 0.01 },
        cycles: 10 + i as i32,
        contributions: vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_wearing_pump_gets_one_order_planned_into_a_qualified_shift_through_a_sigkill() {
    let stack = stack_from_env_file();
    let codec = Codec::embedded().unwrap();
    let run = unique("sched");
    let tenant = TenantId(run.clone());
    let site = format!("{run}-plant");
    let assets_topic = format!("{}-{run}", topics::ASSETS);
    let technicians_topic = format!("{}-{run}", topics::TECHNICIANS);
    create_topic(&stack.kafka, &assets_topic, 1).await;
    create_topic(&stack.kafka, &technicians_topic, 1).await;
    // Pumps 0-1 wear with confident predictions, pump 2 wears with an unsure one, 3-5 are healthy.
    let pumps: Vec<String> = (0..6).map(|i| format!("{run}-pump-{i}")).collect();
    let wearing = |i: usize| i < 3;
    let spread = |i: usize| if i == 2 { 0.5 } else { 0.1 };
    let now = Timestamp::now();
    produce(
        &stack.kafka,
        &assets_topic,
        pumps.iter().map(|id| Record {
            key: id.as_bytes().to_vec(),
            value: codec
                .encode(&Envelope::origin(
                    tenant.clone(),
                    AssetId(id.clone()),
                    now,
                    "test",
                    AssetRegistered {
                        name: id.clone(),
                        asset_type: "pump".into(),
                        site: site.clone(),
                        sensors: vec![],
                    },
                ))
                .unwrap(),
            headers: vec![],
        }),
    );
    // Bearing work needs mechanical 2 and vibration 2: the fitter lacks vibration.
    let roster = [
        technician("t-day", &[("mechanical", 3), ("vibration", 3)], 6 * 60, 14 * 60),
        technician("t-late", &[("mechanical", 2), ("vibration", 2)], 14 * 60, 22 * 60),
        technician("t-fitter", &[("mechanical", 5)], 6 * 60, 22 * 60),
    ]
    .map(|mut t| {
        t.technician_id = format!("{run}-{}", t.technician_id);
        t.site = site.clone();
        t
    });
    produce(
        &stack.kafka,
        &technicians_topic,
        roster.iter().map(|t| Record {
            key: t.technician_id.as_bytes().to_vec(),
            value: codec
                .encode(&Envelope::origin(tenant.clone(), AssetId(t.technician_id.clone()), now, "test", t.clone()))
                .unwrap(),
            headers: vec![],
        }),
    );
    let from = end_offsets(&stack.kafka, topics::WORKORDERS);
    let catalog = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../deploy/catalog/maintenance.toml")
        .to_str()
        .unwrap()
        .to_owned();
    let env = [
        ("SM_SCHEDULING__CATALOG", catalog),
        ("SM_SCHEDULING__ASSETS_TOPIC", assets_topic.clone()),
        ("SM_SCHEDULING__TECHNICIANS_TOPIC", technicians_topic.clone()),
        ("SM_SCHEDULING__PLAN_TIME_LIMIT_MS", "300".into()),
        ("SM_SCHEDULING__REPLAN_INTERVAL_MS", "300".into()),
    ];
    let mut agent = Service::start("scheduling", &stack, &env);
    // One prediction a minute of event time per pump, the last a minute ago.
    let start = now.0 - (PREDICTIONS as i64 + 1) * 60_000_000;
    let batch = |steps: std::ops::Range<usize>| -> Vec<Record> {
        steps
            .flat_map(|i| pumps.iter().enumerate().map(move |(p, id)| (i, p, id.clone())).collect::<Vec<_>>())
            .map(|(i, p, id)| Record {
                key: id.as_bytes().to_vec(),
                value: codec
                    .encode(&Envelope::origin(
                        tenant.clone(),
                        AssetId(id),
                        Timestamp(start + i as i64 * 60_000_000),
                        "prediction",
                        prediction(wearing(p), spread(p), i),
                    ))
                    .unwrap(),
                headers: vec![],
            })
            .collect()
    };
    let decode = |bytes: &[u8]| -> Option<Envelope<WorkOrderRecord>> {
        WorkOrderRecord::decode(&codec, bytes, None).ok().filter(|e| e.header.tenant_id == tenant)
    };
    produce(&stack.kafka, topics::PREDICTIONS, batch(0..PREDICTIONS / 2));
    // Three proposals, two automatic approvals: the first half has been taken in.
    read_after(&stack.kafka, topics::WORKORDERS, &from, 5, Duration::from_secs(2), decode);
    produce(&stack.kafka, topics::PREDICTIONS, batch(PREDICTIONS / 2..PREDICTIONS));
    std::thread::sleep(Duration::from_millis(400));
    agent.kill_9();
    agent.spawn();

    // The unsure pump's order waits for a planner: find it, approve it (twice, as a client's
    // retry would), and approve it again with a new request id.
    let events = read_after(&stack.kafka, topics::WORKORDERS, &from, 3, Duration::from_secs(3), decode);
    let unsure_order = events
        .iter()
        .find_map(|e| match &e.payload {
            WorkOrderRecord::Event(WorkOrderEvent::Proposed(p)) if p.asset_id == pumps[2] => {
                Some(p.work_order_id.clone())
            }
            _ => None,
        })
        .expect("the unsure pump's order was proposed");
    let command = |request_id: &str| {
        let payload = WorkOrderCommand {
            command: "Approve".into(),
            work_order_id: unsure_order.clone(),
            site: site.clone(),
            principal: "user:planner-1".into(),
            request_id: request_id.into(),
            reason: "bearing noise confirmed on the round".into(),
            until: Timestamp(0),
            technician_id: String::new(),
            start: Timestamp(0),
            outcome: None,
        };
        Record {
            key: format!("{}/{site}", tenant.0).into_bytes(),
            value: codec
                .encode(&Envelope::origin(
                    tenant.clone(),
                    AssetId(unsure_order.clone()),
                    Timestamp::now(),
                    "query",
                    payload,
                ))
                .unwrap(),
            headers: vec![],
        }
    };
    produce(&stack.kafka, topics::COMMANDS, [command("approve-1"), command("approve-1")]);
    std::thread::sleep(Duration::from_millis(300));
    produce(&stack.kafka, topics::COMMANDS, [command("approve-2")]);
    // Proposals, approvals, bookings and updates: at least 3 + 3 + 3 + 1 refusal.
    let events = read_after(&stack.kafka, topics::WORKORDERS, &from, 10, Duration::from_secs(6), decode);
    agent.stop();

    let mut seen = BTreeSet::new();
    let mut proposed: BTreeMap<String, String> = BTreeMap::new();
    let mut approvals: BTreeMap<String, Vec<(bool, String)>> = BTreeMap::new();
    let mut bookings: BTreeMap<String, (String, Timestamp, Timestamp)> = BTreeMap::new();
    let mut deadlines: BTreeMap<String, Timestamp> = BTreeMap::new();
    let mut refused = Vec::new();
    let mut updates = 0;
    for event in &events {
        match &event.payload {
            WorkOrderRecord::Rejected(r) => refused.push(r.clone()),
            WorkOrderRecord::Event(e) => {
                assert!(
                    seen.insert((e.work_order_id().to_owned(), e.request_id().to_owned())),
                    "doubled: {} of {} by request {}",
                    e.event_type(),
                    e.work_order_id(),
                    e.request_id()
                );
                match e {
                    WorkOrderEvent::Proposed(p) => {
                        assert!(
                            proposed.insert(p.asset_id.clone(), p.work_order_id.clone()).is_none(),
                            "a second order for {}",
                            p.asset_id
                        );
                        deadlines.insert(p.work_order_id.clone(), p.deadline);
                    }
                    WorkOrderEvent::Updated(u) => {
                        updates += 1;
                        deadlines.insert(u.work_order_id.clone(), u.deadline);
                    }
                    WorkOrderEvent::Approved(a) => {
                        approvals.entry(a.work_order_id.clone()).or_default().push((a.automatic, a.principal.clone()))
                    }
                    WorkOrderEvent::Scheduled(s) => {
                        bookings.insert(s.work_order_id.clone(), (s.technician_id.clone(), s.start, s.end));
                    }
                    WorkOrderEvent::Rescheduled(s) => {
                        bookings.insert(s.work_order_id.clone(), (s.technician_id.clone(), s.start, s.end));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    let expected: BTreeSet<&String> = pumps[..3].iter().collect();
    assert_eq!(proposed.keys().collect::<BTreeSet<_>>(), expected, "one order per wearing pump, none for healthy ones");
    assert!(updates > 0, "later predictions update the open order");
    for (p, pump) in pumps[..3].iter().enumerate() {
        let order = &proposed[pump];
        let approved = &approvals[order];
        assert_eq!(approved.len(), 1, "{order} approved once: {approved:?}");
        if p == 2 {
            assert_eq!(approved[0], (false, "user:planner-1".to_owned()), "the unsure order waited for the planner");
        } else {
            assert!(approved[0].0, "confident and far enough: approved by the policy");
        }
    }
    assert_eq!(refused.len(), 1, "the second approval is refused: {refused:?}");
    assert_eq!((refused[0].command_id.as_str(), refused[0].code.as_str()), ("approve-2", "failed_precondition"));
    assert!(refused[0].reason.contains("approved already"), "{}", refused[0].reason);

    // Every approved order booked: qualified, inside a shift, no overlap, before its deadline.
    assert_eq!(bookings.len(), 3, "every approved order is planned: {bookings:?}");
    // A whole minute, a day back: the shifts and bookings in exact minutes from it.
    let plan_start = Timestamp((now.0.div_euclid(60_000_000) - 24 * 60) * 60_000_000);
    for (order, (technician, start, end)) in &bookings {
        assert_ne!(technician, &roster[2].technician_id, "{order}: the fitter lacks vibration");
        let registration = roster.iter().find(|t| &t.technician_id == technician).expect("a roster technician");
        let shifts = sm_workorders::roster::technician(registration, plan_start, 16).unwrap().shifts;
        let minute = |t: Timestamp| (t.0 - plan_start.0).div_euclid(60_000_000);
        assert_eq!((start.0 % 60_000_000, end.0 % 60_000_000), (0, 0), "{order}: bookings are on whole minutes");
        let work = sm_planner::Window { start: minute(*start), end: minute(*end) };
        assert!(shifts.iter().any(|s| s.contains(&work)), "{order} at {work:?} lies outside {technician}'s shifts");
        assert!(*end <= deadlines[order], "{order} ends after its deadline although the roster has room");
        for (other, (t2, s2, e2)) in &bookings {
            if other != order && t2 == technician {
                assert!(end <= s2 || e2 <= start, "{order} and {other} overlap on {technician}");
            }
        }
    }
}
