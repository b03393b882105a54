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
//!
//! A rewritten link is written **absolute** (`http://host:port/path?…&ID`),
//! as the serialization of the very URL that was judged: no `<base>` later
//! in the page, no character reference, no `#` hidden in one can make the
//! browser read it as anything else. Forms carry the ID in the action's
//! *path* ([`Carry::FormPath`]), never in a field.

use url::Url;

/// The origin the client sees (scheme, host, port) and the page's own URL.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The URL of the document being rewritten, as the client requested it.
    pub document: Url,
    /// `scheme://host[:port]` as a URL on this origin is written.
    prefix: String,
}

impl Origin {
    /// The origin of a request: `scheme://host` plus its path and query.
    pub fn new(scheme: &str, host: &str, path_and_query: &str) -> Option<Origin> {
        let document = Url::parse(&format!("{scheme}://{host}{path_and_query}")).ok()?;
        document.host()?;
        let prefix = document.origin().ascii_serialization();
        Some(Origin { document, prefix })
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

/// Where a rewritten URL carries the ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// In the query: `…?a=1&NAME=TICKET` (links, frames, refresh, redirects).
    Query,
    /// In the path: `/.cloakroom/f/TICKET/path?…` (form actions), where the
    /// fields of a GET form, which replace the query, cannot remove it and a
    /// foreign `formaction`, which replaces the whole action, cannot take it.
    FormPath,
}

/// The absolute URL that `text` (a URL as the browser reads it: entities
/// already decoded) leads to, with the ticket, when it stays on `origin`;
/// `None` when it must stay as it is. `base` is what relative URLs resolve
/// against; `None` when it is unknown (a `<base>` the rewriter could not
/// read): then only absolute URLs are judged.
pub fn rewrite_url(
    text: &str,
    base: Option<&Url>,
    origin: &Origin,
    ticket: &Ticket,
    carry: Carry,
) -> Option<String> {
    // Browsers strip leading/trailing C0 controls and spaces, and drop tabs
    // and newlines anywhere, before parsing (WHATWG URL §4.4).
    let cleaned: std::borrow::Cow<str> = if text.bytes().any(|b| b <= b' ') {
        text.trim_matches(|c: char| c <= ' ')
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .collect::<String>()
            .into()
    } else {
        text.into()
    };
    if cleaned.is_empty() || cleaned.starts_with('#') {
        return None;
    }
    // Most links on a page: a plain `/path?query`, with a base on this
    // origin. Its absolute URL is the origin and the text as it is.
    if base.is_some_and(|base| origin.same_origin(base)) {
        if let Some((path, query)) = plain_root_relative(&cleaned) {
            return Some(origin.absolute(&cleaned, path, query, ticket, carry));
        }
    }
    if origin.plainly_foreign(&cleaned) {
        return None;
    }
    parsed(&cleaned, base, origin, ticket, carry)
}

/// [`rewrite_url`] for an attribute's source text (`raw`, character
/// references not yet decoded), giving attribute text back: what
/// [`attribute_url`], [`rewrite_url`] and [`attribute_text`] make of it, in
/// that order. Most links on a page (`/path?a=1&amp;b=2` under a base on
/// this origin) are written straight from the source text instead, which
/// costs one allocation instead of about eight (issue 12).
pub fn rewrite_attribute(
    raw: &str,
    base: Option<&Url>,
    origin: &Origin,
    ticket: &Ticket,
    carry: Carry,
) -> Option<String> {
    if base.is_some_and(|base| origin.same_origin(base)) {
        if let Some(text) = plain_attribute(raw, origin, ticket, carry) {
            return Some(text);
        }
    }
    let text = attribute_url(raw)?;
    rewrite_url(&text, base, origin, ticket, carry).map(|url| attribute_text(&url))
}

/// The source text's rewritten form when, decoded, it is a URL that
/// [`plain_root_relative`] takes and its only character reference is
/// `&amp;`. Then every `&` of the decoded text is one `&amp;` of the source,
/// so the source splits into the same path and query pairs as the decoded
/// text, and written back it is already escaped as [`attribute_text`] would
/// escape it. `None` for anything else.
fn plain_attribute(raw: &str, origin: &Origin, ticket: &Ticket, carry: Carry) -> Option<String> {
    const AMP: &str = "&amp;";
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') || matches!(bytes.get(1), Some(b'/' | b'\\')) {
        return None;
    }
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'&' if raw[i..].starts_with(AMP) => i += AMP.len(),
            b'&' => return None,
            b if PLAIN[usize::from(b)] => i += 1,
            _ => return None,
        }
    }
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return None;
    }
    let mut out = String::with_capacity(
        origin.prefix.len() + raw.len() + ticket.name.len() + ticket.id.len() + 32,
    );
    out.push_str(&origin.prefix);
    match carry {
        Carry::Query => {
            out.push_str(path);
            out.push('?');
            if push_kept(&mut out, query, &ticket.name) {
                out.push_str(AMP);
            }
            out.push_str(&ticket.name);
            out.push('=');
            out.push_str(&ticket.id);
        }
        Carry::FormPath => {
            out.push_str(crate::reserved::FORM_PREFIX);
            out.push_str(&ticket.id);
            out.push_str(path);
            out.push('?');
            if !push_kept(&mut out, query, &ticket.name) {
                out.pop();
            }
        }
    }
    Some(out)
}

/// Writes the pairs of `query` (source text, split at `&amp;`) other than
/// `name`'s, joined as [`without_param`] joins them; whether it wrote any
/// text (a kept empty pair alone writes none, as there).
fn push_kept(out: &mut String, query: Option<&str>, name: &str) -> bool {
    let before = out.len();
    let is_ours = |pair: &str| pair.split_once('=').map_or(pair, |(k, _)| k) == name;
    let kept = query
        .into_iter()
        .flat_map(|q| q.split("&amp;"))
        .filter(|pair| !is_ours(pair));
    for (n, pair) in kept.enumerate() {
        if n > 0 {
            out.push_str("&amp;");
        }
        out.push_str(pair);
    }
    out.len() > before
}

/// The bytes a root-relative URL may hold to be written as it is (the URL
/// parser passes them through unchanged in a path and a query): ASCII
/// letters and digits and `-._~/?&=+,;:@!$*()`. A table: this is asked of
/// every byte of most links on a page.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"-._~/?&=+,;:@!$*()";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

/// `text` split into path and query when it is a root-relative URL
/// (`/path?query`, not `//host`) made only of characters that the URL
/// parser passes through unchanged, with no dot segment (which the parser
/// would remove, as it would `%2e`; no `%` is taken at all). Resolved
/// against any base on this origin, such a URL is the origin followed by
/// the text byte for byte. `None` for anything else: the parser decides.
fn plain_root_relative(text: &str) -> Option<(&str, Option<&str>)> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'/') || matches!(bytes.get(1), Some(b'/' | b'\\')) {
        return None;
    }
    let plain = |b: &u8| PLAIN[usize::from(*b)];
    if !bytes.iter().all(plain) {
        return None;
    }
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return None;
    }
    Some((path, query))
}

impl Origin {
    /// Whether `text` is, beyond doubt, an absolute URL off this origin:
    /// a scheme other than http(s) (`mailto:`, `tel:`, `javascript:`), or
    /// `http(s)://` and a plain host name that is not this origin's and
    /// cannot be an IPv4 address in disguise (`127.1`, `0x7f.0.0.1`). Such
    /// a link keeps no ID whatever the parser would make of it. `false`
    /// leaves the decision to the parser.
    fn plainly_foreign(&self, text: &str) -> bool {
        let Some((scheme, rest)) = text.split_once(':') else {
            return false;
        };
        let is_scheme = scheme
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !is_scheme {
            return false;
        }
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            // Our origin is http or https; no other scheme shares it.
            return true;
        }
        let Some(rest) = rest.strip_prefix("//") else {
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host);
        let plain = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        let ours = self.document.host_str().unwrap_or_default();
        plain
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
            && !ends_in_a_number(host)
            && !host.eq_ignore_ascii_case(ours)
    }

    /// The URL on this origin for `text` (split into `path` and `query` by
    /// [`plain_root_relative`]) with the ticket where `carry` says, exactly
    /// as [`parsed`] writes it.
    fn absolute(
        &self,
        text: &str,
        path: &str,
        query: Option<&str>,
        ticket: &Ticket,
        carry: Carry,
    ) -> String {
        match carry {
            Carry::Query => format!("{}{}", self.prefix, with_ticket(text, ticket)),
            Carry::FormPath => {
                let kept = query
                    .map(|q| without_param(q, &ticket.name))
                    .unwrap_or_default();
                let query = if kept.is_empty() {
                    String::new()
                } else {
                    format!("?{kept}")
                };
                format!(
                    "{}{}{}{path}{query}",
                    self.prefix,
                    crate::reserved::FORM_PREFIX,
                    ticket.id
                )
            }
        }
    }
}

/// The URL standard's "ends in a number" test: whether a host would be
/// parsed as an IPv4 address (its last label all digits, or `0x` hex).
fn ends_in_a_number(host: &str) -> bool {
    let mut labels: Vec<&str> = host.split('.').collect();
    if labels.len() > 1 && labels.last() == Some(&"") {
        labels.pop();
    }
    let last = labels.last().copied().unwrap_or_default();
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// [`rewrite_url`] by the URL parser: resolve, judge the origin, then put
/// the ticket in.
fn parsed(
    cleaned: &str,
    base: Option<&Url>,
    origin: &Origin,
    ticket: &Ticket,
    carry: Carry,
) -> Option<String> {
    let mut target = match base {
        Some(base) => base.join(cleaned).ok()?,
        None => Url::parse(cleaned).ok()?,
    };
    if !origin.same_origin(&target) {
        return None;
    }
    let kept = target
        .query()
        .map(|q| without_param(q, &ticket.name))
        .unwrap_or_default();
    match carry {
        Carry::Query => {
            let pair = format!("{}={}", ticket.name, ticket.id);
            let query = if kept.is_empty() {
                pair
            } else {
                format!("{kept}&{pair}")
            };
            target.set_query(Some(&query));
        }
        Carry::FormPath => {
            let path = format!(
                "{}{}{}",
                crate::reserved::FORM_PREFIX,
                ticket.id,
                target.path()
            );
            target.set_path(&path);
            target.set_query((!kept.is_empty()).then_some(kept.as_str()));
        }
    }
    Some(target.into())
}

/// A URL as attribute text: `&` written as `&amp;` (lol_html escapes `"`),
/// so that no `&name` in a query can be read as a character reference.
pub fn attribute_text(url: &str) -> String {
    url.replace('&', "&amp;")
}

/// The URL an attribute's source text holds, as the browser reads it
/// (character references decoded); `None` when that is uncertain.
pub fn attribute_url(raw: &str) -> Option<String> {
    decode_entities(raw)
}

/// Adds `name=id` to the query of `url_text` (a plain URL, not attribute
/// text), before any fragment, removing any earlier value of the parameter.
pub fn with_ticket(url_text: &str, ticket: &Ticket) -> String {
    let (before_fragment, fragment) = match url_text.find('#') {
        Some(i) => url_text.split_at(i),
        None => (url_text, ""),
    };
    let (path, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url_text.len() + ticket.name.len() + ticket.id.len() + 8);
    out.push_str(path);
    out.push('?');
    if let Some(query) = query {
        let kept = without_param(query, &ticket.name);
        if !kept.is_empty() {
            out.push_str(&kept);
            out.push('&');
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
    let is_ours = |pair: &str| pair.split_once('=').map_or(pair, |(k, _)| k) == name;
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

/// The parts of a `<meta http-equiv=refresh>` content (or a `Refresh`
/// header) as the HTML standard parses them ("shared declarative refresh
/// steps"): the time text, and the URL text if there is one. `None` when a
/// browser would not refresh at all.
pub fn refresh_parts(content: &str) -> Option<(&str, Option<&str>)> {
    let is_space = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    let input = content.trim_start_matches(is_space);
    let digits = input.len() - input.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 && !input.starts_with('.') {
        return None;
    }
    let time = if digits == 0 { "0" } else { &input[..digits] };
    let mut rest = input[digits..].trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    if rest.is_empty() {
        return Some((time, None));
    }
    if !rest.starts_with([';', ',']) && !rest.starts_with(is_space) {
        return None;
    }
    rest = rest.trim_start_matches(is_space);
    if let Some(r) = rest.strip_prefix([';', ',']) {
        rest = r;
    }
    rest = rest.trim_start_matches(is_space);
    if rest.is_empty() {
        return Some((time, None));
    }
    // `url=` is optional; "u", "ur" without the rest are part of the URL.
    let whole = rest;
    let mut url = rest;
    let lower = rest.get(..3).map(str::to_ascii_lowercase);
    if lower.as_deref() == Some("url") {
        let after = rest[3..].trim_start_matches(is_space);
        if let Some(after) = after.strip_prefix('=') {
            url = after.trim_start_matches(is_space);
        } else {
            url = whole;
        }
    }
    let (quoted, body) = match url.chars().next() {
        Some(q @ ('\'' | '"')) => (Some(q), &url[1..]),
        _ => (None, url),
    };
    let body = match quoted.and_then(|q| body.find(q)) {
        Some(end) => &body[..end],
        None => body,
    };
    Some((time, Some(body)))
}

/// Decodes the character references that can hide a scheme or a host in an
/// attribute (`&#106;avascript:`, `&colon;`, `&sol;&sol;evil`). `None` when
/// a named reference is not one of these: such a link is left alone.
fn decode_entities(raw: &str) -> Option<String> {
    if !raw.contains('&') {
        return Some(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(num) = rest[1..].strip_prefix('#') {
            // A numeric reference takes only its digits, `;` or not
            // (`&#47evil` is `/evil`), as the HTML tokenizer does.
            let (hex, digits_from) = match num.strip_prefix(['x', 'X']) {
                Some(h) => (true, h),
                None => (false, num),
            };
            let len = digits_from
                .find(|c: char| {
                    if hex {
                        !c.is_ascii_hexdigit()
                    } else {
                        !c.is_ascii_digit()
                    }
                })
                .unwrap_or(digits_from.len());
            if len == 0 {
                // `&#` with no digits is just text.
                out.push('&');
                rest = &rest[1..];
                continue;
            }
            let digits = &digits_from[..len];
            let code = if hex {
                u32::from_str_radix(digits, 16).ok()
            } else {
                digits.parse().ok()
            };
            out.push(code.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
            let used = 2 + usize::from(hex) + len;
            rest = &rest[used..];
            if let Some(r) = rest.strip_prefix(';') {
                rest = r;
            }
            continue;
        }
        let end = rest[1..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(rest.len(), |j| j + 1);
        let name = &rest[1..end];
        let has_semi = rest[end..].starts_with(';');
        let consumed = end + usize::from(has_semi);
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
        let text = attribute_url(raw)?;
        rewrite_url(
            &text,
            Some(&o.document.clone()),
            &o,
            &ticket(),
            Carry::Query,
        )
    }

    /// The bases a link may resolve against: the document, a directory on
    /// this origin, another origin, none (a `<base>` that could not be read).
    fn bases(o: &Origin) -> [Option<Url>; 4] {
        [
            Some(o.document.clone()),
            Some(Url::parse("http://127.0.0.1:8000/deep/dir/").unwrap()),
            Some(Url::parse("http://cdn.example/").unwrap()),
            None,
        ]
    }

    proptest::proptest! {
        /// The shortcut for plain root-relative links writes exactly what
        /// the URL parser would, for every base and either carry.
        #[test]
        fn the_plain_link_shortcut_agrees_with_the_url_parser(
            text in "/[a-zA-Z0-9./?&=%#:@;,+!$*()'~_\\\\ -]{0,16}(SID=x)?[a-z/.?&=]{0,6}",
            base in 0usize..4,
            form in proptest::bool::ANY,
        ) {
            let o = origin();
            let bases = bases(&o);
            let base = bases[base].as_ref();
            let carry = if form { Carry::FormPath } else { Carry::Query };
            let cleaned = text.trim_matches(|c: char| c <= ' ');
            proptest::prop_assume!(!cleaned.is_empty() && !cleaned.starts_with('#'));
            proptest::prop_assert_eq!(
                rewrite_url(&text, base, &o, &ticket(), carry),
                parsed(cleaned, base, &o, &ticket(), carry)
            );
        }
    }

    proptest::proptest! {
        /// A link written straight from its source text is written as
        /// decoding it, rewriting it and escaping it again would write it:
        /// `&amp;`, other references, `&` alone, empty pairs, the ticket's
        /// own parameter, dot segments, every base.
        #[test]
        fn the_source_text_shortcut_agrees_with_decoding_first(
            parts in proptest::collection::vec(proptest::prop_oneof![
                6 => proptest::sample::select(vec![
                    "/", "a", "..", ".", "?", "=", "&amp;", "SID=x", "SID", ";", "q=1", "~",
                ]),
                1 => proptest::sample::select(vec![
                    "&amp", "&AMP;", "&", "&#38;", "&lt;", "%2e", "#", "//", "\\", " ", "\t", "é",
                ]),
            ], 0..9),
            base in 0usize..4,
            form in proptest::bool::ANY,
        ) {
            let o = origin();
            let bases = bases(&o);
            let base = bases[base].as_ref();
            let carry = if form { Carry::FormPath } else { Carry::Query };
            let raw = format!("/{}", parts.concat());
            let slow = attribute_url(&raw)
                .and_then(|text| rewrite_url(&text, base, &o, &ticket(), carry))
                .map(|url| attribute_text(&url));
            proptest::prop_assert_eq!(rewrite_attribute(&raw, base, &o, &ticket(), carry), slow, "{}", raw);
        }
    }

    proptest::proptest! {
        /// Links judged foreign without the parser are ones the parser
        /// would also leave without a ticket.
        #[test]
        fn what_is_plainly_foreign_the_url_parser_finds_foreign(
            scheme in proptest::sample::select(vec!["http://", "https://", "HTTP://", "http:", "http:/", "mailto:", "javascript:", "tel:", "x-y.z:", "1a:", ""]),
            host in proptest::sample::select(vec!["127.0.0.1:8000", "127.0.0.1", "127.1:8000", "0x7f.0.0.1:8000", "2130706433:8000", "127.0.0.1.:8000", "cdn.example", "CDN.example.", "a:b@127.0.0.1:8000", "127.0.0.1:80", "[::1]:8000", "xn--nxasmq6b", "ex%61mple.com", "127.0.0.1:8000\\", ""]),
            path in "[a-z/?#.:]{0,6}",
            base in 0usize..3,
        ) {
            let o = origin();
            let bases = [
                Some(o.document.clone()),
                Some(Url::parse("http://cdn.example/").unwrap()),
                None,
            ];
            let base = bases[base].as_ref();
            let text = format!("{scheme}{host}{path}");
            proptest::prop_assume!(!text.is_empty() && !text.starts_with('#'));
            if o.plainly_foreign(&text) {
                proptest::prop_assert_eq!(parsed(&text, base, &o, &ticket(), Carry::Query), None, "{}", text);
            }
        }
    }

    #[test]
    fn plainly_foreign_links_and_links_that_are_not() {
        let o = origin();
        for foreign in [
            "mailto:a@b.example",
            "javascript:alert(1)",
            "tel:123",
            "https://partner.example.net/ref?id=1",
            "http://cdn.example:8000/x",
        ] {
            assert!(o.plainly_foreign(foreign), "{foreign}");
        }
        for not_sure in [
            "http://127.0.0.1:8000/x",
            "http://127.1:8000/x",
            "http://0x7f.0.0.1:8000/",
            "http:page",
            "HTTP://127.0.0.1:8000/",
            "http://user@cdn.example/",
            "/path",
            "page",
        ] {
            assert!(!o.plainly_foreign(not_sure), "{not_sure}");
        }
    }

    #[test]
    fn the_shortcut_takes_only_plain_root_relative_links() {
        assert_eq!(
            plain_root_relative("/a/b?c=d&e"),
            Some(("/a/b", Some("c=d&e")))
        );
        assert_eq!(plain_root_relative("/"), Some(("/", None)));
        for other in [
            "//evil.example/",
            "/\\evil.example/",
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/%2e%2e/x",
            "/a b",
            "/a#f",
            "a/b",
            "/a\"",
            "/é",
        ] {
            assert_eq!(plain_root_relative(other), None, "{other}");
        }
    }

    #[test]
    fn same_origin_links_become_absolute_with_the_ticket() {
        for (raw, want) in [
            ("page", "http://127.0.0.1:8000/shop/page?SID=abc"),
            ("/root", "http://127.0.0.1:8000/root?SID=abc"),
            ("../up?a=1", "http://127.0.0.1:8000/up?a=1&SID=abc"),
            ("?q=2", "http://127.0.0.1:8000/shop/cart?q=2&SID=abc"),
            (
                "/p?a=1&amp;b=2#frag",
                "http://127.0.0.1:8000/p?a=1&b=2&SID=abc#frag",
            ),
            ("/p?SID=old&a=1", "http://127.0.0.1:8000/p?a=1&SID=abc"),
            ("HTTP://127.0.0.1:8000/x", "http://127.0.0.1:8000/x?SID=abc"),
            ("//127.0.0.1:8000/x", "http://127.0.0.1:8000/x?SID=abc"),
            ("  /spaced  ", "http://127.0.0.1:8000/spaced?SID=abc"),
            ("/x&#35;y", "http://127.0.0.1:8000/x?SID=abc#y"),
            ("/x#", "http://127.0.0.1:8000/x?SID=abc#"),
        ] {
            assert_eq!(link(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn forms_carry_the_ticket_in_the_path() {
        let o = origin();
        let got = rewrite_url(
            "/post?a=1&SID=x",
            Some(&o.document),
            &o,
            &ticket(),
            Carry::FormPath,
        );
        assert_eq!(
            got.as_deref(),
            Some("http://127.0.0.1:8000/.cloakroom/f/abc/post?a=1")
        );
    }

    #[test]
    fn an_unknown_base_leaves_relative_links_alone() {
        let o = origin();
        assert_eq!(rewrite_url("page", None, &o, &ticket(), Carry::Query), None);
        assert!(
            rewrite_url("http://127.0.0.1:8000/p", None, &o, &ticket(), Carry::Query).is_some()
        );
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
            "&#47;&#47evil.example/",
            "/&#x2F;evil.example",
        ] {
            assert_eq!(link(raw), None, "{raw:?} was rewritten");
        }
    }

    #[test]
    fn a_foreign_base_makes_relative_links_foreign() {
        let o = origin();
        let base = Url::parse("http://cdn.example/").unwrap();
        assert_eq!(
            rewrite_url("page", Some(&base), &o, &ticket(), Carry::Query),
            None
        );
        assert_eq!(
            rewrite_url(
                "http://127.0.0.1:8000/p",
                Some(&base),
                &o,
                &ticket(),
                Carry::Query
            )
            .as_deref(),
            Some("http://127.0.0.1:8000/p?SID=abc")
        );
        let own = Url::parse("http://127.0.0.1:8000/deep/dir/").unwrap();
        assert_eq!(
            rewrite_url("page", Some(&own), &o, &ticket(), Carry::Query).as_deref(),
            Some("http://127.0.0.1:8000/deep/dir/page?SID=abc")
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
        assert_eq!(with_ticket("/p?a=1#f", &ticket()), "/p?a=1&SID=abc#f");
    }

    #[test]
    fn refresh_is_parsed_as_browsers_parse_it() {
        for (content, want) in [
            ("5", Some(("5", None))),
            ("5; url=/next", Some(("5", Some("/next")))),
            ("0;URL='/quoted?x=1'", Some(("0", Some("/quoted?x=1")))),
            (
                "3 ; Url = \"http://other/\" ",
                Some(("3", Some("http://other/"))),
            ),
            (
                "0; http://other/x?url=/y",
                Some(("0", Some("http://other/x?url=/y"))),
            ),
            ("0, /plain", Some(("0", Some("/plain")))),
            ("0;urlx=/a", Some(("0", Some("urlx=/a")))),
            ("0; ur/x", Some(("0", Some("ur/x")))),
            ("1.5;url=/a", Some(("1", Some("/a")))),
            ("0x; url=/a", None),
            ("soon; url=/a", None),
            ("", None),
        ] {
            assert_eq!(refresh_parts(content), want, "{content:?}");
        }
    }
}
