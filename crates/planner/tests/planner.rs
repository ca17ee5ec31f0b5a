//! The planners against the independent checker, each other and the proven optimum.

use sm_planner::milp::{Backend, reinsert};
use sm_planner::timeline::Timelines;
use sm_planner::{
    Assignment, Greedy, Instance, Limits, Lns, Order, Plan, Planner, Technician, Violation, Window, generate, score,
    verify,
};
use std::collections::BTreeMap;
use std::time::Duration;

fn tech(id: &str, skills: &[(&str, i32)], shifts: &[(i64, i64)]) -> Technician {
    Technician {
        id: id.into(),
        site: "plant-a".into(),
        skills: skills.iter().map(|(s, l)| ((*s).to_owned(), *l)).collect::<BTreeMap<_, _>>(),
        shifts: shifts.iter().map(|(start, end)| Window { start: *start, end: *end }).collect(),
        max_minutes_per_day: 480,
        utc_offset: 0,
    }
}

fn order(id: &str, skill: (&str, i32), duration: i64, ready: i64, deadline: i64, priority: i64) -> Order {
    Order {
        id: id.into(),
        site: "plant-a".into(),
        skills: vec![(skill.0.to_owned(), skill.1)],
        duration,
        ready,
        deadline,
        priority,
        pinned: None,
        previous: None,
    }
}

fn limits(millis: u64) -> Limits {
    Limits { time_limit: Duration::from_millis(millis), seed: 7 }
}

/// Two technicians, one day shift each; three orders.
fn small() -> Instance {
    Instance {
        technicians: vec![
            tech("ann", &[("mechanical", 3)], &[(480, 960)]),
            tech("bob", &[("electrical", 4), ("mechanical", 1)], &[(480, 960)]),
        ],
        orders: vec![
            order("wo-1", ("mechanical", 2), 120, 0, 700, 10),
            order("wo-2", ("electrical", 3), 60, 600, 900, 50),
            order("wo-3", ("mechanical", 1), 240, 0, 2000, 1),
        ],
    }
}

fn at(technician: usize, start: i64) -> Option<Assignment> {
    Some(Assignment { technician, start })
}

#[test]
fn the_checker_finds_every_kind_of_broken_hard_constraint() {
    let instance = small();
    let good = Plan { assignments: vec![at(0, 480), at(1, 600), at(0, 600)] };
    assert_eq!(verify(&instance, &good), vec![]);
    type Expected = fn(&Violation) -> bool;
    let cases: Vec<(Plan, Expected)> = vec![
        (
            Plan { assignments: vec![at(0, 480), at(0, 600), at(0, 600)] },
            |v| matches!(v, Violation::Unqualified { skill, .. } if skill == "electrical"),
        ),
        (Plan { assignments: vec![at(0, 900), at(1, 600), at(0, 600)] }, |v| {
            matches!(v, Violation::OutsideShifts { .. })
        }),
        (Plan { assignments: vec![at(0, 480), at(1, 600), at(0, 500)] }, |v| matches!(v, Violation::Overlap { .. })),
        (Plan { assignments: vec![at(0, 480), at(1, 540), at(0, 600)] }, |v| {
            matches!(v, Violation::BeforeReady { .. })
        }),
        (
            Plan { assignments: vec![at(0, 480), at(1, 600), None] },
            |v| matches!(v, Violation::Dropped { order, .. } if order == "wo-3"),
        ),
        (Plan { assignments: vec![at(0, 480)] }, |v| matches!(v, Violation::WrongLength { .. })),
    ];
    for (plan, expected) in cases {
        let violations = verify(&instance, &plan);
        assert!(violations.iter().any(expected), "{plan:?}: {violations:?}");
    }
    // The day's limit, and pinned work that moved.
    let mut tight = small();
    tight.technicians[0].max_minutes_per_day = 300;
    assert!(verify(&tight, &good).iter().any(|v| matches!(v, Violation::OverDailyLimit { minutes: 360, .. })));
    let mut pinned = small();
    pinned.orders[0].pinned = at(0, 720);
    assert!(verify(&pinned, &good).iter().any(|v| matches!(v, Violation::PinnedMoved { .. })));
    // Unplanned is fine when nobody has room.
    let mut full = small();
    full.orders[2].duration = 600;
    assert_eq!(verify(&full, &Plan { assignments: vec![at(0, 480), at(1, 600), None] }), vec![]);
}

#[test]
fn greedy_and_the_solver_plan_generated_fleets_without_a_violation() {
    for (orders, technicians, seed) in [(60, 10, 1), (150, 20, 2), (200, 12, 3)] {
        let instance = generate::instance(orders, technicians, 14, seed);
        let greedy = Greedy.plan(&instance, limits(0));
        assert_eq!(verify(&instance, &greedy), vec![], "greedy, {orders}x{technicians}");
        let solver = Lns { max_steps: Some(150), ..Lns::default() };
        let solved = solver.plan(&instance, limits(60_000));
        assert_eq!(verify(&instance, &solved), vec![], "lns, {orders}x{technicians}");
        let (g, s) = (score(&instance, &greedy), score(&instance, &solved));
        assert!(s.cost() <= g.cost(), "{orders}x{technicians}: solver {s:?} worse than greedy {g:?}");
    }
}

#[test]
fn the_solver_is_deterministic_for_a_seed() {
    let instance = generate::instance(80, 8, 14, 11);
    let solver = Lns { max_steps: Some(60), ..Lns::default() };
    assert_eq!(solver.plan(&instance, limits(60_000)), solver.plan(&instance, limits(60_000)));
}

#[test]
fn an_order_that_cannot_make_its_deadline_is_planned_as_early_as_possible_and_counted_late() {
    let mut instance = small();
    instance.orders[1].deadline = 610; // ready 600, 60 minutes of work
    for plan in [Greedy.plan(&instance, limits(0)), Lns::default().plan(&instance, limits(2_000))] {
        assert_eq!(verify(&instance, &plan), vec![]);
        assert_eq!(plan.assignments[1], at(1, 600), "as early as possible");
        assert_eq!(score(&instance, &plan).late, 1);
    }
}

#[test]
fn pinned_work_stays_where_it_is() {
    let mut instance = small();
    instance.orders[2].pinned = at(1, 480);
    for plan in [Greedy.plan(&instance, limits(0)), Lns::default().plan(&instance, limits(2_000))] {
        assert_eq!(plan.assignments[2], at(1, 480));
        assert_eq!(verify(&instance, &plan), vec![]);
    }
}

/// The exact program over every order and every gap of an empty plan.
fn optimum(instance: &Instance, backend: Backend) -> Plan {
    let everything: Vec<usize> = (0..instance.orders.len()).collect();
    let bookings =
        reinsert(instance, &Timelines::new(instance), &everything, usize::MAX, backend, Duration::from_secs(60))
            .expect("solved");
    Plan { assignments: bookings }
}

#[test]
fn on_small_instances_the_solver_matches_the_proven_optimum_and_greedy_does_not_beat_it() {
    let mut solver_gaps = Vec::new();
    for seed in 0..6 {
        let instance = generate::contended(10, 3, 3, 100 + seed);
        let best = optimum(&instance, Backend::Microlp);
        assert_eq!(verify(&instance, &best), vec![], "seed {seed}: the exact plan is feasible");
        let exact = score(&instance, &best).cost();
        for backend in Backend::ALL {
            assert_eq!(score(&instance, &optimum(&instance, *backend)).cost(), exact, "{backend:?} agrees");
        }
        let greedy = score(&instance, &Greedy.plan(&instance, limits(0))).cost();
        let solved =
            score(&instance, &Lns { max_steps: Some(200), ..Lns::default() }.plan(&instance, limits(60_000))).cost();
        assert!(exact <= solved && solved <= greedy, "seed {seed}: optimum {exact}, solver {solved}, greedy {greedy}");
        solver_gaps.push(solved - exact);
    }
    assert!(
        solver_gaps.iter().filter(|gap| **gap == 0).count() >= 4,
        "the solver reaches the optimum: {solver_gaps:?}"
    );
}
