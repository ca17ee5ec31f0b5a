//! Synthetic data with known mechanisms, for tests and benchmarks: a fresh clone has no data
//! sets, and a generator whose rules we wrote lets a test say what the model must learn.
//!
//! Not a substitute for the real files: the figures to quote come from `smctl eval` on them.

use crate::ai4i::{FailureModes, ProcessSample, ProductType, Row};
use crate::cmapss::{Cycle, SENSORS};
use crate::rng::SplitMix64;

/// `n` AI4I-like processes following the data set's documented generation and failure rules:
/// power outside [3500, 9000] W (PWF); temperature difference below 8.6 K at under 1380 rpm
/// (HDF); tool wear × torque above 11,000 / 12,000 / 13,000 min·Nm for L / M / H (OSF); and
/// random failures at 0.1 % (RNF). Tool-wear failures (TWF: a random wear between 200 and 240
/// min) are left out: they are mostly noise, and the tests want rules a model can learn.
pub fn ai4i_like(n: usize, seed: u64) -> Vec<Row> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let u = rng.uniform();
            let (product_type, code) = if u < 0.5 {
                (ProductType::Low, 'L')
            } else if u < 0.8 {
                (ProductType::Medium, 'M')
            } else {
                (ProductType::High, 'H')
            };
            let air_temperature_k = 300.0 + 2.0 * rng.normal();
            let process_temperature_k = air_temperature_k + 10.0 + rng.normal();
            let torque_nm = (40.0 + 10.0 * rng.normal()).max(3.8);
            // Speed follows from a power that is nearly constant, as in the AI4I generator.
            let power_target_w = 6_400.0 + 1_100.0 * rng.normal();
            let rotational_speed_rpm =
                (power_target_w / (torque_nm * std::f64::consts::TAU / 60.0)).clamp(1_150.0, 2_900.0).round();
            let tool_wear_min = rng.range(0.0, 253.0).floor();
            let sample = ProcessSample {
                product_type,
                air_temperature_k,
                process_temperature_k,
                rotational_speed_rpm,
                torque_nm,
                tool_wear_min,
            };
            let power_w = torque_nm * rotational_speed_rpm * std::f64::consts::TAU / 60.0;
            let modes = FailureModes {
                twf: false,
                hdf: process_temperature_k - air_temperature_k < 8.6 && rotational_speed_rpm < 1_380.0,
                pwf: !(3_500.0..=9_000.0).contains(&power_w),
                osf: tool_wear_min * torque_nm > product_type.overstrain_limit_min_nm(),
                rnf: rng.uniform() < 0.001,
            };
            let machine_failure = modes.hdf || modes.pwf || modes.osf || modes.rnf;
            Row { udi: i as u32 + 1, product_id: format!("{code}{}", 10_000 + i), sample, machine_failure, modes }
        })
        .collect()
}

/// Sensors that never move in the synthetic fleet (as s1, s5, s10, s16, s18, s19 in FD001);
/// sensor index 5 (s6) toggles between two quantisation steps.
pub const CONSTANT_SENSORS: [usize; 6] = [0, 4, 9, 15, 17, 18];

/// `units` C-MAPSS-like run-to-failure trajectories. Each engine lives 128 to 362 cycles (the
/// FD001 range); its damage grows as (t / life)^p with p in [1.5, 3]; each moving sensor is a
/// base level plus a gain × damage plus noise, with unit-to-unit offsets. The last cycle of
/// each trajectory is the failure.
pub fn degradation_fleet(units: usize, seed: u64) -> Vec<Cycle> {
    let mut rng = SplitMix64::new(seed);
    // Per-sensor base, gain at failure and noise; the signal-to-noise ratio (≈ 3) is FD001's.
    let sensors: Vec<(f64, f64, f64)> = (0..SENSORS)
        .map(|j| {
            let base = 100.0 + 50.0 * j as f64;
            let noise = 0.2 + 0.05 * j as f64;
            let sign = if j % 3 == 0 { -1.0 } else { 1.0 };
            (base, sign * noise * rng.range(2.5, 4.0), noise)
        })
        .collect();
    let mut cycles = Vec::new();
    for unit in 1..=units as u32 {
        let life = rng.range(128.0, 363.0).floor();
        let exponent = rng.range(1.5, 3.0);
        let offsets: Vec<f64> = sensors.iter().map(|(_, _, noise)| 0.3 * noise * rng.normal()).collect();
        for t in 1..=life as u32 {
            let damage = (f64::from(t) / life).powf(exponent);
            let mut values = [0.0; SENSORS];
            for (j, value) in values.iter_mut().enumerate() {
                let (base, gain, noise) = sensors[j];
                *value = if CONSTANT_SENSORS.contains(&j) {
                    base
                } else if j == 5 {
                    if rng.uniform() < 0.5 { 21.60 } else { 21.61 }
                } else {
                    base + offsets[j] + gain * damage + noise * rng.normal()
                };
            }
            let settings = [0.002 * rng.normal(), 0.0003 * rng.normal(), 100.0];
            cycles.push(Cycle { unit, cycle: t, settings, sensors: values });
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ai4i_like_is_seeded_and_has_a_plausible_failure_rate() {
        let rows = ai4i_like(10_000, 1);
        assert_eq!(rows, ai4i_like(10_000, 1));
        let rate = rows.iter().filter(|r| r.machine_failure).count() as f64 / rows.len() as f64;
        assert!((0.01..0.08).contains(&rate), "failure rate {rate}");
        for mode in [|m: &FailureModes| m.hdf, |m: &FailureModes| m.pwf, |m: &FailureModes| m.osf] {
            assert!(rows.iter().filter(|r| mode(&r.modes)).count() > 20);
        }
    }

    #[test]
    fn degradation_fleet_runs_each_engine_to_failure() {
        let cycles = degradation_fleet(10, 2);
        let trajectories = crate::cmapss::trajectories(&cycles);
        assert_eq!(trajectories.len(), 10);
        for t in &trajectories {
            assert!((128..=362).contains(&t.last_cycle()), "{}", t.last_cycle());
            assert_eq!(t.cycles.len() as u32, t.last_cycle());
        }
    }
}
