//! The asset catalog: a TOML file of asset-type templates (`[[asset_types]]`, the sensors each
//! type has, their physical limits and how to simulate them) and concrete assets (`[[assets]]`).
//!
//! `smctl assets apply` registers a catalog's assets; `smctl simulate` builds a fleet of N
//! assets by cycling its templates ([`Catalog::generated_fleet`]). Parsing is strict (unknown
//! keys are errors, as in every config of the platform) and [`Catalog::parse`] validates
//! everything ingestion will rely on, so a bad catalog fails here, naming the asset type and
//! sensor, instead of as a stream of dead letters later.
//!
//! This module does no Kafka I/O; it only turns text into a validated [`Fleet`].

use serde::Deserialize;
use sm_domain::units::{SENSOR_TYPES, canonical_unit};
use sm_domain::{AssetId, AssetRegistered, SensorId, SensorSpec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The templates `smctl simulate` uses without `--catalog`. Compiled in, so the binary needs no
/// file at run time (the Docker build context holds no `deploy/`); a test keeps it identical to
/// the `[[asset_types]]` of `deploy/catalog/demo-fleet.toml`.
const BUILTIN_TEMPLATES: &str = include_str!("builtin_templates.toml");

/// A catalog file as written: templates and concrete assets. Inert data; [`Catalog::fleet`]
/// and [`Catalog::generated_fleet`] turn it into assets with resolved sensor ids.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Templates: the sensors every asset of a type carries.
    #[serde(default)]
    pub asset_types: Vec<AssetType>,
    /// Concrete assets; optional, since `simulate` only needs templates.
    #[serde(default)]
    pub assets: Vec<AssetEntry>,
}

/// One asset type (`pump`, `motor`, ...) and its sensors.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetType {
    pub name: String,
    /// For people reading the catalog; not registered.
    #[serde(default)]
    pub description: String,
    pub sensors: Vec<SensorTemplate>,
}

/// One sensor of an asset type. Limits are in the canonical unit of the sensor type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorTemplate {
    /// Sensor ids are `<asset id>.<suffix>`.
    pub suffix: String,
    /// One of [`SENSOR_TYPES`].
    pub sensor_type: String,
    /// Must be the canonical unit of `sensor_type`: the registry and everything downstream of
    /// ingestion speak canonical units only.
    pub unit: String,
    /// Physical limits; a reading beyond them means a broken sensor, not a broken machine.
    pub min: f64,
    pub max: f64,
    /// How often the sensor reports; ingestion derives staleness and duplicate windows from it.
    pub expected_interval_ms: i64,
    /// Simulation only: a healthy machine's typical value.
    pub nominal_mean: f64,
    /// Simulation only: standard deviation of the measurement noise.
    pub noise_std: f64,
}

/// One concrete asset of a catalog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetEntry {
    /// Also the Kafka key of all its events.
    pub id: String,
    pub name: String,
    /// The name of one of the catalog's `[[asset_types]]`.
    #[serde(rename = "type")]
    pub asset_type: String,
    #[serde(default)]
    pub site: String,
}

/// Why a catalog is unusable. Each names the place in the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid catalog")]
    Syntax(#[source] toml::de::Error),
    #[error("catalog has no [[asset_types]]")]
    NoAssetTypes,
    #[error("catalog has no [[assets]]")]
    NoAssets,
    #[error("asset type `{0}` is defined twice")]
    DuplicateAssetType(String),
    #[error("asset type `{0}` has no sensors")]
    NoSensors(String),
    #[error(
        "{what} `{id}` is not a valid id: use ASCII letters, digits, '-' and '_' (no dots: sensor ids are <asset>.<suffix>)"
    )]
    InvalidId { what: &'static str, id: String },
    #[error("asset type `{asset_type}` has two sensors with suffix `{suffix}`")]
    DuplicateSuffix { asset_type: String, suffix: String },
    #[error("sensor `{asset_type}.{suffix}`: unknown sensor_type `{sensor_type}` (known: {known})")]
    UnknownSensorType { asset_type: String, suffix: String, sensor_type: String, known: String },
    #[error(
        "sensor `{asset_type}.{suffix}`: unit `{unit}` is not the canonical unit of {sensor_type}; write `{canonical}` (and min/max in it)"
    )]
    NonCanonicalUnit { asset_type: String, suffix: String, sensor_type: String, unit: String, canonical: &'static str },
    #[error("sensor `{asset_type}.{suffix}`: min ({min}) must be below max ({max}), both finite")]
    EmptyRange { asset_type: String, suffix: String, min: f64, max: f64 },
    #[error("sensor `{asset_type}.{suffix}`: nominal_mean {mean} lies outside [{min}, {max}]")]
    NominalOutsideRange { asset_type: String, suffix: String, mean: f64, min: f64, max: f64 },
    #[error("sensor `{asset_type}.{suffix}`: noise_std must be finite and at least 0, not {noise_std}")]
    InvalidNoise { asset_type: String, suffix: String, noise_std: f64 },
    #[error("sensor `{asset_type}.{suffix}`: expected_interval_ms must be positive, not {interval_ms}")]
    InvalidInterval { asset_type: String, suffix: String, interval_ms: i64 },
    #[error("asset `{0}` is listed twice")]
    DuplicateAssetId(String),
    #[error("asset `{asset}` has type `{asset_type}`, which is not among the [[asset_types]] ({known})")]
    UnknownAssetType { asset: String, asset_type: String, known: String },
    #[error("asset `{0}` has an empty name")]
    EmptyName(String),
    #[error("a fleet needs at least one asset")]
    EmptyFleet,
}

impl Catalog {
    /// Parses and validates catalog text.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let catalog: Catalog = toml::from_str(text).map_err(CatalogError::Syntax)?;
        catalog.validate()?;
        Ok(catalog)
    }

    /// Reads, parses and validates the catalog file at `path`.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CatalogError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    /// The compiled-in templates (pump, motor, compressor, bearing), without assets.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(BUILTIN_TEMPLATES)
    }

    /// Everything a registry or a simulation relies on: known sensor types in canonical units,
    /// sane limits, unique ids, and assets whose type exists.
    fn validate(&self) -> Result<(), CatalogError> {
        if self.asset_types.is_empty() {
            return Err(CatalogError::NoAssetTypes);
        }
        let mut type_names = HashSet::new();
        for asset_type in &self.asset_types {
            check_id("asset type", &asset_type.name)?;
            if !type_names.insert(asset_type.name.as_str()) {
                return Err(CatalogError::DuplicateAssetType(asset_type.name.clone()));
            }
            if asset_type.sensors.is_empty() {
                return Err(CatalogError::NoSensors(asset_type.name.clone()));
            }
            let mut suffixes = HashSet::new();
            for sensor in &asset_type.sensors {
                check_id("sensor suffix", &sensor.suffix)?;
                if !suffixes.insert(sensor.suffix.as_str()) {
                    return Err(CatalogError::DuplicateSuffix {
                        asset_type: asset_type.name.clone(),
                        suffix: sensor.suffix.clone(),
                    });
                }
                check_sensor(&asset_type.name, sensor)?;
            }
        }
        let mut asset_ids = HashSet::new();
        for asset in &self.assets {
            check_id("asset id", &asset.id)?;
            if !asset_ids.insert(asset.id.as_str()) {
                return Err(CatalogError::DuplicateAssetId(asset.id.clone()));
            }
            if asset.name.trim().is_empty() {
                return Err(CatalogError::EmptyName(asset.id.clone()));
            }
            if !type_names.contains(asset.asset_type.as_str()) {
                return Err(CatalogError::UnknownAssetType {
                    asset: asset.id.clone(),
                    asset_type: asset.asset_type.clone(),
                    known: self.type_names(),
                });
            }
        }
        Ok(())
    }

    fn type_names(&self) -> String {
        self.asset_types.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    fn template(&self, name: &str) -> Option<&AssetType> {
        self.asset_types.iter().find(|t| t.name == name)
    }

    /// The catalog's `[[assets]]` with their sensors resolved from the templates.
    pub fn fleet(&self) -> Result<Fleet, CatalogError> {
        if self.assets.is_empty() {
            return Err(CatalogError::NoAssets);
        }
        let assets = self
            .assets
            .iter()
            .map(|entry| {
                // Present: `validate` checked every asset's type.
                let template = self.template(&entry.asset_type).ok_or_else(|| CatalogError::UnknownAssetType {
                    asset: entry.id.clone(),
                    asset_type: entry.asset_type.clone(),
                    known: self.type_names(),
                })?;
                Ok(Asset::from_template(&entry.id, &entry.name, &entry.site, template))
            })
            .collect::<Result<_, CatalogError>>()?;
        Ok(Fleet { assets })
    }

    /// `count` assets cycling through the templates in file order: with pump, motor,
    /// compressor, bearing that is `pump-0001`, `motor-0002`, `compressor-0003`,
    /// `bearing-0004`, `pump-0005`, ... The numbering is global, so every id is unique and
    /// the same `count` always yields the same fleet. A non-empty `prefix` is put in front of
    /// every id (`e2e-7-pump-0001`), so runs that must not share assets do not.
    pub fn generated_fleet(&self, count: usize, site: &str, prefix: &str) -> Result<Fleet, CatalogError> {
        if count == 0 {
            return Err(CatalogError::EmptyFleet);
        }
        if self.asset_types.is_empty() {
            return Err(CatalogError::NoAssetTypes);
        }
        if !prefix.is_empty() {
            check_id("fleet prefix", prefix)?;
        }
        let assets = (1..=count)
            .map(|n| {
                let template = &self.asset_types[(n - 1) % self.asset_types.len()];
                let id = if prefix.is_empty() {
                    format!("{}-{n:04}", template.name)
                } else {
                    format!("{prefix}-{}-{n:04}", template.name)
                };
                let name = format!("Simulated {} {n:04}", template.name);
                Asset::from_template(&id, &name, site, template)
            })
            .collect();
        Ok(Fleet { assets })
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), CatalogError> {
    let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid { Ok(()) } else { Err(CatalogError::InvalidId { what, id: id.to_owned() }) }
}

fn check_sensor(asset_type: &str, sensor: &SensorTemplate) -> Result<(), CatalogError> {
    let at = || (asset_type.to_owned(), sensor.suffix.clone());
    let Some(canonical) = canonical_unit(&sensor.sensor_type) else {
        let (asset_type, suffix) = at();
        let known = SENSOR_TYPES.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ");
        return Err(CatalogError::UnknownSensorType {
            asset_type,
            suffix,
            sensor_type: sensor.sensor_type.clone(),
            known,
        });
    };
    if sensor.unit != canonical {
        let (asset_type, suffix) = at();
        return Err(CatalogError::NonCanonicalUnit {
            asset_type,
            suffix,
            sensor_type: sensor.sensor_type.clone(),
            unit: sensor.unit.clone(),
            canonical,
        });
    }
    if !(sensor.min.is_finite() && sensor.max.is_finite() && sensor.min < sensor.max) {
        let (asset_type, suffix) = at();
        return Err(CatalogError::EmptyRange { asset_type, suffix, min: sensor.min, max: sensor.max });
    }
    if !(sensor.min..=sensor.max).contains(&sensor.nominal_mean) {
        let (asset_type, suffix) = at();
        return Err(CatalogError::NominalOutsideRange {
            asset_type,
            suffix,
            mean: sensor.nominal_mean,
            min: sensor.min,
            max: sensor.max,
        });
    }
    if !(sensor.noise_std.is_finite() && sensor.noise_std >= 0.0) {
        let (asset_type, suffix) = at();
        return Err(CatalogError::InvalidNoise { asset_type, suffix, noise_std: sensor.noise_std });
    }
    if sensor.expected_interval_ms <= 0 {
        let (asset_type, suffix) = at();
        return Err(CatalogError::InvalidInterval { asset_type, suffix, interval_ms: sensor.expected_interval_ms });
    }
    Ok(())
}

/// Concrete assets with resolved sensors: what gets registered and simulated.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub assets: Vec<Asset>,
}

impl Fleet {
    /// Every sensor of the fleet, asset by asset.
    pub fn sensor_count(&self) -> usize {
        self.assets.iter().map(|a| a.sensors.len()).sum()
    }
}

/// One asset and its sensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub id: AssetId,
    pub name: String,
    pub asset_type: String,
    pub site: String,
    pub sensors: Vec<Sensor>,
}

/// One sensor of one asset, with its id resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub id: SensorId,
    pub sensor_type: String,
    /// Canonical unit of `sensor_type`.
    pub unit: String,
    pub min: f64,
    pub max: f64,
    pub expected_interval_ms: i64,
    pub nominal_mean: f64,
    pub noise_std: f64,
}

impl Asset {
    fn from_template(id: &str, name: &str, site: &str, template: &AssetType) -> Self {
        let sensors = template
            .sensors
            .iter()
            .map(|s| Sensor {
                id: SensorId(format!("{id}.{}", s.suffix)),
                sensor_type: s.sensor_type.clone(),
                unit: s.unit.clone(),
                min: s.min,
                max: s.max,
                expected_interval_ms: s.expected_interval_ms,
                nominal_mean: s.nominal_mean,
                noise_std: s.noise_std,
            })
            .collect();
        Self {
            id: AssetId::from(id),
            name: name.to_owned(),
            asset_type: template.name.clone(),
            site: site.to_owned(),
            sensors,
        }
    }

    /// The registry event of this asset (its payload; the caller wraps it in an envelope).
    pub fn registration(&self) -> AssetRegistered {
        AssetRegistered {
            name: self.name.clone(),
            asset_type: self.asset_type.clone(),
            site: self.site.clone(),
            sensors: self
                .sensors
                .iter()
                .map(|s| SensorSpec {
                    sensor_id: s.id.clone(),
                    sensor_type: s.sensor_type.clone(),
                    unit: s.unit.clone(),
                    min_value: s.min,
                    max_value: s.max,
                    expected_interval_ms: s.expected_interval_ms,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO_FLEET: &str = include_str!("../../../deploy/catalog/demo-fleet.toml");

    const ONE_PUMP: &str = r#"
        [[asset_types]]
        name = "pump"
        [[asset_types.sensors]]
        suffix = "temperature"
        sensor_type = "temperature"
        unit = "degC"
        min = -40.0
        max = 150.0
        expected_interval_ms = 1000
        nominal_mean = 55.0
        noise_std = 0.8

        [[assets]]
        id = "pump-001"
        name = "Feed pump"
        type = "pump"
        site = "plant-a"
    "#;

    fn error_of(text: &str) -> CatalogError {
        Catalog::parse(text).unwrap_err()
    }

    #[test]
    fn the_demo_fleet_has_three_assets_of_each_type_with_the_agreed_sensors() {
        let fleet = Catalog::parse(DEMO_FLEET).unwrap().fleet().unwrap();
        assert_eq!(fleet.assets.len(), 12);
        let expected: &[(&str, &[&str])] = &[
            ("pump", &["temperature", "vibration_rms", "pressure", "flow", "current"]),
            ("motor", &["temperature", "vibration_rms", "current", "speed"]),
            ("compressor", &["temperature", "pressure", "current", "vibration_rms"]),
            ("bearing", &["temperature", "vibration_rms"]),
        ];
        for (asset_type, sensor_types) in expected {
            let of_type: Vec<_> = fleet.assets.iter().filter(|a| a.asset_type == *asset_type).collect();
            assert_eq!(of_type.len(), 3, "{asset_type}");
            for asset in of_type {
                let types: Vec<_> = asset.sensors.iter().map(|s| s.sensor_type.as_str()).collect();
                assert_eq!(&types, sensor_types, "{}", asset.id);
            }
        }
        let pump = &fleet.assets[0];
        assert_eq!(pump.id.as_str(), "pump-001");
        assert_eq!(pump.sensors[0].id.as_str(), "pump-001.temperature");
    }

    #[test]
    fn builtin_templates_equal_the_demo_fleet_templates() {
        let demo = Catalog::parse(DEMO_FLEET).unwrap();
        let builtin = Catalog::builtin().unwrap();
        assert!(builtin.assets.is_empty());
        assert_eq!(
            builtin.asset_types, demo.asset_types,
            "services/smctl/src/builtin_templates.toml must repeat the [[asset_types]] of deploy/catalog/demo-fleet.toml"
        );
    }

    #[test]
    fn registration_carries_every_sensor_in_canonical_units() {
        let fleet = Catalog::parse(ONE_PUMP).unwrap().fleet().unwrap();
        let registered = fleet.assets[0].registration();
        assert_eq!(registered.asset_type, "pump");
        assert_eq!(registered.site, "plant-a");
        assert_eq!(
            registered.sensors,
            vec![SensorSpec {
                sensor_id: "pump-001.temperature".into(),
                sensor_type: "temperature".into(),
                unit: "degC".into(),
                min_value: -40.0,
                max_value: 150.0,
                expected_interval_ms: 1000,
            }]
        );
    }

    #[test]
    fn generated_fleet_cycles_templates_with_global_numbering() {
        let catalog = Catalog::builtin().unwrap();
        let fleet = catalog.generated_fleet(6, "sim", "").unwrap();
        let ids: Vec<_> = fleet.assets.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["pump-0001", "motor-0002", "compressor-0003", "bearing-0004", "pump-0005", "motor-0006"]);
        assert_eq!(fleet.assets[3].sensors[1].id.as_str(), "bearing-0004.vibration_rms");
        assert_eq!(fleet.sensor_count(), 5 + 4 + 4 + 2 + 5 + 4);
        assert_eq!(catalog.generated_fleet(6, "sim", "").unwrap(), fleet, "deterministic");
        let prefixed = catalog.generated_fleet(2, "sim", "run7").unwrap();
        assert!(prefixed.assets.iter().all(|a| a.id.as_str().starts_with("run7-")), "{prefixed:?}");
        assert!(catalog.generated_fleet(2, "sim", "bad prefix").is_err());
        assert!(matches!(catalog.generated_fleet(0, "sim", ""), Err(CatalogError::EmptyFleet)));
    }

    #[test]
    fn rejects_a_non_canonical_unit_naming_the_sensor_and_the_fix() {
        let error = error_of(&ONE_PUMP.replace(r#"unit = "degC""#, r#"unit = "degF""#));
        assert!(matches!(error, CatalogError::NonCanonicalUnit { canonical: "degC", .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("pump.temperature") && message.contains("`degC`"), "{message}");
    }

    #[test]
    fn rejects_an_unknown_sensor_type_listing_the_known_ones() {
        let error = error_of(&ONE_PUMP.replace(r#"sensor_type = "temperature""#, r#"sensor_type = "humidity""#));
        assert!(error.to_string().contains("vibration_rms"), "{error}");
    }

    #[test]
    fn rejects_an_empty_or_inverted_range() {
        let error = error_of(&ONE_PUMP.replace("max = 150.0", "max = -40.0"));
        assert!(matches!(error, CatalogError::EmptyRange { .. }), "{error}");
        let error = error_of(&ONE_PUMP.replace("max = 150.0", "max = nan"));
        assert!(matches!(error, CatalogError::EmptyRange { .. }), "{error}");
        let error = error_of(&ONE_PUMP.replace("nominal_mean = 55.0", "nominal_mean = 500.0"));
        assert!(matches!(error, CatalogError::NominalOutsideRange { .. }), "{error}");
        let error = error_of(&ONE_PUMP.replace("noise_std = 0.8", "noise_std = -1.0"));
        assert!(matches!(error, CatalogError::InvalidNoise { .. }), "{error}");
        let error = error_of(&ONE_PUMP.replace("expected_interval_ms = 1000", "expected_interval_ms = 0"));
        assert!(matches!(error, CatalogError::InvalidInterval { .. }), "{error}");
    }

    #[test]
    fn rejects_duplicate_ids() {
        let twice = format!("{ONE_PUMP}\n[[assets]]\nid = \"pump-001\"\nname = \"again\"\ntype = \"pump\"\n");
        assert!(matches!(error_of(&twice), CatalogError::DuplicateAssetId(id) if id == "pump-001"));
        let sensor = ONE_PUMP.split("[[assets]]").next().unwrap().split("[[asset_types.sensors]]").nth(1).unwrap();
        let two_sensors = ONE_PUMP.replacen("[[assets]]", &format!("[[asset_types.sensors]]{sensor}[[assets]]"), 1);
        assert!(matches!(error_of(&two_sensors), CatalogError::DuplicateSuffix { .. }));
        let type_twice = format!("{ONE_PUMP}\n[[asset_types]]\nname = \"pump\"\nsensors = []\n");
        assert!(matches!(error_of(&type_twice), CatalogError::DuplicateAssetType(_)));
    }

    #[test]
    fn rejects_an_asset_of_an_undefined_type() {
        let error = error_of(&ONE_PUMP.replace(r#"type = "pump""#, r#"type = "turbine""#));
        assert!(matches!(&error, CatalogError::UnknownAssetType { asset_type, .. } if asset_type == "turbine"));
        assert!(error.to_string().contains("(pump)"), "{error}");
    }

    #[test]
    fn rejects_ids_with_dots_or_spaces() {
        let error = error_of(&ONE_PUMP.replace(r#"id = "pump-001""#, r#"id = "pump.001""#));
        assert!(matches!(error, CatalogError::InvalidId { what: "asset id", .. }), "{error}");
        let error = error_of(&ONE_PUMP.replace(r#"suffix = "temperature""#, r#"suffix = "bearing temp""#));
        assert!(matches!(error, CatalogError::InvalidId { what: "sensor suffix", .. }), "{error}");
    }

    #[test]
    fn unknown_keys_are_errors_with_their_position() {
        let error = error_of(&ONE_PUMP.replace("site = ", "location = "));
        let message = std::error::Error::source(&error).unwrap().to_string();
        assert!(matches!(error, CatalogError::Syntax(_)));
        assert!(message.contains("location") && message.contains("line"), "{message}");
    }

    #[test]
    fn a_template_only_catalog_has_no_fleet_to_apply() {
        assert!(matches!(Catalog::builtin().unwrap().fleet(), Err(CatalogError::NoAssets)));
        assert!(matches!(error_of(""), CatalogError::NoAssetTypes));
    }
}
