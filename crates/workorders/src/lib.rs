//! The work-order aggregate, event-sourced and owned by the scheduling agent (ARCHITECTURE §5):
//!
//! ```text
//! proposed ──► approved ──► scheduled ──► in_progress ──► completed
//!    │  └─► rejected            │  └─► (rescheduled)
//!    └─► superseded / cancelled ◄┘ (not once work is in progress)
//! ```
//!
//! [`decide`] holds the rules and may refuse a command with a [`Refusal`] that says what to do;
//! [`WorkOrder::apply`] folds an event in and never fails, so replaying a stream always
//! rebuilds the same state. A command carries its principal, request id and reason
//! ([`CommandMeta`]); a request id the order has already applied yields no events, so a
//! retried command is applied once.

pub mod catalog;
mod policy;
pub mod proposals;
pub mod roster;
pub mod site_plan;

pub use policy::{ApprovalPolicy, AutoApprove};

use sm_domain::Timestamp;
use sm_domain::work_orders::*;
use std::collections::BTreeSet;

/// Where a work order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Proposed,
    Deferred,
    Approved,
    Scheduled,
    InProgress,
    Completed,
    Rejected,
    Cancelled,
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Deferred => "deferred",
            Self::Approved => "approved",
            Self::Scheduled => "scheduled",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
        }
    }

    /// Still to be done: the one open order per asset and failure mode is an open one.
    pub fn is_open(self) -> bool {
        !matches!(self, Self::Completed | Self::Rejected | Self::Cancelled | Self::Superseded)
    }

    fn awaits_decision(self) -> bool {
        matches!(self, Self::Proposed | Self::Deferred)
    }
}

/// A booking of the work into a technician's time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Booking {
    pub technician_id: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub plan_version: i64,
    pub late: bool,
    /// A planner's manual assignment (Reassign), which the optimiser keeps.
    pub fixed: bool,
}

impl Booking {
    fn of(technician_id: &str, start: Timestamp, end: Timestamp, plan_version: i64, late: bool, fixed: bool) -> Self {
        Self { technician_id: technician_id.to_owned(), start, end, plan_version, late, fixed }
    }
}

/// Who sends a command, its idempotency key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMeta {
    pub principal: String,
    pub request_id: String,
    pub reason: String,
}

/// What a technician reports when the work is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub actual_minutes: i32,
    pub notes: String,
    pub failure_code: FailureCode,
    pub failure_confirmed: bool,
    pub parts_used: Vec<String>,
}

/// What may be asked of a work order.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Opens the order (the agent, from a prediction or an anomaly episode); the proposal is
    /// the `WorkOrderProposed` to record, whose meta is this command's.
    Propose(Box<WorkOrderProposed>),
    /// New evidence for the open order: deadline, priority, confidence and the events behind.
    Update {
        /// The open order (of the asset and failure mode) the evidence is for.
        work_order_id: String,
        deadline: Timestamp,
        priority: i32,
        confidence: f64,
        evidence: WorkOrderEvidence,
        meta: CommandMeta,
    },
    Approve {
        meta: CommandMeta,
    },
    Reject {
        meta: CommandMeta,
    },
    Defer {
        until: Timestamp,
        meta: CommandMeta,
    },
    /// Books (or re-books) the order: the optimiser's plan, or a planner's Reassign (`fixed`).
    Schedule {
        booking: Booking,
        meta: CommandMeta,
    },
    Start {
        meta: CommandMeta,
    },
    Complete {
        outcome: Outcome,
        meta: CommandMeta,
    },
    Cancel {
        meta: CommandMeta,
    },
    Supersede {
        by: String,
        meta: CommandMeta,
    },
}

impl Command {
    /// The command's name, as `CommandRejected` records it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Propose(_) => "Propose",
            Self::Update { .. } => "Update",
            Self::Approve { .. } => "Approve",
            Self::Reject { .. } => "Reject",
            Self::Defer { .. } => "Defer",
            Self::Schedule { .. } => "Schedule",
            Self::Start { .. } => "Start",
            Self::Complete { .. } => "Complete",
            Self::Cancel { .. } => "Cancel",
            Self::Supersede { .. } => "Supersede",
        }
    }

    /// The order a command opens or updates (the others name theirs beside the command).
    pub fn target(&self) -> Option<&str> {
        match self {
            Self::Propose(p) => Some(&p.work_order_id),
            Self::Update { work_order_id, .. } => Some(work_order_id),
            _ => None,
        }
    }

    fn meta(&self) -> CommandMeta {
        match self {
            Self::Propose(p) => CommandMeta {
                principal: p.principal.clone(),
                request_id: p.request_id.clone(),
                reason: p.reason.clone(),
            },
            Self::Update { meta, .. }
            | Self::Approve { meta }
            | Self::Reject { meta }
            | Self::Defer { meta, .. }
            | Self::Schedule { meta, .. }
            | Self::Start { meta }
            | Self::Complete { meta, .. }
            | Self::Cancel { meta }
            | Self::Supersede { meta, .. } => meta.clone(),
        }
    }
}

/// The kind of a refusal: how the command path answers it (gRPC code, `CommandRejected.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// Not allowed in the order's current state (or by this principal under four-eyes).
    FailedPrecondition,
    /// The command itself is malformed (an end before its start, a deferral into the past).
    InvalidArgument,
    /// No such work order.
    NotFound,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailedPrecondition => "failed_precondition",
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
        }
    }
}

/// Why a command was not applied, saying what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub code: RefusalCode,
    pub reason: String,
}

impl Refusal {
    fn state(reason: impl Into<String>) -> Self {
        Self { code: RefusalCode::FailedPrecondition, reason: reason.into() }
    }

    fn invalid(reason: impl Into<String>) -> Self {
        Self { code: RefusalCode::InvalidArgument, reason: reason.into() }
    }

    /// The `CommandRejected` event that records this refusal of `command` on `work_order_id`.
    pub fn rejected(&self, work_order_id: &str, command: &Command) -> CommandRejected {
        let meta = command.meta();
        CommandRejected {
            command_id: meta.request_id,
            aggregate_id: work_order_id.to_owned(),
            command: command.name().to_owned(),
            principal: meta.principal,
            code: self.code.as_str().to_owned(),
            reason: self.reason.clone(),
        }
    }
}

/// A work order as its events made it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkOrder {
    pub id: String,
    pub asset_id: String,
    pub asset_type: String,
    pub site: String,
    pub failure_mode: String,
    pub required_skills: Vec<SkillRequirement>,
    pub estimated_minutes: i32,
    /// Not to be planned before.
    pub ready_at: Timestamp,
    pub status: Status,
    pub deadline: Timestamp,
    pub priority: i32,
    pub confidence: f64,
    pub proposed_by: String,
    pub approved_by: Option<String>,
    pub deferred_until: Option<Timestamp>,
    pub booking: Option<Booking>,
    pub superseded_by: Option<String>,
    /// Prediction and anomaly events that led to it, oldest first.
    pub evidence: WorkOrderEvidence,
    /// Whether the completed work confirmed the predicted failure.
    pub failure_confirmed: Option<bool>,
    /// Request ids already applied: their retries yield nothing.
    applied: BTreeSet<String>,
}

impl WorkOrder {
    /// Folds `event` into `state` (None before the first event). Never fails: an event that
    /// does not fit (the stream's first is not a proposal) leaves the state as it was.
    pub fn apply(state: Option<Self>, event: &WorkOrderEvent) -> Option<Self> {
        let mut order = match (state, event) {
            (None, WorkOrderEvent::Proposed(p)) => {
                return Some(Self {
                    id: p.work_order_id.clone(),
                    asset_id: p.asset_id.clone(),
                    asset_type: p.asset_type.clone(),
                    site: p.site.clone(),
                    failure_mode: p.failure_mode.clone(),
                    required_skills: p.required_skills.clone(),
                    estimated_minutes: p.estimated_minutes,
                    ready_at: p.ready_at,
                    status: Status::Proposed,
                    deadline: p.deadline,
                    priority: p.priority,
                    confidence: p.confidence,
                    proposed_by: p.principal.clone(),
                    approved_by: None,
                    deferred_until: None,
                    booking: None,
                    superseded_by: None,
                    evidence: p.evidence.clone(),
                    failure_confirmed: None,
                    applied: BTreeSet::from([p.request_id.clone()]),
                });
            }
            (None, _) => return None,
            (Some(order), _) => order,
        };
        order.applied.insert(event.request_id().to_owned());
        match event {
            WorkOrderEvent::Proposed(_) => {}
            WorkOrderEvent::Updated(e) => {
                order.deadline = e.deadline;
                order.priority = e.priority;
                order.confidence = e.confidence;
                order.evidence.prediction_event_ids.extend(e.evidence.prediction_event_ids.iter().cloned());
                order.evidence.anomaly_event_ids.extend(e.evidence.anomaly_event_ids.iter().cloned());
                order.evidence.summary = e.evidence.summary.clone();
            }
            WorkOrderEvent::Approved(e) => {
                order.status = Status::Approved;
                order.approved_by = Some(e.principal.clone());
                order.deferred_until = None;
            }
            WorkOrderEvent::Rejected(_) => order.status = Status::Rejected,
            WorkOrderEvent::Deferred(e) => {
                order.status = Status::Deferred;
                order.deferred_until = Some(e.until);
            }
            WorkOrderEvent::Scheduled(e) => {
                order.status = Status::Scheduled;
                order.booking = Some(Booking::of(&e.technician_id, e.start, e.end, e.plan_version, e.late, e.fixed));
            }
            WorkOrderEvent::Rescheduled(e) => {
                order.status = Status::Scheduled;
                order.booking = Some(Booking::of(&e.technician_id, e.start, e.end, e.plan_version, e.late, e.fixed));
            }
            WorkOrderEvent::Started(_) => order.status = Status::InProgress,
            WorkOrderEvent::Completed(e) => {
                order.status = Status::Completed;
                order.failure_confirmed = Some(e.failure_confirmed);
            }
            WorkOrderEvent::Cancelled(_) => order.status = Status::Cancelled,
            WorkOrderEvent::Superseded(e) => {
                order.status = Status::Superseded;
                order.superseded_by = Some(e.superseded_by.clone());
            }
        }
        Some(order)
    }

    /// Replays a whole stream.
    pub fn replay<'e>(events: impl IntoIterator<Item = &'e WorkOrderEvent>) -> Option<Self> {
        events.into_iter().fold(None, Self::apply)
    }

    /// Whether `request_id` was applied already.
    pub fn has_applied(&self, request_id: &str) -> bool {
        self.applied.contains(request_id)
    }
}

/// The events `command` makes of `state` (None: no such order yet) at `now`, or why not.
pub fn decide(
    state: Option<&WorkOrder>,
    command: &Command,
    policy: &ApprovalPolicy,
    now: Timestamp,
) -> Result<Vec<WorkOrderEvent>, Refusal> {
    let meta = command.meta();
    if meta.request_id.is_empty() {
        return Err(Refusal::invalid("a command needs a request id (its idempotency key): send a fresh UUID"));
    }
    let Some(order) = state else {
        return match command {
            Command::Propose(proposal) => propose(proposal, policy, now),
            _ => Err(Refusal {
                code: RefusalCode::NotFound,
                reason: "no such work order: list them with WorkOrderService.List".into(),
            }),
        };
    };
    if order.has_applied(&meta.request_id) {
        return Ok(Vec::new());
    }
    let id = order.id.clone();
    let CommandMeta { principal, request_id, reason } = meta;
    let closed =
        |what: &str| Refusal::state(format!("work order {id} is {}: it cannot be {what}", order.status.as_str()));
    let event = match command {
        Command::Propose(_) => {
            return Err(Refusal::state(format!(
                "work order {id} exists already ({}): later evidence updates it",
                order.status.as_str()
            )));
        }
        Command::Update { deadline, priority, confidence, evidence, .. } => {
            if !order.status.is_open() || order.status == Status::InProgress {
                return Err(closed("updated"));
            }
            WorkOrderEvent::Updated(WorkOrderUpdated {
                work_order_id: id,
                deadline: *deadline,
                priority: *priority,
                confidence: *confidence,
                evidence: evidence.clone(),
                principal,
                request_id,
                reason,
            })
        }
        Command::Approve { .. } => {
            if !order.status.awaits_decision() {
                return Err(match (&order.approved_by, order.status.is_open()) {
                    (Some(by), true) => Refusal::state(format!("work order {id} was approved already, by {by}")),
                    _ => closed("approved"),
                });
            }
            if policy.four_eyes && principal == order.proposed_by {
                return Err(Refusal::state(format!(
                    "four-eyes: {principal} proposed work order {id} and may not approve it; another planner must"
                )));
            }
            WorkOrderEvent::Approved(WorkOrderApproved {
                work_order_id: id,
                automatic: false,
                principal,
                request_id,
                reason,
            })
        }
        Command::Reject { .. } => {
            if !order.status.awaits_decision() {
                return Err(closed("rejected (only a proposal can be; cancel an approved order instead)"));
            }
            WorkOrderEvent::Rejected(WorkOrderRejected { work_order_id: id, principal, request_id, reason })
        }
        Command::Defer { until, .. } => {
            if !order.status.awaits_decision() {
                return Err(closed("deferred (only a proposal waiting for a decision can be)"));
            }
            if *until <= now {
                return Err(Refusal::invalid("defer until a time in the future"));
            }
            WorkOrderEvent::Deferred(WorkOrderDeferred {
                work_order_id: id,
                until: *until,
                principal,
                request_id,
                reason,
            })
        }
        Command::Schedule { booking, .. } => {
            if booking.end <= booking.start || booking.technician_id.is_empty() {
                return Err(Refusal::invalid("a booking needs a technician and an end after its start"));
            }
            match (order.status, &order.booking) {
                (Status::Approved, _) => WorkOrderEvent::Scheduled(WorkOrderScheduled {
                    work_order_id: id,
                    technician_id: booking.technician_id.clone(),
                    start: booking.start,
                    end: booking.end,
                    plan_version: booking.plan_version,
                    late: booking.late,
                    fixed: booking.fixed,
                    principal,
                    request_id,
                    reason,
                }),
                (Status::Scheduled, Some(current)) => {
                    if current.technician_id == booking.technician_id
                        && current.start == booking.start
                        && current.end == booking.end
                        && current.fixed == booking.fixed
                    {
                        return Ok(Vec::new());
                    }
                    WorkOrderEvent::Rescheduled(WorkOrderRescheduled {
                        work_order_id: id,
                        technician_id: booking.technician_id.clone(),
                        start: booking.start,
                        end: booking.end,
                        plan_version: booking.plan_version,
                        late: booking.late,
                        fixed: booking.fixed,
                        previous_technician_id: current.technician_id.clone(),
                        previous_start: current.start,
                        principal,
                        request_id,
                        reason,
                    })
                }
                (Status::Proposed | Status::Deferred, _) => {
                    return Err(Refusal::state(format!("work order {id} is not approved yet: approve it first")));
                }
                (Status::InProgress, _) => {
                    return Err(Refusal::state(format!("work on {id} has started: it is not moved any more")));
                }
                _ => return Err(closed("scheduled")),
            }
        }
        Command::Start { .. } => match order.status {
            Status::Scheduled => {
                WorkOrderEvent::Started(WorkOrderStarted { work_order_id: id, principal, request_id, reason })
            }
            Status::InProgress => return Err(Refusal::state(format!("work on {id} has started already"))),
            Status::Proposed | Status::Deferred | Status::Approved => {
                return Err(Refusal::state(format!(
                    "work order {id} is {}: it starts once it is booked into a technician's shift",
                    order.status.as_str()
                )));
            }
            _ => return Err(closed("started")),
        },
        Command::Complete { outcome, .. } => {
            if order.status != Status::InProgress {
                return Err(Refusal::state(format!(
                    "work order {id} is {}: only work in progress can be completed (start it first)",
                    order.status.as_str()
                )));
            }
            if outcome.actual_minutes <= 0 {
                return Err(Refusal::invalid("actual_minutes must be the minutes the work took (1 or more)"));
            }
            WorkOrderEvent::Completed(WorkOrderCompleted {
                work_order_id: id,
                actual_minutes: outcome.actual_minutes,
                notes: outcome.notes.clone(),
                failure_code: outcome.failure_code.clone(),
                failure_confirmed: outcome.failure_confirmed,
                parts_used: outcome.parts_used.clone(),
                principal,
                request_id,
                reason,
            })
        }
        Command::Cancel { .. } => match order.status {
            Status::InProgress => {
                return Err(Refusal::state(format!(
                    "work on {id} is in progress: it cannot be cancelled; complete it with its outcome"
                )));
            }
            status if status.is_open() => {
                WorkOrderEvent::Cancelled(WorkOrderCancelled { work_order_id: id, principal, request_id, reason })
            }
            _ => return Err(closed("cancelled")),
        },
        Command::Supersede { by, .. } => match order.status {
            Status::InProgress => {
                return Err(Refusal::state(format!("work on {id} is in progress: it cannot be superseded")));
            }
            _ if by == &id || by.is_empty() => {
                return Err(Refusal::invalid("superseded_by must name another work order"));
            }
            status if status.is_open() => WorkOrderEvent::Superseded(WorkOrderSuperseded {
                work_order_id: id,
                superseded_by: by.clone(),
                principal,
                request_id,
                reason,
            }),
            _ => return Err(closed("superseded")),
        },
    };
    Ok(vec![event])
}

/// A new order, approved at once when the policy allows.
fn propose(
    proposal: &WorkOrderProposed,
    policy: &ApprovalPolicy,
    now: Timestamp,
) -> Result<Vec<WorkOrderEvent>, Refusal> {
    if proposal.work_order_id.is_empty() || proposal.asset_id.is_empty() || proposal.failure_mode.is_empty() {
        return Err(Refusal::invalid("a proposal names its work order, asset and failure mode"));
    }
    if proposal.estimated_minutes <= 0 {
        return Err(Refusal::invalid("estimated_minutes must be 1 or more (the catalog's duration)"));
    }
    let mut events = vec![WorkOrderEvent::Proposed(proposal.clone())];
    if let Some(reason) = policy.auto_approval(proposal.confidence, proposal.deadline, now) {
        events.push(WorkOrderEvent::Approved(WorkOrderApproved {
            work_order_id: proposal.work_order_id.clone(),
            automatic: true,
            principal: proposal.principal.clone(),
            request_id: format!("{}/auto-approval", proposal.request_id),
            reason,
        }));
    }
    Ok(events)
}
