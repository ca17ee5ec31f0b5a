//! An authenticated caller.

use crate::role::{Permission, Role};
use sm_domain::TenantId;
use std::fmt;

/// Which tenants a principal acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TenantScope {
    /// One tenant: every read and command is of that tenant.
    One(TenantId),
    /// Every tenant: only the bootstrap admin key and admin keys created for `*`. A request's
    /// tenant field narrows it to one.
    All,
}

impl TenantScope {
    /// `*` is every tenant; anything else one tenant.
    pub fn parse(text: &str) -> Self {
        if text == "*" { Self::All } else { Self::One(TenantId(text.to_owned())) }
    }

    /// `*` or the tenant's id, as stored.
    pub fn as_str(&self) -> &str {
        match self {
            Self::All => "*",
            Self::One(tenant) => tenant.as_str(),
        }
    }
}

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An API key, by id.
    ApiKey { key_id: String },
    /// The bootstrap admin key from the environment.
    Bootstrap,
    /// An OIDC token from `issuer`.
    Token { issuer: String },
    /// A TLS client certificate (mTLS).
    Certificate,
}

/// Who is calling, for which tenants, with which roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable name recorded on commands: `key:<id>`, `user:<issuer>#<sub>`, `cert:<subject>`.
    pub subject: String,
    pub kind: PrincipalKind,
    pub tenants: TenantScope,
    pub roles: Vec<Role>,
}

impl Principal {
    /// Whether any of its roles grants `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        self.roles.iter().any(|role| role.grants(permission))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject)
    }
}
