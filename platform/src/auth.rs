//! Partner credentials and access checks.
//!
//! Secrets are random, shown once, and stored only as Argon2id hashes in the
//! write-side `partners` table. Access tokens are Ed25519-signed JWTs
//! ([`crate::token`]). The per-request check (`contract::caller`) reads
//! the partner's current access (disabled flag, secret version,
//! permissions, scope) through [`crate::access_cache`], so a change takes
//! effect on the next request, not when a token expires.

use std::collections::BTreeSet;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use domain::access::Permission;
use rand::RngCore;

use crate::config::Secret;

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
}
