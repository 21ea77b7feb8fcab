//! Partner credentials and access checks.
//!
//! Secrets are random, shown once, and stored only as Argon2id hashes in the
//! write-side `partners` table. Access tokens are HS256 JWTs signed with a
//! per-installation key. The per-request check (`contract::caller`) reads
//! the partner's current access (disabled flag, secret version,
//! permissions, scope) through [`crate::access_cache`], so a change takes
//! effect on the next request, not when a token expires.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use domain::access::Permission;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Secret;

const ISSUER: &str = "lis";
const AUDIENCE: &str = "lis-partner-api";

/// Generates a new partner secret (256 random bits, URL-safe).
pub fn generate_secret() -> Secret<String> {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    Secret::new(format!("lis_sk_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Generates a new OAuth `client_id` for a partner (not a secret).
pub fn generate_client_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("lis_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Hashes a secret with Argon2id (PHC string).
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// Checks a secret against its stored hash. With `None` it hashes anyway, so
/// an unknown `client_id` takes as long as a wrong secret.
pub fn verify_secret(secret: &str, hash: Option<&str>) -> bool {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5VtWOO3cGWYQHEMaYGbsfQkq3tNYw3ZxjIhK1xNxQ5k";
    let parsed = PasswordHash::new(hash.unwrap_or(DUMMY));
    match parsed {
        Ok(h) => {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
                && hash.is_some()
        }
        Err(_) => false,
    }
}

/// How many Argon2id computations a process runs at once: each takes a
/// core and 19 MiB for tens of milliseconds, so more would only queue on
/// the cores and grow the heap (the allocator keeps each thread's blocks).
static ARGON2_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
});

/// Runs an Argon2id computation off the async threads, at most
/// [`ARGON2_SLOTS`] at once; `None` when the runtime is shutting down.
async fn argon2_off_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = ARGON2_SLOTS.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

/// [`hash_secret`] off the async threads, a few at a time.
pub async fn hash_secret_off_thread(secret: String) -> Option<String> {
    argon2_off_thread(move || hash_secret(&secret)).await
}

/// [`verify_secret`] off the async threads, a few at a time.
pub async fn verify_secret_off_thread(secret: String, hash: Option<String>) -> bool {
    argon2_off_thread(move || verify_secret(&secret, hash.as_deref()))
        .await
        .unwrap_or(false)
}

/// The token signing key of this installation.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(***)")
    }
}

/// The token signing key's file.
pub const TOKEN_KEY: crate::keyfile::KeyKind = crate::keyfile::KeyKind {
    what: "token signing key",
    var: "LIS_TOKEN_KEY_FILE",
    len: 64,
};

impl TokenKeys {
    /// Builds keys from raw key bytes (at least 32).
    pub fn from_bytes(key: &[u8]) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
        }
    }

    /// Loads the key from its file (base64 text).
    pub fn load(path: &Path) -> Result<Self, crate::keyfile::KeyError> {
        let bytes = crate::keyfile::load(path, TokenKeys::KIND)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The key file's kind (its shortest usable key is 32 bytes).
    const KIND: crate::keyfile::KeyKind = crate::keyfile::KeyKind {
        len: 32,
        ..TOKEN_KEY
    };

    /// Creates a new random key file readable only by its owner, unless one
    /// exists already. Returns whether it created one.
    pub fn create_file(path: &Path) -> std::io::Result<bool> {
        crate::keyfile::create(path, TOKEN_KEY)
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The partner id.
    pub sub: Uuid,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// Token id.
    pub jti: Uuid,
    /// The secret version the token was issued under; rotating the secret
    /// revokes older tokens.
    pub sv: i32,
    /// Space-separated permissions at issue time (informational; every
    /// request reads the current permissions).
    pub scope: String,
}

/// Issues an access token.
pub fn issue_token(
    keys: &TokenKeys,
    partner_id: Uuid,
    secret_version: i32,
    permissions: &BTreeSet<Permission>,
    ttl: Duration,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: partner_id,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat: now,
        exp: now + ttl.as_secs() as i64,
        jti: Uuid::new_v4(),
        sv: secret_version,
        scope: permissions
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
        .expect("HS256 encoding cannot fail")
}

/// Verifies a token's signature, issuer, audience and expiry.
pub fn verify_token(keys: &TokenKeys, token: &str) -> Option<Claims> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[AUDIENCE]);
    v.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &keys.decoding, &v)
        .ok()
        .map(|d| d.claims)
}

/// Parses stored permission names, skipping any this build does not know.
pub fn permissions_from_db(names: &[String]) -> BTreeSet<Permission> {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let s = generate_secret();
        let h = hash_secret(s.expose());
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains(s.expose().as_str()));
        assert!(verify_secret(s.expose(), Some(&h)));
        assert!(!verify_secret("wrong", Some(&h)));
        assert!(!verify_secret(s.expose(), None));
    }

    #[test]
    fn tokens_verify_only_with_their_key_and_before_expiry() {
        let keys = TokenKeys::from_bytes(&[7u8; 32]);
        let other = TokenKeys::from_bytes(&[8u8; 32]);
        let id = Uuid::new_v4();
        let t = issue_token(&keys, id, 3, &BTreeSet::new(), Duration::from_secs(60));
        let c = verify_token(&keys, &t).unwrap();
        assert_eq!((c.sub, c.sv), (id, 3));
        assert!(verify_token(&other, &t).is_none());
        let expired = issue_token(&keys, id, 3, &BTreeSet::new(), Duration::from_secs(0));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(verify_token(&keys, &expired).is_none());
        assert!(verify_token(&keys, "not.a.token").is_none());
    }
}
