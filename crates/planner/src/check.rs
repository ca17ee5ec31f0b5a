//! The independent checker: every hard constraint of a plan, written from the rules alone
//! (it shares no code with the planners), so a planner's bug cannot hide in its own checks.

use crate::{Instance, Minute, Plan, Window};
use std::collections::BTreeMap;

/// A broken hard constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The plan does not have one entry per order.
    WrongLength {
        orders: usize,
        entries: usize,
    },
    UnknownTechnician {
        order: String,
        technician: usize,
    },
    Unqualified {
        order: String,
        technician: String,
        skill: String,
        level: i32,
    },
    OutsideShifts {
        order: String,
        technician: String,
        start: Minute,
    },
    BeforeReady {
        order: String,
        start: Minute,
        ready: Minute,
    },
    Overlap {
        technician: String,
        first: String,
        second: String,
    },
    OverDailyLimit {
        technician: String,
        day: i64,
        minutes: Minute,
        limit: Minute,
    },
    PinnedMoved {
        order: String,
    },
    /// Unplanned although a qualified technician has room for it in the plan as it is.
    Dropped {
        order: String,
        technician: String,
    },
}

/// Every violation of `plan` (empty: feasible).
pub fn verify(instance: &Instance, plan: &Plan) -> Vec<Violation> {
    let mut violations = Vec::new();
    if plan.assignments.len() != instance.orders.len() {
        return vec![Violation::WrongLength { orders: instance.orders.len(), entries: plan.assignments.len() }];
    }
    // Per technician: (window, order index), and minutes per local day.
    let mut booked: Vec<Vec<(Window, usize)>> = vec![Vec::new(); instance.technicians.len()];
    let mut daily: Vec<BTreeMap<i64, Minute>> = vec![BTreeMap::new(); instance.technicians.len()];
    for (index, (order, assignment)) in instance.orders.iter().zip(&plan.assignments).enumerate() {
        if order.pinned.is_some() && *assignment != order.pinned {
            violations.push(Violation::PinnedMoved { order: order.id.clone() });
        }
        let Some(assignment) = assignment else { continue };
        let Some(tech) = instance.technicians.get(assignment.technician) else {
            violations
                .push(Violation::UnknownTechnician { order: order.id.clone(), technician: assignment.technician });
            continue;
        };
        let work = Window { start: assignment.start, end: assignment.start + order.duration };
        if order.pinned.is_none() {
            for (skill, level) in &order.skills {
                if tech.skills.get(skill).is_none_or(|have| have < level) {
                    violations.push(Violation::Unqualified {
                        order: order.id.clone(),
                        technician: tech.id.clone(),
                        skill: skill.clone(),
                        level: *level,
                    });
                }
            }
            if !tech.shifts.iter().any(|shift| shift.start <= work.start && work.end <= shift.end) {
                violations.push(Violation::OutsideShifts {
                    order: order.id.clone(),
                    technician: tech.id.clone(),
                    start: work.start,
                });
            }
            if work.start < order.ready {
                violations.push(Violation::BeforeReady {
                    order: order.id.clone(),
                    start: work.start,
                    ready: order.ready,
                });
            }
        }
        booked[assignment.technician].push((work, index));
        let day = (work.start + tech.utc_offset).div_euclid(1440);
        *daily[assignment.technician].entry(day).or_default() += order.duration;
    }
    for (t, tech) in instance.technicians.iter().enumerate() {
        let mut work = booked[t].clone();
        work.sort();
        for pair in work.windows(2) {
            if pair[0].0.end > pair[1].0.start {
                violations.push(Violation::Overlap {
                    technician: tech.id.clone(),
                    first: instance.orders[pair[0].1].id.clone(),
                    second: instance.orders[pair[1].1].id.clone(),
                });
            }
        }
        for (day, minutes) in &daily[t] {
            if *minutes > tech.max_minutes_per_day {
                violations.push(Violation::OverDailyLimit {
                    technician: tech.id.clone(),
                    day: *day,
                    minutes: *minutes,
                    limit: tech.max_minutes_per_day,
                });
            }
        }
    }
    // Nothing dropped that fits: try every unplanned order at every minute boundary where a
    // free span starts (a shift's start, the end of a booking, its ready time).
    for (order, assignment) in instance.orders.iter().zip(&plan.assignments) {
        if assignment.is_some() {
            continue;
        }
        for (t, tech) in instance.technicians.iter().enumerate() {
            if !order.skills.iter().all(|(skill, level)| tech.skills.get(skill).is_some_and(|have| have >= level)) {
                continue;
            }
            let candidates =
                tech.shifts.iter().map(|s| s.start).chain(booked[t].iter().map(|(w, _)| w.end)).chain([order.ready]);
            let room = candidates.into_iter().any(|start| {
                let start = start.max(order.ready);
                let work = Window { start, end: start + order.duration };
                let in_shift = tech.shifts.iter().any(|s| s.start <= work.start && work.end <= s.end);
                let free = booked[t].iter().all(|(w, _)| w.end <= work.start || work.end <= w.start);
                let day = (start + tech.utc_offset).div_euclid(1440);
                let used = daily[t].get(&day).copied().unwrap_or(0);
                in_shift && free && used + order.duration <= tech.max_minutes_per_day
            });
            if room {
                violations.push(Violation::Dropped { order: order.id.clone(), technician: tech.id.clone() });
                break;
            }
        }
    }
    violations
}
