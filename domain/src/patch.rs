//! JSON merge patch (RFC 7396) field states, and the serde helper for
//! "changed to null" in events.

use serde::{Deserialize, Deserializer};

/// The state of one field in a merge patch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    /// The field was not in the patch: leave it alone.
    #[default]
    Absent,
    /// The field was `null`: remove it.
    Null,
    /// The field was given a value.
    Set(T),
}

impl<T> Patch<T> {
    /// Whether the patch mentions the field at all.
    pub fn is_present(&self) -> bool {
        !matches!(self, Patch::Absent)
    }

    /// Maps the value of a `Set`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Absent => Patch::Absent,
            Patch::Null => Patch::Null,
            Patch::Set(v) => Patch::Set(f(v)),
        }
    }
}

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or
/// a value (`Some(Some(v))`). Use with `#[serde(default)]`.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}
