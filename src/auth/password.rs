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

    /// Whether `name` exists and `password` is theirs. Takes the same time
    /// for unknown names as for known ones.
    pub fn check(&self, name: &str, password: &str) -> bool {
        match self.hashes.get(name) {
            Some(phc) => verify(password, phc),
            None => {
                let _ = verify(password, &self.decoy);
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
    fn hash_then_verify() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let users = Users::parse(&format!("alice = \"{phc}\"\n")).unwrap();
        assert!(users.check("alice", "correct horse"));
        assert!(!users.check("alice", "wrong"));
        assert!(!users.check("mallory", "correct horse"));
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
