//! The AI4I 2020 predictive-maintenance data set (UCI id 601): milling-machine process data
//! with a machine-failure label and five failure-mode flags.
//!
//! The flags (TWF, HDF, PWF, OSF, RNF) are parsed because they are part of the file, but they
//! live in [`FailureModes`], apart from [`ProcessSample`]: the features are built from a
//! `ProcessSample` only, so the type system keeps the flags (components of the label) out of
//! the model's inputs. Not a general CSV reader: the file has no quoted fields.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The column names, in order, as the UCI file spells them.
pub const COLUMNS: [&str; 14] = [
    "UDI",
    "Product ID",
    "Type",
    "Air temperature [K]",
    "Process temperature [K]",
    "Rotational speed [rpm]",
    "Torque [Nm]",
    "Tool wear [min]",
    "Machine failure",
    "TWF",
    "HDF",
    "PWF",
    "OSF",
    "RNF",
];

/// The product quality variant; it sets how much tool wear a process adds and the overstrain
/// limit of the tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProductType {
    /// `L`: half of the products.
    Low,
    /// `M`: 30 %.
    Medium,
    /// `H`: 20 %.
    High,
}

impl ProductType {
    /// Parses the `Type` column (`L`, `M`, `H`).
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "L" => Some(Self::Low),
            "M" => Some(Self::Medium),
            "H" => Some(Self::High),
            _ => None,
        }
    }

    /// Ordinal code used as a feature: the variants are ordered by quality.
    pub fn ordinal(self) -> f64 {
        match self {
            Self::Low => 0.0,
            Self::Medium => 1.0,
            Self::High => 2.0,
        }
    }

    /// Tool wear × torque above which the tool fails by overstrain, in min·Nm (AI4I's
    /// documented rule: 11,000 for L, 12,000 for M, 13,000 for H).
    pub fn overstrain_limit_min_nm(self) -> f64 {
        match self {
            Self::Low => 11_000.0,
            Self::Medium => 12_000.0,
            Self::High => 13_000.0,
        }
    }
}

/// One machining process as the sensors and the work order see it: everything a model may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessSample {
    pub product_type: ProductType,
    pub air_temperature_k: f64,
    pub process_temperature_k: f64,
    pub rotational_speed_rpm: f64,
    pub torque_nm: f64,
    pub tool_wear_min: f64,
}

impl ProcessSample {
    /// Rejects values no machine produces, so that a model never predicts from garbage.
    pub fn validate(&self) -> Result<(), ModelError> {
        let fields = [
            ("air_temperature_k", self.air_temperature_k),
            ("process_temperature_k", self.process_temperature_k),
            ("rotational_speed_rpm", self.rotational_speed_rpm),
            ("torque_nm", self.torque_nm),
            ("tool_wear_min", self.tool_wear_min),
        ];
        for (name, value) in fields {
            if !value.is_finite() {
                return Err(ModelError::InvalidInput(format!("{name} is {value}")));
            }
        }
        if self.air_temperature_k <= 0.0 || self.process_temperature_k <= 0.0 {
            return Err(ModelError::InvalidInput("temperatures are in kelvin and must be positive".into()));
        }
        for (name, value) in fields.into_iter().skip(2) {
            if value < 0.0 {
                return Err(ModelError::InvalidInput(format!("{name} is negative ({value})")));
            }
        }
        Ok(())
    }
}

/// The five failure modes; any of them sets `Machine failure`. Labels, never inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureModes {
    /// Tool wear failure.
    pub twf: bool,
    /// Heat dissipation failure.
    pub hdf: bool,
    /// Power failure.
    pub pwf: bool,
    /// Overstrain failure.
    pub osf: bool,
    /// Random failure.
    pub rnf: bool,
}

/// One row of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Unique row id; each row is its own unit for splitting.
    pub udi: u32,
    pub product_id: String,
    pub sample: ProcessSample,
    /// The label.
    pub machine_failure: bool,
    pub modes: FailureModes,
}

/// Parses the AI4I 2020 CSV text (with or without its UTF-8 byte-order mark). The header must
/// be the UCI one, so that a file with shuffled or renamed columns is refused rather than
/// misread.
pub fn parse(text: &str) -> Result<Vec<Row>, ModelError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line.trim_end_matches('\r')));
    let Some((_, header)) = lines.next() else {
        return Err(parse_error(1, "header", "the file is empty"));
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    if names != COLUMNS {
        let position = names.iter().zip(COLUMNS).position(|(found, expected)| *found != expected);
        let detail = match position {
            Some(i) => format!("expected column {} to be {:?}, found {:?}", i + 1, COLUMNS[i], names[i]),
            None => format!("expected {} columns, found {}", COLUMNS.len(), names.len()),
        };
        return Err(parse_error(1, "header", &detail));
    }
    let mut rows = Vec::new();
    for (line_no, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        rows.push(parse_row(line_no, line)?);
    }
    Ok(rows)
}

fn parse_row(line_no: usize, line: &str) -> Result<Row, ModelError> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() != COLUMNS.len() {
        return Err(parse_error(
            line_no,
            "row",
            &format!("expected {} comma-separated fields, found {}", COLUMNS.len(), fields.len()),
        ));
    }
    let number = |i: usize| -> Result<f64, ModelError> {
        fields[i]
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| parse_error(line_no, COLUMNS[i], &format!("{:?} is not a finite number", fields[i])))
    };
    let flag = |i: usize| -> Result<bool, ModelError> {
        match fields[i] {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(parse_error(line_no, COLUMNS[i], &format!("{other:?} is not 0 or 1"))),
        }
    };
    let udi = fields[0]
        .parse::<u32>()
        .map_err(|_| parse_error(line_no, COLUMNS[0], &format!("{:?} is not a row number", fields[0])))?;
    let product_type = ProductType::from_code(fields[2])
        .ok_or_else(|| parse_error(line_no, COLUMNS[2], &format!("{:?} is not L, M or H", fields[2])))?;
    let sample = ProcessSample {
        product_type,
        air_temperature_k: number(3)?,
        process_temperature_k: number(4)?,
        rotational_speed_rpm: number(5)?,
        torque_nm: number(6)?,
        tool_wear_min: number(7)?,
    };
    sample.validate().map_err(|e| parse_error(line_no, "row", &e.to_string()))?;
    Ok(Row {
        udi,
        product_id: fields[1].to_string(),
        sample,
        machine_failure: flag(8)?,
        modes: FailureModes { twf: flag(9)?, hdf: flag(10)?, pwf: flag(11)?, osf: flag(12)?, rnf: flag(13)? },
    })
}

fn parse_error(line: usize, column: &str, detail: &str) -> ModelError {
    ModelError::Parse { line, column: column.to_string(), detail: detail.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "UDI,Product ID,Type,Air temperature [K],Process temperature [K],Rotational speed [rpm],\
                          Torque [Nm],Tool wear [min],Machine failure,TWF,HDF,PWF,OSF,RNF";

    #[test]
    fn parses_the_uci_layout_with_its_byte_order_mark() {
        let text = format!(
            "\u{feff}{HEADER}\r\n1,M14860,M,298.1,308.6,1551,42.8,0,0,0,0,0,0,0\r\n\
             2,L47181,L,298.2,308.7,1408,46.3,3,1,0,1,0,0,0\r\n"
        );
        let rows = parse(&text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].product_id, "M14860");
        assert_eq!(rows[0].sample.product_type, ProductType::Medium);
        assert_eq!(rows[0].sample.rotational_speed_rpm, 1551.0);
        assert!(!rows[0].machine_failure);
        assert!(rows[1].machine_failure && rows[1].modes.hdf && !rows[1].modes.twf);
    }

    #[test]
    fn names_line_and_column_of_a_bad_value() {
        let text =
            format!("{HEADER}\n1,M1,M,298.1,308.6,1551,42.8,0,0,0,0,0,0,0\n2,L2,L,298.2,hot,1408,46.3,3,0,0,0,0,0,0\n");
        let error = parse(&text).unwrap_err().to_string();
        assert_eq!(error, "line 3, column Process temperature [K]: \"hot\" is not a finite number");
        let text = format!("{HEADER}\n1,M1,X,298.1,308.6,1551,42.8,0,0,0,0,0,0,0\n");
        assert!(parse(&text).unwrap_err().to_string().starts_with("line 2, column Type:"));
        let text = format!("{HEADER}\n1,M1,M,298.1,308.6,1551,42.8,0,2,0,0,0,0,0\n");
        assert!(parse(&text).unwrap_err().to_string().starts_with("line 2, column Machine failure:"));
    }

    #[test]
    fn refuses_a_renamed_or_reordered_header() {
        let text = HEADER.replace("Torque [Nm]", "Torque");
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains("column 7 to be \"Torque [Nm]\""), "{error}");
        assert!(parse("").is_err());
    }

    #[test]
    fn validation_refuses_impossible_samples() {
        let ok = ProcessSample {
            product_type: ProductType::Low,
            air_temperature_k: 300.0,
            process_temperature_k: 310.0,
            rotational_speed_rpm: 1500.0,
            torque_nm: 40.0,
            tool_wear_min: 10.0,
        };
        assert!(ok.validate().is_ok());
        assert!(ProcessSample { torque_nm: f64::NAN, ..ok }.validate().is_err());
        assert!(ProcessSample { rotational_speed_rpm: -1.0, ..ok }.validate().is_err());
        assert!(ProcessSample { air_temperature_k: 0.0, ..ok }.validate().is_err());
    }
}
