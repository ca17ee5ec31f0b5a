//! Re-inserting a set of orders into the free gaps of a plan, optimally, as a mixed-integer
//! program: the repair step of [`crate::Lns`], and, given every order and an empty plan, the
//! exact model of small instances (the proven optimum the benchmarks compare against).
//!
//! Each order picks one candidate gap (a binary per gap) or stays unplanned; its start is a
//! continuous variable bounded into the chosen gap by big-M constraints; two orders that may
//! share a gap are ordered by a binary; a day's minutes stay within the technician's limit;
//! lateness is the start plus duration past the deadline. The objective is [`crate::Score`]'s
//! cost, with travel and moves charged per choice of technician.

use crate::timeline::{Gap, Timelines, fits};
use crate::{AWAY_COST, Assignment, Instance, MOVE_COST, Minute};
use good_lp::{Expression, ProblemVariables, Solution, SolverModel, Variable, constraint, variable};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which MILP solver runs the repairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// microlp (pure Rust): dual simplex with branch and bound. No time limit of its own,
    /// which the repairs' size (a few orders, a few gaps each) makes moot.
    Microlp,
    /// HiGHS (C++, through `highs-sys`; the `highs` feature): branch-and-cut with presolve.
    #[cfg(feature = "highs")]
    Highs,
}

impl Backend {
    /// Every backend this build has.
    #[cfg(feature = "highs")]
    pub const ALL: &'static [Backend] = &[Backend::Microlp, Backend::Highs];
    #[cfg(not(feature = "highs"))]
    pub const ALL: &'static [Backend] = &[Backend::Microlp];
}

/// Unplanned inside a repair: large, but small enough for the solvers' tolerances.
const UNPLANNED: f64 = 1.0e7;

/// The orders `orders` re-inserted into the gaps of `timelines` (which must not hold them):
/// per order, its new booking (None: unplanned), or None when the solver found nothing in
/// `time_limit`. `max_candidates` bounds the gaps tried per order (earliest finishing first);
/// `usize::MAX` tries every gap, which makes the program exact.
pub fn reinsert(
    instance: &Instance,
    timelines: &Timelines,
    orders: &[usize],
    max_candidates: usize,
    backend: Backend,
    time_limit: Duration,
) -> Option<Vec<Option<Assignment>>> {
    // Candidate gaps, shared between orders (two orders in one gap must be sequenced).
    let mut gaps: Vec<Gap> = Vec::new();
    let mut gap_index: BTreeMap<(usize, Minute), usize> = BTreeMap::new();
    let mut candidates: Vec<Vec<(usize, Minute)>> = Vec::new(); // (gap, earliest start)
    let mut technician_gaps: BTreeMap<usize, Vec<Gap>> = BTreeMap::new();
    for &o in orders {
        let order = &instance.orders[o];
        let mut mine: Vec<(Minute, usize)> = Vec::new();
        for (t, tech) in instance.technicians.iter().enumerate() {
            if !tech.qualifies(&order.skills) {
                continue;
            }
            let tech_gaps = technician_gaps.entry(t).or_insert_with(|| timelines.gaps(instance, t));
            for gap in tech_gaps.iter() {
                if let Some(start) = fits(order, gap) {
                    let g = *gap_index.entry((t, gap.window.start)).or_insert_with(|| {
                        gaps.push(*gap);
                        gaps.len() - 1
                    });
                    mine.push((start + order.duration, g));
                }
            }
        }
        mine.sort();
        mine.truncate(max_candidates);
        candidates.push(mine.into_iter().map(|(end, g)| (g, end - order.duration)).collect());
    }

    let horizon = gaps.iter().map(|g| g.window.end).max().unwrap_or(0)
        + orders.iter().map(|o| instance.orders[*o].duration).sum::<Minute>();
    let big_m = horizon as f64 + 1.0;
    let mut vars = ProblemVariables::new();
    let mut objective = Expression::default();
    let mut constraints = Vec::new();
    let mut choose: Vec<Vec<Variable>> = Vec::new();
    let mut starts = Vec::new();
    for (k, &o) in orders.iter().enumerate() {
        let order = &instance.orders[o];
        // Bounds that always admit a value (an order ready after every gap has no candidate).
        let start = vars.add(variable().min(order.ready as f64).max(horizon.max(order.ready) as f64));
        let mut pick = Vec::new();
        if candidates[k].is_empty() {
            // No room anywhere: unplanned, a constant of the repair.
            choose.push(pick);
            starts.push(start);
            continue;
        }
        let late = vars.add(variable().min(0.0));
        let unplanned = vars.add(variable().binary());
        let mut one = Expression::from(unplanned);
        for &(g, earliest) in &candidates[k] {
            let gap = &gaps[g];
            let y = vars.add(variable().binary());
            one += y;
            constraints.push(constraint!(start >= earliest as f64 - big_m * (1.0 - y)));
            constraints.push(constraint!(start + order.duration as f64 <= gap.window.end as f64 + big_m * (1.0 - y)));
            let tech = &instance.technicians[gap.technician];
            let mut cost = 0.0;
            if tech.site != order.site {
                cost += AWAY_COST as f64;
            }
            if order.previous.is_some_and(|p| p.technician != gap.technician) {
                cost += MOVE_COST as f64;
            }
            if cost > 0.0 {
                objective += cost * y;
            }
            pick.push(y);
        }
        constraints.push(constraint!(one == 1.0));
        constraints.push(constraint!(late >= start + order.duration as f64 - order.deadline as f64));
        objective += order.priority as f64 * late + UNPLANNED * unplanned;
        choose.push(pick);
        starts.push(start);
    }
    // Orders sharing a gap do not overlap; a day's minutes stay within its limit.
    let mut in_gap: BTreeMap<usize, Vec<(usize, Variable)>> = BTreeMap::new();
    let mut in_day: BTreeMap<(usize, i64), Vec<(Minute, Variable)>> = BTreeMap::new();
    for (k, &o) in orders.iter().enumerate() {
        for (c, &(g, _)) in candidates[k].iter().enumerate() {
            in_gap.entry(g).or_default().push((k, choose[k][c]));
            in_day
                .entry((gaps[g].technician, gaps[g].day))
                .or_default()
                .push((instance.orders[o].duration, choose[k][c]));
        }
    }
    for members in in_gap.values() {
        for (i, &(a, ya)) in members.iter().enumerate() {
            for &(b, yb) in &members[i + 1..] {
                let before = vars.add(variable().binary());
                let (da, db) = (instance.orders[orders[a]].duration as f64, instance.orders[orders[b]].duration as f64);
                let (sa, sb) = (starts[a], starts[b]);
                constraints.push(constraint!(sa + da <= sb + big_m * (1.0 - before) + big_m * (2.0 - ya - yb)));
                constraints.push(constraint!(sb + db <= sa + big_m * before + big_m * (2.0 - ya - yb)));
            }
        }
    }
    for ((t, day), members) in &in_day {
        let left = gaps.iter().find(|g| g.technician == *t && g.day == *day).map_or(0, |g| g.day_left);
        let minutes: Expression = members.iter().map(|(d, y)| *d as f64 * *y).sum();
        constraints.push(constraint!(minutes <= left as f64));
    }

    let problem = vars.minimise(objective);
    let solution: Box<dyn Solution> = match backend {
        #[cfg(feature = "highs")]
        Backend::Highs => {
            // Exact within the limit: the default relative gap (1e-4) would accept plans
            // thousands of cost units worse on large objectives.
            let mut model = problem
                .using(good_lp::highs)
                .set_time_limit(time_limit.as_secs_f64())
                .set_threads(1)
                .set_mip_rel_gap(0.0)
                .ok()?;
            model.set_verbose(false);
            for c in constraints {
                model = model.with(c);
            }
            Box::new(model.solve().ok()?)
        }
        Backend::Microlp => {
            let _ = time_limit; // microlp has no limit of its own; repairs are small
            let mut model = problem.using(good_lp::microlp);
            for c in constraints {
                model = model.with(c);
            }
            Box::new(model.solve().ok()?)
        }
    };
    let mut result = Vec::new();
    for (k, _) in orders.iter().enumerate() {
        let chosen = choose[k].iter().position(|y| solution.value(*y) > 0.5);
        result.push(chosen.map(|c| Assignment {
            technician: gaps[candidates[k][c].0].technician,
            start: solution.value(starts[k]).round() as Minute,
        }));
    }
    Some(result)
}
