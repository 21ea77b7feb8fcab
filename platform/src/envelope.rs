//! The envelope every published event travels in, and its CloudEvents 1.0
//! Kafka binary-mode headers.

use chrono::{DateTime, SecondsFormat, Utc};
use domain::access::Actor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// An event as stored and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Unique id of the event.
    #[serde(rename = "eventID")]
    pub event_id: Uuid,
    /// Event type (`PatientRegistered`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Version of the type's `data` schema.
    pub schema_version: i32,
    /// Kind of stream (`patient`).
    pub stream_type: String,
    /// The stream (aggregate) id.
    #[serde(rename = "streamID")]
    pub stream_id: Uuid,
    /// Position in the stream, from 1.
    pub version: i64,
    /// When the command was accepted.
    #[serde(with = "rfc3339")]
    pub occurred_at: DateTime<Utc>,
    /// Who acted.
    pub actor: Actor,
    /// The command that produced the event.
    #[serde(rename = "commandID")]
    pub command_id: Uuid,
    /// The request's `Idempotency-Key`, when one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The event's own data.
    pub data: Value,
}

/// Formats a timestamp as the contract writes them: RFC 3339 UTC with
/// microseconds (the store's precision).
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// Header carrying the event store position `txid:position` of a record,
/// which lets the relay resume exactly after what a partition already holds.
pub const POSITION_HEADER: &str = "lis_position";

/// Headers carrying a record's place in the log's hash chain
/// (`platform::chain`): its sequence number and the chain's hash after it.
pub const CHAIN_SEQ_HEADER: &str = "lis_chain_seq";
/// See [`CHAIN_SEQ_HEADER`].
pub const CHAIN_HASH_HEADER: &str = "lis_chain_hash";

impl Envelope {
    /// The Kafka message body: the envelope's JSON. The event store keeps
    /// `data` as `jsonb`, whose member order is canonical, so the same
    /// event always gives the same bytes (its chain hash depends on them).
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes serialize")
    }

    /// The CloudEvents binary-mode headers of this event.
    pub fn cloudevent_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ce_specversion", "1.0".into()),
            ("ce_id", self.event_id.to_string()),
            (
                "ce_type",
                format!("lis.{}.v{}", self.event_type, self.schema_version),
            ),
            ("ce_source", format!("/lis/{}", self.stream_type)),
            ("ce_time", format_time(&self.occurred_at)),
            ("ce_subject", self.stream_id.to_string()),
            ("content-type", "application/json".into()),
        ]
    }
}
