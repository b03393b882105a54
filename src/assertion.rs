//! The signed identity assertion (`identity.assertion_header`): a
//! short-lived JWT the application can verify instead of trusting a header.
//!
//! - Claims: `sub` (the user), `aud` (`identity.assertion_audience`),
//!   `iat`, `exp` (`iat` + `identity.assertion_lifetime`) and `sid` (the
//!   session's keyed hash, the `id` the sessions API shows; never the
//!   session ID). Header: `alg` ES256, `typ` JWT, `kid` the key's RFC 7638
//!   thumbprint.
//! - Keys: `identity.assertion_key_file` holds one or more PEM PKCS#8 P-256
//!   private keys; the last one signs, all are published at
//!   `GET /.cloakroom/jwks.json`. A missing file is created with one new key
//!   (mode 0600). Rotation: append a new key, reload; remove the old one a
//!   token lifetime later.
//! - Cost: a token is signed once per session and reused until less than a
//!   fifth of its lifetime is left, so most requests pay one map lookup.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use dashmap::DashMap;
use http::header::{HeaderName, HeaderValue};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;

use crate::config::AssertionConfig;
use crate::session::store::SessionKey;

/// Tokens kept at most; past it, expired ones are dropped first, and if
/// that frees nothing a token is signed without being kept.
const MAX_CACHED: usize = 100_000;

/// Why the assertion keys cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("identity.assertion_key_file: {path}: {message}")]
pub struct KeyError {
    path: std::path::PathBuf,
    message: String,
}

/// The signer: keys, claims, the published key set and the token cache.
pub struct Assertion {
    header: HeaderName,
    audience: String,
    lifetime: u64,
    /// The newest key, which signs.
    signer: Signer,
    jwks: Bytes,
    cache: DashMap<SessionKey, Cached>,
}

struct Signer {
    kid: String,
    key: jsonwebtoken::EncodingKey,
}

struct Cached {
    user: String,
    token: HeaderValue,
    /// Unix seconds after which a new token is signed.
    renew_at: u64,
    expires_at: u64,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    sid: &'a str,
}

impl Assertion {
    /// Reads the key file and prepares the signer. A missing file is
    /// created with one new key when `create` (at start, or when the
    /// assertion is newly configured); on a reload a key file that has
    /// gone is an error, not a new key: every token already issued would
    /// stop verifying.
    pub fn open(cfg: &AssertionConfig, create: bool) -> Result<Assertion, KeyError> {
        let error = |message: String| KeyError {
            path: cfg.key_file.clone(),
            message,
        };
        if !cfg.key_file.exists() {
            if !create {
                return Err(error(
                    "missing (it is created only at start; restore it, or restart to begin with a new key)".to_owned(),
                ));
            }
            create_key_file(&cfg.key_file).map_err(error)?;
            tracing::info!(path = %cfg.key_file.display(), "created a new assertion signing key (several instances must share this file)");
        }
        warn_if_readable(&cfg.key_file);
        let (signer, published) = read_keys(&cfg.key_file).map_err(error)?;
        let jwks = serde_json::json!({ "keys": published }).to_string();
        Ok(Assertion {
            header: HeaderName::from_bytes(cfg.header.as_bytes())
                .map_err(|e| error(format!("identity.assertion_header: {e}")))?,
            audience: cfg.audience.clone(),
            lifetime: cfg.lifetime.as_secs().max(1),
            signer,
            jwks: Bytes::from(jwks),
            cache: DashMap::new(),
        })
    }

    /// Checks an existing key file without creating one (`cloakroom check`).
    pub fn check(cfg: &AssertionConfig) -> Result<(), KeyError> {
        if !cfg.key_file.exists() {
            return Ok(());
        }
        read_keys(&cfg.key_file)
            .map(|_| ())
            .map_err(|message| KeyError {
                path: cfg.key_file.clone(),
                message,
            })
    }

    /// The request header the token travels in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The public keys, as a JWKS document.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The token for `user` in the session at `key`, at `now` (Unix
    /// seconds): the cached one while it has more than a fifth of its life
    /// left, else a new one. `sid` names the session in the token (called
    /// only when signing).
    pub fn token(
        &self,
        key: SessionKey,
        user: &str,
        now: u64,
        sid: impl FnOnce() -> String,
    ) -> Option<HeaderValue> {
        if let Some(cached) = self.cache.get(&key) {
            if cached.user == user && now < cached.renew_at {
                return Some(cached.token.clone());
            }
        }
        let exp = now.saturating_add(self.lifetime);
        let sid = sid();
        let claims = Claims {
            sub: user,
            aud: &self.audience,
            iat: now,
            exp,
            sid: &sid,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.signer.kid.clone());
        let token = match jsonwebtoken::encode(&header, &claims, &self.signer.key) {
            Ok(token) => token,
            Err(error) => {
                tracing::error!(%error, "signing the identity assertion failed");
                return None;
            }
        };
        let token = HeaderValue::from_str(&token).ok()?;
        if self.cache.len() >= MAX_CACHED {
            self.purge(now);
        }
        if self.cache.len() < MAX_CACHED {
            self.cache.insert(
                key,
                Cached {
                    user: user.to_owned(),
                    token: token.clone(),
                    renew_at: exp.saturating_sub(self.lifetime / 5),
                    expires_at: exp,
                },
            );
        }
        Some(token)
    }

    /// Forgets tokens that have expired at `now` (Unix seconds).
    pub fn purge(&self, now: u64) {
        self.cache.retain(|_, c| c.expires_at > now);
    }
}

/// The newest key (the signer) and every key's JWK.
fn read_keys(path: &Path) -> Result<(Signer, Vec<serde_json::Value>), String> {
    let ders: Vec<PrivatePkcs8KeyDer<'static>> = PrivatePkcs8KeyDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let rng = ring::rand::SystemRandom::new();
    let mut published = Vec::new();
    let mut newest = None;
    for (n, der) in ders.iter().enumerate() {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| format!("key {}: not a P-256 key ({e})", n + 1))?;
        let (jwk, kid) = public_jwk(pair.public_key().as_ref());
        published.push(jwk);
        newest = Some(Signer {
            kid,
            key: jsonwebtoken::EncodingKey::from_ec_der(der.secret_pkcs8_der()),
        });
    }
    let signer = newest.ok_or("no PRIVATE KEY (PKCS#8) block in the file")?;
    Ok((signer, published))
}

/// The JWK of a P-256 public key (uncompressed point `04 || X || Y`) and
/// its RFC 7638 thumbprint, used as the key ID.
fn public_jwk(point: &[u8]) -> (serde_json::Value, String) {
    let (x, y) = point
        .get(1..)
        .unwrap_or(&[])
        .split_at(point.len().saturating_sub(1) / 2);
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    // RFC 7638 §3.2: the required members, sorted, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ));
    let jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
    });
    (jwk, kid)
}

/// Writes one new P-256 key, PEM PKCS#8, readable by the owner only.
fn create_key_file(path: &Path) -> Result<(), String> {
    use std::io::Write;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| e.to_string())?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| e.to_string())
}

fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            tracing::warn!(path = %path.display(), "the assertion key file is readable by others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(dir: &Path) -> AssertionConfig {
        AssertionConfig {
            header: "X-Cloakroom-Assertion".into(),
            audience: "https://app.example".into(),
            key_file: dir.join("assertion.key"),
            lifetime: Duration::from_secs(300),
        }
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let first = Assertion::open(&cfg, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&cfg.key_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Assertion::open(&cfg, true).unwrap();
        assert_eq!(first.jwks(), again.jwks(), "the key changed on reopening");
    }

    #[test]
    fn tokens_are_reused_until_a_fifth_of_their_life_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let a = Assertion::open(&config(dir.path()), true).unwrap();
        let key = SessionKey::from_nonce([7; 16]);
        let t0 = a.token(key, "alice", 1000, || "sid".into()).unwrap();
        assert_eq!(a.token(key, "alice", 1239, || "sid".into()).unwrap(), t0);
        assert_ne!(a.token(key, "alice", 1240, || "sid".into()).unwrap(), t0);
        assert_ne!(a.token(key, "bob", 1241, || "sid".into()).unwrap(), t0);
        a.purge(2000);
        assert!(a.cache.is_empty());
    }
}
