//! TLS on the gRPC port (`SM_QUERY__TLS__*`): the server's certificate and key, and
//! optionally a client CA that turns on mutual TLS, where every connection must present a
//! client certificate the CA signed.
//!
//! It also names the principal a client certificate stands for ([`certificate_principal`]),
//! which [`crate::auth`] uses for a call without an `authorization` header. It is not a
//! certificate verifier: rustls verifies the chain during the handshake, so only a
//! certificate that already passed it ever reaches [`certificate_principal`]. Nor does it
//! reload certificates: a renewed certificate takes a restart.

use serde::{Deserialize, Serialize};
use sm_identity::{Principal, PrincipalKind, Role, TenantScope};
use std::time::Duration;
use tonic::transport::server::ServerTlsConfig;
use tonic::transport::{Certificate, Identity};

/// How long a client may take to finish the TLS handshake. Handshakes run as tasks of their
/// own, and one that never finishes would hold its task and socket for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS settings of the gRPC port (`SM_QUERY__TLS__*`). All empty (the default): plaintext,
/// as on a laptop or behind a mesh that terminates TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM, leaf first (`SM_QUERY__TLS__CERT_FILE`). With
    /// `key_file`, the port speaks TLS only: plaintext clients are refused.
    pub cert_file: String,
    /// The private key of `cert_file`, PEM (PKCS#8, PKCS#1 or SEC1) (`SM_QUERY__TLS__KEY_FILE`).
    pub key_file: String,
    /// CA certificates, PEM, that client certificates must chain to
    /// (`SM_QUERY__TLS__CLIENT_CA_FILE`). Set: mutual TLS, a connection without such a client
    /// certificate fails its handshake, and a call without `authorization` is made as the
    /// certificate's subject (see [`certificate_principal`]).
    pub client_ca_file: String,
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {setting}={path}: {source}")]
    Read {
        setting: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot use the TLS certificate and key ({detail}); check SM_QUERY__TLS__CERT_FILE, SM_QUERY__TLS__KEY_FILE and SM_QUERY__TLS__CLIENT_CA_FILE"
    )]
    Config { detail: String },
}

impl TlsSettings {
    /// Whether the port speaks TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    /// Whether every connection must present a client certificate.
    pub fn mutual(&self) -> bool {
        !self.client_ca_file.is_empty()
    }

    /// Checks the combination and that each file is readable and holds the right kind of
    /// PEM block (a swapped certificate and key is the usual mistake); the error names the
    /// setting to fix.
    pub fn validate(&self) -> Result<(), String> {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) if self.mutual() => {
                return Err("SM_QUERY__TLS__CLIENT_CA_FILE needs TLS: set SM_QUERY__TLS__CERT_FILE and \
                            SM_QUERY__TLS__KEY_FILE too, or unset it"
                    .into());
            }
            (true, true) => return Ok(()),
            (false, true) => {
                return Err("SM_QUERY__TLS__CERT_FILE is set without SM_QUERY__TLS__KEY_FILE: set both, or neither \
                            for plaintext"
                    .into());
            }
            (true, false) => {
                return Err("SM_QUERY__TLS__KEY_FILE is set without SM_QUERY__TLS__CERT_FILE: set both, or neither \
                            for plaintext"
                    .into());
            }
            (false, false) => {}
        }
        check_pem("SM_QUERY__TLS__CERT_FILE", &self.cert_file, "a certificate", is_certificate)?;
        check_pem("SM_QUERY__TLS__KEY_FILE", &self.key_file, "a private key", is_private_key)?;
        if self.mutual() {
            check_pem("SM_QUERY__TLS__CLIENT_CA_FILE", &self.client_ca_file, "a CA certificate", is_certificate)?;
        }
        Ok(())
    }

    /// Reads the files into tonic's server configuration; `None` for plaintext. The
    /// configuration is built once here, so a key that does not match its certificate or
    /// an unparsable PEM fails at start, not when serving begins.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let cert = read("SM_QUERY__TLS__CERT_FILE", &self.cert_file)?;
        let key = read("SM_QUERY__TLS__KEY_FILE", &self.key_file)?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(HANDSHAKE_TIMEOUT);
        if self.mutual() {
            // client_auth_optional stays false: no certificate, no connection.
            config = config
                .client_ca_root(Certificate::from_pem(read("SM_QUERY__TLS__CLIENT_CA_FILE", &self.client_ca_file)?));
        }
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|error| TlsError::Config { detail: sm_proto::auth::causes(&error) })?;
        Ok(Some(config))
    }
}

fn read(setting: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { setting, path: path.to_owned(), source })
}

fn check_pem(setting: &str, path: &str, what: &str, holds: fn(&str) -> bool) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| format!("{setting}={path}: cannot read it: {e}"))?;
    if !holds(&String::from_utf8_lossy(&text)) {
        return Err(format!("{setting}={path}: no PEM block of {what} in it (DER files must be converted to PEM)"));
    }
    Ok(())
}

fn is_certificate(text: &str) -> bool {
    text.contains("-----BEGIN CERTIFICATE-----")
}

/// `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1), `EC PRIVATE KEY` (SEC1).
fn is_private_key(text: &str) -> bool {
    text.lines().any(|line| line.starts_with("-----BEGIN ") && line.ends_with("PRIVATE KEY-----"))
}

/// The service principal a verified client certificate stands for: its subject's common
/// name must be `<tenant>/<name>` (one of each, neither empty), and it becomes
/// `cert:<tenant>/<name>` with the `service` role for that tenant only. `None` for anything
/// else: no parsable certificate, no or several CNs, no `/`, or the tenant `*`. A
/// certificate never acts for every tenant; that takes an admin's key.
///
/// `der` must be a certificate rustls already verified against the client CA: nothing here
/// checks signatures, validity or usage.
pub fn certificate_principal(der: &[u8]) -> Option<Principal> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = certificate.subject().iter_common_name();
    let common_name = names.next()?.as_str().ok()?;
    if names.next().is_some() {
        return None; // two CNs: which one names the principal is anyone's guess
    }
    let (tenant, name) = common_name.split_once('/')?;
    let well_formed = |part: &str| {
        !part.is_empty() && !part.contains('/') && part.trim() == part && !part.chars().any(char::is_control)
    };
    if !well_formed(tenant) || !well_formed(name) || tenant == "*" {
        return None;
    }
    Some(Principal {
        subject: format!("cert:{common_name}"),
        kind: PrincipalKind::Certificate,
        tenants: TenantScope::parse(tenant),
        roles: vec![Role::Service],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};
    use sm_identity::Permission;

    /// A self-signed certificate with this common name (or none), DER. rcgen keeps one value
    /// per attribute type, so a subject with two CNs cannot be made here.
    fn certificate(common_names: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for name in common_names {
            params.distinguished_name.push(DnType::CommonName, *name);
        }
        params.distinguished_name.push(DnType::OrganizationName, "Smart Maintenance tests");
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    /// A certificate and its key, PEM, written to a temporary directory.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
            std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
            std::fs::write(dir.path().join("cert.der"), cert.der()).unwrap();
            Self { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).to_str().unwrap().to_owned()
        }

        fn settings(&self, cert: &str, key: &str, client_ca: &str) -> TlsSettings {
            let path = |name: &str| if name.is_empty() { String::new() } else { self.path(name) };
            TlsSettings { cert_file: path(cert), key_file: path(key), client_ca_file: path(client_ca) }
        }
    }

    #[test]
    fn the_default_is_plaintext_and_validates() {
        let settings = TlsSettings::default();
        assert!(!settings.enabled() && !settings.mutual());
        settings.validate().unwrap();
        assert!(settings.server_config().unwrap().is_none());
    }

    #[test]
    fn a_certificate_without_a_key_and_a_key_without_a_certificate_name_the_missing_setting() {
        let files = Files::new();
        let error = files.settings("cert.pem", "", "").validate().unwrap_err();
        assert!(error.starts_with("SM_QUERY__TLS__CERT_FILE is set without SM_QUERY__TLS__KEY_FILE"), "{error}");
        let error = files.settings("", "key.pem", "").validate().unwrap_err();
        assert!(error.starts_with("SM_QUERY__TLS__KEY_FILE is set without SM_QUERY__TLS__CERT_FILE"), "{error}");
    }

    #[test]
    fn a_client_ca_without_a_server_certificate_is_refused() {
        let files = Files::new();
        let error = files.settings("", "", "cert.pem").validate().unwrap_err();
        assert!(error.starts_with("SM_QUERY__TLS__CLIENT_CA_FILE needs TLS"), "{error}");
    }

    #[test]
    fn an_unreadable_file_names_its_setting_and_path() {
        let files = Files::new();
        for (settings, setting) in [
            (files.settings("missing.pem", "key.pem", ""), "SM_QUERY__TLS__CERT_FILE"),
            (files.settings("cert.pem", "missing.pem", ""), "SM_QUERY__TLS__KEY_FILE"),
            (files.settings("cert.pem", "key.pem", "missing.pem"), "SM_QUERY__TLS__CLIENT_CA_FILE"),
        ] {
            let error = settings.validate().unwrap_err();
            assert!(
                error.starts_with(setting) && error.contains("missing.pem") && error.contains("cannot read"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_swapped_certificate_and_key_or_a_der_file_is_refused() {
        let files = Files::new();
        let error = files.settings("key.pem", "cert.pem", "").validate().unwrap_err();
        assert!(error.starts_with("SM_QUERY__TLS__CERT_FILE=") && error.contains("a certificate"), "{error}");
        let error = files.settings("cert.der", "key.pem", "").validate().unwrap_err();
        assert!(error.contains("DER files must be converted"), "{error}");
        let error = files.settings("cert.pem", "key.pem", "key.pem").validate().unwrap_err();
        assert!(error.starts_with("SM_QUERY__TLS__CLIENT_CA_FILE="), "{error}");
    }

    #[test]
    fn readable_files_validate_and_build_a_server_config() {
        let files = Files::new();
        let tls = files.settings("cert.pem", "key.pem", "");
        tls.validate().unwrap();
        assert!(tls.enabled() && !tls.mutual());
        assert!(tls.server_config().unwrap().is_some());
        let mutual = files.settings("cert.pem", "key.pem", "cert.pem");
        mutual.validate().unwrap();
        assert!(mutual.mutual());
        assert!(mutual.server_config().unwrap().is_some());
    }

    #[test]
    fn a_key_of_another_certificate_fails_when_building_and_names_the_settings() {
        let files = Files::new();
        let other = Files::new();
        let settings = TlsSettings { key_file: other.path("key.pem"), ..files.settings("cert.pem", "key.pem", "") };
        settings.validate().unwrap(); // both are well-formed PEM; only building sees the mismatch
        let error = settings.server_config().unwrap_err().to_string();
        assert!(error.contains("SM_QUERY__TLS__KEY_FILE"), "{error}");
    }

    #[test]
    fn a_tenant_and_name_common_name_is_a_service_principal_of_that_tenant() {
        let principal = certificate_principal(&certificate(&["acme/gateway-1"])).unwrap();
        assert_eq!(
            principal,
            Principal {
                subject: "cert:acme/gateway-1".into(),
                kind: PrincipalKind::Certificate,
                tenants: TenantScope::parse("acme"),
                roles: vec![Role::Service],
            }
        );
        assert!(principal.may(Permission::Read) && !principal.may(Permission::ManageAssets));
    }

    #[test]
    fn other_common_names_are_no_principal() {
        for names in [
            &["gateway-1"][..],
            &["acme/"],
            &["/gateway-1"],
            &["acme/gateway/1"],
            &["*/gateway-1"],
            &[" acme/gateway-1"],
            &["acme/gateway-1\n"],
            &[],
        ] {
            assert_eq!(certificate_principal(&certificate(names)), None, "{names:?}");
        }
    }

    #[test]
    fn bytes_that_are_no_certificate_are_no_principal() {
        assert_eq!(certificate_principal(b""), None);
        assert_eq!(certificate_principal(b"-----BEGIN CERTIFICATE-----"), None);
        let der = certificate(&["acme/gateway-1"]);
        assert_eq!(certificate_principal(&der[..der.len() / 2]), None);
    }
}
