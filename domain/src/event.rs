//! Stream kinds and the conversion of typed events to and from their
//! `(type, data)` parts as stored and published.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The kind of aggregate a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// A patient.
    Patient,
    /// A patient's portal account.
    Account,
    /// A partner integration.
    Partner,
    /// A lab client.
    Client,
    /// A client's location.
    Location,
    /// A test order.
    Order,
    /// A test of the lab's catalog.
    Catalog,
}

impl StreamKind {
    /// Every stream kind.
    pub const ALL: [StreamKind; 7] = [
        StreamKind::Patient,
        StreamKind::Account,
        StreamKind::Partner,
        StreamKind::Client,
        StreamKind::Location,
        StreamKind::Order,
        StreamKind::Catalog,
    ];

    /// The stream kind's name as stored (`patient`, `account`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Patient => "patient",
            StreamKind::Account => "account",
            StreamKind::Partner => "partner",
            StreamKind::Client => "client",
            StreamKind::Location => "location",
            StreamKind::Order => "order",
            StreamKind::Catalog => "catalog",
        }
    }

    /// Parses a stored stream kind name.
    pub fn parse(s: &str) -> Option<Self> {
        StreamKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An event type of one aggregate: an adjacently tagged enum
/// (`#[serde(tag = "type", content = "data")]`).
pub trait DomainEvent: Serialize + DeserializeOwned + Clone {
    /// The stream kind these events belong to.
    const STREAM: StreamKind;

    /// The event's type name (`PatientRegistered`).
    fn event_type(&self) -> &'static str;

    /// The schema version of this event type's `data`.
    fn schema_version(&self) -> u32 {
        1
    }

    /// Splits the event into its type name and `data` object.
    fn to_data(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("events always serialize");
        v.get_mut("data").map(Value::take).unwrap_or(Value::Null)
    }

    /// Rebuilds an event from its stored type name and `data`.
    fn from_parts(event_type: &str, data: Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": data }))
    }
}
