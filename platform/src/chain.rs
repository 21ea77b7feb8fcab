//! Tamper evidence for the event log.
//!
//! The relay, which already walks the event store in commit order, links
//! every event into two hash chains as it publishes: one over the whole log
//! (`log_hash[n] = SHA-256(log_hash[n-1] ‖ event_hash)`, in publication
//! order) and one per stream (the same over the stream's versions). An
//! event's hash is the SHA-256 of its published body, so the store, the
//! Kafka copy and the chain can be checked against each other. Now and then
//! the relay signs the head of the log chain with an Ed25519 key that lives
//! in a file, never in the database, and publishes the signed checkpoint to
//! the `lis.chain.v1` topic. Whoever can write to Postgres can change events
//! and recompute the chain to match, but cannot sign a checkpoint for it.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keyfile::{KeyError, KeyKind};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash before the first event of a chain.
pub const GENESIS: Hash = [0; 32];

/// The chain signing key's file.
pub const CHAIN_KEY: KeyKind = KeyKind {
    what: "chain signing key",
    var: "LIS_CHAIN_KEY_FILE",
    len: 32,
};

/// The hash of an event: SHA-256 of its published body.
pub fn event_hash(payload: &[u8]) -> Hash {
    Sha256::digest(payload).into()
}

/// The next link of a chain.
pub fn link(prev: &Hash, event: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(event);
    h.finalize().into()
}

/// One event's place in the chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linked {
    /// Its sequence number in the log chain, from 1.
    pub seq: i64,
    /// The event's own hash.
    pub event: Hash,
    /// Its stream's chain after it.
    pub stream: Hash,
    /// The log chain after it.
    pub log: Hash,
}

/// Links events into the log chain and into their streams' chains.
#[derive(Debug, Clone)]
pub struct Linker {
    seq: i64,
    head: Hash,
    streams: std::collections::HashMap<uuid::Uuid, Hash>,
}

impl Linker {
    /// A chain holding `seq` events, whose hash after the last is `head`
    /// (`0` and [`GENESIS`] for an empty one).
    pub fn new(seq: i64, head: Hash) -> Self {
        Linker {
            seq,
            head,
            streams: Default::default(),
        }
    }

    /// How many events the log chain holds, and its hash.
    pub fn head(&self) -> (i64, Hash) {
        (self.seq, self.head)
    }

    /// Goes on from another head (a verifier following a stored chain).
    pub fn set_head(&mut self, seq: i64, head: Hash) {
        self.seq = seq;
        self.head = head;
    }

    /// Tells the linker where `stream`'s chain stands (a stream it has not
    /// linked or been told of starts at [`GENESIS`]).
    pub fn knows(&mut self, stream: uuid::Uuid, hash: Hash) {
        self.streams.insert(stream, hash);
    }

    /// Forgets the streams' chains (the relay reloads those of each batch).
    pub fn forget_streams(&mut self) {
        self.streams.clear();
    }

    /// Links the event of `stream` whose hash is `event`.
    pub fn link_hash(&mut self, stream: uuid::Uuid, event: Hash) -> Linked {
        let prev = self.streams.get(&stream).copied().unwrap_or(GENESIS);
        let stream_hash = link(&prev, &event);
        self.streams.insert(stream, stream_hash);
        self.seq += 1;
        self.head = link(&self.head, &event);
        Linked {
            seq: self.seq,
            event,
            stream: stream_hash,
            log: self.head,
        }
    }

    /// Links the event of `stream` whose published body is `payload`.
    pub fn link(&mut self, stream: uuid::Uuid, payload: &[u8]) -> Linked {
        self.link_hash(stream, event_hash(payload))
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// What a signed checkpoint vouches for: the log chain's head after `seq`
/// events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// How many events the log chain held (the last one's sequence number).
    pub seq: i64,
    /// The log chain's hash after that event, in hex.
    pub log_hash: String,
    /// When it was signed (RFC 3339).
    pub signed_at: String,
    /// The signing key's id (see [`PublicKey::key_id`]).
    #[serde(rename = "keyID")]
    pub key_id: String,
}

/// A checkpoint with its Ed25519 signature over the checkpoint's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// What is signed.
    pub checkpoint: Checkpoint,
    /// The signature, base64.
    pub signature: String,
}

/// The private key that signs checkpoints (the relay's).
pub struct ChainKey(Ed25519KeyPair);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(***)")
    }
}

impl ChainKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: &[u8]) -> Option<Self> {
        Ed25519KeyPair::from_seed_unchecked(seed.get(..32)?)
            .ok()
            .map(ChainKey)
    }

    /// Loads the key from its file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        crate::keyfile::load_with(path, CHAIN_KEY, ChainKey::from_seed)
    }

    /// Creates a new key file unless one exists; whether it created one.
    pub fn create_file(path: &Path) -> std::io::Result<bool> {
        crate::keyfile::create(path, CHAIN_KEY)
    }

    /// The public half, for verifiers.
    pub fn public(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(k)
    }

    /// Signs the log chain's head after `seq` events.
    pub fn sign(&self, seq: i64, log_hash: &Hash) -> SignedCheckpoint {
        let checkpoint = Checkpoint {
            seq,
            log_hash: hex(log_hash),
            signed_at: crate::envelope::format_time(&chrono::Utc::now()),
            key_id: self.public().key_id(),
        };
        let bytes = serde_json::to_vec(&checkpoint).expect("checkpoints serialize");
        SignedCheckpoint {
            checkpoint,
            signature: STANDARD.encode(self.0.sign(&bytes).as_ref()),
        }
    }
}

/// A verifier's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses the hex form.
    pub fn parse(s: &str) -> Option<Self> {
        parse_hex(s.trim()).map(PublicKey)
    }

    /// The hex form.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// A short id: the first 8 bytes of the key's SHA-256, in hex.
    pub fn key_id(&self) -> String {
        hex(&Sha256::digest(self.0)[..8])
    }

    /// Whether `s` was signed by this key, as it stands.
    pub fn verifies(&self, s: &SignedCheckpoint) -> bool {
        let Ok(signature) = STANDARD.decode(&s.signature) else {
            return false;
        };
        let Ok(bytes) = serde_json::to_vec(&s.checkpoint) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(&bytes, &signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_as_signed_and_with_its_key() {
        let key = ChainKey::from_seed(&[7u8; 32]).unwrap();
        let other = ChainKey::from_seed(&[8u8; 32]).unwrap();
        let head = link(&GENESIS, &event_hash(b"{}"));
        let signed = key.sign(1, &head);
        assert!(key.public().verifies(&signed));
        assert!(!other.public().verifies(&signed));
        let mut moved = signed.clone();
        moved.checkpoint.seq = 2;
        assert!(!key.public().verifies(&moved));
        let mut rehashed = signed;
        rehashed.checkpoint.log_hash = hex(&GENESIS);
        assert!(!key.public().verifies(&rehashed));
    }

    #[test]
    fn the_linker_chains_the_log_and_each_stream() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let mut l = Linker::new(0, GENESIS);
        let first = l.link(a, b"1");
        let other = l.link(b, b"2");
        let second = l.link(a, b"3");
        assert_eq!((first.seq, other.seq, second.seq), (1, 2, 3));
        assert_eq!(first.stream, link(&GENESIS, &event_hash(b"1")));
        assert_eq!(second.stream, link(&first.stream, &event_hash(b"3")));
        assert_eq!(other.stream, link(&GENESIS, &event_hash(b"2")));
        assert_eq!(second.log, link(&other.log, &event_hash(b"3")));
        assert_eq!(l.head(), (3, second.log));
    }

    #[test]
    fn a_chain_depends_on_every_event_and_their_order() {
        let (a, b) = (event_hash(b"a"), event_hash(b"b"));
        let ab = link(&link(&GENESIS, &a), &b);
        let ba = link(&link(&GENESIS, &b), &a);
        assert_ne!(ab, ba);
        assert_eq!(parse_hex(&hex(&ab)), Some(ab));
        assert_eq!(parse_hex("zz"), None);
    }
}
