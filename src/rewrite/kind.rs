//! What a browser makes of a response body in URL mode, judged before the
//! body is relayed: rewritable HTML, something no browser renders as a
//! document with links (an image, plain text, JSON…), or something the
//! rewriter cannot make safe.
//!
//! A page the rewriter passes through untouched keeps its own `<meta
//! name=referrer>`, `ping=` and links, which send the address (and the
//! ticket in it) elsewhere. So the rule is an allowlist, and everything
//! else fails closed: a body is relayed unrewritten only when its one
//! `Content-Type` names a format browsers never render as markup. Missing,
//! repeated or comma-joined `Content-Type`s (a browser sniffs or picks one
//! of them), XML and SVG documents, multipart bodies, and HTML in a
//! charset or content coding the rewriter cannot read are replaced by a
//! short notice.

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::body::{charset, Charset, Coding};

/// The verdict on one response body.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// No body a browser shows (HEAD, 204, 304, a redirect, an empty body).
    Nothing,
    /// HTML the rewriter reads: its coding and character set.
    Html(Coding, Charset),
    /// A format no browser renders as a document with links or policies.
    Inert,
    /// Cannot be made safe; the reason, for the log.
    Unsafe(&'static str),
}

/// Judges a response with `status` and `headers` (`head`: the request
/// was HEAD).
pub fn of(status: StatusCode, headers: &HeaderMap, head: bool) -> Kind {
    let empty = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    let followed = status.is_redirection() && headers.contains_key(header::LOCATION);
    if head
        || empty
        || followed
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Kind::Nothing;
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (types.next(), types.next()) else {
        return Kind::Unsafe("no single Content-Type (a browser would sniff or choose)");
    };
    let Ok(value) = value.to_str() else {
        return Kind::Unsafe("an unreadable Content-Type");
    };
    if value.contains(',') {
        return Kind::Unsafe("a Content-Type listing several types");
    }
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        // XHTML is parsed by browsers as XML, not as the rewriter reads it
        // (`<noscript>`, `<textarea>` and CDATA sections differ).
        "text/html" => match (Coding::of(headers), charset(headers)) {
            (Some(coding), Some(charset)) => Kind::Html(coding, charset),
            (None, _) => Kind::Unsafe("HTML in a content coding the rewriter cannot undo"),
            (_, None) => Kind::Unsafe("HTML in a charset the rewriter cannot read"),
        },
        t if inert(t) => Kind::Inert,
        _ => Kind::Unsafe("a format the rewriter cannot make safe (XML, SVG, multipart, unknown)"),
    }
}

/// Formats browsers show without markup of their own.
fn inert(essence: &str) -> bool {
    let (top, sub) = essence.split_once('/').unwrap_or((essence, ""));
    match top {
        "image" => sub != "svg+xml",
        "audio" | "video" | "font" => true,
        "text" => matches!(
            sub,
            "plain" | "css" | "csv" | "javascript" | "markdown" | "calendar"
        ),
        "application" => {
            matches!(
                sub,
                "json"
                    | "javascript"
                    | "pdf"
                    | "octet-stream"
                    | "zip"
                    | "gzip"
                    | "wasm"
                    | "x-ndjson"
                    | "manifest+json"
                    | "problem+json"
            ) || (sub.ends_with("+json"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn kind(pairs: &[(&str, &str)]) -> Kind {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        of(StatusCode::OK, &h, false)
    }

    #[test]
    fn only_known_formats_pass_unrewritten() {
        assert!(matches!(
            kind(&[("content-type", "text/html; charset=utf-8")]),
            Kind::Html(..)
        ));
        for inert in [
            "image/png",
            "text/plain; charset=utf-8",
            "application/json",
            "video/mp4",
            "text/css",
        ] {
            assert_eq!(kind(&[("content-type", inert)]), Kind::Inert, "{inert}");
        }
        for unsafe_ in [
            vec![],
            vec![("content-type", "text/xml")],
            vec![("content-type", "application/xml")],
            vec![("content-type", "application/xhtml+xml")],
            vec![("content-type", "image/svg+xml")],
            vec![("content-type", "unknown/unknown")],
            vec![("content-type", "multipart/x-mixed-replace; boundary=x")],
            vec![("content-type", "text/plain, text/html")],
            vec![
                ("content-type", "text/plain"),
                ("content-type", "text/html"),
            ],
            vec![("content-type", "text/html; charset=utf-16le")],
            vec![("content-type", "text/html; charset=bogus")],
            vec![("content-type", "text/html; charset=iso-2022-jp")],
            vec![
                ("content-type", "text/html"),
                ("content-encoding", "gzip, gzip"),
            ],
        ] {
            assert!(matches!(kind(&unsafe_), Kind::Unsafe(_)), "{unsafe_:?}");
        }
    }

    #[test]
    fn bodies_no_browser_shows_pass() {
        let mut h = HeaderMap::new();
        assert_eq!(of(StatusCode::NO_CONTENT, &h, false), Kind::Nothing);
        assert_eq!(of(StatusCode::OK, &h, true), Kind::Nothing);
        h.insert(header::LOCATION, HeaderValue::from_static("/x"));
        assert_eq!(of(StatusCode::FOUND, &h, false), Kind::Nothing);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert_eq!(of(StatusCode::OK, &h, false), Kind::Nothing);
    }
}
