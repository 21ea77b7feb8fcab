//! Partner access tokens: JWTs signed with Ed25519 (`EdDSA`).
//!
//! The private key is a per-installation key file (`LIS_TOKEN_KEY_FILE`)
//! that only the processes minting tokens (`/oauth/token`, the command
//! handler) load: a [`TokenSigner`]. Its public half is published in the
//! write schema's `token_keys` table; every API process verifies tokens
//! against that table's keys ([`TokenVerifier`], a copy in memory) and
//! serves them as a JWKS at `/.well-known/jwks.json`. A process that only
//! verifies cannot mint.
//!
//! Rotation ([`rotate`], `lis admin token-key rotate`) publishes a new key,
//! retires the others, then replaces the key file; a minting process picks
//! the new file up at its next token ([`SignerFile`]). A retired key stays
//! published, and its tokens valid, for the token lifetime plus
//! [`RETIRED_SLACK`], so that no token it signed is refused before it
//! expires.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use deadpool_postgres::Pool;
use domain::access::Permission;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::DbError;
use crate::keyfile::{KeyError, KeyKind};

const ISSUER: &str = "lis";
const AUDIENCE: &str = "lis-partner-api";

/// The token signing key's file: an Ed25519 seed (older installations'
/// 64-byte keys use their first 32 bytes).
pub const TOKEN_KEY: KeyKind = KeyKind {
    what: "token signing key",
    var: "LIS_TOKEN_KEY_FILE",
    len: 32,
};

/// How long past the token lifetime a retired key stays published: covers
/// a minting process that signs with the old file a moment after rotation.
pub const RETIRED_SLACK: Duration = Duration::from_secs(300);
/// How often a verifier reads the published keys when nothing asks sooner
/// (a retired key past its time stops verifying within this).
const REREAD: Duration = Duration::from_secs(60);
/// The least time between two reads for an unknown key id, so that tokens
/// naming made-up keys cannot make every request read Postgres.
const UNKNOWN_KID_REREAD: Duration = Duration::from_secs(1);
/// How many verified tokens a verifier remembers (partners reuse a token
/// for many calls; an Ed25519 check costs tens of microseconds, a lookup
/// well under one). Past this it forgets them all and starts again.
const VERIFIED_TOKENS: usize = 10_000;

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

/// The public half of a token signing key: its 32 bytes and its key id
/// (the RFC 7638 thumbprint of its JWK).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPublicKey {
    x: [u8; 32],
    kid: String,
}

impl std::fmt::Debug for TokenPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenPublicKey({})", self.kid)
    }
}

impl TokenPublicKey {
    /// The key of these 32 bytes.
    pub fn new(x: [u8; 32]) -> TokenPublicKey {
        // RFC 7638: the required members, in lexicographic order, no spaces.
        let canonical = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x)
        );
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        TokenPublicKey { x, kid }
    }

    /// Its key id (the `kid` of its tokens' header).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its JWK (RFC 8037).
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.x),
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }

    fn decoding(&self) -> DecodingKey {
        DecodingKey::from_ed_der(&self.x)
    }
}

/// An Ed25519 public key as a JWK (RFC 8037), as `GET /.well-known/jwks.json`
/// lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP`.
    #[schema(pattern = "^OKP$")]
    pub kty: String,
    /// `Ed25519`.
    #[schema(pattern = "^Ed25519$")]
    pub crv: String,
    /// The public key, base64url without padding (32 bytes).
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub x: String,
    /// The key's id, as tokens name it in their `kid` header.
    pub kid: String,
    /// `EdDSA`.
    #[schema(pattern = "^EdDSA$")]
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    #[schema(pattern = "^sig$")]
    pub use_: String,
}

/// A JWK Set (RFC 7517 section 5), as `GET /.well-known/jwks.json` serves it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// The private key that signs access tokens.
pub struct TokenSigner {
    encoding: EncodingKey,
    public: TokenPublicKey,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSigner({}, ***)", self.public.kid)
    }
}

/// PKCS#8 v1 of an Ed25519 private key: this prefix, then the 32-byte seed.
const PKCS8_ED25519: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl TokenSigner {
    /// The key of a seed (its first 32 bytes); `None` when shorter.
    pub fn from_seed(seed: &[u8]) -> Option<TokenSigner> {
        let seed = seed.get(..32)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).ok()?;
        let x: [u8; 32] = pair.public_key().as_ref().try_into().ok()?;
        let mut der = PKCS8_ED25519.to_vec();
        der.extend_from_slice(seed);
        Some(TokenSigner {
            encoding: EncodingKey::from_ed_der(&der),
            public: TokenPublicKey::new(x),
        })
    }

    /// Loads the key from its file.
    pub fn load(path: &Path) -> Result<TokenSigner, KeyError> {
        crate::keyfile::load_with(path, TOKEN_KEY, TokenSigner::from_seed)
    }

    /// Creates a new key file readable only by its owner, unless one exists
    /// already. Returns whether it created one.
    pub fn create_file(path: &Path) -> std::io::Result<bool> {
        crate::keyfile::create(path, TOKEN_KEY)
    }

    /// Its public half.
    pub fn public(&self) -> &TokenPublicKey {
        &self.public
    }

    /// Issues an access token.
    pub fn issue(
        &self,
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
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.public.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("signing with a valid Ed25519 key cannot fail")
    }
}

/// The signing key of a minting process, as its file holds it now: the
/// file is looked at before each token (one `stat`), and read again when
/// it changed, so a rotation takes effect without a restart. It tells
/// whether its key is known to be published: publish it before the first
/// token it signs (a rotation has published it, a process starting or a
/// file replaced by hand has not).
pub struct SignerFile {
    path: PathBuf,
    current: Mutex<Current>,
}

struct Current {
    modified: Option<SystemTime>,
    signer: Arc<TokenSigner>,
    published: bool,
}

impl SignerFile {
    /// Loads the key in `path`.
    pub fn load(path: &Path) -> Result<SignerFile, KeyError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(SignerFile {
            path: path.to_path_buf(),
            current: Mutex::new(Current {
                modified,
                signer: Arc::new(TokenSigner::load(path)?),
                published: false,
            }),
        })
    }

    /// The key to sign with: the file's, read again if it changed since
    /// (the key in hand if the new file does not load); and whether it is
    /// known to be published.
    pub fn signer(&self) -> (Arc<TokenSigner>, bool) {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if modified.is_some() && modified != current.modified {
            match TokenSigner::load(&self.path) {
                Ok(s) => {
                    tracing::info!(kid = s.public.kid(), "token signing key reloaded");
                    *current = Current {
                        modified,
                        signer: Arc::new(s),
                        published: false,
                    };
                }
                Err(e) => {
                    tracing::error!(error = %e, "the token signing key file changed and does not load; signing with the previous key")
                }
            }
        }
        (Arc::clone(&current.signer), current.published)
    }

    /// Notes that `key` is published.
    pub fn published(&self, key: &TokenPublicKey) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.signer.public == *key {
            current.published = true;
        }
    }
}

/// Publishes `key` (a no-op when it is published already).
pub async fn publish(
    db: &impl GenericClient,
    key: &TokenPublicKey,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "INSERT INTO token_keys (kid, public_key) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
        &[&key.kid, &key.x.as_slice()],
    )
    .await?;
    Ok(())
}

/// The keys that verify tokens now: every key not retired, and every key
/// retired less than `token_ttl` plus [`RETIRED_SLACK`] ago, newest first.
pub async fn published(
    db: &impl GenericClient,
    token_ttl: Duration,
) -> Result<Vec<TokenPublicKey>, tokio_postgres::Error> {
    let grace = (token_ttl + RETIRED_SLACK).as_secs_f64();
    let rows = db
        .query(
            "SELECT public_key FROM token_keys \
             WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1) \
             ORDER BY published_at DESC, kid",
            &[&grace],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let x: &[u8] = r.get(0);
            Some(TokenPublicKey::new(x.try_into().ok()?))
        })
        .collect())
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Postgres failed; nothing changed.
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// The new key is published but its file could not be written; the
    /// old key still signs (run the rotation again).
    #[error("the new key is published but {path} could not be replaced: {source}")]
    File {
        /// The key file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Rotates the token signing key in `path`: publishes a new key and
/// retires the others in one transaction, then replaces the file. Tokens
/// signed by a retired key stay valid until they expire.
pub async fn rotate(
    db: &mut tokio_postgres::Client,
    path: &Path,
) -> Result<TokenPublicKey, RotateError> {
    let seed = crate::keyfile::generate(TOKEN_KEY);
    let signer = TokenSigner::from_seed(&seed).expect("a generated seed has 32 bytes");
    let tx = db.transaction().await?;
    publish(&tx, signer.public()).await?;
    tx.execute(
        "UPDATE token_keys SET retired_at = now() WHERE retired_at IS NULL AND kid <> $1",
        &[&signer.public.kid],
    )
    .await?;
    tx.commit().await?;
    crate::keyfile::replace(path, &seed).map_err(|source| RotateError::File {
        path: path.display().to_string(),
        source,
    })?;
    Ok(signer.public)
}

/// Verifies a token against `key`: signature, issuer, audience, expiry.
fn verify_with(key: &DecodingKey, token: &str) -> Option<Claims> {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[AUDIENCE]);
    v.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, key, &v)
        .ok()
        .map(|d| d.claims)
}

/// The published keys, as a verifier holds them.
#[derive(Default)]
struct Keyring {
    keys: Vec<TokenPublicKey>,
    decoding: HashMap<String, DecodingKey>,
    read_at: Option<Instant>,
}

/// Verifies access tokens against the published keys, kept in memory.
/// The keys are read again every minute, and when a token names a key id
/// the copy lacks (after a rotation). A token's signature is checked once:
/// its claims are remembered, and used again while the token has not
/// expired and its key is still published. Clones share one copy.
#[derive(Clone)]
pub struct TokenVerifier {
    write: Pool,
    token_ttl: Duration,
    ring: Arc<RwLock<Arc<Keyring>>>,
    reading: Arc<tokio::sync::Mutex<()>>,
    verified: Arc<Mutex<HashMap<String, Verified>>>,
}

/// A token whose signature was checked: its key and claims.
#[derive(Clone)]
struct Verified {
    kid: String,
    claims: Claims,
}

impl TokenVerifier {
    /// A verifier reading the keys through `write` (the write schema);
    /// tokens live `token_ttl`.
    pub fn new(write: Pool, token_ttl: Duration) -> TokenVerifier {
        TokenVerifier {
            write,
            token_ttl,
            ring: Arc::default(),
            reading: Arc::default(),
            verified: Arc::default(),
        }
    }

    fn copy(&self) -> Arc<Keyring> {
        Arc::clone(&self.ring.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The keys, read again when the copy is older than [`REREAD`], or
    /// when it lacks `kid` (a key published since: a rotation). Reads for
    /// unknown key ids are at least [`UNKNOWN_KID_REREAD`] apart: a token
    /// of a new key waits for that at most once, and tokens naming made-up
    /// keys cost Postgres one read a second.
    async fn keys(&self, kid: Option<&str>) -> Result<Arc<Keyring>, DbError> {
        let knows = |ring: &Keyring| kid.is_none_or(|k| ring.decoding.contains_key(k));
        let fresh = |ring: &Keyring| ring.read_at.is_some_and(|at| at.elapsed() < REREAD);
        let ring = self.copy();
        if fresh(&ring) && knows(&ring) {
            return Ok(ring);
        }
        let _one = self.reading.lock().await;
        let ring = self.copy();
        if fresh(&ring) && knows(&ring) {
            return Ok(ring);
        }
        if let Some(at) = ring.read_at.filter(|_| fresh(&ring)) {
            tokio::time::sleep_until(at + UNKNOWN_KID_REREAD).await;
        }
        let started = Instant::now();
        let keys = published(&**self.write.get().await?, self.token_ttl).await?;
        let fresh = Arc::new(Keyring {
            decoding: keys.iter().map(|k| (k.kid.clone(), k.decoding())).collect(),
            keys,
            read_at: Some(started),
        });
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// The token's claims when a published key signed it (`EdDSA`, with
    /// its `kid`) and it is valid now; `None` otherwise.
    pub async fn verify(&self, token: &str) -> Result<Option<Claims>, DbError> {
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        if let Some(v) = known {
            let ring = self.keys(Some(&v.kid)).await?;
            let live = v.claims.exp >= chrono::Utc::now().timestamp();
            return Ok((live && ring.decoding.contains_key(&v.kid)).then_some(v.claims));
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        let (Algorithm::EdDSA, Some(kid)) = (header.alg, header.kid) else {
            return Ok(None);
        };
        let ring = self.keys(Some(&kid)).await?;
        let Some(claims) = ring
            .decoding
            .get(&kid)
            .and_then(|key| verify_with(key, token))
        else {
            return Ok(None);
        };
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        let v = Verified {
            kid,
            claims: claims.clone(),
        };
        verified.insert(token.to_string(), v);
        Ok(Some(claims))
    }

    /// The published keys as a JWKS (RFC 7517).
    pub async fn jwks(&self) -> Result<JwkSet, DbError> {
        let ring = self.keys(None).await?;
        Ok(JwkSet {
            keys: ring.keys.iter().map(TokenPublicKey::jwk).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_their_key_and_before_expiry() {
        let signer = TokenSigner::from_seed(&[7u8; 32]).unwrap();
        let other = TokenSigner::from_seed(&[8u8; 32]).unwrap();
        let key = signer.public().decoding();
        let id = Uuid::new_v4();
        let t = signer.issue(id, 3, &BTreeSet::new(), Duration::from_secs(60));
        let c = verify_with(&key, &t).unwrap();
        assert_eq!((c.sub, c.sv), (id, 3));
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(signer.public().kid()));
        assert!(verify_with(&other.public().decoding(), &t).is_none());
        let expired = signer.issue(id, 3, &BTreeSet::new(), Duration::from_secs(0));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(verify_with(&key, &expired).is_none());
        assert!(verify_with(&key, "not.a.token").is_none());
    }

    #[test]
    fn the_key_id_is_the_rfc_7638_thumbprint() {
        // RFC 8037, appendix A.3: the thumbprint of the example key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = TokenPublicKey::new(x.try_into().unwrap());
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let jwk = serde_json::to_value(key.jwk()).unwrap();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none(), "no private part");
    }

    #[test]
    fn a_seed_gives_the_same_key_as_ring() {
        // RFC 8032, test 1: this seed's public key.
        let hex = crate::chain::parse_hex;
        let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let signer = TokenSigner::from_seed(&seed).unwrap();
        assert_eq!(
            Some(signer.public().x),
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        assert!(TokenSigner::from_seed(&seed[..31]).is_none());
    }
}
