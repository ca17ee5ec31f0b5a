//! Client credentials: every call carries `authorization: Bearer <API key or OIDC token>`.
//! [`Credentials::from_env`] reads `SM_API_KEY` (or `SM_TOKEN`), as `smctl` and the tests do.
//! [`connect`] opens a channel with them, over TLS for an `https://` URL (trusting a CA
//! file, and with a client certificate for mutual TLS).

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A channel whose every call carries the credentials.
pub type AuthChannel = InterceptedService<Channel, Credentials>;

/// Why credentials could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no credentials: set SM_API_KEY (an API key, smk_...) or SM_TOKEN (an OIDC token), or pass --api-key")]
    Missing,
    #[error("the credential holds characters a header cannot carry; copy it again")]
    NotAscii,
}

/// The bearer credential added to every request.
#[derive(Clone)]
pub struct Credentials(AsciiMetadataValue);

impl Credentials {
    /// An API key (`smk_...`) or an OIDC token.
    pub fn bearer(credential: &str) -> Result<Self, CredentialsError> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(CredentialsError::Missing);
        }
        let mut value: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {credential}")).map_err(|_| CredentialsError::NotAscii)?;
        value.set_sensitive(true);
        Ok(Self(value))
    }

    /// `SM_API_KEY`, else `SM_TOKEN`.
    pub fn from_env() -> Result<Self, CredentialsError> {
        let get = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        match get("SM_API_KEY").or_else(|| get("SM_TOKEN")) {
            Some(credential) => Self::bearer(&credential),
            None => Err(CredentialsError::Missing),
        }
    }

    /// `channel` with these credentials on every call.
    pub fn on(self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(***)")
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Why [`connect`] could not open a channel. tonic's errors print only "transport error",
/// so `detail` holds their causes.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{url:?} is not a URL: {detail}")]
    Url { url: String, detail: String },
    #[error("{url} is plaintext: a CA file or a client certificate needs an https:// URL")]
    TlsFilesWithoutHttps { url: String },
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the TLS files for {url}: {detail}")]
    Tls { url: String, detail: String },
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
}

/// A channel to `url` whose every call carries `credentials`; see [`connect_channel`].
pub async fn connect(
    url: &str,
    ca_file: Option<&str>,
    client_identity: Option<(&str, &str)>,
    credentials: Credentials,
) -> Result<AuthChannel, ConnectError> {
    Ok(credentials.on(connect_channel(url, ca_file, client_identity).await?))
}

/// A channel to `url`, without credentials (a caller with a client certificate may need
/// none). `https://`: TLS, trusting the CA certificates in `ca_file` (PEM) when given, else
/// the system's roots; the server's name is the URL's host (an IP address is checked
/// against the certificate's IP SANs). `client_identity` is a certificate file and its key
/// file (PEM), for a server with mutual TLS. `http://`: plaintext, and either file is an
/// error rather than ignored, so a wrong scheme never silently goes out in the clear.
pub async fn connect_channel(
    url: &str,
    ca_file: Option<&str>,
    client_identity: Option<(&str, &str)>,
) -> Result<Channel, ConnectError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| ConnectError::Url { url: url.to_owned(), detail: causes(&error) })?;
    let https = endpoint.uri().scheme_str() == Some("https");
    if https {
        let mut tls = ClientTlsConfig::new();
        tls = match ca_file {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read("CA file", path)?)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = client_identity {
            tls = tls.identity(Identity::from_pem(read("client certificate", cert)?, read("client key", key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| ConnectError::Tls { url: url.to_owned(), detail: causes(&error) })?;
    } else if ca_file.is_some() || client_identity.is_some() {
        return Err(ConnectError::TlsFilesWithoutHttps { url: url.to_owned() });
    }
    endpoint.connect().await.map_err(|error| ConnectError::Connect { url: url.to_owned(), detail: causes(&error) })
}

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read { what, path: path.to_owned(), source })
}

/// The error and its sources, `: `-separated; a source that only repeats what is already
/// said (hyper prints its cause in its own message) is left out. tonic's transport errors
/// print only "transport error" themselves, so the server's TLS setup reports with it too.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
