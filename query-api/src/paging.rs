//! Pages of every paged read: the page size (`limit`) and the opaque cursor
//! that says where the previous page ended.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::validation::FieldError;
use uuid::Uuid;

/// The page size when a read gives none.
pub(crate) const DEFAULT_LIMIT: i64 = 50;

/// Where a page ended, as its cursor says it.
pub(crate) trait Cursor: Sized {
    /// The cursor's text before it is made opaque.
    fn to_text(&self) -> String;
    /// Reads that text back.
    fn from_text(s: &str) -> Option<Self>;
}

/// Lists: the last record's creation time and id.
impl Cursor for (DateTime<Utc>, Uuid) {
    fn to_text(&self) -> String {
        format!("{}/{}", self.0.timestamp_micros(), self.1)
    }

    fn from_text(s: &str) -> Option<Self> {
        let (micros, id) = s.split_once('/')?;
        Some((
            DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id.parse().ok()?,
        ))
    }
}

/// History: a version.
impl Cursor for i64 {
    fn to_text(&self) -> String {
        format!("n{self}")
    }

    fn from_text(s: &str) -> Option<Self> {
        s.strip_prefix('n')?.parse().ok()
    }
}

/// The access log: an entry's transaction and number.
impl Cursor for (u64, i64) {
    fn to_text(&self) -> String {
        format!("t{}:{}", self.0, self.1)
    }

    fn from_text(s: &str) -> Option<Self> {
        let (txid, id) = s.strip_prefix('t')?.split_once(':')?;
        Some((txid.parse().ok()?, id.parse().ok()?))
    }
}

/// The opaque form of a cursor.
pub(crate) fn encode<C: Cursor>(c: &C) -> String {
    URL_SAFE_NO_PAD.encode(c.to_text())
}

/// A cursor this API issued, or `None`.
pub(crate) fn decode<C: Cursor>(s: &str) -> Option<C> {
    C::from_text(&String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?)
}

/// Takes the parameter `name` when it is `limit` (1-500) or `cursor`,
/// noting a bad value in `errors`; `false` when it is neither.
pub(crate) fn param<C: Cursor>(
    name: &str,
    value: &str,
    limit: &mut i64,
    cursor: &mut Option<C>,
    errors: &mut Vec<FieldError>,
) -> bool {
    match name {
        "limit" => match value.parse::<i64>() {
            Ok(n) if (1..=500).contains(&n) => *limit = n,
            _ => errors.push(FieldError::new(
                name,
                "out_of_range",
                "must be an integer from 1 to 500",
            )),
        },
        "cursor" => match decode(value) {
            Some(c) => *cursor = Some(c),
            None => errors.push(FieldError::new(
                name,
                "invalid",
                "not a cursor this API issued",
            )),
        },
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_refuse_what_the_api_did_not_issue() {
        let at = (
            DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            Uuid::new_v4(),
        );
        assert_eq!(decode::<(DateTime<Utc>, Uuid)>(&encode(&at)), Some(at));
        assert_eq!(decode::<i64>(&encode(&42i64)), Some(42));
        assert_eq!(decode::<(u64, i64)>(&encode(&(7u64, 42i64))), Some((7, 42)));
        assert_eq!(decode::<i64>("not-a-cursor"), None);
        assert_eq!(decode::<(DateTime<Utc>, Uuid)>(&encode(&42i64)), None);
        let (mut limit, mut cursor, mut errors) = (DEFAULT_LIMIT, None::<i64>, Vec::new());
        assert!(param("limit", "501", &mut limit, &mut cursor, &mut errors));
        assert!(param("cursor", "x", &mut limit, &mut cursor, &mut errors));
        assert!(!param("color", "red", &mut limit, &mut cursor, &mut errors));
        assert_eq!(errors.len(), 2);
        assert_eq!(limit, DEFAULT_LIMIT);
    }
}
