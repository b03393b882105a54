//! The upstream's cookies, kept for a client that refuses them (URL mode).
//!
//! A client in URL mode throws away the application's `Set-Cookie`s too,
//! which would break the application's own state. So in URL mode the proxy
//! keeps them in the session, as a browser would (RFC 6265 §5.3: name and
//! path identify a cookie, `Max-Age` wins over `Expires`, an expired cookie
//! is deleted, the default path is the request's directory), and sends the
//! matching ones back to the application with later requests.

use serde::{Deserialize, Serialize};

use super::data::Session;

/// The key under which the jar lives in [`Session::values`].
const KEY: &str = "upstream_cookies";
/// Most cookies kept, and the largest one, as browsers limit them.
const MAX_COOKIES: usize = 50;
const MAX_COOKIE_BYTES: usize = 4096;

/// One kept cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    name: String,
    value: String,
    path: String,
    /// Unix ms; `None` lives as long as the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

/// The cookies the upstream set for one session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Jar {
    cookies: Vec<Kept>,
}

impl Jar {
    /// The jar kept in `session` (empty if none or unreadable).
    pub fn of(session: &Session) -> Jar {
        let cookies = session
            .values
            .get(KEY)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        Jar { cookies }
    }

    /// Writes the jar into `session`.
    pub fn store(&self, session: &mut Session) {
        if self.cookies.is_empty() {
            session.values.remove(KEY);
        } else if let Ok(text) = serde_json::to_string(&self.cookies) {
            session.values.insert(KEY.to_owned(), text);
        }
    }

    /// Takes in one `Set-Cookie` value sent for `request_path` at `now`.
    pub fn absorb(&mut self, set_cookie: &str, request_path: &str, now: u64) {
        if set_cookie.len() > MAX_COOKIE_BYTES {
            return;
        }
        let Ok(parsed) = cookie::Cookie::parse(set_cookie) else {
            return;
        };
        let path = match parsed.path() {
            Some(p) if p.starts_with('/') => p.to_owned(),
            _ => default_path(request_path),
        };
        let expires = match (parsed.max_age(), parsed.expires_datetime()) {
            (Some(age), _) => {
                let ms = u64::try_from(age.whole_milliseconds()).unwrap_or(0);
                Some(now.saturating_add(ms))
            }
            (None, Some(at)) => Some(
                u64::try_from(at.unix_timestamp())
                    .unwrap_or(0)
                    .saturating_mul(1000),
            ),
            (None, None) => None,
        };
        let (name, value) = (parsed.name().to_owned(), parsed.value().to_owned());
        let existing = self
            .cookies
            .iter()
            .position(|c| c.name == name && c.path == path);
        if expires.is_some_and(|at| at <= now) {
            // A deletion.
            if let Some(i) = existing {
                self.cookies.remove(i);
            }
            return;
        }
        if let Some(i) = existing {
            // Replaced in place: it keeps its place in the order (§5.3 11.3).
            self.cookies[i].value = value;
            self.cookies[i].expires = expires;
            return;
        }
        if self.cookies.len() >= MAX_COOKIES {
            self.cookies.remove(0);
        }
        self.cookies.push(Kept {
            name,
            value,
            path,
            expires,
        });
    }

    /// The `Cookie` header value for a request to `path` at `now`: longer
    /// paths first (RFC 6265 §5.4), expired cookies left out.
    pub fn header_for(&self, path: &str, now: u64) -> Option<String> {
        let mut matching: Vec<&Kept> = self
            .cookies
            .iter()
            .filter(|c| c.expires.is_none_or(|at| now < at) && path_matches(path, &c.path))
            .collect();
        if matching.is_empty() {
            return None;
        }
        matching.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        Some(
            matching
                .iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }
}

/// RFC 6265 §5.1.4: the directory of the request path.
fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => request_path[..i].to_owned(),
    }
}

/// RFC 6265 §5.1.4 path-match.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request.as_bytes().get(cookie.len()) == Some(&b'/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_expiry_and_deletion() {
        let mut jar = Jar::default();
        jar.absorb("sid=1; Path=/", "/login", 0);
        jar.absorb("cart=apple; Path=/shop", "/shop/add", 0);
        jar.absorb("pref=dark", "/app/settings/theme", 0);
        jar.absorb("short=1; Max-Age=10", "/", 0);
        assert_eq!(
            jar.header_for("/", 5_000).as_deref(),
            Some("sid=1; short=1")
        );
        assert_eq!(
            jar.header_for("/shop/list", 5_000).as_deref(),
            Some("cart=apple; sid=1; short=1")
        );
        assert_eq!(
            jar.header_for("/shopping", 20_000).as_deref(),
            Some("sid=1")
        );
        assert_eq!(
            jar.header_for("/app/settings/x", 20_000).as_deref(),
            Some("pref=dark; sid=1")
        );

        // Replace, then delete with Max-Age=0 and with a past Expires.
        jar.absorb("sid=2; Path=/", "/", 0);
        assert_eq!(jar.header_for("/", 0).as_deref(), Some("sid=2; short=1"));
        jar.absorb("sid=; Max-Age=0; Path=/", "/", 30_000);
        jar.absorb(
            "cart=; Path=/shop; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "/",
            30_000,
        );
        assert_eq!(jar.header_for("/shop/x", 30_000), None);
    }

    #[test]
    fn round_trips_through_the_session() {
        let mut jar = Jar::default();
        jar.absorb("a=1", "/", 0);
        let mut s = Session::new(0);
        jar.store(&mut s);
        assert_eq!(Jar::of(&s), jar);
        Jar::default().store(&mut s);
        assert!(s.values.is_empty());
    }

    #[test]
    fn garbage_is_ignored_and_the_jar_is_bounded() {
        let mut jar = Jar::default();
        jar.absorb("", "/", 0);
        jar.absorb(";;=", "/", 0);
        jar.absorb(&format!("big={}", "x".repeat(5000)), "/", 0);
        assert!(jar.is_empty());
        for i in 0..80 {
            jar.absorb(&format!("c{i}=v"), "/", 0);
        }
        assert_eq!(jar.cookies.len(), MAX_COOKIES);
    }
}
