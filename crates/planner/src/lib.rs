//! The scheduling agent's optimiser: approved work orders into qualified technicians' shifts.
//! Pure: an [`Instance`] in, a [`Plan`] out, no clock but the time limit.
//!
//! - [`Instance`], [`Plan`] and [`score`]: the problem, in whole minutes from the plan's start;
//! - [`verify`]: the independent checker of every hard constraint (skills and levels, shifts,
//!   no overlap, ready time, daily hours, pinned work, nothing dropped that fits);
//! - [`Greedy`]: the baseline, earliest deadline first into the earliest finishing slot;
//! - [`Lns`]: the solver, large-neighbourhood search whose repairs are mixed-integer programs
//!   ([`milp`]), starting from the greedy plan and keeping the best feasible plan found;
//! - [`generate`]: seeded instances for tests and benchmarks.
//!
//! Hard constraints: a technician has every required skill at its level; work lies inside one
//! of their shifts, never overlapping their other work, never before the order's ready time,
//! and their day stays within its maximum minutes; pinned work (started, or assigned by hand)
//! keeps its technician and start. The deadline is soft, weighted by priority: an order that
//! cannot make it is planned as early as possible and reported late, never dropped while some
//! qualified technician has room for it.

pub mod check;
pub mod generate;
pub mod greedy;
pub mod lns;
pub mod milp;
pub mod timeline;

pub use check::{Violation, verify};
pub use greedy::Greedy;
pub use lns::Lns;

use std::collections::BTreeMap;
use std::time::Duration;

/// Minutes from the plan's start.
pub type Minute = i64;

/// A half-open span of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: Minute,
    pub end: Minute,
}

impl Window {
    pub fn len(&self) -> Minute {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn contains(&self, other: &Window) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Technician {
    pub id: String,
    /// Home site: work elsewhere costs travel.
    pub site: String,
    /// Skill → level (1 trainee to 5 expert).
    pub skills: BTreeMap<String, i32>,
    /// Shifts, sorted and disjoint, leave and holidays already taken out.
    pub shifts: Vec<Window>,
    /// Most minutes of work in one of their days.
    pub max_minutes_per_day: Minute,
    /// Their time zone's offset from the plan's clock: days are theirs.
    pub utc_offset: Minute,
}

impl Technician {
    /// Whether they have every `(skill, min_level)`.
    pub fn qualifies(&self, required: &[(String, i32)]) -> bool {
        required.iter().all(|(skill, level)| self.skills.get(skill).is_some_and(|have| have >= level))
    }

    /// Their day (local) that `minute` falls in.
    pub fn day_of(&self, minute: Minute) -> i64 {
        (minute + self.utc_offset).div_euclid(24 * 60)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: String,
    pub site: String,
    pub skills: Vec<(String, i32)>,
    pub duration: Minute,
    pub ready: Minute,
    pub deadline: Minute,
    /// 1 to 100: the weight of each minute late.
    pub priority: i64,
    /// Kept as it is: work in progress, or a planner's manual assignment.
    pub pinned: Option<Assignment>,
    /// Where the previous plan had it: moving it costs stability.
    pub previous: Option<Assignment>,
}

/// An order's booking: technician (index into [`Instance::technicians`]) and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Assignment {
    pub technician: usize,
    pub start: Minute,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub technicians: Vec<Technician>,
    pub orders: Vec<Order>,
}

/// One booking or none per order, by order index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub assignments: Vec<Option<Assignment>>,
}

impl Plan {
    pub fn empty(instance: &Instance) -> Self {
        Self { assignments: vec![None; instance.orders.len()] }
    }
}

/// How long a planner may take, and its random seed (same seed, same instance: same plan).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub time_limit: Duration,
    pub seed: u64,
}

/// A planner: returns a plan that satisfies every hard constraint, the best it found in time.
pub trait Planner {
    fn name(&self) -> &'static str;
    fn plan(&self, instance: &Instance, limits: Limits) -> Plan;
}

/// What a plan costs, by the soft constraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Score {
    /// Orders without a booking (only when no qualified technician has room).
    pub unplanned: usize,
    /// Orders ending after their deadline.
    pub late: usize,
    /// Σ priority × minutes late.
    pub weighted_lateness: i64,
    /// Bookings at a site other than the technician's home site.
    pub away: usize,
    /// Bookings that moved from the previous plan (technician or start).
    pub moved: usize,
}

/// Weights of the objective: an unplanned order outweighs any lateness; travel and moves are
/// worth an hour of a priority-1 order's lateness and a quarter of it.
pub const UNPLANNED_COST: i64 = 1_000_000_000;
pub const AWAY_COST: i64 = 60;
pub const MOVE_COST: i64 = 15;

impl Score {
    /// The single number planners minimise.
    pub fn cost(&self) -> i64 {
        self.unplanned as i64 * UNPLANNED_COST
            + self.weighted_lateness
            + self.away as i64 * AWAY_COST
            + self.moved as i64 * MOVE_COST
    }
}

/// The score of `plan`, which need not be feasible ([`verify`] says whether it is).
pub fn score(instance: &Instance, plan: &Plan) -> Score {
    let mut score = Score::default();
    for (order, assignment) in instance.orders.iter().zip(&plan.assignments) {
        let Some(assignment) = assignment else {
            score.unplanned += 1;
            continue;
        };
        let late = (assignment.start + order.duration - order.deadline).max(0);
        if late > 0 {
            score.late += 1;
            score.weighted_lateness += late * order.priority;
        }
        if instance.technicians.get(assignment.technician).is_some_and(|t| t.site != order.site) {
            score.away += 1;
        }
        if order.previous.is_some_and(|previous| previous != *assignment) {
            score.moved += 1;
        }
    }
    score
}
