//! The solver: large-neighbourhood search. It starts from the greedy plan (feasible), then
//! until the time limit: pick a neighbourhood (a late order and the work around it on the
//! technicians who could do it, or a random stretch of work), take it out, re-insert it
//! optimally with a mixed-integer program ([`crate::milp`]), and keep the result when it
//! costs no more and passes the timelines' own checks. Deterministic for a seed and a number
//! of iterations; with a time limit, the best feasible plan found in it.

use crate::milp::{Backend, reinsert};
use crate::timeline::{Timelines, fits};
use crate::{Greedy, Instance, Limits, Plan, Planner, Window, score};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Lns {
    /// Orders re-inserted per step.
    pub neighbourhood: usize,
    /// Candidate gaps per order in a repair.
    pub candidates: usize,
    pub backend: Backend,
    /// Stop after this many steps even with time left (benchmarks and tests of determinism).
    pub max_steps: Option<usize>,
}

impl Default for Lns {
    fn default() -> Self {
        Self { neighbourhood: 8, candidates: 6, backend: Backend::Microlp, max_steps: None }
    }
}

/// What a run did, for benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub steps: usize,
    pub improved: usize,
}

impl Planner for Lns {
    fn name(&self) -> &'static str {
        "lns-milp"
    }

    fn plan(&self, instance: &Instance, limits: Limits) -> Plan {
        self.run(instance, limits).0
    }
}

impl Lns {
    pub fn run(&self, instance: &Instance, limits: Limits) -> (Plan, Run) {
        let started = Instant::now();
        let mut plan = Greedy.plan(instance, limits);
        let mut cost = score(instance, &plan).cost();
        // A re-plan starts from the previous plan when it still holds and is no worse: what
        // did not need to move stays put.
        if let Some(previous) = Greedy::from_previous(instance)
            && crate::verify(instance, &previous).is_empty()
            && score(instance, &previous).cost() <= cost
        {
            cost = score(instance, &previous).cost();
            plan = previous;
        }
        let mut run = Run::default();
        let movable: Vec<usize> = (0..instance.orders.len()).filter(|o| instance.orders[*o].pinned.is_none()).collect();
        if movable.is_empty() {
            return (plan, run);
        }
        let mut rng = StdRng::seed_from_u64(limits.seed);
        let mut timelines = Timelines::of(instance, &plan);
        while started.elapsed() < limits.time_limit && self.max_steps.is_none_or(|max| run.steps < max) {
            run.steps += 1;
            let chosen = self.neighbourhood(instance, &plan, &movable, &mut rng);
            let left = limits.time_limit.saturating_sub(started.elapsed()).max(Duration::from_millis(10));
            for &o in &chosen {
                if let Some(at) = plan.assignments[o] {
                    timelines.release(instance, &instance.orders[o], at);
                }
            }
            let repaired = reinsert(instance, &timelines, &chosen, self.candidates, self.backend, left);
            let mut candidate = plan.clone();
            let mut accepted = false;
            if let Some(bookings) = repaired {
                for (&o, at) in chosen.iter().zip(&bookings) {
                    candidate.assignments[o] = *at;
                }
                let new_cost = score(instance, &candidate).cost();
                if new_cost <= cost && books_cleanly(instance, &timelines, &chosen, &bookings) {
                    accepted = true;
                    if new_cost < cost {
                        run.improved += 1;
                    }
                    cost = new_cost;
                }
            }
            if accepted {
                plan = candidate;
            }
            for &o in &chosen {
                if let Some(at) = plan.assignments[o] {
                    timelines.book(instance, &instance.orders[o], at);
                }
            }
        }
        fill(instance, &mut plan, &mut timelines);
        (plan, run)
    }

    /// A late (or unplanned) order, weighted by what its lateness costs, with the work booked
    /// near its window on technicians who could do it; half of the time a random order and its
    /// neighbours instead, so that early work can make room.
    fn neighbourhood(&self, instance: &Instance, plan: &Plan, movable: &[usize], rng: &mut StdRng) -> Vec<usize> {
        let lateness = |o: usize| -> i64 {
            let order = &instance.orders[o];
            match plan.assignments[o] {
                None => 1_000_000,
                Some(at) => (at.start + order.duration - order.deadline).max(0) * order.priority,
            }
        };
        let late: Vec<usize> = movable.iter().copied().filter(|o| lateness(*o) > 0).collect();
        let seed = if !late.is_empty() && rng.random_bool(0.5) {
            let total: i64 = late.iter().map(|o| lateness(*o)).sum();
            let mut pick = rng.random_range(0..total);
            *late
                .iter()
                .find(|o| {
                    pick -= lateness(**o);
                    pick < 0
                })
                .unwrap_or(&late[0])
        } else {
            movable[rng.random_range(0..movable.len())]
        };
        let order = &instance.orders[seed];
        let window = Window { start: order.ready, end: order.deadline.max(order.ready) + 2 * order.duration };
        let mut near: Vec<usize> = movable
            .iter()
            .copied()
            .filter(|o| *o != seed)
            .filter(|o| {
                plan.assignments[*o].is_some_and(|at| {
                    instance.technicians[at.technician].qualifies(&order.skills)
                        && window.overlaps(&Window { start: at.start, end: at.start + instance.orders[*o].duration })
                })
            })
            .collect();
        near.shuffle(rng);
        near.truncate(self.neighbourhood.saturating_sub(1));
        near.push(seed);
        near.sort_unstable();
        near
    }
}

/// The repair's bookings fit the timelines it was made against, one after another: the
/// solver's answer is not trusted blindly (rounding, tolerances).
fn books_cleanly(
    instance: &Instance,
    timelines: &Timelines,
    orders: &[usize],
    bookings: &[Option<crate::Assignment>],
) -> bool {
    let mut timelines = timelines.clone();
    for (&o, at) in orders.iter().zip(bookings) {
        let Some(at) = at else { continue };
        let order = &instance.orders[o];
        if !instance.technicians[at.technician].qualifies(&order.skills) {
            return false;
        }
        let fits_here = timelines.gaps(instance, at.technician).iter().any(|gap| {
            fits(order, gap).is_some_and(|earliest| earliest <= at.start && at.start + order.duration <= gap.window.end)
        });
        if !fits_here {
            return false;
        }
        timelines.book(instance, order, *at);
    }
    true
}

/// Books every unplanned order that still fits somewhere, as greedy would: a repair may trade
/// one unplanned order for another (the count is what costs), and a repair only tries a few
/// gaps per order, so room can be left that nothing used. Nothing that fits stays dropped.
fn fill(instance: &Instance, plan: &mut Plan, timelines: &mut Timelines) {
    let mut unplanned: Vec<usize> = (0..instance.orders.len()).filter(|o| plan.assignments[*o].is_none()).collect();
    unplanned.sort_by_key(|o| (instance.orders[*o].deadline, -instance.orders[*o].priority));
    for o in unplanned {
        if let Some(at) = crate::greedy::best_slot(instance, timelines, o) {
            timelines.book(instance, &instance.orders[o], at);
            plan.assignments[o] = Some(at);
        }
    }
}
