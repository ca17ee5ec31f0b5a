//! The baseline: pinned work first, then earliest deadline first (higher priority first on a
//! tie), each order into the slot that finishes earliest among qualified technicians
//! (preferring one whose home is the order's site when two finish alike).

use crate::timeline::Timelines;
use crate::{Assignment, Instance, Limits, Plan, Planner};

#[derive(Debug, Clone, Copy, Default)]
pub struct Greedy;

impl Planner for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn plan(&self, instance: &Instance, _limits: Limits) -> Plan {
        let mut plan = Plan::empty(instance);
        for (index, order) in instance.orders.iter().enumerate() {
            plan.assignments[index] = order.pinned;
        }
        Self::extend(instance, plan)
    }
}

impl Greedy {
    /// `plan`'s bookings kept, and every order it leaves out added the greedy way.
    pub fn extend(instance: &Instance, mut plan: Plan) -> Plan {
        let mut timelines = Timelines::of(instance, &plan);
        let mut queue: Vec<usize> = (0..instance.orders.len()).filter(|i| plan.assignments[*i].is_none()).collect();
        queue.sort_by_key(|i| {
            let order = &instance.orders[*i];
            (order.deadline, -order.priority, order.id.clone())
        });
        for index in queue {
            if let Some(at) = best_slot(instance, &timelines, index) {
                timelines.book(instance, &instance.orders[index], at);
                plan.assignments[index] = Some(at);
            }
        }
        plan
    }

    /// The previous plan where orders had one, new orders added greedily: where a re-plan
    /// that changes little should start. None when no order had a previous booking.
    pub fn from_previous(instance: &Instance) -> Option<Plan> {
        if instance.orders.iter().all(|o| o.previous.is_none()) {
            return None;
        }
        let assignments = instance.orders.iter().map(|o| o.pinned.or(o.previous)).collect();
        Some(Self::extend(instance, Plan { assignments }))
    }
}

/// The earliest-finishing booking of order `index` into `timelines`.
pub fn best_slot(instance: &Instance, timelines: &Timelines, index: usize) -> Option<Assignment> {
    let order = &instance.orders[index];
    instance
        .technicians
        .iter()
        .enumerate()
        .filter(|(_, tech)| tech.qualifies(&order.skills))
        .filter_map(|(t, tech)| {
            let start = timelines.earliest_start(instance, order, t)?;
            Some(((start, tech.site != order.site, t), Assignment { technician: t, start }))
        })
        .min_by_key(|(key, _)| *key)
        .map(|(_, at)| at)
}
