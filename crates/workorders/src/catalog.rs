//! The maintenance catalog, beside the asset catalog: per asset type, its failure modes
//! (ISO 14224-style class → mode → causes → remedy), what the work needs (skills at a level,
//! minutes, parts), how long before the predicted failure it must be done, what opens a work
//! order, and the approval policy; and each asset's criticality. Parsed strictly (unknown keys
//! are errors) and validated whole, so a bad file fails naming the entry.

use crate::policy::{ApprovalPolicy, AutoApprove};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// A maintenance catalog file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceCatalog {
    #[serde(default)]
    pub asset_types: Vec<AssetTypeMaintenance>,
    /// Asset id → criticality, 1 (run to failure) to 5 (safety or production critical).
    #[serde(default)]
    pub criticality: BTreeMap<String, i32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetTypeMaintenance {
    pub asset_type: String,
    /// Criticality of an asset of this type that `criticality` does not name.
    #[serde(default = "default_criticality")]
    pub default_criticality: i32,
    pub failure_modes: Vec<FailureMode>,
    #[serde(default)]
    pub approval: ApprovalSettings,
}

fn default_criticality() -> i32 {
    3
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureMode {
    /// Unique within the asset type: what work orders and failure codes name.
    pub code: String,
    /// ISO 14224 failure-mechanism class (mechanical, electrical, material, instrument, ...).
    pub class: String,
    pub description: String,
    #[serde(default)]
    pub causes: Vec<String>,
    pub remedy: String,
    pub skills: Vec<SkillLevel>,
    pub estimated_minutes: i32,
    #[serde(default)]
    pub parts: Vec<String>,
    /// The work is due this long before the predicted failure.
    pub safety_margin_hours: f64,
    /// Model names whose predictions are about this mode; empty: any model of the asset type.
    #[serde(default)]
    pub models: Vec<String>,
    pub opens_when: OpenThresholds,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillLevel {
    pub skill: String,
    pub min_level: i32,
}

/// A prediction opens a work order when it clears either threshold.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenThresholds {
    /// The pessimistic RUL (the interval's lower bound) below this many hours.
    pub rul_below_hours: Option<f64>,
    /// P(failure within the model's horizon) above this.
    pub failure_probability_above: Option<f64>,
}

/// The approval policy as written (see [`ApprovalPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSettings {
    /// False: every order of this type waits for a planner.
    pub auto_approve: bool,
    pub min_confidence: f64,
    pub min_hours_to_deadline: f64,
    pub four_eyes: bool,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        let defaults = ApprovalPolicy::default().auto_approve.expect("auto-approval on by default");
        Self {
            auto_approve: true,
            min_confidence: defaults.min_confidence,
            min_hours_to_deadline: defaults.min_hours_to_deadline,
            four_eyes: false,
        }
    }
}

impl ApprovalSettings {
    pub fn policy(&self) -> ApprovalPolicy {
        if self.four_eyes {
            return ApprovalPolicy::four_eyes();
        }
        ApprovalPolicy {
            auto_approve: self.auto_approve.then_some(AutoApprove {
                min_confidence: self.min_confidence,
                min_hours_to_deadline: self.min_hours_to_deadline,
            }),
            four_eyes: false,
        }
    }
}

/// A catalog that cannot be used, naming the entry and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the maintenance catalog is not valid TOML for its schema: {0}")]
    Syntax(String),
    #[error("asset type {asset_type}: {problem}")]
    AssetType { asset_type: String, problem: String },
    #[error("asset type {asset_type}, failure mode {code}: {problem}")]
    FailureMode { asset_type: String, code: String, problem: String },
    #[error("criticality of {asset}: {value} is not 1 to 5")]
    Criticality { asset: String, value: i32 },
}

impl MaintenanceCatalog {
    /// Parses and validates a catalog.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let catalog: Self = toml::from_str(text).map_err(|e| CatalogError::Syntax(e.to_string()))?;
        catalog.validate()?;
        Ok(catalog)
    }

    fn validate(&self) -> Result<(), CatalogError> {
        let mut types = BTreeSet::new();
        for entry in &self.asset_types {
            let type_error =
                |problem: String| CatalogError::AssetType { asset_type: entry.asset_type.clone(), problem };
            if !types.insert(entry.asset_type.as_str()) {
                return Err(type_error("listed twice: keep one [[asset_types]] entry per type".into()));
            }
            if !(1..=5).contains(&entry.default_criticality) {
                return Err(type_error(format!("default_criticality {} is not 1 to 5", entry.default_criticality)));
            }
            if entry.failure_modes.is_empty() {
                return Err(type_error("no failure_modes: list at least one".into()));
            }
            let approval = &entry.approval;
            if !(0.0..=1.0).contains(&approval.min_confidence) || approval.min_hours_to_deadline < 0.0 {
                return Err(type_error("approval: min_confidence is 0 to 1, min_hours_to_deadline 0 or more".into()));
            }
            let mut codes = BTreeSet::new();
            for mode in &entry.failure_modes {
                let error = |problem: &str| CatalogError::FailureMode {
                    asset_type: entry.asset_type.clone(),
                    code: mode.code.clone(),
                    problem: problem.to_owned(),
                };
                if mode.code.trim().is_empty() || !codes.insert(mode.code.as_str()) {
                    return Err(error("the code is empty or used twice in this asset type"));
                }
                if mode.skills.is_empty()
                    || mode.skills.iter().any(|s| s.skill.is_empty() || !(1..=5).contains(&s.min_level))
                {
                    return Err(error("skills: at least one, each with a min_level of 1 to 5"));
                }
                if mode.estimated_minutes <= 0 || mode.estimated_minutes > 14 * 24 * 60 {
                    return Err(error("estimated_minutes must be 1 to 20160 (two weeks)"));
                }
                if !mode.safety_margin_hours.is_finite() || mode.safety_margin_hours < 0.0 {
                    return Err(error("safety_margin_hours must be 0 or more"));
                }
                let opens = mode.opens_when;
                if opens.rul_below_hours.is_none() && opens.failure_probability_above.is_none() {
                    return Err(error("opens_when: set rul_below_hours, failure_probability_above or both"));
                }
                if opens.rul_below_hours.is_some_and(|h| h.is_nan() || h <= 0.0)
                    || opens.failure_probability_above.is_some_and(|p| !(0.0..1.0).contains(&p))
                {
                    return Err(error(
                        "opens_when: rul_below_hours is above 0, failure_probability_above 0 to below 1",
                    ));
                }
            }
        }
        for (asset, value) in &self.criticality {
            if !(1..=5).contains(value) {
                return Err(CatalogError::Criticality { asset: asset.clone(), value: *value });
            }
        }
        Ok(())
    }

    /// What the catalog says about `asset_type`.
    pub fn asset_type(&self, asset_type: &str) -> Option<&AssetTypeMaintenance> {
        self.asset_types.iter().find(|t| t.asset_type == asset_type)
    }

    /// The criticality of `asset` (of `asset_type`), 1 to 5.
    pub fn criticality(&self, asset: &str, asset_type: &str) -> i32 {
        self.criticality
            .get(asset)
            .copied()
            .or_else(|| self.asset_type(asset_type).map(|t| t.default_criticality))
            .unwrap_or_else(default_criticality)
    }
}

impl AssetTypeMaintenance {
    /// The failure modes a prediction of `model_name` is about: those naming the model, else
    /// those naming none.
    pub fn modes_for_model(&self, model_name: &str) -> Vec<&FailureMode> {
        let named: Vec<&FailureMode> =
            self.failure_modes.iter().filter(|m| m.models.iter().any(|n| n == model_name)).collect();
        if !named.is_empty() {
            return named;
        }
        self.failure_modes.iter().filter(|m| m.models.is_empty()).collect()
    }
}
