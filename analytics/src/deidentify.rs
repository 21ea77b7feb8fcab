//! The de-identification of one event: what of it the analytics stream
//! carries.
//!
//! Every field is dropped unless listed here as safe (an allow-list, so a
//! field added to an event later stays out until someone decides it may go
//! in). Names, contact details, addresses, free text (reasons, text result
//! values), external identifiers and accession numbers never pass; dates are
//! cut to the year, a birth date to the birth year or, above 89 years of
//! age, `90+`; record ids become keyed pseudonyms.

use chrono::{Datelike, NaiveDate};
use platform::envelope::Envelope;
use platform::pseudonym::{IdKind, Pseudonyms};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// One record of `lis.analytics.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Deidentified {
    /// The Kafka key: the record's pseudonym.
    pub key: Uuid,
    /// The body.
    pub body: Value,
    /// CloudEvents 1.0 binary-mode headers.
    pub headers: Vec<(&'static str, String)>,
}

/// The kind of record a stream type holds, for its pseudonym.
fn stream_kind(stream_type: &str) -> Option<IdKind> {
    match stream_type {
        "patient" => Some(IdKind::Patient),
        "account" => Some(IdKind::Account),
        "order" => Some(IdKind::Order),
        _ => None,
    }
}

/// The year of an RFC 3339 timestamp or a `YYYY-MM-DD` date, as text.
fn year(v: &Value) -> Value {
    match v.as_str().and_then(|s| s.get(..4)) {
        Some(y) if y.bytes().all(|b| b.is_ascii_digit()) => Value::String(y.to_string()),
        _ => Value::Null,
    }
}

/// A birth date as the analytics stream shows it: the year, or `90+` for
/// someone older than 89 on `at`.
fn birth_year(date_of_birth: &Value, at: NaiveDate) -> Value {
    let Some(dob) = date_of_birth
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
    else {
        return Value::Null;
    };
    let mut age = at.year() - dob.year();
    if (at.month(), at.day()) < (dob.month(), dob.day()) {
        age -= 1;
    }
    if age > 89 {
        json!("90+")
    } else {
        json!(dob.year().to_string())
    }
}

fn results(v: &Value) -> Value {
    let Some(list) = v.as_array() else {
        return Value::Null;
    };
    Value::Array(
        list.iter()
            .map(|r| {
                let mut out = Map::new();
                for name in ["code", "test", "unit", "referenceRange", "flag"] {
                    if let Some(x) = r.get(name) {
                        out.insert(name.into(), x.clone());
                    }
                }
                // A result with a unit is of a numeric analyte, whose value
                // the domain checked to be a decimal; a text analyte's value
                // may be anything a partner typed, digits included.
                if r.get("unit").is_some() {
                    if let Some(value) = r.get("value") {
                        out.insert("value".into(), value.clone());
                    }
                }
                Value::Object(out)
            })
            .collect(),
    )
}

struct Data<'a> {
    from: &'a Value,
    out: Map<String, Value>,
    ids: &'a Pseudonyms,
}

impl Data<'_> {
    fn copy(&mut self, names: &[&str]) {
        for name in names {
            if let Some(v) = self.from.get(*name) {
                self.out.insert(name.to_string(), v.clone());
            }
        }
    }

    fn id(&mut self, name: &str, kind: IdKind) {
        if let Some(id) = self.from[name].as_str().and_then(|s| s.parse().ok()) {
            self.out
                .insert(name.into(), json!(self.ids.of(kind, id).to_string()));
        }
    }
}

/// The `changes` of an update, reduced the same way.
fn changes(from: &Value, at: NaiveDate) -> Value {
    let mut out = Map::new();
    for name in ["locationID", "sex", "priority"] {
        if let Some(v) = from.get(name) {
            out.insert(name.into(), v.clone());
        }
    }
    if let Some(v) = from.get("dateOfBirth") {
        out.insert("birthYear".into(), birth_year(v, at));
    }
    if let Some(v) = from.get("collectedAt") {
        out.insert("collectedYear".into(), year(v));
    }
    Value::Object(out)
}

/// What the analytics stream carries of `env`, or `None` for an event of a
/// stream it does not carry (reference data).
pub fn deidentify(env: &Envelope, ids: &Pseudonyms) -> Option<Deidentified> {
    let kind = stream_kind(&env.stream_type)?;
    let at = env.occurred_at.date_naive();
    let mut d = Data {
        from: &env.data,
        out: Map::new(),
        ids,
    };
    d.id("patientID", IdKind::Patient);
    d.id("accountID", IdKind::Account);
    d.id("orderID", IdKind::Order);
    match env.event_type.as_str() {
        "PatientRegistered" => {
            d.copy(&["clientID", "locationID", "sex"]);
            let b = birth_year(&env.data["dateOfBirth"], at);
            d.out.insert("birthYear".into(), b);
        }
        "OrderPlaced" => {
            // The specimen's type is free text (a partner may write a name
            // in it): only its collection year passes.
            d.copy(&["clientID", "locationID", "tests", "priority"]);
            let mut s = Map::new();
            if let Some(c) = env.data["specimen"].get("collectedAt") {
                s.insert("collectedYear".into(), year(c));
            }
            d.out.insert("specimen".into(), Value::Object(s));
        }
        "PatientUpdated" | "OrderDetailsChanged" => {
            let c = changes(&env.data["changes"], at);
            d.out.insert("changes".into(), c);
        }
        "SpecimenCollected" => {
            let y = year(&env.data["collectedAt"]);
            d.out.insert("collectedYear".into(), y);
        }
        "ResultsRecorded" => {
            d.out
                .insert("results".into(), results(&env.data["results"]));
        }
        "ResultsCorrected" => {
            d.out
                .insert("results".into(), results(&env.data["results"]));
            d.out
                .insert("previous".into(), results(&env.data["previous"]));
        }
        // The rest carry nothing beyond the ids above, or only free text
        // (a cancellation's reason) and contact details (an invitation's
        // email): PatientAccountInvited, SpecimenReceived, OrderStarted,
        // ResultsFinalized, OrderCanceled, and any type added later.
        _ => {}
    }
    let event_id = ids.of(IdKind::Event, env.event_id);
    let stream_id = ids.of(kind, env.stream_id);
    let body = json!({
        "eventID": event_id.to_string(),
        "type": env.event_type,
        "schemaVersion": env.schema_version,
        "streamType": env.stream_type,
        "streamID": stream_id.to_string(),
        "version": env.version,
        "occurredYear": at.year().to_string(),
        "actor": {"type": serde_json::to_value(&env.actor).ok().and_then(|a| a.get("type").cloned()).unwrap_or(Value::Null)},
        "data": Value::Object(d.out),
    });
    let headers = vec![
        ("ce_specversion", "1.0".to_string()),
        ("ce_id", event_id.to_string()),
        // The first instant of the event's year: times are cut to the year.
        ("ce_time", format!("{}-01-01T00:00:00Z", at.year())),
        (
            "ce_type",
            format!("lis.analytics.{}.v{}", env.event_type, env.schema_version),
        ),
        ("ce_source", format!("/lis/analytics/{}", env.stream_type)),
        ("ce_subject", stream_id.to_string()),
        ("content-type", "application/json".to_string()),
    ];
    Some(Deidentified {
        key: stream_id,
        body,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::access::Actor;

    fn env(stream_type: &str, event_type: &str, data: Value) -> Envelope {
        Envelope {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            stream_type: stream_type.into(),
            stream_id: Uuid::new_v4(),
            version: 1,
            occurred_at: "2026-11-26T08:30:00Z".parse().unwrap(),
            actor: Actor::Operator {
                id: "jane.doe".into(),
            },
            command_id: Uuid::new_v4(),
            idempotency_key: Some("KEY-MRN-1".into()),
            data,
        }
    }

    #[test]
    fn a_registration_keeps_no_identifier_and_cuts_the_birth_date() {
        let ids = Pseudonyms::from_bytes(&[3u8; 32]);
        let patient = Uuid::new_v4();
        let e = env(
            "patient",
            "PatientRegistered",
            json!({"patientID": patient, "clientID": "C1", "locationID": "L1",
                   "externalPatientID": "MRN-1", "firstName": "Ada", "lastName": "Lovelace",
                   "dateOfBirth": "1990-12-10", "sex": "female", "email": "ada@example.org",
                   "phone": "+15555550100", "address": {"city": "London"}}),
        );
        let d = deidentify(&e, &ids).unwrap();
        assert_eq!(
            d.body["data"],
            json!({"patientID": ids.of(IdKind::Patient, patient).to_string(),
                   "clientID": "C1", "locationID": "L1", "sex": "female", "birthYear": "1990"})
        );
        assert_eq!(d.body["occurredYear"], "2026");
        assert_eq!(d.body["actor"], json!({"type": "operator"}));
        assert_eq!(d.key, ids.of(IdKind::Patient, e.stream_id));
        let text = format!("{} {:?}", d.body, d.headers);
        for secret in [
            e.stream_id.to_string(),
            e.event_id.to_string(),
            e.command_id.to_string(),
            "KEY-MRN-1".into(),
            "jane.doe".into(),
            "12-10".into(),
        ] {
            assert!(!text.contains(&secret), "{secret} in {text}");
        }
    }

    #[test]
    fn ages_above_89_are_90_plus() {
        assert_eq!(
            birth_year(&json!("1936-11-27"), "2026-11-26".parse().unwrap()),
            json!("1936")
        );
        assert_eq!(
            birth_year(&json!("1936-11-26"), "2026-11-26".parse().unwrap()),
            json!("90+")
        );
    }

    #[test]
    fn text_values_reasons_and_external_ids_are_dropped() {
        let ids = Pseudonyms::from_bytes(&[3u8; 32]);
        let e = env(
            "order",
            "ResultsCorrected",
            json!({"orderID": Uuid::new_v4(), "reason": "typo by J. Smith",
                   "results": [{"code": "HGB", "value": "<0.5", "unit": "g/dL", "flag": "L"},
                               {"code": "NOTE", "value": "call Mrs Smith", "flag": "A"}],
                   "previous": [{"code": "HGB", "value": 11.2, "unit": "g/dL"}]}),
        );
        let d = deidentify(&e, &ids).unwrap();
        let data = &d.body["data"];
        assert_eq!(data.get("reason"), None);
        assert_eq!(data["results"][0]["value"], "<0.5");
        assert_eq!(data["results"][1], json!({"code": "NOTE", "flag": "A"}));
        let e = env(
            "order",
            "ResultsRecorded",
            json!({"orderID": Uuid::new_v4(), "results": [{"code": "NOTE", "value": "0612345678"}]}),
        );
        let d = deidentify(&e, &ids).unwrap();
        assert_eq!(
            d.body["data"]["results"][0],
            json!({"code": "NOTE"}),
            "a text value stays out even when it looks like a number"
        );
        assert_eq!(data["previous"][0]["value"], 11.2);
        let e = env(
            "order",
            "OrderDetailsChanged",
            json!({"orderID": Uuid::new_v4(), "changes": {"externalOrderID": "EHR-1",
                   "collectedAt": "2026-11-20T08:30:00Z", "priority": "stat"}}),
        );
        let data = deidentify(&e, &ids).unwrap().body["data"].clone();
        assert_eq!(
            data["changes"],
            json!({"priority": "stat", "collectedYear": "2026"})
        );
        assert!(deidentify(&env("partner", "PartnerRegistered", json!({})), &ids).is_none());
    }
}
