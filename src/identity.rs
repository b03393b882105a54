//! The identity header: the only thing the upstream learns about the
//! session, and the one header a client must never be able to forge.
//!
//! Every client-sent header whose name equals the identity header's, in any
//! case and with `_` in place of `-`, is removed, logged in or not (many
//! frameworks, CGI among them, map `X_Forwarded_User` and
//! `X-Forwarded-User` to the same variable). Only then, for a logged-in
//! session, is the header set. The upstream-control headers are removed
//! from requests too, so an upstream that echoes request headers cannot be
//! made to log anyone in, and so are the forwarding headers a client could
//! use to claim an address, scheme, host or route
//! ([`crate::forwarded::CLIENT_CLAIMS`]), in all their spellings.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Response header with which the upstream logs the session in as a user.
pub static LOGIN_HEADER: HeaderName = HeaderName::from_static("x-cloakroom-login");
/// Response header with which the upstream ends the session.
pub static LOGOUT_HEADER: HeaderName = HeaderName::from_static("x-cloakroom-logout");

/// Headers other proxies and SSO gateways use to name the user. An
/// application may have been written for one of them; a client must never
/// be able to send it one (lowercase, `-` form).
pub const IDENTITY_CLAIMS: &[&str] = &[
    "remote-user",
    "x-remote-user",
    "x-user",
    "x-auth-user",
    "x-authenticated-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-webauth-user",
    "x-remote-email",
    "x-cloakroom-assertion",
];

/// The proxy's own headers to the application: a client never sends them
/// (lowercase, `-` form).
pub const OWN_HEADERS: &[&str] = &[
    "x-cloakroom-session",
    "x-cloakroom-session-set",
    "x-cloakroom-session-unset",
];

/// The identity header and the spellings of it that must be stripped.
pub struct Identity {
    header: HeaderName,
    /// Lowercase, `_` folded to `-`.
    folded: Vec<u8>,
    /// Other configured headers only the proxy sets (the assertion's), folded.
    also: Vec<Vec<u8>>,
}

impl Identity {
    /// For the configured header name (checked when the config was loaded),
    /// and `also` the other configured headers only the proxy may set.
    pub fn new(name: &str, also: &[&str]) -> Option<Identity> {
        let header = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let folded = fold(header.as_str().as_bytes());
        let also = also
            .iter()
            .map(|n| fold(n.to_ascii_lowercase().as_bytes()))
            .collect();
        Some(Identity {
            header,
            folded,
            also,
        })
    }

    /// Removes every client-sent spelling of the identity header, the
    /// upstream-control headers and the forwarding claims, then sets the
    /// identity header for `user`, if any.
    pub fn apply(&self, headers: &mut HeaderMap, user: Option<&str>) {
        let doomed = |name: &HeaderName| {
            let name = trimmed(name.as_str().as_bytes());
            same_folded(name, &self.folded)
                || self.also.iter().any(|a| same_folded(name, a))
                || same_folded(name, LOGIN_HEADER.as_str().as_bytes())
                || same_folded(name, LOGOUT_HEADER.as_str().as_bytes())
                || crate::forwarded::CLIENT_CLAIMS
                    .iter()
                    .chain(IDENTITY_CLAIMS)
                    .chain(OWN_HEADERS)
                    .any(|claim| same_folded(name, claim.as_bytes()))
        };
        // The common case, nothing to strip, allocates nothing.
        if headers.keys().any(doomed) {
            let names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
            for name in names {
                headers.remove(&name);
            }
        }
        if let Some(value) = user.and_then(|u| HeaderValue::from_str(u).ok()) {
            headers.insert(self.header.clone(), value);
        }
    }
}

/// What the upstream asked of the session in its response.
#[derive(Debug, PartialEq, Eq)]
pub enum UpstreamCommand {
    /// Log the session in as this user.
    Login(String),
    /// End the session.
    Logout,
}

/// Removes the upstream-control headers from a response, returning what
/// they asked for (the caller decides whether to honour it).
pub fn take_upstream_command(headers: &mut HeaderMap) -> Option<UpstreamCommand> {
    let login = headers.remove(&LOGIN_HEADER);
    let logout = headers.remove(&LOGOUT_HEADER);
    // Logout wins when both are sent: ending a session is always safe.
    if logout.is_some_and(|v| v.as_bytes().trim_ascii() == b"1") {
        return Some(UpstreamCommand::Logout);
    }
    let user = login?.to_str().ok()?.trim().to_owned();
    crate::auth::password::valid_user_name(&user).then_some(UpstreamCommand::Login(user))
}

/// `name` (lowercase, as hyper stores names) equals `folded` with every
/// byte that is not a letter or digit read as `-`: CGI and PHP turn `_`,
/// `.` and any other punctuation in a header name into `_`, so
/// `X.Forwarded.User` reaches a PHP script as `HTTP_X_FORWARDED_USER`.
fn same_folded(name: &[u8], folded: &[u8]) -> bool {
    name.len() == folded.len() && name.iter().zip(folded).all(|(a, b)| fold_byte(*a) == *b)
}

/// `name` without leading and trailing punctuation (`X-Forwarded-User.`
/// is compared as `X-Forwarded-User`).
fn trimmed(name: &[u8]) -> &[u8] {
    let start = name
        .iter()
        .position(u8::is_ascii_alphanumeric)
        .unwrap_or(name.len());
    let end = name
        .iter()
        .rposition(u8::is_ascii_alphanumeric)
        .map_or(start, |i| i + 1);
    &name[start..end]
}

fn fold_byte(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// `name` lowercase with every byte that is not a letter or digit read as
/// `-`: how CGI-style servers see a header name (also how the
/// configuration checks that two names are the same header).
pub(crate) fn fold(name: &[u8]) -> Vec<u8> {
    name.iter().map(|b| fold_byte(*b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_is_stripped_and_the_real_one_set() {
        let id = Identity::new("X-Forwarded-User", &[]).unwrap();
        let mut h = HeaderMap::new();
        for name in [
            "x-forwarded-user",
            "x_forwarded_user",
            "X_Forwarded-User",
            "x-cloakroom-login",
            "x_original_url",
            "X-Real-IP",
            "forwarded",
            "x_forwarded_for",
            "x.forwarded.user",
            "X-Forwarded-User.",
            "Remote-User",
            "x_remote_user",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("mallory"),
            );
        }
        h.append("x-forwarded-user", HeaderValue::from_static("eve"));
        h.insert("x-forwarded-users", HeaderValue::from_static("kept"));
        id.apply(&mut h, None);
        assert!(h.get("x-forwarded-user").is_none());
        assert!(h.get("x_forwarded_user").is_none());
        assert!(h.get("x-cloakroom-login").is_none());
        assert!(h.get("x_original_url").is_none() && h.get("x-real-ip").is_none());
        assert!(h.get("forwarded").is_none() && h.get("x_forwarded_for").is_none());
        assert!(h.get("x.forwarded.user").is_none() && h.get("remote-user").is_none());
        assert!(h.get("x_remote_user").is_none());
        assert_eq!(h["x-forwarded-users"], "kept");

        h.insert("x_forwarded_user", HeaderValue::from_static("mallory"));
        id.apply(&mut h, Some("alice"));
        assert_eq!(
            h.get_all("x-forwarded-user").iter().collect::<Vec<_>>(),
            ["alice"]
        );
        assert!(h.get("x_forwarded_user").is_none());
    }

    #[test]
    fn upstream_commands() {
        let mut h = HeaderMap::new();
        h.insert(&LOGIN_HEADER, HeaderValue::from_static(" alice "));
        assert_eq!(
            take_upstream_command(&mut h),
            Some(UpstreamCommand::Login("alice".into()))
        );
        assert!(h.is_empty());
        h.insert(&LOGIN_HEADER, HeaderValue::from_static("alice"));
        h.insert(&LOGOUT_HEADER, HeaderValue::from_static("1"));
        assert_eq!(take_upstream_command(&mut h), Some(UpstreamCommand::Logout));
        h.insert(&LOGOUT_HEADER, HeaderValue::from_static("0"));
        assert_eq!(take_upstream_command(&mut h), None);
        h.insert(&LOGIN_HEADER, HeaderValue::from_static(""));
        assert_eq!(take_upstream_command(&mut h), None);
    }
}
