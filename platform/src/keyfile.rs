//! Secret key files of an installation (the token signing key, the chain
//! signing key, the analytics pseudonym key): random bytes generated once,
//! kept as base64 text in a file only its owner can read, never in the
//! database or the repository.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;

/// A key file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file is missing or unreadable.
    #[error("cannot read the {what} at {path}: {source} (run `lis up`, or set {var})")]
    Read {
        /// Which key.
        what: &'static str,
        /// The variable naming its file.
        var: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a usable key.
    #[error("the {what} at {path} is not valid base64 of at least {len} bytes")]
    Invalid {
        /// Which key.
        what: &'static str,
        /// The file.
        path: String,
        /// The shortest usable key.
        len: usize,
    },
}

/// Which key a file holds, for messages.
#[derive(Debug, Clone, Copy)]
pub struct KeyKind {
    /// Its name (`token signing key`).
    pub what: &'static str,
    /// The environment variable that names its file.
    pub var: &'static str,
    /// How many random bytes a new key has (and an old one at least).
    pub len: usize,
}

/// Loads the key bytes from `path`.
pub fn load(path: &Path, kind: KeyKind) -> Result<Vec<u8>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        what: kind.what,
        var: kind.var,
        path: path.display().to_string(),
        source,
    })?;
    STANDARD
        .decode(text.trim())
        .ok()
        .filter(|b| b.len() >= kind.len)
        .ok_or_else(|| KeyError::Invalid {
            what: kind.what,
            path: path.display().to_string(),
            len: kind.len,
        })
}

/// Loads the key in `path` and makes it usable with `parse` (a file whose
/// bytes `parse` refuses is [`KeyError::Invalid`]).
pub fn load_with<K>(
    path: &Path,
    kind: KeyKind,
    parse: impl FnOnce(&[u8]) -> Option<K>,
) -> Result<K, KeyError> {
    parse(&load(path, kind)?).ok_or_else(|| KeyError::Invalid {
        what: kind.what,
        path: path.display().to_string(),
        len: kind.len,
    })
}

/// Creates a new random key file readable only by its owner, unless one
/// exists already. Returns whether it created one.
pub fn create(path: &Path, kind: KeyKind) -> std::io::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = generate(kind);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // create_new: of two processes creating the key at once, one writes it
    // and the other keeps it (a second key would replace the first).
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(STANDARD.encode(key).as_bytes())?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// A new random key of `kind`.
pub fn generate(kind: KeyKind) -> Vec<u8> {
    let mut key = vec![0u8; kind.len];
    rand::thread_rng().fill_bytes(&mut key);
    key
}

/// Replaces the key in `path` with `key` at once (a new file readable only
/// by its owner, renamed over the old one): a process that reads the file
/// meanwhile reads the old key or the new one, never a part.
pub fn replace(path: &Path, key: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let next = path.with_file_name(format!(".{name}.next"));
    let _ = std::fs::remove_file(&next);
    write_private(&next, STANDARD.encode(key).as_bytes())?;
    std::fs::rename(&next, path)
}

/// Writes a file readable and writable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)
}
