//! The work-order aggregate, given/when/then: given these events, when this command, then
//! these events (or this refusal).

use sm_domain::Timestamp;
use sm_domain::work_orders::*;
use sm_workorders::{ApprovalPolicy, Booking, Command, CommandMeta, Outcome, RefusalCode, Status, WorkOrder, decide};

const HOUR: i64 = 3_600_000_000;
const NOW: Timestamp = Timestamp(1_000 * HOUR);
const AGENT: &str = "agent:scheduling";
const PLANNER: &str = "user:https://idp.example#ana";
const OTHER_PLANNER: &str = "user:https://idp.example#ben";

struct Scenario {
    history: Vec<WorkOrderEvent>,
    policy: ApprovalPolicy,
}

fn given(history: Vec<WorkOrderEvent>) -> Scenario {
    Scenario { history, policy: ApprovalPolicy::default() }
}

impl Scenario {
    fn with_policy(mut self, policy: ApprovalPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn when(&self, command: Command) -> Result<Vec<WorkOrderEvent>, sm_workorders::Refusal> {
        let state = WorkOrder::replay(&self.history);
        decide(state.as_ref(), &command, &self.policy, NOW)
    }

    /// Applies `command`'s events to the history, panicking on a refusal.
    fn then_apply(mut self, command: Command) -> Self {
        let events = self.when(command).expect("command applied");
        self.history.extend(events);
        self
    }

    fn state(&self) -> WorkOrder {
        WorkOrder::replay(&self.history).expect("a work order")
    }
}

fn meta(principal: &str, request_id: &str) -> CommandMeta {
    CommandMeta { principal: principal.into(), request_id: request_id.into(), reason: "test".into() }
}

fn proposal(confidence: f64, hours_to_deadline: i64) -> WorkOrderProposed {
    WorkOrderProposed {
        work_order_id: "wo-1".into(),
        asset_id: "pump-7".into(),
        asset_type: "centrifugal_pump".into(),
        site: "plant-a".into(),
        failure_mode: "BRG-WEAR".into(),
        required_skills: vec![SkillRequirement { skill: "vibration".into(), min_level: 3 }],
        estimated_minutes: 120,
        parts: vec![],
        ready_at: NOW,
        deadline: Timestamp(NOW.0 + hours_to_deadline * HOUR),
        priority: 50,
        confidence,
        evidence: WorkOrderEvidence { prediction_event_ids: vec!["p1".into()], ..Default::default() },
        principal: AGENT.into(),
        request_id: "prediction-p1".into(),
        reason: "RUL below threshold".into(),
    }
}

fn proposed(confidence: f64, hours: i64) -> WorkOrderEvent {
    WorkOrderEvent::Proposed(proposal(confidence, hours))
}

fn approve(principal: &str, request_id: &str) -> Command {
    Command::Approve { meta: meta(principal, request_id) }
}

fn booking(technician: &str, start_hour: i64) -> Booking {
    Booking {
        technician_id: technician.into(),
        start: Timestamp(NOW.0 + start_hour * HOUR),
        end: Timestamp(NOW.0 + (start_hour + 2) * HOUR),
        plan_version: 1,
        late: false,
        fixed: false,
    }
}

fn schedule(technician: &str, start_hour: i64, request_id: &str) -> Command {
    Command::Schedule { booking: booking(technician, start_hour), meta: meta(AGENT, request_id) }
}

fn outcome() -> Outcome {
    Outcome {
        actual_minutes: 100,
        notes: "pitted outer race".into(),
        failure_code: FailureCode {
            failure_class: "mechanical".into(),
            failure_mode: "BRG-WEAR".into(),
            cause: "lubrication".into(),
            remedy: "replace".into(),
        },
        failure_confirmed: true,
        parts_used: vec!["6205".into()],
    }
}

/// An order approved by a planner and booked.
fn booked() -> Scenario {
    given(vec![proposed(0.5, 72)]).then_apply(approve(PLANNER, "a1")).then_apply(schedule("t-1", 4, "s1"))
}

#[test]
fn a_confident_proposal_with_time_left_is_approved_by_the_policy() {
    let events = given(vec![]).when(Command::Propose(Box::new(proposal(0.9, 72)))).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], proposed(0.9, 72));
    let WorkOrderEvent::Approved(approved) = &events[1] else { panic!("{events:?}") };
    assert!(approved.automatic && approved.principal == AGENT, "{approved:?}");
    assert!(approved.reason.contains("auto-approved by policy"), "{}", approved.reason);
}

#[test]
fn an_unsure_or_urgent_proposal_waits_for_a_planner() {
    for (confidence, hours) in [(0.5, 72), (0.95, 6)] {
        let events = given(vec![]).when(Command::Propose(Box::new(proposal(confidence, hours)))).unwrap();
        assert_eq!(events, vec![proposed(confidence, hours)]);
    }
    let scenario = given(vec![proposed(0.5, 72)]).then_apply(approve(PLANNER, "a1"));
    assert_eq!(scenario.state().status, Status::Approved);
    assert_eq!(scenario.state().approved_by.as_deref(), Some(PLANNER));
}

#[test]
fn a_second_approval_is_refused_naming_the_first_approver() {
    let scenario = given(vec![proposed(0.5, 72)]).then_apply(approve(PLANNER, "a1"));
    let refusal = scenario.when(approve(OTHER_PLANNER, "a2")).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::FailedPrecondition);
    assert!(refusal.reason.contains("approved already") && refusal.reason.contains(PLANNER), "{refusal}");
    let rejected = refusal.rejected("wo-1", &approve(OTHER_PLANNER, "a2"));
    assert_eq!(
        (rejected.command_id.as_str(), rejected.command.as_str(), rejected.principal.as_str(), rejected.code.as_str()),
        ("a2", "Approve", OTHER_PLANNER, "failed_precondition")
    );
}

#[test]
fn approving_a_cancelled_order_is_refused() {
    let scenario = given(vec![proposed(0.5, 72)]).then_apply(Command::Cancel { meta: meta(PLANNER, "c1") });
    assert_eq!(scenario.state().status, Status::Cancelled);
    let refusal = scenario.when(approve(PLANNER, "a1")).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::FailedPrecondition);
    assert!(refusal.reason.contains("cancelled"), "{refusal}");
}

#[test]
fn four_eyes_refuses_the_proposer_and_any_automatic_approval() {
    let mut manual = proposal(0.99, 500);
    manual.principal = PLANNER.into();
    let scenario = given(vec![]).with_policy(ApprovalPolicy::four_eyes());
    let events = scenario.when(Command::Propose(Box::new(manual.clone()))).unwrap();
    assert_eq!(events, vec![WorkOrderEvent::Proposed(manual.clone())], "nothing approved automatically");
    let scenario = given(events).with_policy(ApprovalPolicy::four_eyes());
    let refusal = scenario.when(approve(PLANNER, "a1")).unwrap_err();
    assert!(refusal.reason.contains("four-eyes"), "{refusal}");
    let events = scenario.when(approve(OTHER_PLANNER, "a2")).unwrap();
    assert!(matches!(&events[..], [WorkOrderEvent::Approved(a)] if a.principal == OTHER_PLANNER && !a.automatic));
    // Without four-eyes the proposer may approve.
    let events = given(vec![WorkOrderEvent::Proposed(manual)]).when(approve(PLANNER, "a1")).unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn a_retried_command_with_the_same_request_id_is_applied_once() {
    let scenario = given(vec![proposed(0.5, 72)]).then_apply(approve(PLANNER, "a1"));
    assert_eq!(scenario.when(approve(PLANNER, "a1")).unwrap(), vec![], "the retry yields nothing");
    let scenario = scenario.then_apply(schedule("t-1", 4, "s1"));
    assert_eq!(scenario.when(schedule("t-2", 9, "s1")).unwrap(), vec![], "a retry is not a new booking");
    // And the proposal's own request id (the prediction's) opens nothing twice.
    let events = scenario.when(Command::Propose(Box::new(proposal(0.5, 72)))).unwrap();
    assert_eq!(events, vec![]);
}

#[test]
fn scheduling_needs_approval_and_a_changed_booking_is_a_reschedule() {
    let refusal = given(vec![proposed(0.5, 72)]).when(schedule("t-1", 4, "s1")).unwrap_err();
    assert!(refusal.reason.contains("not approved yet"), "{refusal}");
    let scenario = booked();
    assert_eq!(scenario.state().status, Status::Scheduled);
    assert_eq!(scenario.state().booking, Some(booking("t-1", 4)));
    assert_eq!(scenario.when(schedule("t-1", 4, "s2")).unwrap(), vec![], "an unchanged plan changes nothing");
    let events = scenario.when(schedule("t-2", 6, "s3")).unwrap();
    let [WorkOrderEvent::Rescheduled(moved)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((moved.previous_technician_id.as_str(), moved.previous_start), ("t-1", booking("t-1", 4).start));
    assert_eq!((moved.technician_id.as_str(), moved.start), ("t-2", booking("t-2", 6).start));
    let mut backwards = booking("t-1", 4);
    backwards.end = backwards.start;
    let refusal = scenario.when(Command::Schedule { booking: backwards, meta: meta(AGENT, "s4") }).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::InvalidArgument);
}

#[test]
fn work_in_progress_is_not_moved_or_cancelled_and_completes_with_its_outcome() {
    let refusal = given(vec![proposed(0.5, 72)])
        .then_apply(approve(PLANNER, "a1"))
        .when(Command::Start { meta: meta("key:tech", "st1") })
        .unwrap_err();
    assert!(refusal.reason.contains("booked"), "{refusal}");
    let refusal = booked().when(Command::Complete { outcome: outcome(), meta: meta("key:tech", "done") }).unwrap_err();
    assert!(refusal.reason.contains("start it first"), "{refusal}");

    let started = booked().then_apply(Command::Start { meta: meta("key:tech", "st1") });
    assert_eq!(started.state().status, Status::InProgress);
    for command in [schedule("t-2", 8, "s9"), Command::Cancel { meta: meta(PLANNER, "c1") }] {
        let refusal = started.when(command).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::FailedPrecondition, "{refusal}");
    }
    let done = started.then_apply(Command::Complete { outcome: outcome(), meta: meta("key:tech", "done") });
    let order = done.state();
    assert_eq!((order.status, order.failure_confirmed), (Status::Completed, Some(true)));
    let WorkOrderEvent::Completed(completed) = done.history.last().unwrap() else { panic!() };
    assert_eq!((completed.actual_minutes, completed.failure_code.cause.as_str()), (100, "lubrication"));
    // Closed: no new evidence, no approval.
    let update = Command::Update {
        work_order_id: "wo-1".into(),
        deadline: NOW,
        priority: 90,
        confidence: 0.9,
        evidence: WorkOrderEvidence::default(),
        meta: meta(AGENT, "u1"),
    };
    assert!(done.when(update).unwrap_err().reason.contains("completed"));
}

#[test]
fn later_evidence_updates_the_deadline_and_extends_the_evidence() {
    let update = Command::Update {
        work_order_id: "wo-1".into(),
        deadline: Timestamp(NOW.0 + 30 * HOUR),
        priority: 80,
        confidence: 0.7,
        evidence: WorkOrderEvidence {
            prediction_event_ids: vec!["p2".into()],
            anomaly_event_ids: vec!["a9".into()],
            summary: "RUL 30 h".into(),
        },
        meta: meta(AGENT, "prediction-p2"),
    };
    let order = booked().then_apply(update).state();
    assert_eq!((order.deadline, order.priority, order.status), (Timestamp(NOW.0 + 30 * HOUR), 80, Status::Scheduled));
    assert_eq!(order.evidence.prediction_event_ids, ["p1", "p2"]);
    assert_eq!(order.evidence.anomaly_event_ids, ["a9"]);
}

#[test]
fn rejecting_deferring_and_superseding() {
    let scenario = given(vec![proposed(0.5, 72)]);
    let refusal = scenario.when(Command::Defer { until: NOW, meta: meta(PLANNER, "d0") }).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::InvalidArgument);
    let deferred = scenario.then_apply(Command::Defer { until: Timestamp(NOW.0 + HOUR), meta: meta(PLANNER, "d1") });
    assert_eq!(deferred.state().status, Status::Deferred);
    let approved = given(deferred.history.clone()).then_apply(approve(PLANNER, "a1"));
    assert_eq!((approved.state().status, approved.state().deferred_until), (Status::Approved, None));
    assert!(approved.when(Command::Reject { meta: meta(PLANNER, "r1") }).unwrap_err().reason.contains("cancel"));
    let rejected = deferred.then_apply(Command::Reject { meta: meta(PLANNER, "r1") });
    assert_eq!(rejected.state().status, Status::Rejected);
    assert!(!rejected.state().status.is_open());

    let superseded = booked().then_apply(Command::Supersede { by: "wo-2".into(), meta: meta(AGENT, "x1") });
    assert_eq!(superseded.state().superseded_by.as_deref(), Some("wo-2"));
    let refusal = booked().when(Command::Supersede { by: "wo-1".into(), meta: meta(AGENT, "x2") }).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::InvalidArgument);
}

#[test]
fn commands_without_an_order_or_a_request_id_are_refused() {
    let refusal = given(vec![]).when(approve(PLANNER, "a1")).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::NotFound);
    let refusal = given(vec![proposed(0.5, 72)]).when(approve(PLANNER, "")).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::InvalidArgument);
    let mut empty = proposal(0.5, 72);
    empty.estimated_minutes = 0;
    assert_eq!(given(vec![]).when(Command::Propose(Box::new(empty))).unwrap_err().code, RefusalCode::InvalidArgument);
}

#[test]
fn apply_never_fails_and_replay_is_deterministic() {
    // An event before any proposal is ignored, not a panic.
    let stray = WorkOrderEvent::Started(WorkOrderStarted {
        work_order_id: "wo-1".into(),
        principal: "x".into(),
        request_id: "r".into(),
        reason: String::new(),
    });
    assert_eq!(WorkOrder::apply(None, &stray), None);
    let history = booked().history;
    let once = WorkOrder::replay(&history);
    let twice = WorkOrder::replay(&history);
    assert_eq!(once, twice);
    assert!(once.unwrap().has_applied("s1"));
}
