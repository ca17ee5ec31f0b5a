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
        let mut timelines = Timelines::new(instance);
        for (index, order) in instance.orders.iter().enumerate() {
            if let Some(pinned) = order.pinned {
                timelines.book(instance, order, pinned);
                plan.assignments[index] = Some(pinned);
            }
        }
        let mut queue: Vec<usize> =
            (0..instance.orders.len()).filter(|i| instance.orders[*i].pinned.is_none()).collect();
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
