//! What the simulated machines do over a run: the expected value (and noise level) of every
//! sensor at every step, for the scenarios `normal`, `drift`, `anomaly` and `failure`.
//!
//! Pure: no I/O, no clock, no hidden state. [`Scenario::build`] decides once, from the seed,
//! which sensors drift, where spikes and level shifts go and which assets degrade; after that
//! [`Scenario::signal`] and [`Scenario::value`] are plain functions of `(sensor, step)`, which
//! is what makes a run reproducible and what lets the tests below check each behaviour
//! exactly. The measurement noise itself (a standard normal draw) comes from the caller's
//! seeded generator (`plan.rs`).
//!
//! A step is a sensor's own reading count (0, 1, 2, ...), and progress through the run is
//! `step / steps_per_sensor`, so a scenario has the same shape at any rate or duration.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The behaviours `smctl simulate --scenario` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioKind {
    /// Every sensor noisy around its nominal mean, all run long.
    Normal,
    /// About a third of the sensors shift their mean slowly over the run (3 to 6 noise
    /// standard deviations by the end): what drift detectors must notice.
    Drift,
    /// Spikes on a quarter of the sensors, level shifts on a sixth, and one bearing slowly
    /// degrading (rising vibration and temperature): what anomaly detectors must notice.
    Anomaly,
    /// A quarter of the assets degrade monotonically towards failure from a point in the first
    /// half of the run: vibration grows exponentially, temperature and current linearly.
    Failure,
}

impl ScenarioKind {
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Normal => "normal",
            ScenarioKind::Drift => "drift",
            ScenarioKind::Anomaly => "anomaly",
            ScenarioKind::Failure => "failure",
        }
    }
}

/// What the scenario needs to know of one sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorProfile {
    /// Index of the sensor's asset in the fleet: effects that hit a whole asset use it.
    pub asset: usize,
    /// `pump`, `bearing`, ...
    pub asset_type: String,
    /// `temperature`, `vibration_rms`, ...
    pub sensor_type: String,
    pub nominal_mean: f64,
    pub noise_std: f64,
    /// Physical limits (canonical unit): [`Scenario::value`] never leaves them, so a planned
    /// valid reading always passes ingestion's range check.
    pub min: f64,
    pub max: f64,
}

/// How a trend grows from its start (0) to the end of the run (1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    Linear,
    /// Slow at first, then faster: wear that feeds on itself (bearing spalling).
    Exponential,
}

impl Shape {
    /// Maps `x` in [0, 1] to [0, 1], monotonically.
    fn at(self, x: f64) -> f64 {
        let x = x.clamp(0.0, 1.0);
        match self {
            Shape::Linear => x,
            Shape::Exponential => (EXP_RATE * x).exp_m1() / EXP_RATE.exp_m1(),
        }
    }
}

/// Steepness of [`Shape::Exponential`]: the last 20 % of the run brings about half the change.
const EXP_RATE: f64 = 3.0;

/// One change to a sensor's expected value.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Adds `delta × shape(x)` where `x` runs from 0 at progress `start` to 1 at the end of
    /// the run, and multiplies the noise by `1 + noise_gain × shape(x)`: drift and wear.
    Trend { start: f64, delta: f64, shape: Shape, noise_gain: f64 },
    /// Adds `delta` from progress `at` on: a level shift (recalibration, a valve moved).
    Shift { at: f64, delta: f64 },
    /// Adds `delta` at exactly one step: a spike.
    Spike { step: u64, delta: f64 },
}

/// Expected value and noise level of a sensor at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub mean: f64,
    pub noise_std: f64,
}

/// The effects of one run, per sensor. Build once, then query.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    kind: ScenarioKind,
    sensors: Vec<SensorProfile>,
    effects: Vec<Vec<Effect>>,
    steps_per_sensor: u64,
}

impl Scenario {
    /// Decides the run's effects from `seed`: same inputs, same scenario.
    /// `steps_per_sensor` is how many readings each sensor will get (at least 1).
    pub fn build(kind: ScenarioKind, sensors: Vec<SensorProfile>, steps_per_sensor: u64, seed: u64) -> Self {
        let steps_per_sensor = steps_per_sensor.max(1);
        // Its own generator, so the scenario does not depend on how many values the plan
        // draws before or after it.
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5CE9_A210_5CE9_A210);
        let mut effects = vec![Vec::new(); sensors.len()];
        match kind {
            ScenarioKind::Normal => {}
            ScenarioKind::Drift => {
                for i in pick(&mut rng, sensors.len(), 3) {
                    let s = &sensors[i];
                    let delta = sign(&mut rng) * rng.random_range(3.0..6.0) * s.noise_std;
                    effects[i].push(Effect::Trend { start: 0.0, delta, shape: Shape::Linear, noise_gain: 0.0 });
                }
            }
            ScenarioKind::Anomaly => {
                for i in pick(&mut rng, sensors.len(), 4) {
                    for _ in 0..3 {
                        let step = rng.random_range(0..steps_per_sensor);
                        let delta = upward_or_either(&mut rng, &sensors[i]) * rng.random_range(6.0..10.0);
                        effects[i].push(Effect::Spike { step, delta: delta * sensors[i].noise_std });
                    }
                }
                for i in pick(&mut rng, sensors.len(), 6) {
                    let at = rng.random_range(0.3..0.7);
                    let delta = upward_or_either(&mut rng, &sensors[i]) * rng.random_range(4.0..6.0);
                    effects[i].push(Effect::Shift { at, delta: delta * sensors[i].noise_std });
                }
                if let Some(asset) = degrading_bearing(&sensors) {
                    for (i, s) in sensors.iter().enumerate().filter(|(_, s)| s.asset == asset) {
                        effects[i].extend(wear(s, 0.2));
                    }
                }
            }
            ScenarioKind::Failure => {
                let assets = sensors.iter().map(|s| s.asset + 1).max().unwrap_or(0);
                for asset in pick(&mut rng, assets, 4) {
                    let start = rng.random_range(0.1..0.4);
                    for (i, s) in sensors.iter().enumerate().filter(|(_, s)| s.asset == asset) {
                        effects[i].extend(wear(s, start));
                    }
                }
            }
        }
        Self { kind, sensors, effects, steps_per_sensor }
    }

    /// The effects on `sensor`.
    pub fn effects(&self, sensor: usize) -> &[Effect] {
        &self.effects[sensor]
    }

    /// A one-word name of `effect` for summaries: a trend is `drift` in the drift scenario and
    /// `wear` elsewhere.
    pub fn label(&self, effect: &Effect) -> &'static str {
        match effect {
            Effect::Trend { .. } if self.kind == ScenarioKind::Drift => "drift",
            Effect::Trend { .. } => "wear",
            Effect::Shift { .. } => "shift",
            Effect::Spike { .. } => "spike",
        }
    }

    /// The labels of the effects on `sensor` that begin at `step`: a spike at its step, a
    /// shift or trend at the first step at or past its start. Ground truth with a time, for
    /// scoring what the detectors found.
    pub fn onsets(&self, sensor: usize, step: u64) -> Vec<&'static str> {
        let first_step = |progress: f64| (progress * self.steps_per_sensor as f64).ceil().max(0.0) as u64;
        self.effects[sensor]
            .iter()
            .filter(|effect| match **effect {
                Effect::Spike { step: at, .. } => at == step,
                Effect::Shift { at, .. } => first_step(at) == step,
                Effect::Trend { start, .. } => first_step(start) == step,
            })
            .map(|effect| self.label(effect))
            .collect()
    }

    /// Expected value and noise of `sensor` at `step`, before clamping to its limits.
    pub fn signal(&self, sensor: usize, step: u64) -> Signal {
        let profile = &self.sensors[sensor];
        let progress = step as f64 / self.steps_per_sensor as f64;
        let mut signal = Signal { mean: profile.nominal_mean, noise_std: profile.noise_std };
        for effect in &self.effects[sensor] {
            match *effect {
                Effect::Trend { start, delta, shape, noise_gain } => {
                    if progress >= start {
                        let x = shape.at((progress - start) / (1.0 - start).max(f64::EPSILON));
                        signal.mean += delta * x;
                        signal.noise_std *= 1.0 + noise_gain * x;
                    }
                }
                Effect::Shift { at, delta } if progress >= at => signal.mean += delta,
                Effect::Spike { step: at, delta } if step == at => signal.mean += delta,
                Effect::Shift { .. } | Effect::Spike { .. } => {}
            }
        }
        signal
    }

    /// The reading of `sensor` at `step` given a standard normal draw, kept within the
    /// sensor's physical limits (a healthy or failing machine, never a broken sensor).
    pub fn value(&self, sensor: usize, step: u64, standard_normal: f64) -> f64 {
        let profile = &self.sensors[sensor];
        let signal = self.signal(sensor, step);
        (signal.mean + signal.noise_std * standard_normal).clamp(profile.min, profile.max)
    }
}

/// Roughly `len / one_in` distinct indices (at least one when `len > 0`), chosen by `rng`.
fn pick(rng: &mut StdRng, len: usize, one_in: usize) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..len).collect();
    indices.shuffle(rng);
    indices.truncate(len.div_ceil(one_in));
    indices.sort_unstable();
    indices
}

fn sign(rng: &mut StdRng) -> f64 {
    if rng.random_bool(0.5) { 1.0 } else { -1.0 }
}

/// Faults push temperature, vibration and current up; pressure, flow and speed either way.
fn upward_or_either(rng: &mut StdRng, sensor: &SensorProfile) -> f64 {
    match sensor.sensor_type.as_str() {
        "temperature" | "vibration_rms" | "current" => 1.0,
        _ => sign(rng),
    }
}

/// The asset that degrades in the anomaly scenario: the first bearing, else the first asset
/// with a vibration sensor.
fn degrading_bearing(sensors: &[SensorProfile]) -> Option<usize> {
    sensors
        .iter()
        .find(|s| s.asset_type == "bearing")
        .or_else(|| sensors.iter().find(|s| s.sensor_type == "vibration_rms"))
        .map(|s| s.asset)
}

/// Wear from progress `start` on: vibration grows exponentially to about 6× nominal (well into
/// ISO 10816 zone D for any machine here), temperature rises by 30 °C, current by 25 %; each
/// also gets noisier. Other sensor types are left alone.
fn wear(sensor: &SensorProfile, start: f64) -> Option<Effect> {
    let (delta, shape, noise_gain) = match sensor.sensor_type.as_str() {
        "vibration_rms" => (5.0 * sensor.nominal_mean, Shape::Exponential, 2.0),
        "temperature" => (30.0, Shape::Linear, 0.5),
        "current" => (0.25 * sensor.nominal_mean, Shape::Linear, 0.5),
        _ => return None,
    };
    Some(Effect::Trend { start, delta, shape, noise_gain })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_effect_has_exactly_one_onset_step() {
        let steps = 1_000;
        let scenario = Scenario::build(ScenarioKind::Anomaly, profiles(), steps, 7);
        for sensor in 0..profiles().len() {
            let onsets: usize = (0..steps).map(|step| scenario.onsets(sensor, step).len()).sum();
            assert_eq!(onsets, scenario.effects(sensor).len(), "sensor {sensor}");
            for step in 0..steps {
                for label in scenario.onsets(sensor, step) {
                    // The effect is visible from its onset on (a spike exactly there).
                    let before = step.checked_sub(1).map(|s| scenario.signal(sensor, s).mean);
                    let at = scenario.signal(sensor, step).mean;
                    if label == "spike" || label == "shift" {
                        assert_ne!(Some(at), before, "{label} at {step} on sensor {sensor}");
                    }
                }
            }
        }
    }

    /// Sixteen assets: eight pumps (temperature, vibration, pressure, current) and eight bearings.
    fn profiles() -> Vec<SensorProfile> {
        let sensor = |asset, asset_type: &str, sensor_type: &str, mean, std, max| SensorProfile {
            asset,
            asset_type: asset_type.into(),
            sensor_type: sensor_type.into(),
            nominal_mean: mean,
            noise_std: std,
            min: 0.0,
            max,
        };
        let mut sensors = Vec::new();
        for asset in 0..8 {
            sensors.push(sensor(asset * 2, "pump", "temperature", 55.0, 0.8, 150.0));
            sensors.push(sensor(asset * 2, "pump", "vibration_rms", 2.5, 0.25, 50.0));
            sensors.push(sensor(asset * 2, "pump", "pressure", 650.0, 8.0, 2500.0));
            sensors.push(sensor(asset * 2, "pump", "current", 62.0, 1.2, 200.0));
            sensors.push(sensor(asset * 2 + 1, "bearing", "temperature", 48.0, 0.6, 150.0));
            sensors.push(sensor(asset * 2 + 1, "bearing", "vibration_rms", 1.4, 0.15, 50.0));
        }
        sensors
    }

    const STEPS: u64 = 1_000;

    fn build(kind: ScenarioKind, seed: u64) -> Scenario {
        Scenario::build(kind, profiles(), STEPS, seed)
    }

    #[test]
    fn normal_keeps_every_sensor_at_its_nominal_mean() {
        let scenario = build(ScenarioKind::Normal, 42);
        for (i, profile) in profiles().iter().enumerate() {
            for step in [0, STEPS / 2, STEPS - 1, STEPS * 3] {
                assert_eq!(
                    scenario.signal(i, step),
                    Signal { mean: profile.nominal_mean, noise_std: profile.noise_std }
                );
            }
        }
    }

    #[test]
    fn same_seed_same_scenario_other_seed_other_choices() {
        for kind in [ScenarioKind::Drift, ScenarioKind::Anomaly, ScenarioKind::Failure] {
            assert_eq!(build(kind, 7), build(kind, 7), "{kind:?}");
            assert_ne!(build(kind, 7), build(kind, 8), "{kind:?}");
        }
    }

    #[test]
    fn drift_moves_some_sensors_slowly_and_leaves_the_rest() {
        let scenario = build(ScenarioKind::Drift, 42);
        let sensors = profiles();
        let drifting: Vec<usize> = (0..sensors.len()).filter(|&i| !scenario.effects(i).is_empty()).collect();
        assert_eq!(drifting.len(), sensors.len().div_ceil(3));
        for (i, profile) in sensors.iter().enumerate() {
            let start = scenario.signal(i, 0).mean;
            let end = scenario.signal(i, STEPS).mean;
            assert_eq!(start, profile.nominal_mean);
            let shift = (end - start).abs() / profile.noise_std;
            if drifting.contains(&i) {
                assert!((3.0..6.0).contains(&shift), "sensor {i} drifted {shift} std");
                // Slow: no step moves the mean by more than a hundredth of a noise std.
                for step in 1..STEPS {
                    let jump = (scenario.signal(i, step).mean - scenario.signal(i, step - 1).mean).abs();
                    assert!(jump < 0.01 * profile.noise_std, "sensor {i} jumped at {step}");
                }
            } else {
                assert_eq!(shift, 0.0);
            }
        }
    }

    /// `scenario` with only the effects of `sensor` that `keep` accepts.
    fn only(scenario: &Scenario, sensor: usize, keep: impl Fn(&Effect) -> bool) -> Scenario {
        let mut only = scenario.clone();
        only.effects[sensor].retain(|e| keep(e));
        only
    }

    #[test]
    fn anomaly_spikes_hit_exactly_one_step() {
        let scenario = build(ScenarioKind::Anomaly, 42);
        let mut spikes = 0;
        for i in 0..profiles().len() {
            for effect in scenario.effects(i) {
                if let Effect::Spike { step, delta } = *effect {
                    spikes += 1;
                    let alone = only(&scenario, i, |e| e == effect);
                    let nominal = profiles()[i].nominal_mean;
                    assert_eq!(alone.signal(i, step).mean, nominal + delta);
                    assert_eq!(alone.signal(i, step + 1).mean, nominal);
                    assert_eq!(alone.signal(i, step.wrapping_sub(1)).mean, nominal);
                    assert!(delta.abs() >= 6.0 * profiles()[i].noise_std);
                }
            }
        }
        assert_eq!(spikes, 3 * profiles().len().div_ceil(4));
    }

    #[test]
    fn anomaly_has_level_shifts_that_persist() {
        let scenario = build(ScenarioKind::Anomaly, 42);
        let mut shifts = 0;
        for i in 0..profiles().len() {
            for effect in scenario.effects(i) {
                if let Effect::Shift { at, delta } = *effect {
                    shifts += 1;
                    let alone = only(&scenario, i, |e| e == effect);
                    let nominal = profiles()[i].nominal_mean;
                    let first = (0..STEPS).find(|&s| alone.signal(i, s).mean != nominal).unwrap();
                    assert!((first as f64 / STEPS as f64 - at).abs() <= 1.0 / STEPS as f64);
                    for step in [first, first + 1, STEPS - 1, STEPS * 2] {
                        assert_eq!(alone.signal(i, step).mean, nominal + delta);
                    }
                    assert!(delta.abs() >= 4.0 * profiles()[i].noise_std);
                }
            }
        }
        assert_eq!(shifts, profiles().len().div_ceil(6));
    }

    #[test]
    fn anomaly_degrades_the_first_bearing_in_vibration_and_temperature() {
        let scenario = build(ScenarioKind::Anomaly, 42);
        let sensors = profiles();
        let bearing = sensors.iter().position(|s| s.asset_type == "bearing").unwrap();
        let vibration = bearing + 1;
        assert_eq!(sensors[vibration].sensor_type, "vibration_rms");
        // The bearing's own wear, without any spike or shift the random picks put on it.
        let trend_only =
            |i: usize, step: u64| only(&scenario, i, |e| matches!(e, Effect::Trend { .. })).signal(i, step).mean;
        assert_eq!(trend_only(vibration, 0), 1.4);
        assert!(trend_only(vibration, STEPS) > 6.0 * 1.4 - 1e-9, "vibration ends past 6x nominal");
        assert!(trend_only(bearing, STEPS) >= 48.0 + 30.0 - 1e-9);
        assert!(scenario.signal(vibration, STEPS).noise_std > 2.0 * 0.15, "wear is noisier");
        // Only that one asset wears.
        let wearing: Vec<usize> = (0..sensors.len())
            .filter(|&i| scenario.effects(i).iter().any(|e| matches!(e, Effect::Trend { .. })))
            .map(|i| sensors[i].asset)
            .collect();
        assert!(wearing.iter().all(|&a| a == sensors[bearing].asset), "{wearing:?}");
    }

    #[test]
    fn failure_degrades_some_assets_monotonically() {
        let scenario = build(ScenarioKind::Failure, 42);
        let sensors = profiles();
        let mut failing = std::collections::BTreeSet::new();
        for (i, profile) in sensors.iter().enumerate() {
            let effects = scenario.effects(i);
            if effects.is_empty() {
                assert_eq!(scenario.signal(i, STEPS).mean, profile.nominal_mean);
                continue;
            }
            failing.insert(profile.asset);
            assert!(["temperature", "vibration_rms", "current"].contains(&profile.sensor_type.as_str()));
            let mut last = f64::MIN;
            for step in 0..=STEPS {
                let mean = scenario.signal(i, step).mean;
                assert!(mean >= last, "sensor {i} fell at step {step}");
                last = mean;
            }
            assert!(last > profile.nominal_mean + 2.0 * profile.noise_std, "sensor {i} ends degraded");
        }
        // 16 assets, one in four fail; every sensor of a failing asset that can show wear does.
        assert_eq!(failing.len(), 4);
        for (i, profile) in sensors.iter().enumerate() {
            if failing.contains(&profile.asset) && profile.sensor_type != "pressure" {
                assert!(!scenario.effects(i).is_empty(), "sensor {i}");
            }
        }
    }

    #[test]
    fn values_stay_within_physical_limits() {
        let sensors = profiles();
        for kind in [ScenarioKind::Normal, ScenarioKind::Drift, ScenarioKind::Anomaly, ScenarioKind::Failure] {
            let scenario = build(kind, 3);
            for (i, profile) in sensors.iter().enumerate() {
                for step in (0..=STEPS).step_by(50) {
                    for z in [-1e6, -3.0, 0.0, 3.0, 1e6] {
                        let value = scenario.value(i, step, z);
                        assert!((profile.min..=profile.max).contains(&value), "{kind:?} sensor {i}: {value}");
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_run_from_zero_to_one_monotonically() {
        for shape in [Shape::Linear, Shape::Exponential] {
            assert_eq!(shape.at(0.0), 0.0);
            assert!((shape.at(1.0) - 1.0).abs() < 1e-12);
            assert!(shape.at(0.5) <= 0.5 + 1e-12);
            assert_eq!(shape.at(-1.0), 0.0);
            assert_eq!(shape.at(2.0), shape.at(1.0));
        }
        assert!(Shape::Exponential.at(0.8) < 0.6, "exponential wear is back-loaded");
    }
}
