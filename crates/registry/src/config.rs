//! Where model artifacts are stored (`SM_ARTIFACTS__*`): a local directory by default, any
//! S3-compatible server by configuration. Inert data; [`ArtifactStoreConfig::build`] makes
//! the [`ArtifactStore`].

use serde::{Deserialize, Serialize};
use sm_telemetry::Secret;
use url::Url;

use crate::RegistryError;
use crate::artifacts::ArtifactStore;

/// The local directory used when nothing is configured: writable without root, and kept
/// across reboots (unlike `/tmp`).
pub const DEFAULT_ARTIFACTS_URL: &str = "file:///var/tmp/sm/models";

/// Artifact storage settings. Every field has a safe local default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactStoreConfig {
    /// `file:///absolute/directory` (default `file:///var/tmp/sm/models`) or
    /// `s3://bucket/optional/prefix`.
    pub url: String,
    /// S3 only: the server's base URL (`https://minio.example:9000`). Empty means AWS itself.
    pub endpoint: String,
    /// S3 only: the bucket's region; S3-compatible servers usually accept any.
    pub region: String,
    /// S3 only. Empty means the instance's own credentials (instance metadata, ECS task role).
    pub access_key_id: Secret,
    /// S3 only; required when `access_key_id` is set.
    pub secret_access_key: Secret,
    /// S3 only: allow a plain `http://` endpoint. For a loopback or test server only.
    pub allow_http: bool,
}

impl Default for ArtifactStoreConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_ARTIFACTS_URL.to_owned(),
            endpoint: String::new(),
            region: default_region().to_owned(),
            access_key_id: Secret::default(),
            secret_access_key: Secret::default(),
            allow_http: false,
        }
    }
}

/// AWS's default region, which is also what most S3-compatible servers expect.
const fn default_region() -> &'static str {
    "us-east-1"
}

/// The validated form of [`ArtifactStoreConfig::url`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Location {
    Local { directory: std::path::PathBuf },
    S3 { bucket: String, prefix: String },
}

impl ArtifactStoreConfig {
    /// Checks the settings without touching storage; the error names the setting to fix.
    pub fn validate(&self) -> Result<(), RegistryError> {
        self.location().map(|_| ())
    }

    /// Opens the store: creates the local directory, or builds the S3 client (no request is
    /// made until the first put or get).
    pub fn build(&self) -> Result<ArtifactStore, RegistryError> {
        ArtifactStore::build(self, self.location()?)
    }

    pub(crate) fn location(&self) -> Result<Location, RegistryError> {
        let invalid = |detail: String| Err(RegistryError::InvalidConfig(detail));
        let url = match Url::parse(&self.url) {
            Ok(url) => url,
            Err(e) => {
                return invalid(format!(
                    "SM_ARTIFACTS__URL={:?} is not a URL ({e}): use file:///absolute/directory or s3://bucket/prefix",
                    self.url
                ));
            }
        };
        let has_keys = !self.access_key_id.expose().is_empty() || !self.secret_access_key.expose().is_empty();
        match url.scheme() {
            "file" => {
                if !self.endpoint.is_empty() || has_keys || self.allow_http {
                    return invalid(
                        "SM_ARTIFACTS__ENDPOINT, __ACCESS_KEY_ID, __SECRET_ACCESS_KEY and __ALLOW_HTTP apply to s3:// \
                         URLs only: remove them, or set SM_ARTIFACTS__URL to s3://bucket/prefix"
                            .to_owned(),
                    );
                }
                match url.to_file_path() {
                    Ok(directory) if url.host_str().unwrap_or("").is_empty() => Ok(Location::Local { directory }),
                    _ => invalid(format!(
                        "SM_ARTIFACTS__URL={:?} is not a local directory: use file:///absolute/directory",
                        self.url
                    )),
                }
            }
            "s3" => {
                let bucket = url.host_str().unwrap_or("").to_owned();
                if bucket.is_empty() {
                    return invalid(format!(
                        "SM_ARTIFACTS__URL={:?} names no bucket: use s3://bucket/prefix",
                        self.url
                    ));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return invalid(format!(
                        "SM_ARTIFACTS__URL={:?} has a query or fragment: use s3://bucket/prefix",
                        self.url
                    ));
                }
                if self.access_key_id.expose().is_empty() != self.secret_access_key.expose().is_empty() {
                    return invalid(
                        "set both SM_ARTIFACTS__ACCESS_KEY_ID and SM_ARTIFACTS__SECRET_ACCESS_KEY, or neither"
                            .to_owned(),
                    );
                }
                if self.endpoint.starts_with("http://") && !self.allow_http {
                    return invalid(format!(
                        "SM_ARTIFACTS__ENDPOINT={} is plain http: use https, or set SM_ARTIFACTS__ALLOW_HTTP=true \
                         for a loopback or test server",
                        self.endpoint
                    ));
                }
                if !self.endpoint.is_empty() && Url::parse(&self.endpoint).is_err() {
                    return invalid(format!(
                        "SM_ARTIFACTS__ENDPOINT={:?} is not a URL: use https://host:port",
                        self.endpoint
                    ));
                }
                let prefix = url.path().trim_matches('/').to_owned();
                Ok(Location::S3 { bucket, prefix })
            }
            other => invalid(format!(
                "SM_ARTIFACTS__URL scheme {other}: is not supported: use file:///absolute/directory or s3://bucket/prefix"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Service {
        artifacts: ArtifactStoreConfig,
    }

    fn load(pairs: &[(&str, &str)]) -> Result<ArtifactStoreConfig, String> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let service: Service = sm_telemetry::config::load_from(None, &env).map_err(|e| e.to_string())?;
        Ok(service.artifacts)
    }

    #[test]
    fn the_default_is_a_valid_local_directory() {
        let config = ArtifactStoreConfig::default();
        config.validate().unwrap();
        assert_eq!(config.location().unwrap(), Location::Local { directory: "/var/tmp/sm/models".into() });
    }

    #[test]
    fn loads_s3_settings_from_the_environment_and_hides_secrets() {
        let config = load(&[
            ("SM_ARTIFACTS__URL", "s3://models/prod/v1/"),
            ("SM_ARTIFACTS__ENDPOINT", "http://127.0.0.1:19000"),
            ("SM_ARTIFACTS__REGION", "eu-west-1"),
            ("SM_ARTIFACTS__ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("SM_ARTIFACTS__SECRET_ACCESS_KEY", "wJalrXUtnFEMI"),
            ("SM_ARTIFACTS__ALLOW_HTTP", "true"),
        ])
        .unwrap();
        assert_eq!(config.region, "eu-west-1");
        assert!(config.allow_http);
        assert_eq!(config.location().unwrap(), Location::S3 { bucket: "models".into(), prefix: "prod/v1".into() });
        let printed = format!("{config:?}");
        assert!(!printed.contains("AKIDEXAMPLE") && !printed.contains("wJalrXUtnFEMI"), "{printed}");
        config.build().unwrap();
    }

    #[test]
    fn refuses_unknown_fields_and_contradictory_settings_naming_the_one_to_fix() {
        assert!(load(&[("SM_ARTIFACTS__BUCKET", "models")]).unwrap_err().contains("bucket"));
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("SM_ARTIFACTS__URL", "models")], "SM_ARTIFACTS__URL"),
            (&[("SM_ARTIFACTS__URL", "gs://models")], "scheme gs"),
            (&[("SM_ARTIFACTS__URL", "file://server/share")], "not a local directory"),
            (&[("SM_ARTIFACTS__URL", "s3:///prefix")], "names no bucket"),
            (&[("SM_ARTIFACTS__ENDPOINT", "http://127.0.0.1:9000")], "apply to s3:// URLs only"),
            (
                &[("SM_ARTIFACTS__URL", "s3://models"), ("SM_ARTIFACTS__ENDPOINT", "http://127.0.0.1:9000")],
                "SM_ARTIFACTS__ALLOW_HTTP=true",
            ),
            (&[("SM_ARTIFACTS__URL", "s3://models"), ("SM_ARTIFACTS__ACCESS_KEY_ID", "AKIDEXAMPLE")], "set both"),
        ];
        for (env, expected) in cases {
            let error = load(env).unwrap().validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{env:?}: {error}");
        }
    }
}
