//! Links and URLs for clients in URL mode: which links may carry the
//! session ID, and how it is added to them, removed from them, or read.
//!
//! The one rule that must never break: the ID goes only into links that a
//! browser would send back to this very origin (scheme, host and port).
//! Links are resolved the way browsers resolve them (WHATWG URL parsing via
//! the `url` crate, against the document's URL or its `<base href>`), so
//! `//evil.example`, `/\evil.example`, `HTTP://EVIL.EXAMPLE` and
//! `http://127.0.0.1.evil.example` are all recognised as other hosts. Anything
//! that cannot be classified with certainty is left alone.

use url::Url;

/// The origin the client sees (scheme, host, port) and the page's own URL.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The URL of the document being rewritten, as the client requested it.
    pub document: Url,
}

impl Origin {
    /// The origin of a request: `scheme://host` plus its path and query.
    pub fn new(scheme: &str, host: &str, path_and_query: &str) -> Option<Origin> {
        let document = Url::parse(&format!("{scheme}://{host}{path_and_query}")).ok()?;
        document.host()?;
        Some(Origin { document })
    }

    /// Whether `target` (already resolved) is on this origin.
    pub fn same_origin(&self, target: &Url) -> bool {
        target.scheme() == self.document.scheme()
            && target.host() == self.document.host()
            && target.port_or_known_default() == self.document.port_or_known_default()
    }
}

/// What to add to links: the session parameter's name and the ID.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The parameter name (`session.name`).
    pub name: String,
    /// The session ID (URL-safe: needs no escaping).
    pub id: String,
}

/// The raw attribute value with the ticket added, when `raw` is a link to
/// `origin` (resolved against `base`); `None` when it must stay as it is.
/// `raw` is the attribute's source text, entities and all.
pub fn rewrite_link(raw: &str, base: &Url, origin: &Origin, ticket: &Ticket) -> Option<String> {
    rewrite_url(raw, base, origin, ticket, true)
}

/// As [`rewrite_link`]; `in_html` says whether `raw` is attribute source
/// text (entities decoded for the check, `&amp;` written) or a plain URL
/// (a `Location` header).
pub fn rewrite_url(
    raw: &str,
    base: &Url,
    origin: &Origin,
    ticket: &Ticket,
    in_html: bool,
) -> Option<String> {
    let decoded = if in_html {
        decode_entities(raw)?
    } else {
        raw.to_owned()
    };
    // Browsers strip leading/trailing C0 controls and spaces, and drop tabs
    // and newlines anywhere, before parsing (WHATWG URL §4.4).
    let cleaned: String = decoded
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    if cleaned.is_empty() || cleaned.starts_with('#') {
        return None;
    }
    let target = base.join(&cleaned).ok()?;
    if !origin.same_origin(&target) {
        return None;
    }
    Some(with_ticket(
        raw.trim_matches(|c: char| c.is_ascii_whitespace()),
        ticket,
        true,
    ))
}

/// Adds `name=id` to the query of `url_text`, before any fragment, removing
/// any earlier value of the parameter. `in_html` writes `&amp;` between
/// parameters (attribute source text), otherwise `&`.
pub fn with_ticket(url_text: &str, ticket: &Ticket, in_html: bool) -> String {
    let (before_fragment, fragment) = match url_text.find('#') {
        Some(i) => url_text.split_at(i),
        None => (url_text, ""),
    };
    let (path, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    let amp = if in_html { "&amp;" } else { "&" };
    let mut out = String::with_capacity(url_text.len() + ticket.name.len() + ticket.id.len() + 8);
    out.push_str(path);
    out.push('?');
    if let Some(query) = query {
        let kept = without_param_in(query, &ticket.name, in_html);
        if !kept.is_empty() {
            out.push_str(&kept);
            out.push_str(amp);
        }
    }
    out.push_str(&ticket.name);
    out.push('=');
    out.push_str(&ticket.id);
    out.push_str(fragment);
    out
}

/// The value of parameter `name` in a raw query string (first occurrence).
pub fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// `query` without parameter `name`, every other pair byte for byte and in order.
pub fn without_param(query: &str, name: &str) -> String {
    without_param_in(query, name, false)
}

fn without_param_in(query: &str, name: &str, in_html: bool) -> String {
    let is_ours = |pair: &str| pair.split_once('=').map_or(pair, |(k, _)| k) == name;
    if in_html {
        // In attribute text, pairs may be separated by `&amp;` or `&`.
        let normalized = query.replace("&amp;", "&");
        let kept: Vec<&str> = normalized
            .split('&')
            .filter(|p| !p.is_empty() && !is_ours(p))
            .collect();
        return kept.join("&amp;");
    }
    query
        .split('&')
        .filter(|p| !is_ours(p))
        .collect::<Vec<_>>()
        .join("&")
}

/// A path-and-query with parameter `name` removed (and `?` if nothing is left).
pub fn strip_param(path_and_query: &str, name: &str) -> String {
    match path_and_query.split_once('?') {
        Some((path, query)) => {
            let kept = without_param(query, name);
            if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{kept}")
            }
        }
        None => path_and_query.to_owned(),
    }
}

/// The URL inside `<meta http-equiv=refresh content="5; url=...">`, as
/// (start, end) byte offsets into `content`.
pub fn refresh_url_span(content: &str) -> Option<(usize, usize)> {
    let lower = content.to_ascii_lowercase();
    let at = lower.find("url")?;
    let rest = &content[at + 3..];
    let eq = rest.find('=')?;
    if !rest[..eq].trim().is_empty() {
        return None;
    }
    let mut start = at + 3 + eq + 1;
    let bytes = content.as_bytes();
    while start < content.len() && bytes[start].is_ascii_whitespace() {
        start += 1;
    }
    let mut end = content.len();
    if start < content.len() && (bytes[start] == b'\'' || bytes[start] == b'"') {
        let quote = bytes[start];
        start += 1;
        end = content[start..]
            .find(quote as char)
            .map_or(content.len(), |i| start + i);
    }
    let end = content[..end].trim_end().len().max(start);
    (start < end).then_some((start, end))
}

/// Decodes the character references that can hide a scheme or a host in an
/// attribute (`&#106;avascript:`, `&colon;`, `&sol;&sol;evil`). `None` when
/// a named reference is not one of these: such a link is left alone.
pub fn decode_entities(raw: &str) -> Option<String> {
    if !raw.contains('&') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest[1..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '#')
            .map_or(rest.len(), |j| j + 1);
        let name = &rest[1..end];
        let has_semi = rest[end..].starts_with(';');
        let consumed = end + usize::from(has_semi);
        if let Some(num) = name.strip_prefix('#') {
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse().ok(),
            };
            out.push(code.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
            rest = &rest[consumed..];
            continue;
        }
        let ch = match name {
            "" => {
                // A bare `&` (e.g. between query parameters).
                out.push('&');
                rest = &rest[1..];
                continue;
            }
            "amp" | "AMP" => '&',
            "quot" | "QUOT" => '"',
            "apos" => '\'',
            "lt" | "LT" => '<',
            "gt" | "GT" => '>',
            "colon" => ':',
            "sol" => '/',
            "bsol" => '\\',
            "period" => '.',
            "quest" => '?',
            "num" => '#',
            "equals" => '=',
            "Tab" => '\t',
            "NewLine" => '\n',
            "nbsp" => '\u{a0}',
            // A query parameter that happens to look like a reference
            // (`?a=1&b=2`: "b" is followed by "=", not ";") is just text.
            _ if !has_semi => {
                out.push_str(&rest[..end]);
                rest = &rest[end..];
                continue;
            }
            _ => return None,
        };
        out.push(ch);
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin::new("http", "127.0.0.1:8000", "/shop/cart?x=1").unwrap()
    }

    fn ticket() -> Ticket {
        Ticket {
            name: "SID".into(),
            id: "abc".into(),
        }
    }

    fn link(raw: &str) -> Option<String> {
        let o = origin();
        rewrite_link(raw, &o.document.clone(), &o, &ticket())
    }

    #[test]
    fn same_origin_links_get_the_ticket() {
        for (raw, want) in [
            ("page", "page?SID=abc"),
            ("/root", "/root?SID=abc"),
            ("../up?a=1", "../up?a=1&amp;SID=abc"),
            ("?q=2", "?q=2&amp;SID=abc"),
            ("/p?a=1&amp;b=2#frag", "/p?a=1&amp;b=2&amp;SID=abc#frag"),
            ("/p?a=1&b=2", "/p?a=1&amp;b=2&amp;SID=abc"),
            ("/p?SID=old&a=1", "/p?a=1&amp;SID=abc"),
            ("http://127.0.0.1:8000/x", "http://127.0.0.1:8000/x?SID=abc"),
            ("HTTP://127.0.0.1:8000/x", "HTTP://127.0.0.1:8000/x?SID=abc"),
            ("//127.0.0.1:8000/x", "//127.0.0.1:8000/x?SID=abc"),
            ("  /spaced  ", "/spaced?SID=abc"),
            ("/x#", "/x?SID=abc#"),
        ] {
            assert_eq!(link(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn other_hosts_schemes_and_fragments_are_left_alone() {
        for raw in [
            "",
            "#top",
            "  #top",
            "mailto:a@b.c",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "&#106;avascript:alert(1)",
            "java&#x09;script:alert(1)",
            "javascript&colon;alert(1)",
            "data:text/html,hi",
            "tel:123",
            "//evil.example/",
            "/\\evil.example/",
            "\\\\evil.example",
            "HTTP://EVIL.EXAMPLE/",
            "http://127.0.0.1.evil.example:8000/",
            "http://127.0.0.1:8001/",
            "https://127.0.0.1:8000/",
            "http://evil.example@127.0.0.1.evil.example/",
            "&sol;&sol;evil.example/",
            "/&bsol;evil.example",
            "ftp://127.0.0.1:8000/",
            "/x&unknown;y",
        ] {
            assert_eq!(link(raw), None, "{raw:?} was rewritten");
        }
    }

    #[test]
    fn a_foreign_base_makes_relative_links_foreign() {
        let o = origin();
        let base = Url::parse("http://cdn.example/").unwrap();
        assert_eq!(rewrite_link("page", &base, &o, &ticket()), None);
        assert_eq!(
            rewrite_link("http://127.0.0.1:8000/p", &base, &o, &ticket()).as_deref(),
            Some("http://127.0.0.1:8000/p?SID=abc")
        );
        let own = Url::parse("http://127.0.0.1:8000/deep/dir/").unwrap();
        assert_eq!(
            rewrite_link("page", &own, &o, &ticket()).as_deref(),
            Some("page?SID=abc")
        );
    }

    #[test]
    fn params_are_read_and_removed_byte_for_byte() {
        assert_eq!(param("a=1&SID=xyz&b", "SID"), Some("xyz"));
        assert_eq!(param("SIDX=1", "SID"), None);
        assert_eq!(strip_param("/p?a=%2F&SID=x&b=&c", "SID"), "/p?a=%2F&b=&c");
        assert_eq!(strip_param("/p?SID=x", "SID"), "/p");
        assert_eq!(strip_param("/p", "SID"), "/p");
        assert_eq!(strip_param("/p?a=1&SID=x&SID=y&a=1", "SID"), "/p?a=1&a=1");
        assert_eq!(
            with_ticket("/p?a=1#f", &ticket(), false),
            "/p?a=1&SID=abc#f"
        );
    }

    #[test]
    fn refresh_urls_are_found() {
        for (content, url) in [
            ("5; url=/next", "/next"),
            ("0;URL='/quoted?x=1'", "/quoted?x=1"),
            ("3 ; Url = \"http://other/\" ", "http://other/"),
            ("0; url=/a b ", "/a b"),
        ] {
            let (s, e) = refresh_url_span(content).unwrap();
            assert_eq!(&content[s..e], url, "{content}");
        }
        assert_eq!(refresh_url_span("5"), None);
        assert_eq!(refresh_url_span("5; urlx=/a"), None);
    }
}
