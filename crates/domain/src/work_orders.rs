//! Work-order events on `sm.workorders.v1`, keyed by work-order id (the envelope's aggregate
//! id), and `CommandRejected`, the answer to a command its owner did not apply. Every event of
//! a command carries who sent it (the authenticated principal), the client's request id and
//! the reason; every proposal and update carries the events that caused it.
//! [`WorkOrderEvent`] reads any of them.

use crate::codec::{Codec, CodecError};
use crate::events::{Decode, DomainEvent};
use crate::{Envelope, Timestamp};
use serde::{Deserialize, Serialize};

/// The events a work order rests on, for the evidence chain back to the readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderEvidence {
    pub prediction_event_ids: Vec<String>,
    pub anomaly_event_ids: Vec<String>,
    /// One line a planner reads: what was predicted, how sure, how soon.
    pub summary: String,
}

/// A skill a technician needs for the work, at a minimum level (1 trainee to 5 expert).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillRequirement {
    pub skill: String,
    pub min_level: i32,
}

/// ISO 14224-style coding of what the technician found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCode {
    pub failure_class: String,
    pub failure_mode: String,
    pub cause: String,
    pub remedy: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderProposed {
    pub work_order_id: String,
    pub asset_id: String,
    pub asset_type: String,
    pub site: String,
    /// The catalog's failure-mode code.
    pub failure_mode: String,
    pub required_skills: Vec<SkillRequirement>,
    pub estimated_minutes: i32,
    pub parts: Vec<String>,
    pub ready_at: Timestamp,
    pub deadline: Timestamp,
    /// Urgency times criticality, 1 to 100.
    pub priority: i32,
    pub confidence: f64,
    pub evidence: WorkOrderEvidence,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderUpdated {
    pub work_order_id: String,
    pub deadline: Timestamp,
    pub priority: i32,
    pub confidence: f64,
    /// The events added by this update.
    pub evidence: WorkOrderEvidence,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderApproved {
    pub work_order_id: String,
    /// By the approval policy, not a person.
    pub automatic: bool,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderRejected {
    pub work_order_id: String,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderDeferred {
    pub work_order_id: String,
    pub until: Timestamp,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderScheduled {
    pub work_order_id: String,
    pub technician_id: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub plan_version: i64,
    /// Ends after the deadline: no qualified technician had earlier time.
    pub late: bool,
    /// A planner's manual assignment, which the optimiser keeps.
    pub fixed: bool,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderRescheduled {
    pub work_order_id: String,
    pub technician_id: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub plan_version: i64,
    pub late: bool,
    pub fixed: bool,
    pub previous_technician_id: String,
    pub previous_start: Timestamp,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderStarted {
    pub work_order_id: String,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderCompleted {
    pub work_order_id: String,
    pub actual_minutes: i32,
    pub notes: String,
    pub failure_code: FailureCode,
    /// Whether the predicted failure was really developing: the label of the prediction.
    pub failure_confirmed: bool,
    pub parts_used: Vec<String>,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderCancelled {
    pub work_order_id: String,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderSuperseded {
    pub work_order_id: String,
    pub superseded_by: String,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

/// A command its owner did not apply, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRejected {
    /// The command's request id.
    pub command_id: String,
    pub aggregate_id: String,
    /// Its name: `Approve`, `Start`, ...
    pub command: String,
    pub principal: String,
    /// `failed_precondition`, `permission_denied`, `invalid_argument` or `not_found`.
    pub code: String,
    pub reason: String,
}

/// What a technician reports with `Complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderOutcome {
    pub actual_minutes: i32,
    pub notes: String,
    pub failure_code: FailureCode,
    pub failure_confirmed: bool,
    pub parts_used: Vec<String>,
}

/// A person's command on a work order, on `sm.commands.v1` keyed by the order's site: the
/// scheduling instance that plans the site owns its orders, so it applies the command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOrderCommand {
    /// `Approve`, `Reject`, `Defer`, `Start`, `Complete`, `Cancel` or `Reassign`.
    pub command: String,
    pub work_order_id: String,
    pub site: String,
    pub principal: String,
    pub request_id: String,
    pub reason: String,
    /// Defer: until when.
    pub until: Timestamp,
    /// Reassign: to whom, from when.
    pub technician_id: String,
    pub start: Timestamp,
    /// Complete: what was found and done.
    pub outcome: Option<WorkOrderOutcome>,
}

macro_rules! domain_events {
    ($($ty:ident => $schema:literal),* $(,)?) => {
        $(impl DomainEvent for $ty {
            const EVENT_TYPE: &'static str = stringify!($ty);
            const SCHEMA: &'static str = $schema;
        })*
    };
}

domain_events! {
    WorkOrderProposed => "work_order_proposed",
    WorkOrderUpdated => "work_order_updated",
    WorkOrderApproved => "work_order_approved",
    WorkOrderRejected => "work_order_rejected",
    WorkOrderDeferred => "work_order_deferred",
    WorkOrderScheduled => "work_order_scheduled",
    WorkOrderRescheduled => "work_order_rescheduled",
    WorkOrderStarted => "work_order_started",
    WorkOrderCompleted => "work_order_completed",
    WorkOrderCancelled => "work_order_cancelled",
    WorkOrderSuperseded => "work_order_superseded",
    CommandRejected => "command_rejected",
    WorkOrderCommand => "work_order_command",
}

/// Any event of a work order's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkOrderEvent {
    Proposed(WorkOrderProposed),
    Updated(WorkOrderUpdated),
    Approved(WorkOrderApproved),
    Rejected(WorkOrderRejected),
    Deferred(WorkOrderDeferred),
    Scheduled(WorkOrderScheduled),
    Rescheduled(WorkOrderRescheduled),
    Started(WorkOrderStarted),
    Completed(WorkOrderCompleted),
    Cancelled(WorkOrderCancelled),
    Superseded(WorkOrderSuperseded),
}

impl WorkOrderEvent {
    /// The work order the event is about.
    pub fn work_order_id(&self) -> &str {
        match self {
            Self::Proposed(e) => &e.work_order_id,
            Self::Updated(e) => &e.work_order_id,
            Self::Approved(e) => &e.work_order_id,
            Self::Rejected(e) => &e.work_order_id,
            Self::Deferred(e) => &e.work_order_id,
            Self::Scheduled(e) => &e.work_order_id,
            Self::Rescheduled(e) => &e.work_order_id,
            Self::Started(e) => &e.work_order_id,
            Self::Completed(e) => &e.work_order_id,
            Self::Cancelled(e) => &e.work_order_id,
            Self::Superseded(e) => &e.work_order_id,
        }
    }

    /// The request id of the command that made it.
    pub fn request_id(&self) -> &str {
        match self {
            Self::Proposed(e) => &e.request_id,
            Self::Updated(e) => &e.request_id,
            Self::Approved(e) => &e.request_id,
            Self::Rejected(e) => &e.request_id,
            Self::Deferred(e) => &e.request_id,
            Self::Scheduled(e) => &e.request_id,
            Self::Rescheduled(e) => &e.request_id,
            Self::Started(e) => &e.request_id,
            Self::Completed(e) => &e.request_id,
            Self::Cancelled(e) => &e.request_id,
            Self::Superseded(e) => &e.request_id,
        }
    }

    /// The event's `EVENT_TYPE`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Proposed(_) => WorkOrderProposed::EVENT_TYPE,
            Self::Updated(_) => WorkOrderUpdated::EVENT_TYPE,
            Self::Approved(_) => WorkOrderApproved::EVENT_TYPE,
            Self::Rejected(_) => WorkOrderRejected::EVENT_TYPE,
            Self::Deferred(_) => WorkOrderDeferred::EVENT_TYPE,
            Self::Scheduled(_) => WorkOrderScheduled::EVENT_TYPE,
            Self::Rescheduled(_) => WorkOrderRescheduled::EVENT_TYPE,
            Self::Started(_) => WorkOrderStarted::EVENT_TYPE,
            Self::Completed(_) => WorkOrderCompleted::EVENT_TYPE,
            Self::Cancelled(_) => WorkOrderCancelled::EVENT_TYPE,
            Self::Superseded(_) => WorkOrderSuperseded::EVENT_TYPE,
        }
    }
}

impl Decode for WorkOrderEvent {
    fn decode(codec: &Codec, bytes: &[u8], content_type: Option<&str>) -> Result<Envelope<Self>, CodecError> {
        use crate::events::decode_variant as wrap;
        const EXPECTED: &str = "a work-order event";
        match codec.subject_of(bytes, content_type, EXPECTED)? {
            WorkOrderProposed::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Proposed),
            WorkOrderUpdated::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Updated),
            WorkOrderApproved::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Approved),
            WorkOrderRejected::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Rejected),
            WorkOrderDeferred::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Deferred),
            WorkOrderScheduled::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Scheduled),
            WorkOrderRescheduled::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Rescheduled),
            WorkOrderStarted::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Started),
            WorkOrderCompleted::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Completed),
            WorkOrderCancelled::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Cancelled),
            WorkOrderSuperseded::SCHEMA => wrap(codec, bytes, content_type, WorkOrderEvent::Superseded),
            other => Err(CodecError::WrongEventType { expected: EXPECTED, found: other }),
        }
    }
}

/// What `sm.commands.v1` carries: people's commands, and the live predictions the scheduling
/// agent's intake forwards there (re-keyed by site) so one instance sees all of a site.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulingRequest {
    Prediction(crate::FailurePredicted),
    Command(WorkOrderCommand),
}

impl Decode for SchedulingRequest {
    fn decode(codec: &Codec, bytes: &[u8], content_type: Option<&str>) -> Result<Envelope<Self>, CodecError> {
        use crate::events::decode_variant as wrap;
        const EXPECTED: &str = "a work-order command or a forwarded prediction";
        match codec.subject_of(bytes, content_type, EXPECTED)? {
            WorkOrderCommand::SCHEMA => wrap(codec, bytes, content_type, SchedulingRequest::Command),
            crate::FailurePredicted::SCHEMA => wrap(codec, bytes, content_type, SchedulingRequest::Prediction),
            other => Err(CodecError::WrongEventType { expected: EXPECTED, found: other }),
        }
    }
}

/// What `sm.workorders.v1` carries: the orders' events and the commands refused.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkOrderRecord {
    Event(WorkOrderEvent),
    Rejected(CommandRejected),
}

impl Decode for WorkOrderRecord {
    fn decode(codec: &Codec, bytes: &[u8], content_type: Option<&str>) -> Result<Envelope<Self>, CodecError> {
        if codec.subject_of(bytes, content_type, "a work-order event")? == CommandRejected::SCHEMA {
            return crate::events::decode_variant(codec, bytes, content_type, WorkOrderRecord::Rejected);
        }
        let event = WorkOrderEvent::decode(codec, bytes, content_type)?;
        Ok(Envelope { header: event.header, payload: WorkOrderRecord::Event(event.payload) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AssetId, TenantId};

    fn round_trip<T: DomainEvent>(payload: T) -> WorkOrderEvent {
        let codec = Codec::embedded().unwrap();
        let envelope =
            Envelope::origin(TenantId::from("acme"), AssetId::from("wo-0001"), Timestamp(1), "scheduling", payload);
        let bytes = codec.encode(&envelope).unwrap();
        WorkOrderEvent::decode(&codec, &bytes, None).unwrap().payload
    }

    #[test]
    fn every_work_order_event_round_trips_and_dispatches_on_its_schema() {
        let who = |n: &str| (format!("user:planner#{n}"), format!("req-{n}"), format!("because {n}"));
        let (principal, request_id, reason) = who("1");
        let proposed = WorkOrderProposed {
            work_order_id: "wo-0001".into(),
            asset_id: "pump-7".into(),
            asset_type: "centrifugal_pump".into(),
            site: "plant-a".into(),
            failure_mode: "BRG-WEAR".into(),
            required_skills: vec![SkillRequirement { skill: "vibration".into(), min_level: 3 }],
            estimated_minutes: 240,
            parts: vec!["bearing 6205".into()],
            ready_at: Timestamp(10),
            deadline: Timestamp(1_000_000),
            priority: 64,
            confidence: 0.87,
            evidence: WorkOrderEvidence {
                prediction_event_ids: vec!["e1".into(), "e2".into()],
                anomaly_event_ids: vec!["a1".into()],
                summary: "RUL 41 h (p90 55 h)".into(),
            },
            principal: principal.clone(),
            request_id: request_id.clone(),
            reason: reason.clone(),
        };
        assert_eq!(round_trip(proposed.clone()), WorkOrderEvent::Proposed(proposed));
        let completed = WorkOrderCompleted {
            work_order_id: "wo-0001".into(),
            actual_minutes: 200,
            notes: "outer race pitted".into(),
            failure_code: FailureCode {
                failure_class: "mechanical".into(),
                failure_mode: "BRG-WEAR".into(),
                cause: "lubrication".into(),
                remedy: "replace".into(),
            },
            failure_confirmed: true,
            parts_used: vec!["bearing 6205".into()],
            principal: principal.clone(),
            request_id: request_id.clone(),
            reason: reason.clone(),
        };
        assert_eq!(round_trip(completed.clone()), WorkOrderEvent::Completed(completed));
        let rescheduled = WorkOrderRescheduled {
            work_order_id: "wo-0001".into(),
            technician_id: "t-2".into(),
            start: Timestamp(100),
            end: Timestamp(200),
            plan_version: 3,
            late: false,
            fixed: true,
            previous_technician_id: "t-1".into(),
            previous_start: Timestamp(50),
            principal: principal.clone(),
            request_id: request_id.clone(),
            reason: reason.clone(),
        };
        assert_eq!(round_trip(rescheduled.clone()), WorkOrderEvent::Rescheduled(rescheduled));
        let started = WorkOrderStarted {
            work_order_id: "wo-0001".into(),
            principal: principal.clone(),
            request_id: request_id.clone(),
            reason: reason.clone(),
        };
        let event = round_trip(started.clone());
        assert_eq!(
            (event.work_order_id(), event.request_id(), event.event_type()),
            ("wo-0001", "req-1", "WorkOrderStarted")
        );
        assert_eq!(event, WorkOrderEvent::Started(started));
        // Not a work-order event: refused by name, not misread.
        let codec = Codec::embedded().unwrap();
        let rejected = CommandRejected {
            command_id: "req-1".into(),
            aggregate_id: "wo-0001".into(),
            command: "Approve".into(),
            principal,
            code: "failed_precondition".into(),
            reason: "already approved".into(),
        };
        let bytes = codec
            .encode(&Envelope::origin(TenantId::from("acme"), AssetId::from("wo-0001"), Timestamp(1), "t", rejected))
            .unwrap();
        assert!(matches!(
            WorkOrderEvent::decode(&codec, &bytes, None),
            Err(CodecError::WrongEventType { found: "command_rejected", .. })
        ));
    }
}
