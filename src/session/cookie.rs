//! The session cookie: finding ours among the client's cookies, removing it
//! before the request goes upstream, and writing `Set-Cookie`.
//!
//! `Cookie` headers are parsed as bytes, tolerantly (RFC 6265 §5.4 is what
//! browsers send, but clients send worse): other cookies, duplicates of ours,
//! odd spacing, quoted values and non-UTF-8 bytes never fail a request.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::header::{self, HeaderMap, HeaderValue};

/// How the session cookie is written (`session.*` keys).
#[derive(Debug, Clone)]
pub struct CookieSpec {
    /// `session.name`.
    pub name: String,
    /// `session.cookie_path`.
    pub path: String,
    /// `session.cookie_domain`; `None` = host-only.
    pub domain: Option<String>,
    /// `session.same_site`.
    pub same_site: SameSite,
    /// `session.secure`.
    pub secure: bool,
}

/// Every value of a cookie called `name`, in the order the client sent them.
pub fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            let (n, v) = split_pair(pair)?;
            (n == name.as_bytes()).then_some(v)
        })
}

/// Removes every cookie called `name` from the `Cookie` headers, keeping the
/// others byte for byte and in order; drops the header when none is left.
pub fn strip(headers: &mut HeaderMap, name: &str) {
    if !values(headers, name).any(|_| true) {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let trimmed = trim(pair);
            if trimmed.is_empty() {
                continue;
            }
            if matches!(split_pair(pair), Some((n, _)) if n == name.as_bytes()) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(trimmed);
        }
    }
    headers.remove(header::COOKIE);
    if kept.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::from_bytes(&kept) {
        headers.insert(header::COOKIE, value);
    }
}

/// `name=value` → (name, value), both trimmed, the value unquoted.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|b| *b == b'=')?;
    let name = trim(&pair[..eq]);
    let mut value = trim(&pair[eq + 1..]);
    if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
        value = &value[1..value.len() - 1];
    }
    Some((name, value))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

impl CookieSpec {
    /// `Set-Cookie` carrying `value`; `max_age` makes it persistent
    /// (remember-me), `None` makes it die with the browser.
    pub fn set(&self, value: &str, max_age: Option<Duration>, tls: bool) -> HeaderValue {
        let mut cookie = Cookie::build((self.name.as_str(), value))
            .http_only(true)
            .same_site(self.same_site)
            .path(self.path.as_str())
            .secure(tls || self.secure || self.same_site == SameSite::None);
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.as_str());
        }
        if let Some(age) = max_age {
            let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
            cookie = cookie.max_age(cookie::time::Duration::seconds(secs));
        }
        header_value(cookie.build())
    }

    /// `Set-Cookie` that makes the browser forget the session cookie.
    pub fn expire(&self) -> HeaderValue {
        let mut cookie = Cookie::build((self.name.as_str(), ""))
            .http_only(true)
            .same_site(self.same_site)
            .path(self.path.as_str())
            .secure(self.secure || self.same_site == SameSite::None)
            .max_age(cookie::time::Duration::ZERO);
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.as_str());
        }
        header_value(cookie.build())
    }
}

fn header_value(cookie: Cookie<'_>) -> HeaderValue {
    // Names, paths and domains were checked as tokens when the config was
    // loaded, and values are our own base64 IDs, so this cannot fail.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn found(h: &HeaderMap) -> Vec<&[u8]> {
        values(h, "CLOAKROOMSID").collect()
    }

    #[test]
    fn finds_ours_among_others_in_order() {
        let h = headers(&[
            b"a=1;CLOAKROOMSID=first ;  b = 2",
            b"CLOAKROOMSID=\"second\"; cloakroomsid=other-case; XCLOAKROOMSID=no",
        ]);
        assert_eq!(found(&h), [&b"first"[..], b"second"]);
    }

    #[test]
    fn odd_input_never_fails() {
        for raw in [
            &b""[..],
            b";;;",
            b"=",
            b"CLOAKROOMSID",
            b"CLOAKROOMSID=",
            b"\xff\xfe=\x80; CLOAKROOMSID=\xc3\x28",
            b"CLOAKROOMSID=\"",
        ] {
            let mut h = headers(&[raw]);
            let _ = found(&h);
            strip(&mut h, "CLOAKROOMSID");
        }
        let h = headers(&[b"\xff=1; CLOAKROOMSID=\xc3\x28"]);
        assert_eq!(found(&h), [&b"\xc3\x28"[..]]);
    }

    #[test]
    fn strip_keeps_the_rest_byte_for_byte() {
        let mut h = headers(&[b"a=1; CLOAKROOMSID=x;b=\"q q\"", b"CLOAKROOMSID=y; c=\xe9"]);
        strip(&mut h, "CLOAKROOMSID");
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE].as_bytes(), b"a=1; b=\"q q\"; c=\xe9");

        let mut only_ours = headers(&[b"CLOAKROOMSID=x", b" CLOAKROOMSID=y ;"]);
        strip(&mut only_ours, "CLOAKROOMSID");
        assert!(only_ours.get(header::COOKIE).is_none());

        let mut none_of_ours = headers(&[b"a=1;b=2"]);
        strip(&mut none_of_ours, "CLOAKROOMSID");
        assert_eq!(
            none_of_ours[header::COOKIE],
            "a=1;b=2",
            "untouched when ours is absent"
        );
    }

    #[test]
    fn set_cookie_attributes() {
        let spec = CookieSpec {
            name: "CLOAKROOMSID".into(),
            path: "/".into(),
            domain: None,
            same_site: SameSite::Lax,
            secure: false,
        };
        let v = spec.set("abc", None, false);
        let v = v.to_str().unwrap();
        assert!(v.starts_with("CLOAKROOMSID=abc"), "{v}");
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(v.contains(attr), "{attr} missing: {v}");
        }
        assert!(!v.contains("Max-Age") && !v.contains("Secure") && !v.contains("Domain"));

        let secure = CookieSpec {
            secure: true,
            domain: Some("example.com".into()),
            ..spec.clone()
        };
        let v = secure.set("abc", Some(Duration::from_secs(86400)), false);
        let v = v.to_str().unwrap();
        for attr in ["Secure", "Max-Age=86400", "Domain=example.com"] {
            assert!(v.contains(attr), "{attr} missing: {v}");
        }
        assert!(spec.expire().to_str().unwrap().contains("Max-Age=0"));
    }
}
