//! What `smctl simulate` sends, decided ahead of the sender: a pure iterator of planned records
//! ([`Plan`]), the rendering of one planned record into Kafka bytes at send time
//! ([`Renderer`]), and the counts of what was planned ([`Tally`]).
//!
//! The split keeps everything that matters for reproducibility here, with no I/O: a seed,
//! a fleet, a scenario and the fractions fix the sequence of values and of bad and duplicate
//! choices. Only what must be fresh at send time is left to rendering: event time (the wall
//! clock at send, so ingestion's timestamp checks see live data), event ids and trace ids.
//!
//! Bad records cycle through every dead-letter reason the readings path knows except
//! `unknown_schema`, so that a run of a few thousand readings exercises each of them; a
//! duplicate is a byte-identical re-send of one of the last [`DUPLICATE_WINDOW`] valid records
//! (a gateway retrying after a lost acknowledgement), recent enough to fall inside ingestion's
//! duplicate window.

use crate::catalog::Fleet;
use crate::scenario::{Scenario, ScenarioKind, SensorProfile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sm_domain::{AssetId, Codec, CodecError, Envelope, SensorId, SensorReading, TenantId, Timestamp};
use std::collections::{BTreeMap, VecDeque};

/// A duplicate repeats one of this many most recent valid records.
pub const DUPLICATE_WINDOW: usize = 16;

/// Share of valid readings sent in a non-canonical unit when unit variants are on.
pub const UNIT_VARIANT_SHARE: f64 = 0.1;

/// `producer` of every simulated reading.
pub const PRODUCER: &str = "smctl-simulate";

/// Converts a value from a sensor type's canonical unit into another unit.
type FromCanonical = fn(f64) -> f64;

/// One non-canonical unit per sensor type, with the conversion from the canonical unit. A
/// test checks each against `sm_domain::units::to_canonical`, ingestion's own conversion.
const UNIT_VARIANTS: &[(&str, &str, FromCanonical)] = &[
    ("temperature", "degF", |c| c * 9.0 / 5.0 + 32.0),
    ("vibration_rms", "in/s", |mm_s| mm_s / 25.4),
    ("pressure", "psi", |kpa| kpa / 6.894_757_293_168),
    ("current", "mA", |a| a * 1000.0),
    ("flow", "m3/h", |l_min| l_min * 60.0 / 1000.0),
    ("speed", "Hz", |rpm| rpm / 60.0),
];

/// `future_timestamp` readings are an hour ahead, well past ingestion's 60 s tolerance.
const FUTURE_OFFSET_MICROS: i64 = 3_600 * 1_000_000;
/// `too_old` readings are a week old, well past ingestion's 24 h limit for live data.
const TOO_OLD_OFFSET_MICROS: i64 = -7 * 24 * 3_600 * 1_000_000;

/// The dead-letter reasons a simulation provokes, one kind of bad record each. The codes are
/// the stable ones of the runtime's decoder and of ingestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidKind {
    /// Garbage bytes without Confluent framing.
    NotAvro,
    /// A valid Avro record with its last bytes cut off.
    MalformedAvro,
    /// JSON (with the content-type header) lacking `sensor_id`.
    InvalidJson,
    /// Avro with an empty sensor id.
    MissingField,
    /// Value NaN.
    NonFiniteValue,
    /// A sensor id no asset registered.
    UnknownSensor,
    /// A sensor of another asset than the envelope's.
    SensorAssetMismatch,
    /// Unit `furlongs`.
    UnknownUnit,
    /// Ten spans beyond the sensor's maximum.
    OutOfRange,
    /// Event time an hour ahead.
    FutureTimestamp,
    /// Event time a week ago, not marked backfill.
    TooOld,
}

impl InvalidKind {
    /// Every kind, in the order bad records cycle through them.
    pub const ALL: [InvalidKind; 11] = [
        InvalidKind::NotAvro,
        InvalidKind::MalformedAvro,
        InvalidKind::InvalidJson,
        InvalidKind::MissingField,
        InvalidKind::NonFiniteValue,
        InvalidKind::UnknownSensor,
        InvalidKind::SensorAssetMismatch,
        InvalidKind::UnknownUnit,
        InvalidKind::OutOfRange,
        InvalidKind::FutureTimestamp,
        InvalidKind::TooOld,
    ];

    /// The dead-letter `reason_code` this record must get.
    pub fn reason_code(self) -> &'static str {
        match self {
            InvalidKind::NotAvro => "not_avro",
            InvalidKind::MalformedAvro => "malformed_avro",
            InvalidKind::InvalidJson => "invalid_json",
            InvalidKind::MissingField => "missing_field",
            InvalidKind::NonFiniteValue => "non_finite_value",
            InvalidKind::UnknownSensor => "unknown_sensor",
            InvalidKind::SensorAssetMismatch => "sensor_asset_mismatch",
            InvalidKind::UnknownUnit => "unknown_unit",
            InvalidKind::OutOfRange => "out_of_range",
            InvalidKind::FutureTimestamp => "future_timestamp",
            InvalidKind::TooOld => "too_old",
        }
    }
}

/// How a planned reading goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `Envelope<SensorReading>`, Confluent Avro.
    Avro,
    /// The gateway JSON form, header `content-type: application/json`.
    Json,
    /// Bytes that are neither (`not_avro`).
    Garbage,
    /// Avro with the last bytes cut off (`malformed_avro`).
    TruncatedAvro,
    /// Gateway JSON without `sensor_id` (`invalid_json`).
    JsonWithoutSensorId,
}

/// A reading to encode fresh at send time.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedReading {
    pub sensor_id: SensorId,
    pub value: f64,
    pub unit: String,
    /// Whether `unit` is the sensor type's canonical unit.
    pub canonical_unit: bool,
    /// Per sensor, from 0, increasing.
    pub sequence: i64,
    pub encoding: Encoding,
    /// Event time is the wall clock at send plus this.
    pub time_offset_micros: i64,
    /// Scenario effects that begin with this reading (`spike`, `shift`, `wear`, `drift`).
    pub onsets: Vec<&'static str>,
}

/// What a planned record is.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A fresh reading; `invalid` names the check it is built to fail, `None` if valid.
    Reading { reading: PlannedReading, invalid: Option<InvalidKind> },
    /// An exact copy (same bytes, key and headers) of the earlier valid record `of`.
    Duplicate { of: u64 },
}

/// One record of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRecord {
    /// Position in the run, from 0.
    pub index: u64,
    /// Envelope asset id and Kafka key.
    pub asset_id: AssetId,
    pub body: Body,
}

/// Everything that shapes a run besides the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Records in the run, duplicates included.
    pub total: u64,
    pub seed: u64,
    pub scenario: ScenarioKind,
    /// Share of records built to be dead-lettered.
    pub bad_fraction: f64,
    /// Share of records that repeat an earlier valid one.
    pub duplicate_fraction: f64,
    /// Share of valid readings sent as JSON.
    pub json_fraction: f64,
    /// Send [`UNIT_VARIANT_SHARE`] of valid readings in a non-canonical unit.
    pub unit_variants: bool,
}

/// Options that cannot make a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("{name} must be in [0, 1], not {value}")]
    FractionOutOfRange { name: &'static str, value: f64 },
    #[error("bad and duplicate fractions add up to {0}, more than 1")]
    FractionsExceedOne(f64),
    #[error("the fleet has no sensors")]
    NoSensors,
    #[error(
        "bad records need at least two assets (sensor_asset_mismatch sends one asset's sensor as another's): use --assets 2 or more, or --bad-fraction 0"
    )]
    MismatchNeedsTwoAssets,
}

impl PlanOptions {
    pub fn validate(&self, fleet: &Fleet) -> Result<(), PlanError> {
        for (name, value) in [
            ("--bad-fraction", self.bad_fraction),
            ("--duplicate-fraction", self.duplicate_fraction),
            ("--json-fraction", self.json_fraction),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(PlanError::FractionOutOfRange { name, value });
            }
        }
        let both = self.bad_fraction + self.duplicate_fraction;
        if both > 1.0 {
            return Err(PlanError::FractionsExceedOne(both));
        }
        if fleet.sensor_count() == 0 {
            return Err(PlanError::NoSensors);
        }
        if self.bad_fraction > 0.0 && fleet.assets.len() < 2 {
            return Err(PlanError::MismatchNeedsTwoAssets);
        }
        Ok(())
    }
}

/// One sensor as the plan sees it.
#[derive(Debug, Clone)]
struct PlanSensor {
    asset: usize,
    id: SensorId,
    sensor_type: String,
    unit: String,
    min: f64,
    max: f64,
    nominal_mean: f64,
}

/// The records of one run, in send order. Pure and deterministic: the same fleet and options
/// yield the same records.
///
/// Fresh readings visit the sensors round-robin (asset by asset), so every sensor reports
/// at the same pace; a sensor's `step` (its reading count) drives the scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    options: PlanOptions,
    assets: Vec<AssetId>,
    sensors: Vec<PlanSensor>,
    scenario: Scenario,
    rng: StdRng,
    next_index: u64,
    /// Fresh readings planned so far; picks the next sensor round-robin.
    next_slot: u64,
    /// Per sensor: values drawn so far (the scenario's step).
    steps: Vec<u64>,
    /// Per sensor: the next sequence number.
    sequences: Vec<i64>,
    /// Index and asset of the latest valid records, newest last: what a duplicate may repeat.
    recent_valid: VecDeque<(u64, usize)>,
    invalid_planned: u64,
}

impl Plan {
    pub fn new(fleet: &Fleet, options: PlanOptions) -> Result<Self, PlanError> {
        options.validate(fleet)?;
        let mut sensors = Vec::new();
        let mut profiles = Vec::new();
        for (asset, a) in fleet.assets.iter().enumerate() {
            for s in &a.sensors {
                sensors.push(PlanSensor {
                    asset,
                    id: s.id.clone(),
                    sensor_type: s.sensor_type.clone(),
                    unit: s.unit.clone(),
                    min: s.min,
                    max: s.max,
                    nominal_mean: s.nominal_mean,
                });
                profiles.push(SensorProfile {
                    asset,
                    asset_type: a.asset_type.clone(),
                    sensor_type: s.sensor_type.clone(),
                    nominal_mean: s.nominal_mean,
                    noise_std: s.noise_std,
                    min: s.min,
                    max: s.max,
                });
            }
        }
        let steps_per_sensor = options.total.div_ceil(sensors.len() as u64);
        let scenario = Scenario::build(options.scenario, profiles, steps_per_sensor, options.seed);
        Ok(Self {
            rng: StdRng::seed_from_u64(options.seed),
            assets: fleet.assets.iter().map(|a| a.id.clone()).collect(),
            steps: vec![0; sensors.len()],
            sequences: vec![0; sensors.len()],
            sensors,
            scenario,
            options,
            next_index: 0,
            next_slot: 0,
            recent_valid: VecDeque::with_capacity(DUPLICATE_WINDOW),
            invalid_planned: 0,
        })
    }

    /// The sensors the scenario changes, with what it does to each (`drift`, `wear`,
    /// `spike`, `shift`): the ground truth a test of the anomaly, drift or prediction agents
    /// compares their findings with.
    pub fn affected_sensors(&self) -> BTreeMap<String, Vec<&'static str>> {
        (0..self.sensors.len())
            .filter(|&i| !self.scenario.effects(i).is_empty())
            .map(|i| {
                let mut labels: Vec<_> = self.scenario.effects(i).iter().map(|e| self.scenario.label(e)).collect();
                labels.sort_unstable();
                labels.dedup();
                (self.sensors[i].id.to_string(), labels)
            })
            .collect()
    }

    /// A standard normal draw (Box–Muller; one of the pair is enough here).
    fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.rng.random::<f64>(); // (0, 1]: ln is finite
        let u2 = self.rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// The next sensor's next value, as a valid reading in its canonical unit.
    fn fresh_reading(&mut self) -> (usize, PlannedReading) {
        let sensor = (self.next_slot % self.sensors.len() as u64) as usize;
        self.next_slot += 1;
        let step = self.steps[sensor];
        self.steps[sensor] += 1;
        let z = self.standard_normal();
        let value = self.scenario.value(sensor, step, z);
        let s = &self.sensors[sensor];
        let reading = PlannedReading {
            sensor_id: s.id.clone(),
            value,
            unit: s.unit.clone(),
            canonical_unit: true,
            sequence: self.next_sequence(sensor),
            encoding: Encoding::Avro,
            time_offset_micros: 0,
            onsets: self.scenario.onsets(sensor, step),
        };
        (sensor, reading)
    }

    fn next_sequence(&mut self, sensor: usize) -> i64 {
        let sequence = self.sequences[sensor];
        self.sequences[sensor] += 1;
        sequence
    }

    /// A valid reading: maybe JSON, maybe in another unit. Both choices are always drawn, so
    /// switching unit variants off changes units but not values or later choices.
    fn valid(&mut self, sensor: usize, mut reading: PlannedReading) -> PlannedReading {
        let json = self.rng.random::<f64>() < self.options.json_fraction;
        let variant = self.rng.random::<f64>() < UNIT_VARIANT_SHARE;
        if json {
            reading.encoding = Encoding::Json;
        }
        if variant && self.options.unit_variants {
            let sensor_type = self.sensors[sensor].sensor_type.as_str();
            if let Some((_, unit, convert)) = UNIT_VARIANTS.iter().find(|(t, _, _)| *t == sensor_type) {
                reading.value = convert(reading.value);
                reading.unit = (*unit).to_owned();
                reading.canonical_unit = false;
            }
        }
        reading
    }

    /// Turns a valid reading of `sensor` into one that fails with `kind`, and returns the
    /// envelope asset.
    fn corrupt(&mut self, kind: InvalidKind, sensor: usize, reading: &mut PlannedReading) -> AssetId {
        let asset = self.sensors[sensor].asset;
        match kind {
            InvalidKind::NotAvro => reading.encoding = Encoding::Garbage,
            InvalidKind::MalformedAvro => reading.encoding = Encoding::TruncatedAvro,
            InvalidKind::InvalidJson => reading.encoding = Encoding::JsonWithoutSensorId,
            InvalidKind::MissingField => reading.sensor_id = SensorId::from(""),
            InvalidKind::NonFiniteValue => reading.value = f64::NAN,
            InvalidKind::UnknownSensor => {
                reading.sensor_id = SensorId(format!("{}.unregistered", self.assets[asset]));
            }
            InvalidKind::SensorAssetMismatch => {
                // A valid reading of the next asset's first sensor, sent as this asset's. It
                // takes that sensor's next sequence number, so it can never look like a
                // duplicate of one of its real readings.
                let other_asset = (asset + 1) % self.assets.len();
                let other = self.sensors.iter().position(|s| s.asset == other_asset).unwrap_or(sensor);
                let o = &self.sensors[other];
                reading.sensor_id = o.id.clone();
                reading.value = o.nominal_mean;
                reading.unit = o.unit.clone();
                reading.sequence = self.next_sequence(other);
            }
            InvalidKind::UnknownUnit => {
                reading.unit = "furlongs".to_owned();
                reading.canonical_unit = false;
            }
            InvalidKind::OutOfRange => {
                let s = &self.sensors[sensor];
                reading.value = s.max + 10.0 * (s.max - s.min);
            }
            InvalidKind::FutureTimestamp => reading.time_offset_micros = FUTURE_OFFSET_MICROS,
            InvalidKind::TooOld => reading.time_offset_micros = TOO_OLD_OFFSET_MICROS,
        }
        self.assets[asset].clone()
    }
}

impl Iterator for Plan {
    type Item = PlannedRecord;

    fn next(&mut self) -> Option<PlannedRecord> {
        if self.next_index >= self.options.total {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        let draw = self.rng.random::<f64>();
        if draw >= self.options.bad_fraction
            && draw < self.options.bad_fraction + self.options.duplicate_fraction
            && !self.recent_valid.is_empty()
        {
            let (of, asset) = self.recent_valid[self.rng.random_range(0..self.recent_valid.len())];
            // Same asset as the original: same key, same partition, after it.
            let asset_id = self.assets[asset].clone();
            return Some(PlannedRecord { index, asset_id, body: Body::Duplicate { of } });
        }
        let (sensor, mut reading) = self.fresh_reading();
        if draw < self.options.bad_fraction {
            let kind = InvalidKind::ALL[(self.invalid_planned % InvalidKind::ALL.len() as u64) as usize];
            self.invalid_planned += 1;
            let asset_id = self.corrupt(kind, sensor, &mut reading);
            return Some(PlannedRecord { index, asset_id, body: Body::Reading { reading, invalid: Some(kind) } });
        }
        let reading = self.valid(sensor, reading);
        if self.recent_valid.len() == DUPLICATE_WINDOW {
            self.recent_valid.pop_front();
        }
        let asset = self.sensors[sensor].asset;
        self.recent_valid.push_back((index, asset));
        let asset_id = self.assets[asset].clone();
        Some(PlannedRecord { index, asset_id, body: Body::Reading { reading, invalid: None } })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.options.total - self.next_index) as usize;
        (left, Some(left))
    }
}

/// One record ready for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The asset id: every record is keyed by its asset.
    pub key: String,
    pub payload: Vec<u8>,
    /// Send header `content-type: application/json`.
    pub json: bool,
    /// W3C `traceparent`: a gateway starts the trace that follows the reading downstream.
    pub traceparent: String,
}

/// Why a planned record could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("duplicate of record {0}, which is not among the recent valid records")]
    UnknownOriginal(u64),
}

/// The JSON a simple gateway publishes: the fields of `GatewayJsonReading` in sm-domain (a
/// test decodes this with `SensorReading::from_json` to keep the two in step).
#[derive(Serialize)]
struct GatewayJson<'a> {
    tenant_id: &'a str,
    asset_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sensor_id: Option<&'a str>,
    timestamp_ms: i64,
    value: f64,
    unit: &'a str,
    sequence: i64,
    backfill: bool,
    producer: &'a str,
}

/// Turns planned records into bytes. Keeps the last [`DUPLICATE_WINDOW`] valid records it
/// rendered, so a duplicate is their exact copy. No I/O: the caller passes the clock.
pub struct Renderer {
    codec: Codec,
    tenant: TenantId,
    recent: VecDeque<(u64, Rendered)>,
}

impl Renderer {
    pub fn new(codec: Codec, tenant: TenantId) -> Self {
        Self { codec, tenant, recent: VecDeque::with_capacity(DUPLICATE_WINDOW) }
    }

    /// The bytes of `record` sent at `now` (its event time, plus any planned offset).
    pub fn render(&mut self, record: &PlannedRecord, now: Timestamp) -> Result<Rendered, RenderError> {
        let (reading, valid) = match &record.body {
            Body::Duplicate { of } => {
                return self
                    .recent
                    .iter()
                    .find(|(index, _)| index == of)
                    .map(|(_, rendered)| rendered.clone())
                    .ok_or(RenderError::UnknownOriginal(*of));
            }
            Body::Reading { reading, invalid } => (reading, invalid.is_none()),
        };
        let occurred_at = Timestamp(now.as_micros() + reading.time_offset_micros);
        let traceparent = sm_kafka::trace::TraceParent::new_root().header_value();
        let key = record.asset_id.as_str().to_owned();
        let (payload, json) = match reading.encoding {
            Encoding::Avro | Encoding::TruncatedAvro => {
                let event = Envelope::origin(
                    self.tenant.clone(),
                    record.asset_id.clone(),
                    occurred_at,
                    PRODUCER,
                    SensorReading {
                        sensor_id: reading.sensor_id.clone(),
                        value: reading.value,
                        unit: reading.unit.clone(),
                        sequence: reading.sequence,
                        backfill: false,
                    },
                );
                let mut bytes = self.codec.encode(&event)?;
                if reading.encoding == Encoding::TruncatedAvro {
                    // Cuts into the value/sequence/backfill fields: the framing and schema id
                    // stay intact, so only the body fails to decode.
                    bytes.truncate(bytes.len() - 3);
                }
                (bytes, false)
            }
            Encoding::Json | Encoding::JsonWithoutSensorId => {
                let json = GatewayJson {
                    tenant_id: self.tenant.as_str(),
                    asset_id: record.asset_id.as_str(),
                    sensor_id: (reading.encoding == Encoding::Json).then_some(reading.sensor_id.as_str()),
                    timestamp_ms: occurred_at.as_micros().div_euclid(1000),
                    value: reading.value,
                    unit: &reading.unit,
                    sequence: reading.sequence,
                    backfill: false,
                    producer: PRODUCER,
                };
                // A plain struct of strings and finite numbers always serialises.
                (serde_json::to_vec(&json).unwrap_or_default(), true)
            }
            Encoding::Garbage => {
                (format!("not a reading #{}: {}", record.index, reading.sensor_id).into_bytes(), false)
            }
        };
        let rendered = Rendered { key, payload, json, traceparent };
        if valid {
            if self.recent.len() == DUPLICATE_WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back((record.index, rendered.clone()));
        }
        Ok(rendered)
    }
}

/// Counts of a run's records by what ingestion should do with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Every record sent, duplicates included.
    pub sent: u64,
    /// Fresh valid readings: each should come out of ingestion once.
    pub valid: u64,
    /// Exact re-sends of valid readings: suppressed by ingestion.
    pub duplicates: u64,
    /// Records built to be dead-lettered, by the reason they should get (every reason
    /// listed, zeros included).
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
    /// Valid readings sent as JSON.
    pub json: u64,
    /// Valid readings sent in a non-canonical unit.
    pub non_canonical_units: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            sent: 0,
            valid: 0,
            duplicates: 0,
            invalid_by_reason: InvalidKind::ALL.iter().map(|k| (k.reason_code(), 0)).collect(),
            json: 0,
            non_canonical_units: 0,
        }
    }
}

impl Tally {
    pub fn add(&mut self, record: &PlannedRecord) {
        self.sent += 1;
        match &record.body {
            Body::Duplicate { .. } => self.duplicates += 1,
            Body::Reading { invalid: Some(kind), .. } => {
                *self.invalid_by_reason.entry(kind.reason_code()).or_default() += 1
            }
            Body::Reading { reading, invalid: None } => {
                self.valid += 1;
                self.json += u64::from(reading.encoding == Encoding::Json);
                self.non_canonical_units += u64::from(!reading.canonical_unit);
            }
        }
    }

    /// Records built to be dead-lettered.
    pub fn invalid(&self) -> u64 {
        self.invalid_by_reason.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use sm_domain::units::to_canonical;

    fn fleet(assets: usize) -> Fleet {
        Catalog::builtin().unwrap().generated_fleet(assets, "sim", "").unwrap()
    }

    fn options(total: u64) -> PlanOptions {
        PlanOptions {
            total,
            seed: 42,
            scenario: ScenarioKind::Normal,
            bad_fraction: 0.01,
            duplicate_fraction: 0.01,
            json_fraction: 0.1,
            unit_variants: true,
        }
    }

    fn plan(assets: usize, options: PlanOptions) -> Vec<PlannedRecord> {
        Plan::new(&fleet(assets), options).unwrap().collect()
    }

    fn tally(records: &[PlannedRecord]) -> Tally {
        let mut tally = Tally::default();
        records.iter().for_each(|r| tally.add(r));
        tally
    }

    /// Equality that treats the planned NaN of `non_finite_value` as equal to itself.
    fn same_plan(a: &[PlannedRecord], b: &[PlannedRecord]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| match (&x.body, &y.body) {
                (Body::Reading { reading: r, invalid: i }, Body::Reading { reading: s, invalid: j }) => {
                    let value = r.value == s.value || (r.value.is_nan() && s.value.is_nan());
                    let (mut r, mut s) = (r.clone(), s.clone());
                    (r.value, s.value) = (0.0, 0.0);
                    x.index == y.index && x.asset_id == y.asset_id && i == j && value && r == s
                }
                _ => x == y,
            })
    }

    #[test]
    fn same_seed_same_plan_other_seed_other_plan() {
        for scenario in [ScenarioKind::Normal, ScenarioKind::Drift, ScenarioKind::Anomaly, ScenarioKind::Failure] {
            let a = plan(12, PlanOptions { scenario, ..options(5_000) });
            let b = plan(12, PlanOptions { scenario, ..options(5_000) });
            assert!(same_plan(&a, &b), "{scenario:?}");
            let c = plan(12, PlanOptions { scenario, seed: 43, ..options(5_000) });
            assert!(!same_plan(&a, &c), "{scenario:?}");
        }
    }

    #[test]
    fn plans_exactly_the_requested_number_of_records() {
        for total in [0, 1, 7, 1_000] {
            let plan = Plan::new(&fleet(12), options(total)).unwrap();
            assert_eq!(plan.size_hint(), (total as usize, Some(total as usize)));
            assert_eq!(plan.count() as u64, total);
        }
    }

    #[test]
    fn fractions_are_respected_within_tolerance() {
        let total = 50_000;
        let options =
            PlanOptions { bad_fraction: 0.05, duplicate_fraction: 0.03, json_fraction: 0.2, ..options(total) };
        let tally = tally(&plan(12, options));
        let share = |n: u64, of: u64| n as f64 / of as f64;
        assert_eq!(tally.sent, total);
        assert_eq!(tally.valid + tally.duplicates + tally.invalid(), total);
        assert!((share(tally.invalid(), total) - 0.05).abs() < 0.005, "{tally:?}");
        assert!((share(tally.duplicates, total) - 0.03).abs() < 0.005, "{tally:?}");
        assert!((share(tally.json, tally.valid) - 0.2).abs() < 0.01, "{tally:?}");
        assert!((share(tally.non_canonical_units, tally.valid) - UNIT_VARIANT_SHARE).abs() < 0.01, "{tally:?}");
    }

    #[test]
    fn zero_fractions_plan_only_canonical_avro_readings() {
        let options = PlanOptions {
            bad_fraction: 0.0,
            duplicate_fraction: 0.0,
            json_fraction: 0.0,
            unit_variants: false,
            ..options(2_000)
        };
        let tally = tally(&plan(1, options));
        assert_eq!(
            (tally.valid, tally.duplicates, tally.invalid(), tally.json, tally.non_canonical_units),
            (2_000, 0, 0, 0, 0)
        );
    }

    #[test]
    fn every_reason_kind_appears_when_the_run_is_large_enough() {
        // 2,000 readings at 1 % bad: about 20 bad records, enough to visit all 11 kinds.
        let tally = tally(&plan(12, options(2_000)));
        assert_eq!(tally.invalid_by_reason.len(), InvalidKind::ALL.len());
        for (reason, count) in &tally.invalid_by_reason {
            assert!(*count >= 1, "no {reason} in {tally:?}");
        }
        assert!(!tally.invalid_by_reason.contains_key("unknown_schema"));
    }

    #[test]
    fn valid_readings_are_in_range_and_convert_back_to_the_planned_value() {
        let fleet = fleet(12);
        let sensors: BTreeMap<&str, &crate::catalog::Sensor> =
            fleet.assets.iter().flat_map(|a| &a.sensors).map(|s| (s.id.as_str(), s)).collect();
        let options = PlanOptions { scenario: ScenarioKind::Failure, ..options(20_000) };
        let mut last_sequence: BTreeMap<String, i64> = BTreeMap::new();
        for record in Plan::new(&fleet, options).unwrap() {
            let Body::Reading { reading, invalid: None } = &record.body else { continue };
            let sensor = sensors[reading.sensor_id.as_str()];
            let (canonical, unit) = to_canonical(&sensor.sensor_type, &reading.unit, reading.value).unwrap();
            assert_eq!(unit, sensor.unit);
            assert!(canonical.is_finite());
            let slack = 1e-9 * (sensor.max - sensor.min);
            assert!(canonical >= sensor.min - slack && canonical <= sensor.max + slack, "{record:?}");
            assert!(reading.sensor_id.as_str().starts_with(&format!("{}.", record.asset_id)));
            assert_eq!(reading.time_offset_micros, 0);
            let last = last_sequence.insert(reading.sensor_id.0.clone(), reading.sequence);
            assert!(last.is_none_or(|last| reading.sequence > last), "sequence must increase: {record:?}");
        }
        assert_eq!(last_sequence.len(), fleet.sensor_count());
    }

    #[test]
    fn each_invalid_record_breaks_exactly_its_own_rule() {
        let fleet = fleet(12);
        let sensors: BTreeMap<&str, (&AssetId, &crate::catalog::Sensor)> =
            fleet.assets.iter().flat_map(|a| a.sensors.iter().map(move |s| (s.id.as_str(), (&a.id, s)))).collect();
        for record in plan(12, PlanOptions { bad_fraction: 0.2, ..options(5_000) }) {
            let Body::Reading { reading, invalid: Some(kind) } = &record.body else { continue };
            let registered = sensors.get(reading.sensor_id.as_str());
            let encoding = match kind {
                InvalidKind::NotAvro => Encoding::Garbage,
                InvalidKind::MalformedAvro => Encoding::TruncatedAvro,
                InvalidKind::InvalidJson => Encoding::JsonWithoutSensorId,
                _ => Encoding::Avro,
            };
            assert_eq!(reading.encoding, encoding, "{record:?}");
            match kind {
                InvalidKind::MissingField => assert_eq!(reading.sensor_id.as_str(), ""),
                InvalidKind::UnknownSensor => assert!(registered.is_none()),
                InvalidKind::SensorAssetMismatch => {
                    assert_ne!(registered.unwrap().0, &record.asset_id, "{record:?}");
                }
                _ => assert_eq!(registered.unwrap().0, &record.asset_id, "{record:?}"),
            }
            assert_eq!(reading.value.is_nan(), *kind == InvalidKind::NonFiniteValue);
            assert_eq!(reading.unit == "furlongs", *kind == InvalidKind::UnknownUnit);
            if let Some((_, sensor)) = registered
                && !reading.value.is_nan()
                && *kind != InvalidKind::UnknownUnit
            {
                let out = reading.value > sensor.max + 0.01 * (sensor.max - sensor.min);
                assert_eq!(out, *kind == InvalidKind::OutOfRange, "{record:?}");
            }
            let offset = match kind {
                InvalidKind::FutureTimestamp => FUTURE_OFFSET_MICROS,
                InvalidKind::TooOld => TOO_OLD_OFFSET_MICROS,
                _ => 0,
            };
            assert_eq!(reading.time_offset_micros, offset);
        }
    }

    #[test]
    fn duplicates_are_byte_identical_copies_of_recent_valid_records() {
        let fleet = fleet(12);
        let records: Vec<_> =
            Plan::new(&fleet, PlanOptions { duplicate_fraction: 0.1, ..options(5_000) }).unwrap().collect();
        let mut renderer = Renderer::new(Codec::embedded().unwrap(), TenantId::from("t"));
        let mut rendered = Vec::new();
        let mut duplicates = 0;
        for (i, record) in records.iter().enumerate() {
            let now = Timestamp(1_764_000_000_000_000 + i as i64 * 1_000);
            let bytes = renderer.render(record, now).unwrap();
            if let Body::Duplicate { of } = record.body {
                duplicates += 1;
                let original = &records[of as usize];
                let valid = matches!(original.body, Body::Reading { invalid: None, .. });
                assert!(of < record.index && valid, "{record:?} repeats {original:?}");
                assert_eq!(bytes, rendered[of as usize], "same key, payload, content type and trace");
                assert_eq!(record.asset_id, original.asset_id);
            }
            rendered.push(bytes);
        }
        assert!(duplicates > 400, "{duplicates}");
    }

    #[test]
    fn rendered_records_decode_as_ingestion_will_see_them() {
        let codec = Codec::embedded().unwrap();
        let mut renderer = Renderer::new(codec.clone(), TenantId::from("acme"));
        let now = Timestamp(1_764_000_000_123_456);
        let mut seen = std::collections::BTreeSet::new();
        for record in plan(12, PlanOptions { bad_fraction: 0.3, json_fraction: 0.5, ..options(2_000) }) {
            let rendered = renderer.render(&record, now).unwrap();
            assert_eq!(rendered.key, record.asset_id.as_str());
            assert!(sm_kafka::trace::TraceParent::parse(&rendered.traceparent).is_some());
            let content_type = rendered.json.then_some(sm_domain::codec::CONTENT_TYPE_JSON);
            let decoded = codec.decode::<SensorReading>(&rendered.payload, content_type);
            let Body::Reading { reading, invalid } = &record.body else { continue };
            match invalid {
                Some(kind @ (InvalidKind::NotAvro | InvalidKind::MalformedAvro | InvalidKind::InvalidJson)) => {
                    let error = decoded.unwrap_err();
                    assert_eq!(error.reason_code(), kind.reason_code(), "{error}");
                    seen.insert(kind.reason_code());
                }
                _ => {
                    let event = decoded.unwrap();
                    let offset = reading.time_offset_micros;
                    let expected_time = if rendered.json {
                        Timestamp::from_millis((now.as_micros() + offset).div_euclid(1000))
                    } else {
                        Timestamp(now.as_micros() + offset)
                    };
                    assert_eq!(event.header.occurred_at, expected_time);
                    assert_eq!(event.header.tenant_id.as_str(), "acme");
                    assert_eq!(event.header.asset_id, record.asset_id);
                    assert_eq!(event.header.producer, PRODUCER);
                    assert_eq!(event.payload.sensor_id, reading.sensor_id);
                    assert_eq!(event.payload.unit, reading.unit);
                    assert_eq!(event.payload.sequence, reading.sequence);
                    assert!(!event.payload.backfill);
                    // serde_json (without its `float_roundtrip` feature) may read a decimal back
                    // one ulp off; Avro carries the exact bits.
                    let (got, planned) = (event.payload.value, reading.value);
                    if rendered.json {
                        assert!((got - planned).abs() <= 1e-12 * planned.abs(), "{got} vs {planned}");
                    } else {
                        assert!(got == planned || (got.is_nan() && planned.is_nan()), "{got} vs {planned}");
                    }
                    if rendered.json {
                        seen.insert("json");
                    }
                }
            }
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
    }

    #[test]
    fn unit_variants_convert_back_to_canonical() {
        for (sensor_type, unit, from_canonical) in UNIT_VARIANTS {
            for value in [0.0, 1.0, 55.5, 1_480.0, -12.25] {
                let (back, canonical) = to_canonical(sensor_type, unit, from_canonical(value)).unwrap();
                assert!((back - value).abs() < 1e-9 * value.abs().max(1.0), "{sensor_type} {unit}: {back} vs {value}");
                assert_eq!(Some(canonical), sm_domain::units::canonical_unit(sensor_type));
                assert_ne!(canonical, *unit);
            }
        }
        for (sensor_type, _) in sm_domain::units::SENSOR_TYPES {
            assert!(UNIT_VARIANTS.iter().any(|(t, _, _)| t == sensor_type), "no variant for {sensor_type}");
        }
    }

    #[test]
    fn refuses_options_that_cannot_make_a_plan() {
        let error = Plan::new(&fleet(12), PlanOptions { bad_fraction: 1.5, ..options(10) }).unwrap_err();
        assert_eq!(error, PlanError::FractionOutOfRange { name: "--bad-fraction", value: 1.5 });
        let error = Plan::new(&fleet(12), PlanOptions { bad_fraction: 0.6, duplicate_fraction: 0.6, ..options(10) })
            .unwrap_err();
        assert!(matches!(error, PlanError::FractionsExceedOne(_)));
        assert_eq!(Plan::new(&fleet(1), options(10)).unwrap_err(), PlanError::MismatchNeedsTwoAssets);
        Plan::new(&fleet(1), PlanOptions { bad_fraction: 0.0, ..options(10) }).unwrap();
    }
}
