//! Roles and permissions (architecture §9). Every RPC needs exactly one [`Permission`]; a
//! role grants a fixed set of them. People get `viewer`, `operator`, `planner` or `admin`;
//! gateways and agents get `service`.

use std::fmt;
use std::str::FromStr;

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Readings, assets, anomalies, drift, predictions, models: every read of the tenant's data.
    Read,
    /// Analyses on demand (drift check, anomaly scoring, a prediction): read-only but costly.
    Analyze,
    /// Registering and changing assets (the catalog).
    ManageAssets,
    /// Promoting and archiving model versions.
    ManageModels,
    /// Creating, listing and revoking API keys.
    ManageKeys,
}

impl Permission {
    pub const ALL: [Permission; 5] =
        [Self::Read, Self::Analyze, Self::ManageAssets, Self::ManageModels, Self::ManageKeys];

    /// The name in refusals and documentation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "data.read",
            Self::Analyze => "analytics.run",
            Self::ManageAssets => "assets.manage",
            Self::ManageModels => "models.manage",
            Self::ManageKeys => "keys.manage",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role a principal holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything of its tenant.
    Viewer,
    /// A viewer who acknowledges and shelves alarms and completes work.
    Operator,
    /// An operator who approves and schedules work orders.
    Planner,
    /// Catalogs, models, routing and keys, and everything else.
    Admin,
    /// Gateways and agents: reads and analyses, no administration.
    Service,
}

/// A role name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use viewer, operator, planner, admin or service")]
pub struct RoleError(pub String);

impl Role {
    pub const ALL: [Role; 5] = [Self::Viewer, Self::Operator, Self::Planner, Self::Admin, Self::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Planner => "planner",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    /// Whether this role grants `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Self::Admin => true,
            Self::Viewer | Self::Operator | Self::Planner | Self::Service => matches!(permission, Read | Analyze),
        }
    }

    /// The roles that grant `permission`, for refusals that say what would do.
    pub fn granting(permission: Permission) -> Vec<Role> {
        Self::ALL.into_iter().filter(|r| r.grants(permission)).collect()
    }
}

impl FromStr for Role {
    type Err = RoleError;

    fn from_str(text: &str) -> Result<Self, RoleError> {
        Self::ALL.into_iter().find(|r| r.as_str() == text).ok_or_else(|| RoleError(text.to_owned()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert_eq!("Admin".parse::<Role>(), Err(RoleError("Admin".into())));
        assert!("root".parse::<Role>().unwrap_err().to_string().contains("viewer, operator"));
    }

    #[test]
    fn only_admins_manage_and_everyone_reads() {
        for permission in Permission::ALL {
            assert!(Role::Admin.grants(permission), "{permission}");
        }
        for role in Role::ALL {
            assert!(role.grants(Permission::Read), "{role}");
        }
        for permission in [Permission::ManageAssets, Permission::ManageModels, Permission::ManageKeys] {
            assert_eq!(Role::granting(permission), vec![Role::Admin], "{permission}");
        }
    }
}
