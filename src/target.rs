//! The request path: refused when it is ambiguous, and otherwise judged by
//! the access rules exactly as the upstream will receive it.
//!
//! Upstreams read one path in many ways: Flask and Express resolve dot
//! segments and decode `%2e`, Tomcat cuts `;parameters` (so `..;` is `..`),
//! IIS reads `\` as `/` and ignores trailing dots, some frameworks decode
//! twice, and many route without regard to case. A proxy that judges one
//! reading and forwards the raw bytes lets the other readings walk past its
//! rules. cloakroom therefore does two things:
//!
//! 1. **Refuses (400) what has more than one shape.** A path is forwarded
//!    only when every decoding of it (raw, then `%XX` decoded up to three
//!    times) has the same `/` boundaries and none of them holds a dot
//!    segment (`.`, `..`, also as `..;x`, `%2e%2e`, `.%20`, `...`), a
//!    backslash, or a control character. Browsers and HTTP libraries
//!    resolve dot segments before sending, so no honest client sends one.
//!    Repeated slashes are the one thing normalized: `//a///b` becomes
//!    `/a/b`, and that normalized target is what the upstream receives.
//! 2. **Judges every reading that remains** ([`segment_readings`]): each
//!    segment decoded once and fully, with and without its `;parameters`,
//!    with and without trailing dots and spaces. A rule that protects
//!    matches if *any* reading matches it, ignoring ASCII case; a rule that
//!    makes a path public matches only if *every* reading equals it
//!    exactly. Ambiguity always falls on the side of protecting.
//!
//! The check runs on the path of every request, whatever its form (origin
//! form, absolute form, HTTP/2 `:path`), before anything else reads it.

use std::borrow::Cow;

/// Deepest percent-decoding looked at; a path that still decodes to
/// something new after that is refused.
const MAX_DECODINGS: usize = 3;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The target is not a path starting with `/` (e.g. `*`).
    NotAPath,
    /// A `.` or `..` segment, in any spelling, or one that is nothing but
    /// `;parameters` (it vanishes for Tomcat).
    DotSegment,
    /// A `/` or `\` hidden in a percent-escape, or a raw `\`.
    HiddenSeparator,
    /// A control character (raw or escaped), NUL included.
    Control,
    /// Still decoding to something new after several rounds.
    TooDeeplyEncoded,
}

impl Refused {
    /// The short body of the 400 answer.
    pub fn message(self) -> &'static str {
        match self {
            Refused::NotAPath => "400 Bad Request: the request target must be a path\n",
            Refused::DotSegment => {
                "400 Bad Request: dot segments and empty parameter segments in the path are refused\n"
            }
            Refused::HiddenSeparator => {
                "400 Bad Request: encoded slashes and backslashes in the path are refused\n"
            }
            Refused::Control => "400 Bad Request: control characters in the path are refused\n",
            Refused::TooDeeplyEncoded => "400 Bad Request: the path is encoded too deeply\n",
        }
    }
}

/// The path the upstream will receive: `path` itself, or with runs of `/`
/// collapsed; `Err` when it is ambiguous (see the module docs).
pub fn canonical(path: &str) -> Result<Cow<'_, str>, Refused> {
    if !path.starts_with('/') {
        return Err(Refused::NotAPath);
    }
    let path: Cow<'_, str> = if path.contains("//") {
        let mut out = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(path)
    };
    let slashes = slash_count(path.as_bytes());
    let mut reading: Cow<'_, [u8]> = Cow::Borrowed(path.as_bytes());
    for round in 0..=MAX_DECODINGS {
        check_reading(&reading, slashes)?;
        // Nothing left to decode (most paths, at once): no copy to compare.
        if !reading.contains(&b'%') {
            return Ok(path);
        }
        let next = percent_decode(&reading);
        if next == *reading {
            return Ok(path);
        }
        if round == MAX_DECODINGS {
            break;
        }
        reading = Cow::Owned(next);
    }
    Err(Refused::TooDeeplyEncoded)
}

fn slash_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'/').count()
}

/// One reading of the path must have the raw path's `/` boundaries and
/// nothing that any upstream could read as a separator or a dot segment.
fn check_reading(reading: &[u8], slashes: usize) -> Result<(), Refused> {
    if reading.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return Err(Refused::Control);
    }
    if reading.contains(&b'\\') || slash_count(reading) != slashes {
        return Err(Refused::HiddenSeparator);
    }
    for segment in reading.split(|b| *b == b'/') {
        let cut = cut_params(segment);
        // `/;x/admin` is `/admin` to Tomcat: a segment that vanishes when
        // its parameters are cut shifts every segment after it.
        if cut.is_empty() && !segment.is_empty() {
            return Err(Refused::DotSegment);
        }
        for form in [segment, cut] {
            let dots_and_spaces = form.iter().all(|b| *b == b'.' || *b == b' ');
            if !form.is_empty() && dots_and_spaces {
                return Err(Refused::DotSegment);
            }
        }
    }
    Ok(())
}

/// A segment without its `;parameters` (Tomcat's path parameters).
fn cut_params(segment: &[u8]) -> &[u8] {
    match segment.iter().position(|b| *b == b';') {
        Some(i) => &segment[..i],
        None => segment,
    }
}

/// Every way an upstream might read one raw segment of a canonical path
/// (see the module docs); the first is the plain single decoding.
pub fn segment_readings(raw: &[u8]) -> Vec<Vec<u8>> {
    let plain = !raw.iter().any(|b| matches!(b, b'%' | b';'))
        && !raw.ends_with(b".")
        && !raw.ends_with(b" ");
    if plain {
        return vec![raw.to_vec()];
    }
    let once = percent_decode(raw);
    let mut fully = once.clone();
    for _ in 1..MAX_DECODINGS {
        let next = percent_decode(&fully);
        if next == fully {
            break;
        }
        fully = next;
    }
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(8);
    for decoded in [&once, &fully] {
        for cut in [&decoded[..], cut_params(decoded)] {
            // IIS ignores trailing dots and spaces in a segment.
            let kept = cut.iter().rposition(|b| *b != b'.' && *b != b' ');
            let trimmed = kept.map_or(&cut[..0], |i| &cut[..=i]);
            for form in [cut, trimmed] {
                if !out.iter().any(|seen| seen == form) {
                    out.push(form.to_vec());
                }
            }
        }
    }
    out
}

/// The readings of every non-empty segment of a canonical path.
pub fn readings(path: &str) -> Vec<Vec<Vec<u8>>> {
    path.as_bytes()
        .split(|b| *b == b'/')
        .filter(|s| !s.is_empty())
        .map(segment_readings)
        .collect()
}

/// Decodes `%XX` escapes; a malformed escape is kept as it is.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_paths_are_refused() {
        for (path, why) in [
            ("*", Refused::NotAPath),
            ("admin", Refused::NotAPath),
            ("/admin/../static/x", Refused::DotSegment),
            ("/static/%2e%2e/admin", Refused::DotSegment),
            ("/static/%2E%2e/admin", Refused::DotSegment),
            ("/static/..;/admin", Refused::DotSegment),
            ("/static/..;jsessionid=1/admin", Refused::DotSegment),
            ("/static/./x", Refused::DotSegment),
            ("/static/.", Refused::DotSegment),
            ("/static/..", Refused::DotSegment),
            ("/static/...", Refused::DotSegment),
            ("/static/..%20/admin", Refused::DotSegment),
            ("/static/%252e%252e/admin", Refused::DotSegment),
            ("/static%2f..%2fadmin", Refused::HiddenSeparator),
            ("/static%2Fx", Refused::HiddenSeparator),
            ("/static%252fx", Refused::HiddenSeparator),
            ("/static\\..\\admin", Refused::HiddenSeparator),
            ("/static%5c..%5cadmin", Refused::HiddenSeparator),
            ("/a%00b", Refused::Control),
            ("/a%0d%0aX-Injected:%201", Refused::Control),
            ("/a%2525252e", Refused::TooDeeplyEncoded),
            ("/;x/admin", Refused::DotSegment),
            ("/static/%3bx/admin", Refused::DotSegment),
        ] {
            assert_eq!(canonical(path), Err(why), "{path}");
        }
    }

    #[test]
    fn plain_paths_pass_untouched_and_slashes_collapse() {
        for path in [
            "/",
            "/admin",
            "/dir/",
            "/a.b/c..d/.hidden/x.",
            "/caf%C3%A9/100%25",
            "/a;b=c/d",
            "/%zz",
            "/%",
            "/p%2",
        ] {
            assert_eq!(canonical(path).unwrap(), path, "{path}");
        }
        assert_eq!(canonical("//evil.example/x").unwrap(), "/evil.example/x");
        assert_eq!(canonical("/a///b//").unwrap(), "/a/b/");
    }

    #[test]
    fn every_reading_of_a_segment_is_offered() {
        let r = segment_readings(b"ADMIN%3bx=1.");
        for want in [&b"ADMIN;x=1."[..], b"ADMIN;x=1", b"ADMIN"] {
            assert!(
                r.iter().any(|v| v == want),
                "{:?}",
                String::from_utf8_lossy(want)
            );
        }
        assert_eq!(segment_readings(b"plain"), vec![b"plain".to_vec()]);
        let r = segment_readings(b"%2561dmin");
        assert!(r.iter().any(|v| v == b"%61dmin") && r.iter().any(|v| v == b"admin"));
    }
}
