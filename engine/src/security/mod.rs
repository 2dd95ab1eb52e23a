//! Who may do what, and what was done: roles and the permissions they grant, bearer tokens,
//! the instance's signing key, and the hash-chained audit log (`audit`).
//!
//! The HTTP API checks every request here (`server::api`: each route is declared with its
//! permission in one table); command-line actions on a folder no server holds act as the
//! folder's owner and are audited as the local OS user.

pub mod audit;
pub mod crypt;
pub mod keys;
pub mod provenance;
pub mod secrets;
pub mod tokens;
pub mod webhook;

use serde::{Deserialize, Serialize};

/// What a request or command wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Anyone, without a token: liveness and readiness.
    Public,
    /// Read pipelines, runs, logs, artifacts, lineage, events.
    Read,
    /// Ask served models for predictions, and send feedback on them.
    Predict,
    /// Start, cancel, retry and backfill runs.
    Run,
    /// Register model versions, move unprotected aliases.
    Edit,
    /// Approve or reject waiting steps, move protected aliases, drive rollouts.
    Approve,
    /// Read the audit log.
    Audit,
    /// Tokens, roles, keys, gc.
    Admin,
    /// Post to the event endpoints (webhooks, alerts).
    Ingest,
}

impl Permission {
    /// Every permission, in the order above.
    pub const ALL: [Permission; 9] = [
        Permission::Public,
        Permission::Read,
        Permission::Predict,
        Permission::Run,
        Permission::Edit,
        Permission::Approve,
        Permission::Audit,
        Permission::Admin,
        Permission::Ingest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Public => "public",
            Permission::Read => "read",
            Permission::Predict => "predict",
            Permission::Run => "run",
            Permission::Edit => "edit",
            Permission::Approve => "approve",
            Permission::Audit => "audit",
            Permission::Admin => "admin",
            Permission::Ingest => "ingest",
        }
    }

    /// The roles that hold it, for messages and the API document.
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| r.allows(self)).collect()
    }
}

/// A token's role. The first five are ordered, each holding what the one before holds;
/// `events` is apart: it may only post events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Runner,
    Editor,
    Approver,
    Admin,
    Events,
}

impl Role {
    pub const ALL: [Role; 6] =
        [Role::Viewer, Role::Runner, Role::Editor, Role::Approver, Role::Admin, Role::Events];

    fn rank(self) -> Option<u8> {
        match self {
            Role::Viewer => Some(1),
            Role::Runner => Some(2),
            Role::Editor => Some(3),
            Role::Approver => Some(4),
            Role::Admin => Some(5),
            Role::Events => None,
        }
    }

    /// Whether this role holds everything `other` holds (`events` holds only itself).
    pub fn at_least(self, other: Role) -> bool {
        match (self.rank(), other.rank()) {
            (Some(mine), Some(theirs)) => mine >= theirs,
            _ => self == other,
        }
    }

    /// Whether this role may do `p`.
    pub fn allows(self, p: Permission) -> bool {
        let at_least = |r: Role| self.rank().is_some_and(|mine| Some(mine) >= r.rank());
        match p {
            Permission::Public => true,
            Permission::Ingest => self == Role::Events || at_least(Role::Runner),
            Permission::Read | Permission::Predict => at_least(Role::Viewer),
            Permission::Run => at_least(Role::Runner),
            Permission::Edit => at_least(Role::Editor),
            Permission::Approve | Permission::Audit => at_least(Role::Approver),
            Permission::Admin => at_least(Role::Admin),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Runner => "runner",
            Role::Editor => "editor",
            Role::Approver => "approver",
            Role::Admin => "admin",
            Role::Events => "events",
        }
    }

    pub fn parse(text: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
            format!("`{text}` is not a role; the roles are {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did something, as the audit log names them: the local OS user (looked up once a
/// process: every attempt's tracking run names it).
pub fn local_actor() -> String {
    static ACTOR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ACTOR
        .get_or_init(|| {
            let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| format!("uid {}", nix::unistd::geteuid()));
            format!("local:{user}")
        })
        .clone()
}

/// Cryptographically random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "the system's random source failed".to_string())?;
    Ok(b)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize]);
        s.push(DIGITS[(b & 15) as usize]);
    }
    String::from_utf8(s).expect("hex digits are ASCII")
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_hierarchical_and_events_only_ingests() {
        assert!(Role::Viewer.allows(Permission::Read));
        assert!(!Role::Viewer.allows(Permission::Run));
        assert!(Role::Runner.allows(Permission::Run) && Role::Runner.allows(Permission::Ingest));
        assert!(!Role::Runner.allows(Permission::Edit));
        assert!(Role::Editor.allows(Permission::Edit) && !Role::Editor.allows(Permission::Approve));
        assert!(Role::Approver.allows(Permission::Audit) && !Role::Approver.allows(Permission::Admin));
        assert!(Role::Admin.allows(Permission::Admin));
        assert!(Role::Events.allows(Permission::Ingest));
        for p in [Permission::Read, Permission::Run, Permission::Edit, Permission::Audit, Permission::Admin] {
            assert!(!Role::Events.allows(p), "{p:?}");
        }
        assert_eq!(Role::parse("approver"), Ok(Role::Approver));
        assert!(Role::parse("root").unwrap_err().contains("viewer, runner"));
    }
}
