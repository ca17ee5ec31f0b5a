//! Client credentials: every call carries `authorization: Bearer <API key or OIDC token>`.
//! [`Credentials::from_env`] reads `SM_API_KEY` (or `SM_TOKEN`), as `smctl` and the tests do.

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

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
