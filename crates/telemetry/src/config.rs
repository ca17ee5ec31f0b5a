//! Layered configuration, the same for every service: `Default` (safe for a local run) →
//! optional TOML file named by `SM_CONFIG` → environment `SM_<SECTION>__<FIELD>`
//! (e.g. `SM_KAFKA__BOOTSTRAP_SERVERS`). Loading is a pure function of the file text and an
//! env map, so tests pass a `HashMap`.
//!
//! Env values are typed by the default they replace: a number field takes `SM_X__Y=5`, a
//! string field keeps `"5"` as text. Env variables for sections a service does not have are
//! ignored (one env file serves every service); unknown fields inside a known section are an
//! error, so a typo never passes silently.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;

/// Errors of loading configuration; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path} (from SM_CONFIG): {source}")]
    ReadFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {detail}")]
    ParseFile { path: String, detail: String },
    #[error("{variable}={value:?} is not a valid {expected}")]
    EnvValue { variable: String, value: String, expected: &'static str },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A secret setting (password, SASL credentials). `Debug` prints `***` so that the startup
/// log of the configuration never leaks it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("\"\"") } else { f.write_str("***") }
    }
}

/// Loads `T` from `env` (usually `std::env::vars()`), reading the TOML file named by
/// `SM_CONFIG` when set.
pub fn load_config<T>(env: &HashMap<String, String>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let file = match env.get("SM_CONFIG") {
        Some(path) if !path.is_empty() => Some((
            path.clone(),
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.clone(), source })?,
        )),
        _ => None,
    };
    load_from(file.as_ref().map(|(p, t)| (p.as_str(), t.as_str())), env)
}

/// As [`load_config`], with the file's `(path, text)` given.
pub fn load_from<T>(file: Option<(&str, &str)>, env: &HashMap<String, String>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut value = serde_json::to_value(T::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    if let Some((path, text)) = file {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::ParseFile { path: path.to_owned(), detail: e.to_string() })?;
        let file_value = serde_json::to_value(table).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        merge(&mut value, file_value);
    }
    let mut keys: Vec<_> = env.keys().filter(|k| k.starts_with("SM_") && k.contains("__")).collect();
    keys.sort();
    for variable in keys {
        let path: Vec<String> = variable["SM_".len()..].split("__").map(|p| p.to_ascii_lowercase()).collect();
        set_path(&mut value, variable, &path, &env[variable])?;
    }
    serde_json::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

fn set_path(root: &mut Value, variable: &str, path: &[String], raw: &str) -> Result<(), ConfigError> {
    let Some(section) = root.get_mut(&path[0]) else {
        return Ok(()); // a section this service does not have
    };
    let mut slot = section;
    for key in &path[1..] {
        let Value::Object(map) = slot else {
            return Err(ConfigError::Invalid(format!("{variable}: `{key}` is not inside a section")));
        };
        // Unknown keys are inserted so that `deny_unknown_fields` names them.
        slot = map.entry(key.clone()).or_insert(Value::Null);
    }
    let error = |expected| ConfigError::EnvValue { variable: variable.to_owned(), value: raw.to_owned(), expected };
    *slot = match slot {
        Value::Bool(_) => Value::Bool(raw.parse().map_err(|_| error("boolean (true/false)"))?),
        Value::Number(n) if n.is_f64() => serde_json::json!(raw.parse::<f64>().map_err(|_| error("number"))?),
        Value::Number(_) => serde_json::json!(raw.parse::<i64>().map_err(|_| error("integer"))?),
        Value::Array(_) | Value::Object(_) => serde_json::from_str(raw).map_err(|_| error("JSON value"))?,
        Value::String(_) => Value::String(raw.to_owned()),
        Value::Null => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned())),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        name: String,
        count: u32,
        ratio: f64,
        enabled: bool,
        password: Secret,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Service {
        section: Section,
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let file = "[section]\nname = \"from-file\"\ncount = 3\n";
        let config: Service = load_from(
            Some(("f.toml", file)),
            &env(&[("SM_SECTION__COUNT", "7"), ("SM_SECTION__RATIO", "0.5"), ("SM_SECTION__ENABLED", "true")]),
        )
        .unwrap();
        assert_eq!(config.section.name, "from-file");
        assert_eq!(config.section.count, 7);
        assert_eq!(config.section.ratio, 0.5);
        assert!(config.section.enabled);
    }

    #[test]
    fn numeric_text_stays_text_in_a_string_field() {
        let config: Service = load_from(None, &env(&[("SM_SECTION__NAME", "12345")])).unwrap();
        assert_eq!(config.section.name, "12345");
    }

    #[test]
    fn a_bad_number_names_the_variable() {
        let error = load_from::<Service>(None, &env(&[("SM_SECTION__COUNT", "many")])).unwrap_err();
        assert!(error.to_string().contains("SM_SECTION__COUNT"), "{error}");
    }

    #[test]
    fn a_typo_in_a_known_section_is_an_error() {
        let error = load_from::<Service>(None, &env(&[("SM_SECTION__NAMME", "x")])).unwrap_err();
        assert!(error.to_string().contains("namme"), "{error}");
    }

    #[test]
    fn sections_of_other_services_are_ignored() {
        let config: Service = load_from(None, &env(&[("SM_POSTGRES__URL", "x"), ("SM_STACK_DIR", "/tmp")])).unwrap();
        assert_eq!(config, Service::default());
    }

    #[test]
    fn secrets_are_hidden_in_debug_output() {
        let config: Service = load_from(None, &env(&[("SM_SECTION__PASSWORD", "hunter2")])).unwrap();
        assert_eq!(config.section.password.expose(), "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
