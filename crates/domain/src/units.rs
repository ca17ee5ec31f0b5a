//! Sensor types, their canonical units, and conversion of what gateways send into them.
//! Everything downstream of ingestion sees canonical units only, so a threshold or a model
//! never has to ask which unit a number is in.

/// Sensor types the platform understands, with their canonical unit.
pub const SENSOR_TYPES: &[(&str, &str)] = &[
    ("temperature", "degC"),
    ("vibration_rms", "mm/s"),
    ("pressure", "kPa"),
    ("current", "A"),
    ("flow", "L/min"),
    ("speed", "rpm"),
];

/// The canonical unit of `sensor_type`, if the type is known.
pub fn canonical_unit(sensor_type: &str) -> Option<&'static str> {
    SENSOR_TYPES.iter().find(|(t, _)| *t == sensor_type).map(|(_, u)| *u)
}

/// Why a value could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("unknown sensor type `{0}`")]
    UnknownSensorType(String),
    #[error("unit `{unit}` is not a unit of {sensor_type} (canonical: {canonical})")]
    UnknownUnit { sensor_type: String, unit: String, canonical: &'static str },
}

/// Converts `value` in `unit` to the canonical unit of `sensor_type`. Unit names are matched
/// case-insensitively, with common spellings (`°F`, `degF`, `F`).
pub fn to_canonical(sensor_type: &str, unit: &str, value: f64) -> Result<(f64, &'static str), UnitError> {
    let canonical = canonical_unit(sensor_type).ok_or_else(|| UnitError::UnknownSensorType(sensor_type.to_owned()))?;
    let u = unit.trim().to_ascii_lowercase().replace('°', "deg").replace(' ', "");
    let converted = match (sensor_type, u.as_str()) {
        ("temperature", "degc" | "c" | "celsius") => Some(value),
        ("temperature", "degf" | "f" | "fahrenheit") => Some((value - 32.0) * 5.0 / 9.0),
        ("temperature", "k" | "kelvin") => Some(value - 273.15),
        ("vibration_rms", "mm/s") => Some(value),
        ("vibration_rms", "in/s" | "ips") => Some(value * 25.4),
        ("vibration_rms", "m/s") => Some(value * 1000.0),
        ("pressure", "kpa") => Some(value),
        ("pressure", "pa") => Some(value / 1000.0),
        ("pressure", "bar") => Some(value * 100.0),
        ("pressure", "mpa") => Some(value * 1000.0),
        ("pressure", "psi") => Some(value * 6.894_757_293_168),
        ("current", "a" | "amp" | "amps") => Some(value),
        ("current", "ma") => Some(value / 1000.0),
        ("flow", "l/min" | "lpm") => Some(value),
        ("flow", "m3/h" | "m^3/h") => Some(value * 1000.0 / 60.0),
        ("flow", "gpm" | "gal/min") => Some(value * 3.785_411_784),
        ("speed", "rpm" | "1/min") => Some(value),
        ("speed", "hz" | "1/s") => Some(value * 60.0),
        ("speed", "rad/s") => Some(value * 60.0 / std::f64::consts::TAU),
        _ => None,
    };
    converted.map(|v| (v, canonical)).ok_or_else(|| UnitError::UnknownUnit {
        sensor_type: sensor_type.to_owned(),
        unit: unit.to_owned(),
        canonical,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn converts_common_units_to_canonical() {
        assert!(close(to_canonical("temperature", "°F", 212.0).unwrap().0, 100.0));
        assert!(close(to_canonical("temperature", "degF", 32.0).unwrap().0, 0.0));
        assert!(close(to_canonical("temperature", "K", 273.15).unwrap().0, 0.0));
        assert!(close(to_canonical("pressure", "psi", 1.0).unwrap().0, 6.894_757_293_168));
        assert!(close(to_canonical("pressure", "bar", 2.5).unwrap().0, 250.0));
        assert!(close(to_canonical("vibration_rms", "in/s", 1.0).unwrap().0, 25.4));
        assert!(close(to_canonical("flow", "m3/h", 6.0).unwrap().0, 100.0));
        assert!(close(to_canonical("speed", "Hz", 50.0).unwrap().0, 3000.0));
        assert_eq!(to_canonical("current", "mA", 1500.0).unwrap(), (1.5, "A"));
    }

    #[test]
    fn canonical_units_pass_unchanged() {
        for (sensor_type, unit) in SENSOR_TYPES {
            assert_eq!(to_canonical(sensor_type, unit, 12.5).unwrap(), (12.5, *unit), "{sensor_type}");
        }
    }

    #[test]
    fn refuses_a_unit_of_another_quantity() {
        let error = to_canonical("temperature", "psi", 1.0).unwrap_err();
        assert_eq!(
            error,
            UnitError::UnknownUnit { sensor_type: "temperature".into(), unit: "psi".into(), canonical: "degC" }
        );
        assert!(matches!(to_canonical("humidity", "%", 1.0), Err(UnitError::UnknownSensorType(_))));
    }
}
