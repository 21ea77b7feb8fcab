//! Partner permissions and client/location scope.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One permission a partner may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Create patients.
    #[serde(rename = "patients:create")]
    PatientsCreate,
    /// Read patients.
    #[serde(rename = "patients:read")]
    PatientsRead,
    /// Update patients.
    #[serde(rename = "patients:update")]
    PatientsUpdate,
    /// Create test orders.
    #[serde(rename = "tests:create")]
    TestsCreate,
    /// Read test orders.
    #[serde(rename = "tests:read")]
    TestsRead,
    /// Update test orders and move them through their lifecycle.
    #[serde(rename = "tests:update")]
    TestsUpdate,
    /// Record, finalize and correct results.
    #[serde(rename = "results:write")]
    ResultsWrite,
    /// Read history, as-of state and the access log.
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Permission {
    /// The six record permissions of an integration partner: create, read
    /// and update of patients and of tests.
    pub const RECORDS: [Permission; 6] = [
        Permission::PatientsCreate,
        Permission::PatientsRead,
        Permission::PatientsUpdate,
        Permission::TestsCreate,
        Permission::TestsRead,
        Permission::TestsUpdate,
    ];

    /// Every permission, in a stable order.
    pub const ALL: [Permission; 8] = [
        Permission::PatientsCreate,
        Permission::PatientsRead,
        Permission::PatientsUpdate,
        Permission::TestsCreate,
        Permission::TestsRead,
        Permission::TestsUpdate,
        Permission::ResultsWrite,
        Permission::AuditRead,
    ];

    /// The permission's name as written in the contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::PatientsCreate => "patients:create",
            Permission::PatientsRead => "patients:read",
            Permission::PatientsUpdate => "patients:update",
            Permission::TestsCreate => "tests:create",
            Permission::TestsRead => "tests:read",
            Permission::TestsUpdate => "tests:update",
            Permission::ResultsWrite => "results:write",
            Permission::AuditRead => "audit:read",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission name that is not one of the contract's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown permission `{0}`")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission(s.to_string()))
    }
}

/// Parses a comma-separated permission list (`patients:read,tests:read`).
pub fn parse_permissions(s: &str) -> Result<BTreeSet<Permission>, UnknownPermission> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Permission::from_str)
        .collect()
}

/// A set of identifiers, either explicit or `*` (all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdSet {
    /// Every identifier, written `*`.
    All(AllMarker),
    /// Exactly these identifiers.
    Only(BTreeSet<String>),
}

/// The `*` marker of [`IdSet::All`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllMarker;

impl Serialize for AllMarker {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("*")
    }
}

impl<'de> Deserialize<'de> for AllMarker {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "*" {
            Ok(AllMarker)
        } else {
            Err(serde::de::Error::custom("expected `*`"))
        }
    }
}

impl IdSet {
    /// All identifiers.
    pub fn all() -> Self {
        IdSet::All(AllMarker)
    }

    /// Whether the set contains `id`.
    pub fn contains(&self, id: &str) -> bool {
        match self {
            IdSet::All(_) => true,
            IdSet::Only(ids) => ids.contains(id),
        }
    }

    /// Parses `*` or a comma-separated list of reference ids.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(IdSet::all());
        }
        let mut ids = BTreeSet::new();
        for id in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if !crate::validation::is_reference_id(id) {
                return Err(format!("`{id}` is not a valid identifier"));
            }
            ids.insert(id.to_string());
        }
        Ok(IdSet::Only(ids))
    }
}

impl fmt::Display for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSet::All(_) => f.write_str("*"),
            IdSet::Only(ids) => f.write_str(&ids.iter().cloned().collect::<Vec<_>>().join(",")),
        }
    }
}

/// A partner's access scope: a record is in scope when its client is in
/// `clients` and its location is in `locations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Client ids the partner may see.
    pub clients: IdSet,
    /// Location ids the partner may see.
    pub locations: IdSet,
}

impl Scope {
    /// Whether a record of `client` at `location` is in scope.
    pub fn contains(&self, client: &str, location: &str) -> bool {
        self.clients.contains(client) && self.locations.contains(location)
    }
}

/// Who acts: recorded in every event's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Actor {
    /// A partner integration, by its `partnerID`.
    Partner {
        /// The partner's id.
        id: uuid::Uuid,
    },
    /// An operator using the admin command line, by login name.
    Operator {
        /// The operator's login name.
        id: String,
    },
    /// The system itself (a reactor, a migration).
    System {
        /// The component acting.
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert!(parse_permissions("patients:read,nope").is_err());
        assert_eq!(
            parse_permissions("patients:read, tests:read")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn scope_needs_both_client_and_location() {
        let scope = Scope {
            clients: IdSet::parse("C1,C2").unwrap(),
            locations: IdSet::parse("*").unwrap(),
        };
        assert!(scope.contains("C1", "anything"));
        assert!(!scope.contains("C3", "L1"));
        let narrow = Scope {
            clients: IdSet::all(),
            locations: IdSet::parse("L1").unwrap(),
        };
        assert!(narrow.contains("C9", "L1"));
        assert!(!narrow.contains("C9", "L2"));
        assert_eq!(serde_json::to_value(IdSet::all()).unwrap(), "*");
        let back: IdSet = serde_json::from_value(serde_json::json!(["L1"])).unwrap();
        assert_eq!(back, IdSet::parse("L1").unwrap());
        assert!(IdSet::parse("bad id").is_err());
    }
}
