//! Who is calling and what they may do (architecture §9).
//!
//! - [`key`]: API keys for services, gateways and scripts: `smk_<id>_<secret>`, shown once,
//!   kept only as a SHA-256 of the secret;
//! - [`role`]: the five roles and the permissions each grants;
//! - [`principal`]: an authenticated caller: subject, tenant scope, roles;
//! - [`jwt`]: OIDC bearer tokens for people, checked against configured issuers' keys.
//!
//! Nothing here does I/O except fetching an issuer's JWKS: the query service resolves
//! credentials to a [`Principal`] and checks a [`Permission`] on every call.

pub mod jwt;
pub mod key;
pub mod principal;
pub mod role;

pub use key::{ApiKey, KeyError, SecretHash};
pub use principal::{Principal, PrincipalKind, TenantScope};
pub use role::{Permission, Role, RoleError};
