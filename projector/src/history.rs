//! The history the read side keeps of every patient and order: one row per
//! event, with what it changed and the record as it stood after it. History
//! and as-of reads are served from these rows.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use platform::db::Cached;
use platform::envelope::Envelope;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Members of a representation that say when or how often it changed, or
/// embed another record: not part of what an event changed.
const NOT_CHANGES: [&str; 5] = ["version", "createdAt", "updatedAt", "account", "patient"];

/// The history rows of one batch, written together after it.
#[derive(Debug, Default)]
pub struct History {
    stream_ids: Vec<Uuid>,
    versions: Vec<i64>,
    stream_types: Vec<String>,
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    occurred: Vec<DateTime<Utc>>,
    actors: Vec<Value>,
    command_ids: Vec<Uuid>,
    keys: Vec<Option<String>>,
    changes: Vec<Value>,
    states: Vec<Value>,
}

impl History {
    /// Adds the row of `env`: the record's representation before it (none
    /// for the first event) and after it.
    pub fn record(&mut self, env: &Envelope, before: Option<&Value>, after: Value) {
        self.stream_ids.push(env.stream_id);
        self.versions.push(env.version);
        self.stream_types.push(env.stream_type.clone());
        self.event_ids.push(env.event_id);
        self.event_types.push(env.event_type.clone());
        self.occurred.push(env.occurred_at);
        self.actors
            .push(serde_json::to_value(&env.actor).unwrap_or(Value::Null));
        self.command_ids.push(env.command_id);
        self.keys.push(env.idempotency_key.clone());
        self.changes.push(changes(before, &after));
        self.states.push(after);
    }

    /// Writes the batch's rows. A row is written once per (stream, version):
    /// the projector's version gate keeps re-delivered events out, and the
    /// table refuses to change a row it has.
    pub async fn save(&self, tx: &Transaction<'_>) -> anyhow::Result<()> {
        if self.stream_ids.is_empty() {
            return Ok(());
        }
        tx.execute_cached(
            "INSERT INTO history (stream_id, version, stream_type, event_id, event_type, occurred_at, \
             actor, command_id, idempotency_key, changes, state) \
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::text[], \
             $6::timestamptz[], $7::jsonb[], $8::uuid[], $9::text[], $10::jsonb[], $11::jsonb[])",
            &[
                &self.stream_ids,
                &self.versions,
                &self.stream_types,
                &self.event_ids,
                &self.event_types,
                &self.occurred,
                &self.actors,
                &self.command_ids,
                &self.keys,
                &self.changes,
                &self.states,
            ],
        )
        .await?;
        Ok(())
    }
}

/// What changed between two representations of a record, as
/// `[{"field", "from", "to"}]` in the order of `after`'s members, with nested
/// objects compared member by member (`address.city`); a member that is
/// absent or null on one side is `null` there.
pub fn changes(before: Option<&Value>, after: &Value) -> Value {
    let empty = Map::new();
    let before = before.and_then(Value::as_object).unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let mut out = Vec::new();
    diff("", before, after, &mut out);
    Value::Array(out)
}

fn diff(
    prefix: &str,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    out: &mut Vec<Value>,
) {
    let names = after
        .keys()
        .chain(before.keys().filter(|k| !after.contains_key(*k)));
    for name in names {
        if prefix.is_empty() && NOT_CHANGES.contains(&name.as_str()) {
            continue;
        }
        let (b, a) = (
            before.get(name).unwrap_or(&Value::Null),
            after.get(name).unwrap_or(&Value::Null),
        );
        if a == b {
            continue;
        }
        let field = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match (b, a) {
            (Value::Object(b), Value::Object(a)) => diff(&field, b, a, out),
            _ => out.push(json!({"field": field, "from": b, "to": a})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_event_sets_every_member_it_has() {
        let after = json!({"patientID": "p", "firstName": "Ada", "email": null, "version": 1,
            "address": {"city": "London"}});
        assert_eq!(
            changes(None, &after),
            json!([
                {"field": "patientID", "from": null, "to": "p"},
                {"field": "firstName", "from": null, "to": "Ada"},
                {"field": "address", "from": null, "to": {"city": "London"}},
            ])
        );
    }

    #[test]
    fn a_change_names_each_member_it_changed_and_nothing_else() {
        let before = json!({"firstName": "Ada", "lastName": "L", "phone": "1", "version": 1,
            "updatedAt": "a", "address": {"city": "London", "country": "GB"}, "patient": {"x": 1}});
        let after = json!({"firstName": "Ada", "lastName": "King", "version": 2, "updatedAt": "b",
            "address": {"city": "Leeds", "country": "GB"}, "patient": {"x": 2}});
        assert_eq!(
            changes(Some(&before), &after),
            json!([
                {"field": "lastName", "from": "L", "to": "King"},
                {"field": "address.city", "from": "London", "to": "Leeds"},
                {"field": "phone", "from": "1", "to": null},
            ])
        );
    }

    #[test]
    fn nothing_changed_is_an_empty_list() {
        let v = json!({"status": "final", "results": [{"code": "HGB"}]});
        assert_eq!(changes(Some(&v), &v), json!([]));
    }
}
