//! TLS to PostgreSQL: the `sslmode` of `SM_POSTGRES__URL`, the roots that verify the server
//! (`SM_POSTGRES__CA_FILE`, else the system's) and the rustls connector the pool uses.
//!
//! Whenever TLS is used, the server's certificate chain *and* host name are verified, whatever
//! the mode: unlike libpq, `prefer` and `require` verify as `verify-full` does. A connection
//! encrypted to a server nobody checked only stops passive listeners, and a password sent
//! over it is the attacker's; failing loudly is the better default.
//!
//! Not here: client certificates (the server authenticates us by password), and libpq's
//! `allow` and `verify-ca`, which tokio-postgres cannot express or which would check less.

use crate::StorageError;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::borrow::Cow;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the pool uses TLS: `sslmode` in `SM_POSTGRES__URL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`: plaintext; the server is never asked for TLS.
    Disable,
    /// `prefer`, the default when the URL has none (as in libpq): TLS, verified, when the
    /// server offers it; plaintext when it does not. A server that offers TLS with a
    /// certificate we cannot verify is refused, never used in plaintext instead.
    Prefer,
    /// `require`: verified TLS or no connection.
    Require,
    /// `verify-full`: the same as `require` here; accepted so that libpq URLs work unchanged.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, StorageError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-full" => Ok(Self::VerifyFull),
            _ => Err(StorageError::UnsupportedSslMode { value: value.to_owned() }),
        }
    }

    /// tokio-postgres's mode; it verifies nothing itself, the connector does.
    pub(crate) fn to_tokio(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The mode tokio-postgres parsed (key=value strings, or a URL without `sslmode`).
    pub(crate) fn from_tokio(mode: tokio_postgres::config::SslMode) -> Self {
        match mode {
            tokio_postgres::config::SslMode::Disable => Self::Disable,
            tokio_postgres::config::SslMode::Prefer => Self::Prefer,
            // `Require`, and any mode a later tokio-postgres adds: the strict side.
            _ => Self::Require,
        }
    }
}

/// Takes `sslmode` out of a `postgres://` URL, because tokio-postgres rejects `verify-full`;
/// the caller sets the mode on the parsed config. Returns `None` (and the string unchanged)
/// when the URL has no `sslmode`, or for a `key=value` string, which tokio-postgres parses
/// itself (`disable`, `prefer`, `require`).
pub(crate) fn split_sslmode(url: &str) -> Result<(Option<SslMode>, Cow<'_, str>), StorageError> {
    let Some(scheme) = ["postgres://", "postgresql://"].into_iter().find(|s| url.starts_with(s)) else {
        return Ok((None, Cow::Borrowed(url)));
    };
    // The credentials run to the first '@', as tokio-postgres reads them: a '?' in a
    // password is not the start of the parameters.
    let host_start = url[scheme.len()..].find('@').map_or(scheme.len(), |at| scheme.len() + at + 1);
    let Some(query) = url[host_start..].find('?').map(|q| host_start + q) else {
        return Ok((None, Cow::Borrowed(url)));
    };
    let mut mode = None;
    let mut kept = Vec::new();
    for param in url[query + 1..].split('&') {
        match param.split_once('=') {
            // The last one wins, as in tokio-postgres.
            Some(("sslmode", value)) => mode = Some(SslMode::parse(value)?),
            _ => kept.push(param),
        }
    }
    if mode.is_none() {
        return Ok((None, Cow::Borrowed(url)));
    }
    let mut rest = url[..query].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((mode, Cow::Owned(rest)))
}

/// The connector for every mode but `disable`: rustls with ring's provider (no process-wide
/// default needed, and no aws-lc build), verifying against `ca_file` or the system's roots.
pub(crate) fn connector(mode: SslMode, ca_file: &str) -> Result<MakeRustlsConnect, StorageError> {
    let roots = if ca_file.is_empty() { system_roots(mode)? } else { file_roots(ca_file)? };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StorageError::Pool(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Every certificate in the PEM file `path`; at least one.
fn file_roots(path: &str) -> Result<RootCertStore, StorageError> {
    let pem = std::fs::read(path).map_err(|source| StorageError::CaFile { path: path.to_owned(), source })?;
    let invalid = |detail: String| StorageError::CaFileInvalid { path: path.to_owned(), detail };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.map_err(|e| invalid(e.to_string()))?).map_err(|e| invalid(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("it holds no certificate (BEGIN CERTIFICATE)".to_owned()));
    }
    Ok(roots)
}

/// The system's roots (`/etc/ssl/certs`, `SSL_CERT_FILE`, ...). None at all is an error when
/// TLS is required; with `prefer` it still lets a server without TLS be reached, and one with
/// TLS fails the handshake with an error naming `SM_POSTGRES__CA_FILE`.
fn system_roots(mode: SslMode) -> Result<RootCertStore, StorageError> {
    let native = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        let detail = native.errors.first().map_or_else(|| "none found".to_owned(), ToString::to_string);
        if mode != SslMode::Prefer {
            return Err(StorageError::NoSystemRoots { detail });
        }
        tracing::warn!(error = %detail, "no system root certificates: a PostgreSQL server offering TLS will be refused unless SM_POSTGRES__CA_FILE is set");
    }
    Ok(roots)
}

/// What to fix when the handshake failed because the server does not offer TLS.
const NO_TLS_HINT: &str =
    "the server does not offer TLS: turn `ssl` on there, or set sslmode=prefer or sslmode=disable in SM_POSTGRES__URL";
/// What to fix for every other handshake failure (almost always the certificate).
const CERTIFICATE_HINT: &str = "SM_POSTGRES__CA_FILE must be the PEM file of the CA that signed the server's certificate (empty: the system's roots) and the host in SM_POSTGRES__URL must be named in that certificate; sslmode=disable in SM_POSTGRES__URL turns TLS off";

/// When `error` is a failed TLS handshake: its cause and what to fix.
pub(crate) fn tls_failure(error: &deadpool_postgres::PoolError) -> Option<(String, &'static str)> {
    let deadpool_postgres::PoolError::Backend(backend) = error else { return None };
    // tokio-postgres keeps its error kinds private; this is how it displays `Kind::Tls`, and
    // that Display leaves out the cause, which is the part that says what is wrong.
    if backend.to_string() != "error performing TLS handshake" {
        return None;
    }
    let detail = std::error::Error::source(backend).map_or_else(|| "no detail".to_owned(), ToString::to_string);
    let hint = if detail.contains("does not support TLS") { NO_TLS_HINT } else { CERTIFICATE_HINT };
    Some((detail, hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (Option<SslMode>, String) {
        let (mode, rest) = split_sslmode(url).unwrap();
        (mode, rest.into_owned())
    }

    #[test]
    fn a_url_without_sslmode_is_left_to_tokio_postgres() {
        assert_eq!(split("postgres://sm:sm@db:5432/sm"), (None, "postgres://sm:sm@db:5432/sm".into()));
        assert_eq!(
            split("postgres://sm:sm@db/sm?application_name=x"),
            (None, "postgres://sm:sm@db/sm?application_name=x".into())
        );
    }

    #[test]
    fn each_supported_sslmode_is_read_and_taken_out_of_the_url() {
        for (value, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let url = format!("postgresql://sm:sm@db:5432/sm?sslmode={value}");
            assert_eq!(split(&url), (Some(mode), "postgresql://sm:sm@db:5432/sm".into()), "{value}");
        }
    }

    #[test]
    fn other_parameters_are_kept_in_order() {
        assert_eq!(
            split("postgres://sm@db/sm?application_name=a&sslmode=verify-full&options=-csearch_path%3Dx"),
            (Some(SslMode::VerifyFull), "postgres://sm@db/sm?application_name=a&options=-csearch_path%3Dx".into())
        );
    }

    #[test]
    fn the_last_sslmode_wins() {
        assert_eq!(split("postgres://db/sm?sslmode=disable&sslmode=require").0, Some(SslMode::Require));
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        assert_eq!(
            split("postgres://sm:pa?ss@db/sm?sslmode=require"),
            (Some(SslMode::Require), "postgres://sm:pa?ss@db/sm".into())
        );
        assert_eq!(
            split("postgres://sm:pa?sslmode=disable@db/sm"),
            (None, "postgres://sm:pa?sslmode=disable@db/sm".into())
        );
    }

    #[test]
    fn key_value_strings_are_left_to_tokio_postgres() {
        let conninfo = "host=db user=sm password='a b' sslmode=require";
        assert_eq!(split(conninfo), (None, conninfo.into()));
    }

    #[test]
    fn unsupported_sslmodes_name_the_setting_and_the_supported_values() {
        for value in ["allow", "verify-ca", "REQUIRE", ""] {
            let error = split_sslmode(&format!("postgres://sm:hunter2@db/sm?sslmode={value}")).unwrap_err();
            let message = error.to_string();
            assert!(message.contains("SM_POSTGRES__URL") && message.contains("verify-full"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn modes_map_onto_tokio_postgres() {
        use tokio_postgres::config::SslMode as Tokio;
        assert_eq!(SslMode::Disable.to_tokio(), Tokio::Disable);
        assert_eq!(SslMode::Prefer.to_tokio(), Tokio::Prefer);
        assert_eq!(SslMode::Require.to_tokio(), Tokio::Require);
        assert_eq!(SslMode::VerifyFull.to_tokio(), Tokio::Require);
        for mode in [Tokio::Disable, Tokio::Prefer, Tokio::Require] {
            assert_eq!(SslMode::from_tokio(mode).to_tokio(), mode);
        }
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let Err(error) = connector(SslMode::Require, "/nonexistent/ca.pem") else {
            panic!("a connector without its CA")
        };
        let message = error.to_string();
        assert!(message.contains("SM_POSTGRES__CA_FILE") && message.contains("/nonexistent/ca.pem"), "{message}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("sm-storage-not-a-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let result = connector(SslMode::Require, path.to_str().unwrap());
        std::fs::remove_file(&path).unwrap();
        let Err(error) = result else { panic!("a connector without a CA certificate") };
        assert!(matches!(error, StorageError::CaFileInvalid { .. }), "{error}");
        assert!(error.to_string().contains("SM_POSTGRES__CA_FILE"), "{error}");
    }
}
