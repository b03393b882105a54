//! [`SessionId`]: the ticket a visitor carries, and the [`Keys`] that sign it.
//!
//! An ID is 16 random bytes from the OS CSPRNG (128 bits), the second it was
//! issued (so a signed ID that holds nothing yet can be honoured without
//! storing it), and an HMAC-SHA-256 tag over both, truncated to 128 bits.
//! Its text is URL-safe base64 without padding (54 characters), fit for a
//! cookie value and a URL parameter alike.
//!
//! `SessionId` has no public constructor besides [`SessionId::generate`] and
//! [`Keys::verify`], so everything downstream (file names, store keys) only
//! ever sees IDs this proxy issued.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const NONCE_LEN: usize = 16;
const ISSUED_LEN: usize = 8;
const TAG_LEN: usize = 16;
const RAW_LEN: usize = NONCE_LEN + ISSUED_LEN + TAG_LEN;
/// Length of an ID's text form.
pub const TEXT_LEN: usize = (RAW_LEN * 4).div_ceil(3);
/// Domain separation: a tag made for another purpose never verifies as an ID.
const CONTEXT: &[u8] = b"cloakroom session id v1\0";
/// Smallest secret accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// A session ID this proxy issued and whose signature checked out.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    nonce: [u8; NONCE_LEN],
    issued: u64,
    text: String,
}

impl SessionId {
    /// A new ID, issued at `now_secs` (Unix seconds), signed with the newest key.
    pub fn generate(keys: &Keys, now_secs: u64) -> SessionId {
        let mut nonce = [0u8; NONCE_LEN];
        // The OS CSPRNG failing is not something a proxy can recover from;
        // issuing a predictable ID instead would be far worse.
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let mut raw = [0u8; RAW_LEN];
        raw[..NONCE_LEN].copy_from_slice(&nonce);
        raw[NONCE_LEN..NONCE_LEN + ISSUED_LEN].copy_from_slice(&now_secs.to_be_bytes());
        let tag = keys.tag(keys.newest(), &raw[..NONCE_LEN + ISSUED_LEN]);
        raw[NONCE_LEN + ISSUED_LEN..].copy_from_slice(&tag[..TAG_LEN]);
        SessionId {
            nonce,
            issued: now_secs,
            text: URL_SAFE_NO_PAD.encode(raw),
        }
    }

    /// The text that travels in the cookie or URL.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The random part, which names the session in stores.
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    /// Where the session lives in a store.
    pub fn key(&self) -> super::store::SessionKey {
        super::store::SessionKey::from_nonce(self.nonce)
    }

    /// When the ID was issued, in Unix seconds.
    pub fn issued(&self) -> u64 {
        self.issued
    }
}

impl fmt::Debug for SessionId {
    // Never print a whole live ID into logs: the first characters are enough
    // to correlate lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", &self.text[..8])
    }
}

/// The secrets IDs are signed with: the newest signs, every one verifies
/// (so a key can be rotated without logging everybody out).
#[derive(Clone)]
pub struct Keys {
    /// Newest first. Never empty.
    macs: Vec<HmacSha256>,
}

impl Keys {
    /// Keys from raw secrets, newest first; each at least [`MIN_KEY_LEN`] bytes.
    pub fn new(secrets: &[Vec<u8>]) -> Result<Keys, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Empty);
        }
        let macs = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.len() < MIN_KEY_LEN {
                    return Err(KeyError::TooShort { line: i + 1 });
                }
                HmacSha256::new_from_slice(s).map_err(|_| KeyError::TooShort { line: i + 1 })
            })
            .collect::<Result<_, _>>()?;
        Ok(Keys { macs })
    }

    /// Checks an ID's text in constant time against every key. `None` for
    /// anything malformed or not signed by one of our keys.
    pub fn verify(&self, text: &[u8]) -> Option<SessionId> {
        if text.len() != TEXT_LEN {
            return None;
        }
        // Room for the decoder's rounded-up estimate of 54 characters.
        let mut buf = [0u8; RAW_LEN + 2];
        let n = URL_SAFE_NO_PAD.decode_slice(text, &mut buf).ok()?;
        if n != RAW_LEN {
            return None;
        }
        let raw = &buf[..RAW_LEN];
        let (signed, tag) = raw.split_at(NONCE_LEN + ISSUED_LEN);
        // `verify_truncated_left` compares in constant time.
        let valid = self.macs.iter().any(|mac| {
            let mut mac = mac.clone();
            mac.update(CONTEXT);
            mac.update(signed);
            mac.verify_truncated_left(tag).is_ok()
        });
        if !valid {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&signed[..NONCE_LEN]);
        let mut issued = [0u8; ISSUED_LEN];
        issued.copy_from_slice(&signed[NONCE_LEN..]);
        // Re-encode rather than trust the input's spelling: base64 has
        // non-canonical forms, and the stored text must be ours.
        Some(SessionId {
            nonce,
            issued: u64::from_be_bytes(issued),
            text: URL_SAFE_NO_PAD.encode(raw),
        })
        .filter(|id| id.text.as_bytes() == text)
    }

    fn newest(&self) -> &HmacSha256 {
        &self.macs[0]
    }

    fn tag(&self, mac: &HmacSha256, signed: &[u8]) -> [u8; 32] {
        let mut mac = mac.clone();
        mac.update(CONTEXT);
        mac.update(signed);
        mac.finalize().into_bytes().into()
    }

    /// A keyed tag over `parts` for other purposes (e.g. CSRF tokens), made
    /// with the newest key under its own `purpose` label.
    pub fn derive(&self, purpose: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.newest().clone();
        mac.update(purpose);
        mac.update(b"\0");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Reads the key file: one URL-safe base64 secret per line, newest
    /// first; blank lines and `#` comments are ignored. When the file does
    /// not exist, a new secret is generated and written with mode 0600.
    pub fn load_or_create(path: &Path) -> Result<Keys, KeyError> {
        if !path.exists() {
            create_key_file(path)?;
        }
        warn_if_readable_by_others(path);
        Keys::load(path)
    }

    /// The keys of an existing key file (what `cloakroom check` reads).
    pub fn load(path: &Path) -> Result<Keys, KeyError> {
        let text = std::fs::read_to_string(path).map_err(KeyError::Io)?;
        let secrets = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, line)| {
                URL_SAFE_NO_PAD
                    .decode(line.trim_end_matches('='))
                    .map_err(|_| KeyError::NotBase64 { line: i + 1 })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Keys::new(&secrets)
    }
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or creating the file failed.
    #[error("{0}")]
    Io(std::io::Error),
    /// The file holds no key.
    #[error("holds no key")]
    Empty,
    /// A key is shorter than 32 bytes.
    #[error("key {line} is shorter than {MIN_KEY_LEN} bytes")]
    TooShort {
        /// Which key (1 = the newest).
        line: usize,
    },
    /// A key line is not URL-safe base64.
    #[error("key {line} is not URL-safe base64")]
    NotBase64 {
        /// Which key (1 = the newest).
        line: usize,
    },
}

fn create_key_file(path: &Path) -> Result<(), KeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Io(std::io::Error::other(e)))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        // Another instance created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(KeyError::Io(e)),
    };
    writeln!(
        file,
        "# cloakroom session keys: newest first, one URL-safe base64 secret per line.\n{}",
        URL_SAFE_NO_PAD.encode(secret)
    )
    .and_then(|()| file.sync_all())
    .map_err(KeyError::Io)?;
    tracing::info!(path = %path.display(), "generated a new session key (mode 0600)");
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the session key file is readable by others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> Keys {
        Keys::new(&[vec![byte; 32]]).unwrap()
    }

    #[test]
    fn generated_ids_verify_and_are_distinct() {
        let k = keys(1);
        let a = SessionId::generate(&k, 1_700_000_000);
        let b = SessionId::generate(&k, 1_700_000_000);
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), TEXT_LEN);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        let back = k.verify(a.as_str().as_bytes()).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.issued(), 1_700_000_000);
        assert_eq!(a.key().hex().len(), 32);
    }

    #[test]
    fn tampered_foreign_and_malformed_ids_do_not_verify() {
        let k = keys(1);
        let id = SessionId::generate(&k, 5);
        let text = id.as_str().as_bytes();
        for i in 0..text.len() {
            let mut bad = text.to_vec();
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert!(k.verify(&bad).is_none(), "flipped byte {i} verified");
        }
        assert!(keys(2).verify(text).is_none(), "verified under another key");
        for bad in [
            &b""[..],
            b"x",
            &text[..TEXT_LEN - 1],
            b"\xff\xfe",
            &[b'='; TEXT_LEN],
        ] {
            assert!(k.verify(bad).is_none());
        }
    }

    #[test]
    fn rotation_signs_with_the_newest_and_verifies_with_all() {
        let old = keys(1);
        let issued_before = SessionId::generate(&old, 5);
        let rotated = Keys::new(&[vec![2; 32], vec![1; 32]]).unwrap();
        assert!(rotated.verify(issued_before.as_str().as_bytes()).is_some());
        let issued_after = SessionId::generate(&rotated, 5);
        assert!(old.verify(issued_after.as_str().as_bytes()).is_none());
        assert!(keys(2).verify(issued_after.as_str().as_bytes()).is_some());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            Keys::new(&[vec![1; 31]]),
            Err(KeyError::TooShort { line: 1 })
        ));
        assert!(matches!(Keys::new(&[]), Err(KeyError::Empty)));
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloakroom.key");
        let first = Keys::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let id = SessionId::generate(&first, 1);
        let again = Keys::load_or_create(&path).unwrap();
        assert!(again.verify(id.as_str().as_bytes()).is_some());
    }
}
