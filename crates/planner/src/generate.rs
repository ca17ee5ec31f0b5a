//! Seeded instances shaped like a maintenance department: a few sites, skills with levels,
//! day and late shifts five days a week in three time zones, orders of one to eight hours
//! that need one or two skills, ready within the first week and due one to ten days later.

use crate::{Instance, Order, Technician, Window};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const SKILLS: [&str; 5] = ["mechanical", "electrical", "vibration", "hydraulics", "instrumentation"];
const SITES: [&str; 3] = ["plant-a", "plant-b", "plant-c"];
const DAY: i64 = 24 * 60;

/// `orders` orders and `technicians` technicians over `days` days, the same for a seed.
pub fn instance(orders: usize, technicians: usize, days: i64, seed: u64) -> Instance {
    let mut rng = StdRng::seed_from_u64(seed);
    let technicians: Vec<Technician> = (0..technicians)
        .map(|t| {
            let utc_offset = [-60, 0, 60][rng.random_range(0..3)];
            let shift_start = [6 * 60, 8 * 60, 14 * 60][rng.random_range(0..3)];
            let off = rng.random_range(0..7);
            let shifts = (0..days)
                .filter(|d| (d + off) % 7 < 5)
                .map(|d| {
                    let start = d * DAY + shift_start - utc_offset;
                    Window { start, end: start + 8 * 60 }
                })
                .collect();
            let mut skills = std::collections::BTreeMap::new();
            for _ in 0..rng.random_range(1..=3) {
                skills.insert(SKILLS[rng.random_range(0..SKILLS.len())].to_owned(), rng.random_range(1..=5));
            }
            Technician {
                id: format!("t-{t:03}"),
                site: SITES[t % SITES.len()].to_owned(),
                skills,
                shifts,
                max_minutes_per_day: 7 * 60,
                utc_offset,
            }
        })
        .collect();
    let orders = (0..orders)
        .map(|o| {
            let mut skills: Vec<(String, i32)> = Vec::new();
            for _ in 0..rng.random_range(1..=2) {
                let skill = SKILLS[rng.random_range(0..SKILLS.len())].to_owned();
                if !skills.iter().any(|(s, _)| *s == skill) {
                    skills.push((skill, rng.random_range(1..=3)));
                }
            }
            // Orders are raised for work the department can do: if nobody qualifies, the
            // order asks for what one technician has.
            if !technicians.iter().any(|t: &Technician| t.qualifies(&skills)) {
                let t = &technicians[rng.random_range(0..technicians.len())];
                let (skill, level) = t.skills.iter().next().expect("every technician has a skill");
                skills = vec![(skill.clone(), (*level).min(3))];
            }
            let ready = rng.random_range(0..7 * DAY);
            Order {
                id: format!("wo-{o:04}"),
                site: SITES[rng.random_range(0..SITES.len())].to_owned(),
                skills,
                duration: 30 * rng.random_range(2..=14),
                ready,
                deadline: ready + rng.random_range(DAY..=10 * DAY),
                priority: rng.random_range(1..=100),
                pinned: None,
                previous: None,
            }
        })
        .collect();
    Instance { technicians, orders }
}

/// A small instance with contention, for comparisons with the proven optimum: every order is
/// ready within the first two days and due within a day (plus four hours) of being ready.
pub fn contended(orders: usize, technicians: usize, days: i64, seed: u64) -> Instance {
    let mut instance = instance(orders, technicians, days, seed);
    for order in &mut instance.orders {
        order.ready %= 2 * DAY;
        order.deadline = order.ready + (order.deadline - order.ready) % DAY + 240;
    }
    instance
}
