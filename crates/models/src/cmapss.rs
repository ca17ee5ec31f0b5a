//! NASA C-MAPSS turbofan run-to-failure trajectories (FD001..FD004 layout): one line per
//! engine cycle, `unit cycle setting1..3 sensor1..21`, space-separated.
//!
//! Some copies carry a header line (`unit_number time opt_set1..3 s1..s26`) whose last five
//! names (s22..s26) are padding with no values; both forms are read. Values after the 21st
//! sensor are accepted only if they are `NaN` (padding written by a data-frame export).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Sensors per cycle in the C-MAPSS layout.
pub const SENSORS: usize = 21;
/// Operational settings per cycle.
pub const SETTINGS: usize = 3;

/// One engine cycle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cycle {
    /// The engine; a split never puts cycles of one engine on both sides.
    pub unit: u32,
    /// Cycle number, 1-based, increasing along the trajectory.
    pub cycle: u32,
    pub settings: [f64; SETTINGS],
    /// `sensors[0]` is the file's `s1`.
    pub sensors: [f64; SENSORS],
}

/// The cycles of one engine in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub unit: u32,
    pub cycles: Vec<Cycle>,
}

impl Trajectory {
    /// The last cycle number: for a run-to-failure trajectory, the cycle of failure.
    pub fn last_cycle(&self) -> u32 {
        self.cycles.last().map_or(0, |c| c.cycle)
    }
}

/// Parses the whitespace-separated text. Cycle numbers must increase within each unit so that
/// windows over "the last N cycles" mean what they say.
pub fn parse(text: &str) -> Result<Vec<Cycle>, ModelError> {
    let mut cycles = Vec::new();
    let mut last_cycle_of_unit: BTreeMap<u32, (u32, usize)> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let mut tokens = line.split_whitespace().peekable();
        match tokens.peek() {
            None => continue,
            Some(first) if line_no == 1 && *first == "unit_number" => continue,
            Some(_) => {}
        }
        let tokens: Vec<&str> = tokens.collect();
        let values = SETTINGS + SENSORS + 2;
        if tokens.len() < values {
            return Err(parse_error(
                line_no,
                column_name(tokens.len()),
                &format!("expected {values} values, found {}", tokens.len()),
            ));
        }
        for (i, extra) in tokens.iter().enumerate().skip(values) {
            if !extra.eq_ignore_ascii_case("nan") {
                return Err(parse_error(line_no, column_name(i), &format!("{extra:?} in a padding column")));
            }
        }
        let integer = |i: usize| -> Result<u32, ModelError> {
            tokens[i]
                .parse::<u32>()
                .map_err(|_| parse_error(line_no, column_name(i), &format!("{:?} is not a whole number", tokens[i])))
        };
        let number =
            |i: usize| -> Result<f64, ModelError> {
                tokens[i].parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                    parse_error(line_no, column_name(i), &format!("{:?} is not a finite number", tokens[i]))
                })
            };
        let unit = integer(0)?;
        let cycle = integer(1)?;
        let mut settings = [0.0; SETTINGS];
        for (j, setting) in settings.iter_mut().enumerate() {
            *setting = number(2 + j)?;
        }
        let mut sensors = [0.0; SENSORS];
        for (j, sensor) in sensors.iter_mut().enumerate() {
            *sensor = number(2 + SETTINGS + j)?;
        }
        if let Some((previous, previous_line)) = last_cycle_of_unit.insert(unit, (cycle, line_no))
            && cycle <= previous
        {
            return Err(parse_error(
                line_no,
                column_name(1),
                &format!("cycle {cycle} of unit {unit} does not follow cycle {previous} (line {previous_line})"),
            ));
        }
        cycles.push(Cycle { unit, cycle, settings, sensors });
    }
    Ok(cycles)
}

/// Groups cycles into one trajectory per unit, ordered by unit and then by cycle.
pub fn trajectories(cycles: &[Cycle]) -> Vec<Trajectory> {
    let mut by_unit: BTreeMap<u32, Vec<Cycle>> = BTreeMap::new();
    for cycle in cycles {
        by_unit.entry(cycle.unit).or_default().push(*cycle);
    }
    by_unit
        .into_iter()
        .map(|(unit, mut cycles)| {
            cycles.sort_by_key(|c| c.cycle);
            Trajectory { unit, cycles }
        })
        .collect()
}

/// The header's name for a 0-based column index.
fn column_name(index: usize) -> String {
    match index {
        0 => "unit_number".into(),
        1 => "time".into(),
        i if i < 2 + SETTINGS => format!("opt_set{}", i - 1),
        i => format!("s{}", i - 1 - SETTINGS),
    }
}

fn parse_error(line: usize, column: String, detail: &str) -> ModelError {
    ModelError::Parse { line, column, detail: detail.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "unit_number time opt_set1 opt_set2 opt_set3 s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 s12 s13 \
                          s14 s15 s16 s17 s18 s19 s20 s21 s22 s23 s24 s25 s26";
    const LINE_1: &str = "1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 \
                          9046.19 1.30 47.47 521.66 2388.02 8138.62 8.4195 0.03 392 2388 100.00 39.06 23.4190  ";
    const LINE_2: &str = "1 2 0.0019 -0.0003 100.0 518.67 642.15 1591.82 1403.14 14.62 21.61 553.75 2388.04 \
                          9044.07 1.30 47.49 522.28 2388.07 8131.49 8.4318 0.03 392 2388 100.00 39.00 23.4236";

    #[test]
    fn reads_with_and_without_the_header() {
        let with = parse(&format!("{HEADER}\n{LINE_1}\n{LINE_2}\n")).unwrap();
        let without = parse(&format!("{LINE_1}\n{LINE_2}\n\n")).unwrap();
        assert_eq!(with, without);
        assert_eq!(with.len(), 2);
        assert_eq!(with[1].cycle, 2);
        assert_eq!(with[0].sensors[1], 641.82); // s2
        assert_eq!(with[0].sensors[20], 23.4190); // s21
        assert_eq!(with[0].settings[2], 100.0);
    }

    #[test]
    fn accepts_nan_padding_but_not_values_in_padding_columns() {
        assert!(parse(&format!("{LINE_1} NaN NaN\n")).is_ok());
        let error = parse(&format!("{LINE_1} 7\n")).unwrap_err().to_string();
        assert_eq!(error, "line 1, column s22: \"7\" in a padding column");
    }

    #[test]
    fn names_line_and_column_of_a_bad_value() {
        let bad = LINE_2.replace("642.15", "x");
        let error = parse(&format!("{HEADER}\n{LINE_1}\n{bad}\n")).unwrap_err().to_string();
        assert_eq!(error, "line 3, column s2: \"x\" is not a finite number");
        let short = "1 1 0 0 100 1 2 3";
        assert!(parse(short).unwrap_err().to_string().starts_with("line 1, column s4: expected 26 values, found 8"));
    }

    #[test]
    fn refuses_cycles_that_go_backwards_within_a_unit() {
        let error = parse(&format!("{LINE_2}\n{LINE_1}\n")).unwrap_err().to_string();
        assert_eq!(error, "line 2, column time: cycle 1 of unit 1 does not follow cycle 2 (line 1)");
    }

    #[test]
    fn groups_trajectories_by_unit_in_cycle_order() {
        let mut cycles = parse(&format!("{LINE_1}\n{LINE_2}\n")).unwrap();
        let mut other = cycles[0];
        other.unit = 2;
        cycles.insert(0, other);
        let trajectories = trajectories(&cycles);
        assert_eq!(trajectories.iter().map(|t| t.unit).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(trajectories[0].last_cycle(), 2);
        assert_eq!(trajectories[1].cycles.len(), 1);
    }
}
