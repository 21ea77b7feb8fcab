//! Keyed pseudonyms for the de-identified analytics stream: a record id
//! becomes an HMAC-SHA-256 of it under a per-installation key, shown as a
//! UUID. The same record always gets the same pseudonym; without the key
//! the pseudonym cannot be turned back into the id (nor computed from it).

use std::path::Path;

use ring::hmac;
use uuid::Uuid;

use crate::keyfile::{KeyError, KeyKind};

/// The analytics pseudonym key's file.
pub const ANALYTICS_KEY: KeyKind = KeyKind {
    what: "analytics pseudonym key",
    var: "LIS_ANALYTICS_KEY_FILE",
    len: 32,
};

/// What kind of id a pseudonym stands for: ids of different kinds never
/// share a pseudonym, even when equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A patient (`patientID`, a patient stream).
    Patient,
    /// A patient's portal account.
    Account,
    /// An order.
    Order,
    /// An event (`eventID`).
    Event,
}

impl IdKind {
    fn label(self) -> &'static [u8] {
        match self {
            IdKind::Patient => b"patient",
            IdKind::Account => b"account",
            IdKind::Order => b"order",
            IdKind::Event => b"event",
        }
    }
}

/// The key that makes pseudonyms.
pub struct Pseudonyms(hmac::Key);

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonyms(***)")
    }
}

impl Pseudonyms {
    /// From raw key bytes.
    pub fn from_bytes(key: &[u8]) -> Self {
        Pseudonyms(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// Loads the key from its file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Ok(Self::from_bytes(&crate::keyfile::load(
            path,
            ANALYTICS_KEY,
        )?))
    }

    /// The pseudonym of `id`, a UUID (version 8: custom).
    pub fn of(&self, kind: IdKind, id: Uuid) -> Uuid {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(kind.label());
        ctx.update(b":");
        ctx.update(id.as_bytes());
        let tag = ctx.sign();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&tag.as_ref()[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_kind_specific() {
        let id = Uuid::new_v4();
        let a = Pseudonyms::from_bytes(&[1u8; 32]);
        let b = Pseudonyms::from_bytes(&[2u8; 32]);
        assert_eq!(a.of(IdKind::Patient, id), a.of(IdKind::Patient, id));
        assert_ne!(a.of(IdKind::Patient, id), id);
        assert_ne!(a.of(IdKind::Patient, id), b.of(IdKind::Patient, id));
        assert_ne!(a.of(IdKind::Patient, id), a.of(IdKind::Order, id));
        assert_eq!(a.of(IdKind::Order, id).get_version_num(), 8);
    }
}
