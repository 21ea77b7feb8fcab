//! Operator-managed reference data: lab clients, their locations, and the
//! partners that integrate with the LIS.
//!
//! Secrets never appear here: events record only that a secret changed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::{Permission, Scope};
use crate::event::{DomainEvent, StreamKind};
use crate::validation::{check_reference_id, check_text, FieldError};

/// Namespace of the name-based stream ids of clients and locations.
const REFERENCE_NAMESPACE: Uuid = Uuid::from_u128(0x6c69_735f_7265_6600_8000_0000_0000_0001);

/// Longest display name accepted.
pub const MAX_DISPLAY_NAME: usize = 200;

/// The stream id of a client, derived from its `clientID`.
pub fn client_stream_id(client_id: &str) -> Uuid {
    Uuid::new_v5(
        &REFERENCE_NAMESPACE,
        format!("client:{client_id}").as_bytes(),
    )
}

/// The stream id of a location, derived from its `locationID`.
pub fn location_stream_id(location_id: &str) -> Uuid {
    Uuid::new_v5(
        &REFERENCE_NAMESPACE,
        format!("location:{location_id}").as_bytes(),
    )
}

/// The events of a client stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ClientEvent {
    /// A lab client was registered.
    ClientRegistered(ClientRegistered),
}

/// Data of `ClientRegistered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRegistered {
    /// The operator-chosen id.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Display name.
    pub name: String,
}

impl DomainEvent for ClientEvent {
    const STREAM: StreamKind = StreamKind::Client;
    fn event_type(&self) -> &'static str {
        "ClientRegistered"
    }
}

/// The events of a location stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LocationEvent {
    /// A location of a client was registered.
    LocationRegistered(LocationRegistered),
}

/// Data of `LocationRegistered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationRegistered {
    /// The operator-chosen id.
    #[serde(rename = "locationID")]
    pub location_id: String,
    /// The owning client.
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Display name.
    pub name: String,
}

impl DomainEvent for LocationEvent {
    const STREAM: StreamKind = StreamKind::Location;
    fn event_type(&self) -> &'static str {
        "LocationRegistered"
    }
}

/// Why a reference-data command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceRejection {
    /// Bad fields.
    #[error("invalid fields: {}", .0.iter().map(|e| format!("{} ({})", e.field, e.message)).collect::<Vec<_>>().join(", "))]
    Invalid(Vec<FieldError>),
    /// The record already exists with other details.
    #[error("{0} already exists with other details")]
    Conflict(String),
    /// The location's client does not exist.
    #[error("no client `{0}`")]
    UnknownClient(String),
    /// The partner is disabled.
    #[error("the partner is disabled")]
    PartnerDisabled,
}

/// Registers a client; `existing` is its current name when it exists. Asking
/// again for the same client with the same name changes nothing.
pub fn register_client(
    client_id: &str,
    name: &str,
    existing: Option<&str>,
) -> Result<Option<ClientEvent>, ReferenceRejection> {
    let mut errors = Vec::new();
    check_reference_id("id", client_id, &mut errors);
    check_text("name", name, MAX_DISPLAY_NAME, &mut errors);
    if !errors.is_empty() {
        return Err(ReferenceRejection::Invalid(errors));
    }
    match existing {
        Some(n) if n == name => Ok(None),
        Some(_) => Err(ReferenceRejection::Conflict(format!("client {client_id}"))),
        None => Ok(Some(ClientEvent::ClientRegistered(ClientRegistered {
            client_id: client_id.into(),
            name: name.into(),
        }))),
    }
}

/// Registers a location of an existing client; `existing` is the current
/// (client, name) of the location when it exists.
pub fn register_location(
    location_id: &str,
    client_id: &str,
    name: &str,
    client_exists: bool,
    existing: Option<(&str, &str)>,
) -> Result<Option<LocationEvent>, ReferenceRejection> {
    let mut errors = Vec::new();
    check_reference_id("id", location_id, &mut errors);
    check_reference_id("client", client_id, &mut errors);
    check_text("name", name, MAX_DISPLAY_NAME, &mut errors);
    if !errors.is_empty() {
        return Err(ReferenceRejection::Invalid(errors));
    }
    if !client_exists {
        return Err(ReferenceRejection::UnknownClient(client_id.into()));
    }
    match existing {
        Some((c, n)) if c == client_id && n == name => Ok(None),
        Some(_) => Err(ReferenceRejection::Conflict(format!(
            "location {location_id}"
        ))),
        None => Ok(Some(LocationEvent::LocationRegistered(
            LocationRegistered {
                location_id: location_id.into(),
                client_id: client_id.into(),
                name: name.into(),
            },
        ))),
    }
}

/// The state of a partner, as the write side keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// Internal id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// OAuth `client_id`.
    pub client_id: String,
    /// Granted permissions.
    pub permissions: BTreeSet<Permission>,
    /// Client/location scope.
    pub scope: Scope,
    /// Whether the partner is disabled.
    pub disabled: bool,
    /// Stream version.
    pub version: i64,
}

/// The events of a partner stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PartnerEvent {
    /// A partner was registered.
    PartnerRegistered(PartnerRegistered),
    /// A partner's permissions or scope changed.
    PartnerAccessChanged(PartnerAccessChanged),
    /// A partner's secret was replaced (the secret itself is never recorded).
    PartnerSecretRotated(PartnerRef),
    /// A partner was disabled.
    PartnerDisabled(PartnerRef),
}

impl DomainEvent for PartnerEvent {
    const STREAM: StreamKind = StreamKind::Partner;
    fn event_type(&self) -> &'static str {
        match self {
            PartnerEvent::PartnerRegistered(_) => "PartnerRegistered",
            PartnerEvent::PartnerAccessChanged(_) => "PartnerAccessChanged",
            PartnerEvent::PartnerSecretRotated(_) => "PartnerSecretRotated",
            PartnerEvent::PartnerDisabled(_) => "PartnerDisabled",
        }
    }
}

/// Data of `PartnerRegistered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRegistered {
    /// Internal id.
    #[serde(rename = "partnerID")]
    pub partner_id: Uuid,
    /// Display name.
    pub name: String,
    /// OAuth `client_id` (not a secret).
    pub client_id: String,
    /// Granted permissions.
    pub permissions: BTreeSet<Permission>,
    /// Scope.
    pub scope: Scope,
}

/// Data of `PartnerAccessChanged`: the new permissions and scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerAccessChanged {
    /// Internal id.
    #[serde(rename = "partnerID")]
    pub partner_id: Uuid,
    /// New permissions.
    pub permissions: BTreeSet<Permission>,
    /// New scope.
    pub scope: Scope,
}

/// Data of events that only name the partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRef {
    /// Internal id.
    #[serde(rename = "partnerID")]
    pub partner_id: Uuid,
}

/// Registers a partner.
pub fn register_partner(
    partner_id: Uuid,
    client_id: String,
    name: &str,
    permissions: BTreeSet<Permission>,
    scope: Scope,
) -> Result<PartnerEvent, ReferenceRejection> {
    let mut errors = Vec::new();
    check_text("name", name, MAX_DISPLAY_NAME, &mut errors);
    if !errors.is_empty() {
        return Err(ReferenceRejection::Invalid(errors));
    }
    Ok(PartnerEvent::PartnerRegistered(PartnerRegistered {
        partner_id,
        name: name.into(),
        client_id,
        permissions,
        scope,
    }))
}

/// Changes a partner's permissions and scope; `None` when nothing changes.
pub fn change_partner_access(
    state: &Partner,
    permissions: BTreeSet<Permission>,
    scope: Scope,
) -> Result<Option<PartnerEvent>, ReferenceRejection> {
    if state.permissions == permissions && state.scope == scope {
        return Ok(None);
    }
    Ok(Some(PartnerEvent::PartnerAccessChanged(
        PartnerAccessChanged {
            partner_id: state.id,
            permissions,
            scope,
        },
    )))
}

/// Rotates a partner's secret; a disabled partner stays disabled.
pub fn rotate_partner_secret(state: &Partner) -> Result<PartnerEvent, ReferenceRejection> {
    if state.disabled {
        return Err(ReferenceRejection::PartnerDisabled);
    }
    Ok(PartnerEvent::PartnerSecretRotated(PartnerRef {
        partner_id: state.id,
    }))
}

/// Disables a partner; `None` when it already is.
pub fn disable_partner(state: &Partner) -> Option<PartnerEvent> {
    (!state.disabled).then_some(PartnerEvent::PartnerDisabled(PartnerRef {
        partner_id: state.id,
    }))
}

/// Folds one event into the partner's state.
pub fn apply_partner(state: Option<Partner>, event: &PartnerEvent) -> Option<Partner> {
    match event {
        PartnerEvent::PartnerRegistered(e) => Some(Partner {
            id: e.partner_id,
            name: e.name.clone(),
            client_id: e.client_id.clone(),
            permissions: e.permissions.clone(),
            scope: e.scope.clone(),
            disabled: false,
            version: 1,
        }),
        other => state.map(|mut p| {
            match other {
                PartnerEvent::PartnerAccessChanged(e) => {
                    p.permissions = e.permissions.clone();
                    p.scope = e.scope.clone();
                }
                PartnerEvent::PartnerDisabled(_) => p.disabled = true,
                PartnerEvent::PartnerSecretRotated(_) | PartnerEvent::PartnerRegistered(_) => {}
            }
            p.version += 1;
            p
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::IdSet;

    fn scope() -> Scope {
        Scope {
            clients: IdSet::parse("C1").unwrap(),
            locations: IdSet::all(),
        }
    }

    #[test]
    fn client_registration_is_idempotent_and_guards_conflicts() {
        assert!(register_client("C1", "Clinic", None).unwrap().is_some());
        assert_eq!(
            register_client("C1", "Clinic", Some("Clinic")).unwrap(),
            None
        );
        assert!(matches!(
            register_client("C1", "Other", Some("Clinic")),
            Err(ReferenceRejection::Conflict(_))
        ));
        assert!(matches!(
            register_client("bad id", "", None),
            Err(ReferenceRejection::Invalid(e)) if e.len() == 2
        ));
    }

    #[test]
    fn a_location_needs_its_client() {
        assert!(matches!(
            register_location("L1", "C9", "Site", false, None),
            Err(ReferenceRejection::UnknownClient(_))
        ));
        assert!(register_location("L1", "C1", "Site", true, None)
            .unwrap()
            .is_some());
        assert_eq!(
            register_location("L1", "C1", "Site", true, Some(("C1", "Site"))).unwrap(),
            None
        );
        assert!(matches!(
            register_location("L1", "C2", "Site", true, Some(("C1", "Site"))),
            Err(ReferenceRejection::Conflict(_))
        ));
    }

    #[test]
    fn partner_lifecycle() {
        let id = Uuid::new_v4();
        let perms: BTreeSet<_> = [Permission::PatientsRead].into();
        let registered = register_partner(id, "cid".into(), "EHR", perms.clone(), scope()).unwrap();
        let p = apply_partner(None, &registered).unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(
            change_partner_access(&p, perms.clone(), scope()).unwrap(),
            None
        );
        let wider: BTreeSet<_> = [Permission::PatientsRead, Permission::PatientsCreate].into();
        let changed = change_partner_access(&p, wider.clone(), scope())
            .unwrap()
            .unwrap();
        let p = apply_partner(Some(p), &changed).unwrap();
        assert_eq!(p.permissions, wider);
        let rotated = rotate_partner_secret(&p).unwrap();
        assert!(!serde_json::to_string(&rotated)
            .unwrap()
            .contains("secret\""));
        let p = apply_partner(Some(p), &rotated).unwrap();
        let disabled = disable_partner(&p).unwrap();
        let p = apply_partner(Some(p), &disabled).unwrap();
        assert!(p.disabled);
        assert_eq!(p.version, 4);
        assert_eq!(disable_partner(&p), None);
        assert_eq!(
            rotate_partner_secret(&p),
            Err(ReferenceRejection::PartnerDisabled)
        );
    }

    #[test]
    fn stream_ids_are_stable_and_distinct() {
        assert_eq!(client_stream_id("C1"), client_stream_id("C1"));
        assert_ne!(client_stream_id("X"), location_stream_id("X"));
    }
}
