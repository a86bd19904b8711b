//! Console roles. `user` requests access and sees their own credentials and sessions;
//! `approver` decides others' requests; `auditor` reads everything and changes nothing; `admin`
//! manages targets, grants and people. Roles add up; none implies another.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    User,
    Approver,
    Auditor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::User, Role::Approver, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    pub fn from_names(names: &[String]) -> Roles {
        names
            .iter()
            .filter_map(|n| Role::parse(n))
            .fold(Roles::default(), |acc, r| acc.with(r))
    }

    pub fn with(self, role: Role) -> Roles {
        Roles(self.0 | 1 << role as u8)
    }

    pub fn has(self, role: Role) -> bool {
        self.0 & (1 << role as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> Vec<String> {
        Role::ALL
            .into_iter()
            .filter(|r| self.has(*r))
            .map(|r| r.as_str().to_string())
            .collect()
    }

    /// Roles given by a person's provider groups under the configured mapping.
    pub fn from_groups(groups: &[String], oidc: &gateway::config::OidcConfig) -> Roles {
        let mut roles = Roles::default();
        for (role, mapped) in [
            (Role::User, &oidc.user_groups),
            (Role::Approver, &oidc.approver_groups),
            (Role::Auditor, &oidc.auditor_groups),
            (Role::Admin, &oidc.admin_groups),
        ] {
            if groups.iter().any(|g| mapped.contains(g)) {
                roles = roles.with(role);
            }
        }
        roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_mapped_groups_only() {
        let oidc = gateway::config::OidcConfig {
            user_groups: vec!["dev".into()],
            approver_groups: vec!["leads".into()],
            admin_groups: vec!["ops".into()],
            ..Default::default()
        };
        let roles = Roles::from_groups(&["dev".into(), "leads".into(), "other".into()], &oidc);
        assert_eq!(roles.names(), ["user", "approver"]);
        assert!(!roles.has(Role::Admin));
        assert!(Roles::from_groups(&["other".into()], &oidc).is_empty());
        assert_eq!(
            Roles::from_names(&["admin".into(), "bogus".into()]).names(),
            ["admin"]
        );
    }
}
