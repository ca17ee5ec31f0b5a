//! From a live prediction to the commands it implies: open a work order for each failure mode
//! whose thresholds it clears, or update the one already open for that asset and mode (at
//! most one open per pair). Ids are derived from the prediction's event id, so replaying the
//! same prediction after a crash makes the same commands, which the aggregate applies once.

use crate::catalog::{FailureMode, MaintenanceCatalog};
use crate::{Command, CommandMeta, WorkOrder};
use sm_domain::work_orders::{SkillRequirement, WorkOrderEvidence, WorkOrderProposed};
use sm_domain::{FailurePredicted, Timestamp};

const MICROS_PER_HOUR: f64 = 3_600_000_000.0;

/// A prediction as the scheduling agent received it.
#[derive(Debug, Clone, Copy)]
pub struct LivePrediction<'a> {
    pub event_id: &'a str,
    pub asset_id: &'a str,
    pub site: &'a str,
    /// When it was made: the start of the time to failure.
    pub at: Timestamp,
    pub prediction: &'a FailurePredicted,
}

/// The commands `live` implies. `open(code)` is the open work order of this asset for a
/// failure mode, if any; `principal` is the agent's own.
pub fn commands_for<'o>(
    catalog: &MaintenanceCatalog,
    live: LivePrediction<'_>,
    open: impl Fn(&str) -> Option<&'o WorkOrder>,
    principal: &str,
) -> Vec<Command> {
    let Some(maintenance) = catalog.asset_type(&live.prediction.asset_type) else { return Vec::new() };
    let criticality = catalog.criticality(live.asset_id, &live.prediction.asset_type);
    let mut commands = Vec::new();
    for mode in maintenance.modes_for_model(&live.prediction.model_name) {
        if !opens(mode, live.prediction) {
            continue;
        }
        let deadline = deadline(mode, &live);
        let priority = priority(deadline, live.at, criticality);
        let confidence = confidence(live.prediction);
        let evidence = WorkOrderEvidence {
            prediction_event_ids: vec![live.event_id.to_owned()],
            anomaly_event_ids: Vec::new(),
            summary: summary(live.prediction, mode),
        };
        let request_id = format!("prediction-{}-{}", live.event_id, mode.code);
        match open(&mode.code) {
            Some(order) => {
                if !worth_updating(order, deadline, priority, live.at) {
                    continue;
                }
                commands.push(Command::Update {
                    work_order_id: order.id.clone(),
                    deadline,
                    priority,
                    confidence,
                    evidence,
                    meta: CommandMeta {
                        principal: principal.to_owned(),
                        request_id,
                        reason: "a later prediction moved the deadline".into(),
                    },
                });
            }
            None => commands.push(Command::Propose(Box::new(WorkOrderProposed {
                work_order_id: format!("wo-{}-{}", live.event_id, mode.code),
                asset_id: live.asset_id.to_owned(),
                asset_type: live.prediction.asset_type.clone(),
                site: live.site.to_owned(),
                failure_mode: mode.code.clone(),
                required_skills: mode
                    .skills
                    .iter()
                    .map(|s| SkillRequirement { skill: s.skill.clone(), min_level: s.min_level })
                    .collect(),
                estimated_minutes: mode.estimated_minutes,
                parts: mode.parts.clone(),
                ready_at: live.at,
                deadline,
                priority,
                confidence,
                evidence,
                principal: principal.to_owned(),
                request_id,
                reason: format!("{}: {}", mode.code, mode.description),
            }))),
        }
    }
    commands
}

/// Either threshold of the mode cleared: the pessimistic RUL (the interval's lower bound)
/// below its hours, or P(failure) above its probability.
fn opens(mode: &FailureMode, prediction: &FailurePredicted) -> bool {
    let rul_hours = prediction.rul_low_seconds / 3600.0;
    let by_rul = mode.opens_when.rul_below_hours.is_some_and(|h| prediction.rul_seconds > 0.0 && rul_hours < h);
    let by_probability = mode.opens_when.failure_probability_above.is_some_and(|p| prediction.failure_probability > p);
    by_rul || by_probability
}

/// The pessimistic failure time (the RUL interval's lower bound; the model's horizon for a
/// classifier) minus the mode's safety margin, never before the prediction.
fn deadline(mode: &FailureMode, live: &LivePrediction<'_>) -> Timestamp {
    let prediction = live.prediction;
    let seconds = if prediction.rul_seconds > 0.0 { prediction.rul_low_seconds } else { prediction.horizon_seconds };
    let hours = (seconds / 3600.0 - mode.safety_margin_hours).max(0.0);
    Timestamp(live.at.0 + (hours * MICROS_PER_HOUR) as i64)
}

/// Urgency (20 within a day of the deadline, falling as 1/time, at least 1) times
/// criticality (1 to 5): 1 to 100.
fn priority(deadline: Timestamp, now: Timestamp, criticality: i32) -> i32 {
    let hours = ((deadline.0 - now.0) as f64 / MICROS_PER_HOUR).max(1.0);
    let urgency = (20.0 * 24.0 / hours.max(24.0)).round().clamp(1.0, 20.0) as i32;
    urgency * criticality.clamp(1, 5)
}

/// How sure the prediction is: a classifier's probability, or for RUL how narrow its
/// interval is relative to the RUL (1 − half-width / RUL).
fn confidence(prediction: &FailurePredicted) -> f64 {
    if prediction.rul_seconds <= 0.0 {
        return prediction.failure_probability.clamp(0.0, 1.0);
    }
    let half_width = (prediction.rul_high_seconds - prediction.rul_low_seconds).max(0.0) / 2.0;
    (1.0 - half_width / prediction.rul_seconds).clamp(0.0, 1.0)
}

/// A later prediction is worth an update when the deadline moves by more than an hour and 5 %
/// of the time left, or the priority changes: one per cycle would flood the stream.
fn worth_updating(order: &WorkOrder, deadline: Timestamp, priority: i32, now: Timestamp) -> bool {
    let moved = (deadline.0 - order.deadline.0).abs() as f64;
    let left = (order.deadline.0 - now.0).max(0) as f64;
    priority != order.priority || moved > MICROS_PER_HOUR.max(0.05 * left)
}

fn summary(prediction: &FailurePredicted, mode: &FailureMode) -> String {
    if prediction.rul_seconds > 0.0 {
        format!(
            "{}: RUL {:.0} h ({:.0}–{:.0} h at {:.0} % coverage), model {} v{}",
            mode.code,
            prediction.rul_seconds / 3600.0,
            prediction.rul_low_seconds / 3600.0,
            prediction.rul_high_seconds / 3600.0,
            prediction.coverage * 100.0,
            prediction.model_name,
            prediction.model_version
        )
    } else {
        format!(
            "{}: P(failure within {:.0} h) = {:.2}, model {} v{}",
            mode.code,
            prediction.horizon_seconds / 3600.0,
            prediction.failure_probability,
            prediction.model_name,
            prediction.model_version
        )
    }
}
