//! Bearer tokens: made at random, stored only as SHA-256 hex, compared in
//! constant time. The operator token lives in `<data-dir>/operator.token`
//! (mode 0600, the token alone on one line).
//!
//! Never: log a token, store one in clear in the database, compare with `==`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh random token: 32 bytes, hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` hashes to `stored_hash`, in constant time. An empty stored
/// hash (a run not claimed yet) matches nothing.
pub fn token_matches(token: &str, stored_hash: &str) -> bool {
    if stored_hash.is_empty() {
        return false;
    }
    let got = hash_token(token);
    got.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is empty or not one token line")]
    Malformed { path: String },
}

/// Reads the operator token, creating it (0600) on first start.
pub fn load_or_create_operator_token(path: &Path) -> Result<String, TokenFileError> {
    let shown = path.display().to_string();
    match fs::read_to_string(path) {
        Ok(s) => {
            let t = s.trim();
            if t.is_empty() || t.contains(char::is_whitespace) {
                return Err(TokenFileError::Malformed { path: shown });
            }
            Ok(t.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = new_token();
            let tmp = path.with_extension("token.tmp");
            let write = || -> std::io::Result<()> {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                writeln!(f, "{token}")?;
                f.sync_all()?;
                fs::rename(&tmp, path)
            };
            write().map_err(|source| TokenFileError::Write {
                path: shown,
                source,
            })?;
            Ok(token)
        }
        Err(source) => Err(TokenFileError::Read {
            path: shown,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_hash_and_match() {
        let t = new_token();
        assert_eq!(t.len(), 64);
        let h = hash_token(&t);
        assert!(token_matches(&t, &h));
        assert!(!token_matches("nope", &h));
        assert!(!token_matches("", ""));
        assert_ne!(new_token(), t);
    }

    #[test]
    fn operator_token_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.token");
        let a = load_or_create_operator_token(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{a}\n"));
        assert_eq!(load_or_create_operator_token(&path).unwrap(), a);
        fs::write(&path, "two words\n").unwrap();
        assert!(load_or_create_operator_token(&path).is_err());
    }
}
