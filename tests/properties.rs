//! Properties, checked on generated input (proptest):
//!
//! - **Paths.** Whatever path the proxy accepts, every way an upstream
//!   framework reads it (Flask, Tomcat, IIS, a double decoder, a
//!   case-insensitive router) lands where the access rules judged it: a
//!   public verdict is public for every reading, and any reading that
//!   routes to a protected prefix was judged protected.
//! - **The rewriter.** In any document built from tricky pieces, the ticket
//!   appears only in absolute URLs of this very origin, and a rewritten
//!   link, ticket removed, leads where the original led.

use cloakroom::auth::rules::Rules;
use cloakroom::rewrite::html::rewrite_chunks;
use cloakroom::rewrite::link::{Origin, Ticket};
use cloakroom::target::{canonical, percent_decode};
use proptest::prelude::*;

// ---- paths -------------------------------------------------------------------

const PIECES: &[&str] = &[
    "admin", "ADMIN", "Admin", "static", "STATIC", "a", ".", "..", "%2e", "%2E", "%2f", "%2F",
    "%5c", "\\", ";x", ";", "%3b", "%25", "%252e", "%252f", "%00", " ", "%20", "%61", "dm", "in",
    "", "%41dmin", "stat", "ic", ".;", "..;",
];

fn path() -> impl Strategy<Value = String> {
    let segment =
        prop::collection::vec(prop::sample::select(PIECES), 1..4).prop_map(|p| p.concat());
    prop::collection::vec(segment, 1..6).prop_map(|segs| format!("/{}", segs.join("/")))
}

/// Resolves dot segments and drops empty ones, as routers do.
fn resolve(segments: impl Iterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for s in segments {
        match s.as_slice() {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(s),
        }
    }
    out
}

fn split(bytes: &[u8], backslash: bool) -> Vec<Vec<u8>> {
    bytes
        .split(|b| *b == b'/' || (backslash && *b == b'\\'))
        .map(<[u8]>::to_vec)
        .collect()
}

fn cut(s: &[u8]) -> Vec<u8> {
    s.split(|b| *b == b';').next().unwrap_or(&[]).to_vec()
}

/// How several real upstreams would route `path`: the segments each sees.
fn readings(path: &str) -> Vec<Vec<Vec<u8>>> {
    let raw = path.as_bytes();
    let once = percent_decode(raw);
    let twice = percent_decode(&once);
    vec![
        // Flask / Express: decode, then resolve.
        resolve(split(&once, false).into_iter()),
        // Tomcat: cut `;params` per raw segment, decode, resolve.
        resolve(split(raw, false).iter().map(|s| percent_decode(&cut(s)))),
        // IIS: `\` is `/`, trailing dots and spaces ignored, case folded.
        resolve(split(&once, true).into_iter().map(|s| {
            let end = s
                .iter()
                .rposition(|b| *b != b'.' && *b != b' ')
                .map_or(0, |i| i + 1);
            let s = if s.iter().all(|b| *b == b'.') {
                s
            } else {
                s[..end].to_vec()
            };
            s.to_ascii_lowercase()
        })),
        // A framework that decodes twice.
        resolve(split(&twice, false).into_iter()),
        // A case-insensitive router.
        resolve(
            split(&once, false)
                .into_iter()
                .map(|s| s.to_ascii_lowercase()),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn accepted_paths_are_judged_as_every_upstream_reads_them(path in path()) {
        let Ok(accepted) = canonical(&path) else { return Ok(()) };
        let accepted = accepted.into_owned();
        // Nothing an upstream reads can climb or hide a separator.
        for reading in readings(&accepted) {
            prop_assert!(!reading.iter().any(|s| s == b".." || s == b"."), "{accepted}");
        }
        // Everything but /static needs a login.
        let everything = Rules::new(&["/".into()], &["/static".into()]);
        if !everything.requires_login(&accepted) {
            for reading in readings(&accepted) {
                let first = reading.first().map(Vec::as_slice);
                prop_assert!(
                    first.is_some_and(|f| f.eq_ignore_ascii_case(b"static")),
                    "{accepted} was judged public, but an upstream reads {:?}",
                    reading.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<Vec<_>>()
                );
            }
        }
        // Only /admin needs a login.
        let admin = Rules::new(&["/admin".into()], &[]);
        let routes_to_admin = readings(&accepted)
            .iter()
            .any(|r| r.first().is_some_and(|f| f.eq_ignore_ascii_case(b"admin")));
        if routes_to_admin {
            prop_assert!(admin.requires_login(&accepted), "{accepted} reaches /admin unprotected");
        }
    }
}

// ---- the rewriter --------------------------------------------------------------

const URLS: &[&str] = &[
    "/p",
    "rel",
    "?q=1",
    "#f",
    "",
    "//evil.example/x",
    "http://127.0.0.1:8000/own",
    "HTTP://127.0.0.1:8000/up",
    "http://evil.example/",
    "/\\evil.example",
    "&#47;&#47;evil.example/",
    "&#47&#47evil.example/",
    "javascript:x",
    "/a?b=1&amp;c=2",
    "/x&#35;y",
    "http://localhost:8000/",
    "https://127.0.0.1:8000/",
    "/p?SID=old",
    "&sol;&sol;evil.example",
    "/%2e%2e/x",
    "  /sp  ",
    "http://127.0.0.1:8000@evil.example/",
    "/x&unknown;y",
    "data:text/html,x",
];
const BASES: &[&str] = &[
    "http://evil.example/d/",
    "/dir/",
    "&#47;&#47;evil.example/",
    "http://x&unknown;/",
];

#[derive(Debug, Clone)]
enum Piece {
    Link(usize),
    Base(usize),
    Form(usize, bool, Option<usize>),
    Refresh(usize, bool),
    Frame(usize),
    Img(usize),
    Text,
}

fn piece() -> impl Strategy<Value = Piece> {
    let u = 0..URLS.len();
    prop_oneof![
        4 => u.clone().prop_map(Piece::Link),
        1 => (0..BASES.len()).prop_map(Piece::Base),
        2 => (u.clone(), any::<bool>(), prop::option::of(u.clone())).prop_map(|(a, p, f)| Piece::Form(a, p, f)),
        1 => (u.clone(), any::<bool>()).prop_map(|(a, b)| Piece::Refresh(a, b)),
        1 => u.clone().prop_map(Piece::Frame),
        1 => u.prop_map(Piece::Img),
        1 => Just(Piece::Text),
    ]
}

fn render(pieces: &[Piece]) -> String {
    let mut html = String::new();
    for (i, p) in pieces.iter().enumerate() {
        match p {
            Piece::Link(u) => {
                html.push_str(&format!("<a id=\"e{i}\" href=\"{}\">t{i}</a>", URLS[*u]))
            }
            Piece::Base(b) => html.push_str(&format!("<base href=\"{}\">", BASES[*b])),
            Piece::Form(a, post, f) => {
                let method = if *post { "post" } else { "get" };
                html.push_str(&format!(
                    "<form id=\"e{i}\" method=\"{method}\" action=\"{}\">",
                    URLS[*a]
                ));
                if let Some(f) = f {
                    html.push_str(&format!("<button formaction=\"{}\">b</button>", URLS[*f]));
                }
                html.push_str("</form>");
            }
            Piece::Refresh(u, prefixed) => {
                let url = if *prefixed {
                    format!("url={}", URLS[*u])
                } else {
                    URLS[*u].to_owned()
                };
                html.push_str(&format!(
                    "<meta http-equiv=\"refresh\" content=\"0; {url}\">"
                ));
            }
            Piece::Frame(u) => html.push_str(&format!("<iframe src=\"{}\"></iframe>", URLS[*u])),
            Piece::Img(u) => html.push_str(&format!("<img src=\"{}\">", URLS[*u])),
            Piece::Text => html.push_str("<p>text &amp; more</p>"),
        }
    }
    html
}

/// Every `name="value"` attribute in `html` (the rewriter writes double
/// quotes, and so does the generator).
fn attributes(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(eq) = rest.find("=\"") {
        let name_start = rest[..eq].rfind([' ', '<']).map_or(0, |i| i + 1);
        let name = rest[name_start..eq].to_owned();
        let value_start = eq + 2;
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        out.push((name, rest[value_start..value_start + len].to_owned()));
        rest = &rest[value_start + len + 1..];
    }
    out
}

fn origin() -> Origin {
    Origin::new("http", "127.0.0.1:8000", "/dir/page?SID=abc").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_ticket_only_ever_goes_into_absolute_urls_of_this_origin(
        pieces in prop::collection::vec(piece(), 1..12),
        split_at in any::<prop::sample::Index>(),
    ) {
        let html = render(&pieces);
        let ticket = Ticket { name: "SID".into(), id: "abc".into() };
        let at = split_at.index(html.len() + 1);
        let (a, b) = html.as_bytes().split_at(at);
        let out = rewrite_chunks(&[a, b], &origin(), &ticket, encoding_rs::UTF_8);
        let out = String::from_utf8(out).unwrap();
        for (name, value) in attributes(&out) {
            let value = value.replace("&amp;", "&");
            let value = match value.split_once("; url=") {
                Some((_, url)) if name == "content" => url.to_owned(),
                _ => value,
            };
            if value.contains("SID=abc") || value.contains("/.cloakroom/f/abc") {
                prop_assert!(
                    value.starts_with("http://127.0.0.1:8000/"),
                    "{name}={value:?} carries the ticket off this origin in {out}"
                );
                let parsed = url::Url::parse(&value).unwrap();
                prop_assert_eq!(parsed.host_str(), Some("127.0.0.1"));
                prop_assert_eq!(parsed.port(), Some(8000));
            }
        }
        // Text is never touched.
        prop_assert_eq!(out.matches("<p>text &amp; more</p>").count(), html.matches("<p>text &amp; more</p>").count());
        // Without a <base>, a rewritten link minus its ticket is the link
        // the browser would have followed.
        if !pieces.iter().any(|p| matches!(p, Piece::Base(_))) {
            let doc = url::Url::parse("http://127.0.0.1:8000/dir/page?SID=abc").unwrap();
            for (i, p) in pieces.iter().enumerate() {
                let Piece::Link(u) = p else { continue };
                let marker = format!("id=\"e{i}\" href=\"");
                let Some(start) = out.find(&marker).map(|s| s + marker.len()) else { continue };
                let value = &out[start..start + out[start..].find('"').unwrap()];
                if !value.contains("SID=abc") {
                    continue;
                }
                let mut got = url::Url::parse(&value.replace("&amp;", "&")).unwrap();
                let kept: Vec<(String, String)> = got.query_pairs().filter(|(k, _)| k != "SID").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
                got.set_query(None);
                if !kept.is_empty() {
                    got.query_pairs_mut().extend_pairs(kept);
                }
                let original = cloakroom::rewrite::link::attribute_url(URLS[*u]).unwrap();
                let mut want = doc.join(original.trim()).unwrap();
                let kept: Vec<(String, String)> = want.query_pairs().filter(|(k, _)| k != "SID").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
                want.set_query(None);
                if !kept.is_empty() {
                    want.query_pairs_mut().extend_pairs(kept);
                }
                prop_assert_eq!(got.as_str(), want.as_str(), "link {}", URLS[*u]);
            }
        }
    }
}
