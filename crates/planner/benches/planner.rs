//! Plan quality and solve time. Every figure has its baseline from the same run:
//!
//! 1. small instances (10 orders, 3 technicians, 3 days): greedy and the solver against the
//!    proven optimum (the exact MILP over every order and gap);
//! 2. the MILP backends on the same repairs in the same time: microlp, and HiGHS with
//!    `--features highs` (which needs cmake and libclang-dev);
//! 3. 50, 200 and 500 orders × 10, 30 and 50 technicians × 14 days: greedy's time and plan,
//!    then the solver's plan within the time limit (SM_BENCH_PLAN_SECS, 10 s by default).
//!
//! `cargo bench -p sm-planner --bench planner`

use sm_planner::milp::{Backend, reinsert};
use sm_planner::timeline::Timelines;
use sm_planner::{Greedy, Instance, Limits, Lns, Plan, Planner, Score, generate, score, verify};
use std::time::{Duration, Instant};

fn limits(secs: f64) -> Limits {
    Limits { time_limit: Duration::from_secs_f64(secs), seed: 42 }
}

fn line(name: &str, score: &Score, elapsed: Duration) -> String {
    format!(
        "{name:<10} weighted lateness {:>9}  late {:>3}  unplanned {:>3}  away {:>3}  {:>9.1} ms",
        score.weighted_lateness,
        score.late,
        score.unplanned,
        score.away,
        elapsed.as_secs_f64() * 1e3
    )
}

fn checked(instance: &Instance, plan: &Plan, who: &str) {
    let violations = verify(instance, plan);
    assert!(violations.is_empty(), "{who}: {violations:?}");
}

fn main() {
    let secs: f64 = std::env::var("SM_BENCH_PLAN_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);

    println!("== against the proven optimum: 10 orders x 3 technicians x 3 days, 8 seeds");
    let (mut exact_total, mut greedy_total, mut lns_total, mut at_optimum, mut exact_time) = (0, 0, 0, 0, 0.0);
    for seed in 0..8 {
        let instance = generate::contended(10, 3, 3, 500 + seed);
        let started = Instant::now();
        let everything: Vec<usize> = (0..instance.orders.len()).collect();
        let best = Plan {
            assignments: reinsert(
                &instance,
                &Timelines::new(&instance),
                &everything,
                usize::MAX,
                Backend::Microlp,
                Duration::from_secs(120),
            )
            .expect("exact"),
        };
        exact_time += started.elapsed().as_secs_f64();
        checked(&instance, &best, "optimum");
        let greedy = Greedy.plan(&instance, limits(0.0));
        let solved = Lns::default().plan(&instance, limits(1.0));
        checked(&instance, &solved, "solver");
        let (e, g, s) =
            (score(&instance, &best).cost(), score(&instance, &greedy).cost(), score(&instance, &solved).cost());
        exact_total += e;
        greedy_total += g;
        lns_total += s;
        at_optimum += usize::from(s == e);
    }
    println!("  optimum (exact MILP): total cost {exact_total}  ({:.0} ms per instance)", exact_time / 8.0 * 1e3);
    println!(
        "  greedy:                      total cost {greedy_total}  ({:.2}x the optimum)",
        greedy_total as f64 / exact_total.max(1) as f64
    );
    println!(
        "  solver (1 s):                total cost {lns_total}  ({:.2}x the optimum; optimal on {at_optimum} of 8)",
        lns_total as f64 / exact_total.max(1) as f64
    );

    println!("\n== MILP backends for the repairs, the same seeds and time ({secs} s each)");
    for (orders, technicians) in [(200, 10), (200, 30), (500, 50)] {
        let instance = generate::instance(orders, technicians, 14, 7);
        let greedy = score(&instance, &Greedy.plan(&instance, limits(0.0))).cost();
        for backend in Backend::ALL {
            let solver = Lns { backend: *backend, ..Lns::default() };
            let started = Instant::now();
            let (plan, run) = solver.run(&instance, limits(secs));
            let elapsed = started.elapsed();
            checked(&instance, &plan, "solver");
            println!(
                "  {orders}x{technicians} {backend:?}: {:.1} ms per repair ({} repairs, {} improving); cost {} (greedy {greedy})",
                elapsed.as_secs_f64() * 1e3 / run.steps.max(1) as f64,
                run.steps,
                run.improved,
                score(&instance, &plan).cost()
            );
        }
    }

    println!("\n== solve time and plan quality, 14 days; the solver's time limit {secs} s");
    for orders in [50, 200, 500] {
        for technicians in [10, 30, 50] {
            let instance = generate::instance(orders, technicians, 14, (orders * 1000 + technicians) as u64);
            println!("{orders} orders x {technicians} technicians");
            let started = Instant::now();
            let greedy = Greedy.plan(&instance, limits(0.0));
            let greedy_time = started.elapsed();
            checked(&instance, &greedy, "greedy");
            let started = Instant::now();
            let (solved, run) = Lns::default().run(&instance, limits(secs));
            let solver_time = started.elapsed();
            checked(&instance, &solved, "solver");
            let (g, s) = (score(&instance, &greedy), score(&instance, &solved));
            println!("  {}", line("greedy", &g, greedy_time));
            println!("  {}  ({} repairs, {} improving)", line("solver", &s, solver_time), run.steps, run.improved);
            println!(
                "  solver / greedy: weighted lateness {:.3}, late {}/{}",
                s.weighted_lateness as f64 / g.weighted_lateness.max(1) as f64,
                s.late,
                g.late
            );
        }
    }
}
