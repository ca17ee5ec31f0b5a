//! One site's plan: its approved work orders into its technicians' shifts, re-planned from
//! the orders as they stand. What is already under way is never moved: work in progress, a
//! planner's manual assignment and any booking whose start has come are taken out of their
//! technician's time, and the optimiser plans the rest around them, with the current bookings
//! as the previous plan (moving one costs stability). Every plan is checked by
//! [`sm_planner::verify`] before a booking leaves here; a plan that fails is replaced by the
//! greedy one, and if that fails too nothing is booked.
//!
//! The plan's clock is minutes from now. A deployment plans in real minutes; the demo, whose
//! simulated failures come in minutes, runs a compressed clock (`micros_per_minute`), and the
//! technicians' shifts are then read on the compressed calendar.

use crate::roster;
use crate::{Booking, Status, WorkOrder};
use sm_domain::Timestamp;
use sm_domain::roster::TechnicianRegistered;
use sm_planner::{Greedy, Instance, Limits, Minute, Order, Planner, Window};
use std::time::Duration;

/// How a site is planned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanSettings {
    pub horizon_days: i64,
    pub time_limit: Duration,
    pub seed: u64,
    /// Real microseconds per plan minute: 60 000 000 in production.
    pub micros_per_minute: i64,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self { horizon_days: 14, time_limit: Duration::from_secs(2), seed: 7, micros_per_minute: 60_000_000 }
    }
}

/// A re-plan's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Replan {
    /// New or changed bookings, by work-order id.
    pub bookings: Vec<(String, Booking)>,
    /// Approved orders no qualified technician of the site has room for in the horizon.
    pub unplanned: Vec<String>,
    /// Orders planned to end after their deadline.
    pub late: Vec<String>,
    /// Hard-constraint violations the checker found in the solver's plan (then greedy's was used).
    pub violations: usize,
    /// Which planner's plan was used.
    pub planner: &'static str,
}

/// Whether `order` keeps its booking whatever the plan: work in progress, a manual
/// assignment, or a booking whose start has come.
pub fn is_frozen(order: &WorkOrder, now: Timestamp) -> bool {
    match (&order.status, &order.booking) {
        (Status::InProgress, _) => true,
        (Status::Scheduled, Some(booking)) => booking.fixed || booking.start <= now,
        _ => false,
    }
}

/// Re-plans `orders` (one site's) over `technicians` (that site's roster) at `now`.
pub fn replan(
    orders: &[&WorkOrder],
    technicians: &[TechnicianRegistered],
    now: Timestamp,
    plan_version: i64,
    settings: &PlanSettings,
    solver: &dyn Planner,
) -> Replan {
    let mpm = settings.micros_per_minute.max(1);
    // The plan starts on the next whole minute: shifts start on whole minutes, so a booking
    // at plan minute m is never a fraction of a minute before its shift.
    let now = Timestamp(now.0.div_euclid(mpm) * mpm + if now.0.rem_euclid(mpm) > 0 { mpm } else { 0 });
    let minute = |t: Timestamp| (t.0 - now.0).div_euclid(mpm);
    let at = |m: Minute| Timestamp(now.0 + m * mpm);
    let mut staff: Vec<_> =
        technicians.iter().filter_map(|t| roster::technician(t, now, settings.horizon_days)).collect();
    // Frozen work is time taken from its technician, not something to plan.
    for order in orders.iter().filter(|o| is_frozen(o, now)) {
        let Some(booking) = &order.booking else { continue };
        if let Some(technician) = staff.iter_mut().find(|t| t.id == booking.technician_id) {
            let busy = Window { start: minute(booking.start), end: minute(booking.end).max(minute(booking.start) + 1) };
            technician.shifts = roster::subtract(std::mem::take(&mut technician.shifts), &[busy]);
        }
    }
    let to_plan: Vec<&WorkOrder> = orders
        .iter()
        .copied()
        .filter(|o| matches!(o.status, Status::Approved | Status::Scheduled) && !is_frozen(o, now))
        .collect();
    let instance = Instance {
        orders: to_plan
            .iter()
            .map(|o| Order {
                id: o.id.clone(),
                site: o.site.clone(),
                skills: o.required_skills.iter().map(|s| (s.skill.clone(), s.min_level)).collect(),
                duration: o.estimated_minutes.max(1) as Minute,
                ready: minute(o.ready_at).max(0),
                deadline: minute(o.deadline),
                priority: o.priority.clamp(1, 100) as i64,
                pinned: None,
                previous: o.booking.as_ref().and_then(|b| {
                    let technician = staff.iter().position(|t| t.id == b.technician_id)?;
                    Some(sm_planner::Assignment { technician, start: minute(b.start) })
                }),
            })
            .collect(),
        technicians: staff,
    };
    let limits = Limits { time_limit: settings.time_limit, seed: settings.seed };
    let mut plan = solver.plan(&instance, limits);
    let mut used = solver.name();
    let violations = sm_planner::verify(&instance, &plan).len();
    if violations > 0 {
        plan = Greedy.plan(&instance, limits);
        used = Greedy.name();
        if !sm_planner::verify(&instance, &plan).is_empty() {
            return Replan { violations, planner: "none", ..Replan::default() };
        }
    }
    let mut replan = Replan { violations, planner: used, ..Replan::default() };
    for ((order, planned), work) in instance.orders.iter().zip(&plan.assignments).zip(&to_plan) {
        let Some(assignment) = planned else {
            replan.unplanned.push(order.id.clone());
            continue;
        };
        let end = assignment.start + order.duration;
        let late = end > order.deadline;
        if late {
            replan.late.push(order.id.clone());
        }
        let booking = Booking {
            technician_id: instance.technicians[assignment.technician].id.clone(),
            start: at(assignment.start),
            end: at(end),
            plan_version,
            late,
            fixed: false,
        };
        let unchanged = work.booking.as_ref().is_some_and(|b| {
            b.technician_id == booking.technician_id && b.start == booking.start && b.end == booking.end
        });
        if !unchanged {
            replan.bookings.push((order.id.clone(), booking));
        }
    }
    replan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, CommandMeta, WorkOrder, decide};
    use sm_domain::roster::{TechnicianSkill, WeeklyShift};
    use sm_domain::work_orders::{SkillRequirement, WorkOrderEvidence, WorkOrderProposed};

    const HOUR: i64 = 3_600_000_000;
    // Monday 2026-12-07 00:00 UTC.
    const MONDAY: i64 = 1_796_601_600_000_000;

    fn quick() -> PlanSettings {
        PlanSettings { time_limit: Duration::from_millis(200), ..PlanSettings::default() }
    }

    fn technician(id: &str, skill: &str, level: i32) -> TechnicianRegistered {
        TechnicianRegistered {
            technician_id: id.into(),
            name: id.into(),
            site: "plant-a".into(),
            time_zone: "UTC".into(),
            skills: vec![TechnicianSkill { skill: skill.into(), level }],
            shifts: (1..=5).map(|weekday| WeeklyShift { weekday, start_minute: 8 * 60, end_minute: 16 * 60 }).collect(),
            leave: vec![],
            max_minutes_per_day: 480,
            active: true,
            principal: "admin".into(),
        }
    }

    fn approved(id: &str, skill: &str, level: i32, minutes: i32, deadline_hours: i64) -> WorkOrder {
        let proposal = WorkOrderProposed {
            work_order_id: id.into(),
            asset_id: format!("asset-{id}"),
            asset_type: "pump".into(),
            site: "plant-a".into(),
            failure_mode: "BRG-WEAR".into(),
            required_skills: vec![SkillRequirement { skill: skill.into(), min_level: level }],
            estimated_minutes: minutes,
            parts: vec![],
            ready_at: Timestamp(MONDAY),
            deadline: Timestamp(MONDAY + deadline_hours * HOUR),
            priority: 10,
            confidence: 0.5,
            evidence: WorkOrderEvidence::default(),
            principal: "service:scheduling".into(),
            request_id: format!("p-{id}"),
            reason: String::new(),
        };
        let policy = crate::ApprovalPolicy { auto_approve: None, four_eyes: false };
        let now = Timestamp(MONDAY);
        let mut order = None;
        for event in decide(None, &Command::Propose(Box::new(proposal)), &policy, now).unwrap() {
            order = WorkOrder::apply(order, &event);
        }
        let meta = CommandMeta { principal: "user:planner".into(), request_id: format!("a-{id}"), reason: "ok".into() };
        for event in decide(order.as_ref(), &Command::Approve { meta }, &policy, now).unwrap() {
            order = WorkOrder::apply(order, &event);
        }
        order.unwrap()
    }

    fn book(order: &mut WorkOrder, booking: Booking) {
        let meta =
            CommandMeta { principal: "p".into(), request_id: format!("b-{}", booking.start.0), reason: String::new() };
        let policy = crate::ApprovalPolicy::default();
        for event in decide(Some(order), &Command::Schedule { booking, meta }, &policy, Timestamp(MONDAY)).unwrap() {
            *order = WorkOrder::apply(Some(order.clone()), &event).unwrap();
        }
    }

    #[test]
    fn approved_orders_go_to_qualified_technicians_inside_their_shifts() {
        let orders = [approved("wo-1", "vibration", 3, 120, 48), approved("wo-2", "electrical", 2, 60, 48)];
        let roster = [technician("t-mech", "vibration", 4), technician("t-elec", "electrical", 2)];
        let refs: Vec<&WorkOrder> = orders.iter().collect();
        let replan = replan(&refs, &roster, Timestamp(MONDAY), 1, &quick(), &sm_planner::Lns::default());
        assert_eq!(replan.violations, 0);
        assert!(replan.unplanned.is_empty() && replan.late.is_empty());
        let by_order: std::collections::BTreeMap<_, _> = replan.bookings.into_iter().collect();
        assert_eq!(by_order["wo-1"].technician_id, "t-mech");
        assert_eq!(by_order["wo-2"].technician_id, "t-elec");
        assert_eq!(by_order["wo-1"].start, Timestamp(MONDAY + 8 * HOUR), "first thing in Monday's shift");
        assert_eq!(by_order["wo-1"].end.0 - by_order["wo-1"].start.0, 2 * HOUR);
        assert_eq!(by_order["wo-1"].plan_version, 1);
    }

    #[test]
    fn work_that_has_started_is_never_moved_and_its_time_is_taken() {
        let mut started = approved("wo-1", "vibration", 3, 120, 48);
        book(
            &mut started,
            Booking::of("t-mech", Timestamp(MONDAY + 8 * HOUR), Timestamp(MONDAY + 10 * HOUR), 1, false, false),
        );
        let now = Timestamp(MONDAY + 9 * HOUR);
        assert!(is_frozen(&started, now), "its start has come");
        let fresh = approved("wo-2", "vibration", 3, 60, 48);
        let roster = [technician("t-mech", "vibration", 4)];
        let replan = replan(&[&started, &fresh], &roster, now, 2, &quick(), &sm_planner::Lns::default());
        assert_eq!(replan.bookings.len(), 1, "the started order yields no new booking: {:?}", replan.bookings);
        let (id, booking) = &replan.bookings[0];
        assert_eq!(id, "wo-2");
        assert!(booking.start >= Timestamp(MONDAY + 10 * HOUR), "not inside the started work: {booking:?}");
    }

    #[test]
    fn an_unchanged_plan_books_nothing_and_an_unqualified_site_leaves_the_order_unplanned() {
        let mut order = approved("wo-1", "vibration", 3, 60, 48);
        let roster = [technician("t-mech", "vibration", 4)];
        let now = Timestamp(MONDAY);
        let settings = quick();
        let first = replan(&[&order], &roster, now, 1, &settings, &sm_planner::Lns::default());
        book(&mut order, first.bookings[0].1.clone());
        let again = replan(&[&order], &roster, now, 2, &settings, &sm_planner::Lns::default());
        assert!(again.bookings.is_empty(), "stability: nothing moved {:?}", again.bookings);
        let expert_only = approved("wo-2", "vibration", 5, 60, 48);
        let none = replan(&[&expert_only], &roster, now, 3, &settings, &sm_planner::Lns::default());
        assert_eq!(none.unplanned, vec!["wo-2".to_owned()]);
    }

    #[test]
    fn a_deadline_the_roster_cannot_meet_is_planned_as_early_as_possible_and_flagged() {
        // Due in 2 h on Monday at midnight, but the shift starts at 08:00.
        let order = approved("wo-1", "vibration", 3, 60, 2);
        let roster = [technician("t-mech", "vibration", 4)];
        let replan = replan(&[&order], &roster, Timestamp(MONDAY), 1, &quick(), &sm_planner::Lns::default());
        assert_eq!(replan.late, vec!["wo-1".to_owned()]);
        assert!(replan.bookings[0].1.late);
        assert_eq!(replan.bookings[0].1.start, Timestamp(MONDAY + 8 * HOUR));
    }

    #[test]
    fn a_compressed_clock_reads_minutes_as_seconds() {
        let order = approved("wo-1", "vibration", 3, 60, 48);
        let mut always = technician("t-mech", "vibration", 4);
        always.shifts = (1..=7).map(|weekday| WeeklyShift { weekday, start_minute: 0, end_minute: 1440 }).collect();
        always.max_minutes_per_day = 1440;
        let settings = PlanSettings { micros_per_minute: 1_000_000, ..quick() };
        let replan = replan(&[&order], &[always], Timestamp(MONDAY), 1, &settings, &sm_planner::Lns::default());
        let booking = &replan.bookings[0].1;
        assert_eq!(booking.end.0 - booking.start.0, 60_000_000, "60 plan minutes are 60 s");
    }
}
