//! Session variables for the application (`session.app_values`): what
//! PHP's `$_SESSION` gives a script, through headers any language can read
//! and write.
//!
//! - Every forwarded request of a session with values carries
//!   `X-Cloakroom-Session: name=value&…` (form-encoded, names sorted).
//! - The application answers with `X-Cloakroom-Session-Set: name=value&…`
//!   to store values and `X-Cloakroom-Session-Unset: name, name` to remove
//!   them (several header lines allowed; the removals first, then the sets,
//!   in order).
//! - A name is 1–64 of `[A-Za-z0-9_-]`; a session holds at most
//!   [`MAX_VALUES`] values and [`MAX_BYTES`] as the request header carries
//!   them. A change that breaks any rule (a bad name, bad encoding, over a
//!   limit) is refused whole and logged; the earlier values stay and the
//!   response is still delivered.
//!
//! The values live in [`crate::session::Session::app`], apart from the
//! proxy's own values (CSRF, URL mode's cookie jar), which no header can
//! reach. Clients can neither send these headers (every spelling is
//! stripped, see [`crate::identity`]) nor see them (the response's copies
//! are always removed).

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The request header carrying the session's values to the application.
pub static VALUES_HEADER: HeaderName = HeaderName::from_static("x-cloakroom-session");
/// The response header with values to store.
pub static SET_HEADER: HeaderName = HeaderName::from_static("x-cloakroom-session-set");
/// The response header naming values to remove.
pub static UNSET_HEADER: HeaderName = HeaderName::from_static("x-cloakroom-session-unset");

/// Most values one session holds.
pub const MAX_VALUES: usize = 64;
/// Most bytes of a session's values, form-encoded as the request carries them.
pub const MAX_BYTES: usize = 8 * 1024;
/// Longest name.
pub const MAX_NAME: usize = 64;

/// What the application asked for in one response.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    unset: Vec<String>,
    set: Vec<(String, String)>,
}

/// Why a change was refused (the log says which).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A name that is empty, too long or has a character outside `[A-Za-z0-9_-]`.
    #[error("bad value name {0:?} (1-64 of A-Z a-z 0-9 _ -)")]
    Name(String),
    /// A header that is not form encoding of UTF-8 text.
    #[error("not form-encoded UTF-8")]
    Encoding,
    /// More than [`MAX_VALUES`] values.
    #[error("more than {MAX_VALUES} values")]
    TooMany,
    /// More than [`MAX_BYTES`].
    #[error("more than {MAX_BYTES} bytes of values")]
    TooBig,
}

impl Change {
    /// Removes the control headers from a response and reads them. `None`:
    /// the response asked for nothing.
    pub fn take(headers: &mut HeaderMap) -> Option<Result<Change, Refused>> {
        if !headers.contains_key(&SET_HEADER) && !headers.contains_key(&UNSET_HEADER) {
            return None;
        }
        let set: Vec<HeaderValue> = headers.get_all(&SET_HEADER).iter().cloned().collect();
        let unset: Vec<HeaderValue> = headers.get_all(&UNSET_HEADER).iter().cloned().collect();
        headers.remove(&SET_HEADER);
        headers.remove(&UNSET_HEADER);
        Some(Change::read(&set, &unset))
    }

    fn read(set: &[HeaderValue], unset: &[HeaderValue]) -> Result<Change, Refused> {
        let mut change = Change::default();
        for value in unset {
            let text = value.to_str().map_err(|_| Refused::Encoding)?;
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                change.unset.push(checked_name(name)?);
            }
        }
        for value in set {
            let text = value.to_str().map_err(|_| Refused::Encoding)?;
            for pair in text.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let name = checked_name(&decode(name.trim())?)?;
                change.set.push((name, decode(value)?));
            }
        }
        Ok(change)
    }

    /// Applies the change to `values`, or leaves them as they were when
    /// the result would break a limit. Returns whether anything changed.
    pub fn apply(self, values: &mut BTreeMap<String, String>) -> Result<bool, Refused> {
        let mut next = values.clone();
        for name in &self.unset {
            next.remove(name);
        }
        for (name, value) in self.set {
            next.insert(name, value);
        }
        if next.len() > MAX_VALUES {
            return Err(Refused::TooMany);
        }
        if encoded_len(&next) > MAX_BYTES {
            return Err(Refused::TooBig);
        }
        let changed = next != *values;
        *values = next;
        Ok(changed)
    }
}

/// The request header's value for `values`; none when there are none.
pub fn header_value(values: &BTreeMap<String, String>) -> Option<HeaderValue> {
    if values.is_empty() {
        return None;
    }
    let text = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(values)
        .finish();
    HeaderValue::from_str(&text).ok()
}

/// Whether `values` are within a session's limits.
pub fn within_limits(values: &BTreeMap<String, String>) -> bool {
    values.len() <= MAX_VALUES && encoded_len(values) <= MAX_BYTES
}

fn encoded_len(values: &BTreeMap<String, String>) -> usize {
    header_value(values).map_or(0, |v| v.len())
}

fn checked_name(name: &str) -> Result<String, Refused> {
    let ok = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(Refused::Name(name.chars().take(80).collect()))
    }
}

/// Form decoding (`+` is a space) of UTF-8 text; anything else is refused
/// rather than guessed at.
fn decode(text: &str) -> Result<String, Refused> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Refused::Encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(set: &[&str], unset: &[&str]) -> Result<Change, Refused> {
        let values = |v: &[&str]| -> Vec<HeaderValue> {
            v.iter()
                .map(|s| HeaderValue::from_str(s).unwrap())
                .collect()
        };
        Change::read(&values(set), &values(unset))
    }

    #[test]
    fn values_round_trip_through_the_headers() {
        let mut values = BTreeMap::new();
        let c = change(
            &[
                "note=hi%20there&cart=4",
                "odd=a%26b%3Dc+d&utf=%C3%A9t%C3%A9",
            ],
            &[],
        )
        .unwrap();
        assert!(c.apply(&mut values).unwrap());
        assert_eq!(values["note"], "hi there");
        assert_eq!(values["odd"], "a&b=c d");
        assert_eq!(values["utf"], "été");
        let header = header_value(&values).unwrap();
        let back: BTreeMap<String, String> = url::form_urlencoded::parse(header.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(back, values);
        change(&[], &["cart, note", "odd"])
            .unwrap()
            .apply(&mut values)
            .unwrap();
        assert_eq!(values.keys().collect::<Vec<_>>(), ["utf"]);
    }

    #[test]
    fn a_bad_change_is_refused_whole() {
        for (set, unset) in [
            (vec!["ok=1&bad.name=2"], vec![]),
            (vec!["=novalue"], vec![]),
            (vec![], vec!["white space"]),
            (vec!["x=%FF"], vec![]),
        ] {
            assert!(change(&set, &unset).is_err(), "{set:?} {unset:?}");
        }
        let long = "n".repeat(65);
        assert!(change(&[&format!("{long}=1")], &[]).is_err());
    }

    #[test]
    fn limits_keep_the_earlier_values() {
        let mut values = BTreeMap::from([("keep".to_owned(), "me".to_owned())]);
        let many: Vec<String> = (0..64).map(|i| format!("v{i}=1")).collect();
        let refused = change(&[&many.join("&")], &[]).unwrap().apply(&mut values);
        assert_eq!(refused, Err(Refused::TooMany));
        let big = format!("big={}", "x".repeat(MAX_BYTES));
        let refused = change(&[&big], &[]).unwrap().apply(&mut values);
        assert_eq!(refused, Err(Refused::TooBig));
        assert_eq!(values.len(), 1);
        assert_eq!(values["keep"], "me");
        // Unsetting makes room in the same change.
        let swap = change(&[&many[..63].join("&")], &["keep"]).unwrap();
        assert!(swap.apply(&mut values).is_ok());
        assert_eq!(values.len(), 63);
    }
}
