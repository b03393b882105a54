//! Passwords: argon2id hashing (`cloakroom hash-password`) and the users file.

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// The argon2id PHC string of `password`, with a fresh random salt and
/// argon2's default (OWASP-recommended) cost.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the PHC string `phc`. Comparison of the
/// derived hashes is constant-time (inside argon2).
pub fn verify(password: &str, phc: &PasswordHash) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// Argon2's working memory (19 MiB at the default cost), kept between
/// checks. Allocating it afresh per check on whichever blocking thread runs
/// it leaves a copy cached in every thread's malloc arena: a stream of
/// failed logins grew the process by a gigabyte. Reusing a few buffers
/// bounds it to those few.
pub type Memory = Vec<argon2::Block>;

/// [`verify`], computed in `memory` (grown as the hash's cost needs).
/// The derived hashes are compared in constant time.
pub fn verify_in(password: &str, phc: &PasswordHash, memory: &mut Memory) -> bool {
    use subtle::ConstantTimeEq;
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(phc) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version.map(argon2::Version::try_from) {
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
        None => argon2::Version::default(),
    };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    let blocks = &mut memory[..params.block_count()];
    if argon
        .hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), &mut out, blocks)
        .is_err()
    {
        return false;
    }
    bool::from(out.ct_eq(expected.as_bytes()))
}

/// Users and their password hashes, from `auth.users_file`.
pub struct Users {
    hashes: HashMap<String, PasswordHash>,
    /// Verified against when the user is unknown, so that an unknown name
    /// costs the same time as a known one (no enumeration by timing).
    decoy: PasswordHash,
}

impl std::fmt::Debug for Users {
    // Hashes stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.hashes.len())
            .finish()
    }
}

impl Users {
    /// Reads a TOML table `name = "PHC string"`. The error says which user
    /// is wrong and why; the caller prefixes the key.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Users::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The user names, for comparing two versions of the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hashes.keys().map(String::as_str)
    }

    /// Whether `name` is a user.
    pub fn contains(&self, name: &str) -> bool {
        self.hashes.contains_key(name)
    }

    /// Parses the users file's text.
    pub fn parse(text: &str) -> Result<Users, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut hashes = HashMap::new();
        for (name, value) in table {
            let Some(phc) = value.as_str() else {
                return Err(format!("user {name:?}: expected a PHC string in quotes"));
            };
            let parsed = PasswordHash::new(phc)
                .map_err(|e| format!("user {name:?}: not a PHC string ({e})"))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(format!(
                    "user {name:?}: algorithm {} is not argon2id; use `cloakroom hash-password`",
                    parsed.algorithm
                ));
            }
            if !valid_user_name(&name) {
                return Err(format!(
                    "user {name:?}: names must be 1-256 printable characters without control characters"
                ));
            }
            hashes.insert(name, parsed);
        }
        let decoy_text =
            hash("decoy password nobody has").map_err(|e| format!("decoy hash: {e}"))?;
        let decoy = PasswordHash::new(&decoy_text).map_err(|e| e.to_string())?;
        Ok(Users { hashes, decoy })
    }

    /// Whether `name` exists and `password` is theirs, computed in
    /// `memory`. Takes the same time for unknown names as for known ones.
    pub fn check(&self, name: &str, password: &str, memory: &mut Memory) -> bool {
        match self.hashes.get(name) {
            Some(phc) => verify_in(password, phc, memory),
            None => {
                let _ = verify_in(password, &self.decoy, memory);
                false
            }
        }
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// A user name that can travel in a header and be shown in a page.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_in_reused_memory_agrees_with_argon2() {
        let phc_text = hash("correct horse").unwrap();
        let phc = PasswordHash::new(&phc_text).unwrap();
        let mut memory = Memory::new();
        for (password, want) in [
            ("correct horse", true),
            ("wrong", false),
            ("correct horse", true),
        ] {
            assert_eq!(verify_in(password, &phc, &mut memory), want, "{password}");
            assert_eq!(verify(password, &phc), want);
        }
        assert_eq!(memory.len(), 19 * 1024, "one 19 MiB buffer, reused");
    }

    #[test]
    fn hash_then_verify() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let users = Users::parse(&format!("alice = \"{phc}\"\n")).unwrap();
        assert!(users.check("alice", "correct horse", &mut Memory::new()));
        assert!(!users.check("alice", "wrong", &mut Memory::new()));
        assert!(!users.check("mallory", "correct horse", &mut Memory::new()));
        assert_eq!(users.len(), 1);
    }

    #[test]
    fn bad_users_files_say_which_user() {
        assert!(Users::parse("alice = 5").unwrap_err().contains("\"alice\""));
        assert!(Users::parse("bob = \"plain\"")
            .unwrap_err()
            .contains("not a PHC string"));
        let e = Users::parse("carol = \"$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"")
            .unwrap_err();
        assert!(e.contains("not argon2id"), "{e}");
    }
}
