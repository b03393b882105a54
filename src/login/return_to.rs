//! `return_to`: where a login sends the browser, judged as the browser
//! would follow it.

use super::is_reserved;

/// `target` if it is a path on this site, else `/`. Refuses anything a
/// browser could read as another origin: `//host`, `/\host`, schemes,
/// control characters, and the same hidden behind percent-escapes.
pub fn safe_return_to(target: &str) -> String {
    let decoded = percent_decode_all(target.as_bytes());
    let looks_remote = |t: &[u8]| {
        !t.starts_with(b"/")
            || t.starts_with(b"//")
            || t.starts_with(b"/\\")
            || t.iter().any(|b| b.is_ascii_control() || *b == b'\\')
    };
    // The path must also be canonical (no dot segments, no `//`), so what
    // the browser requests next is exactly what was judged here.
    let path = target.split(['?', '#']).next().unwrap_or("");
    let canonical = matches!(
        crate::target::canonical(path),
        Ok(std::borrow::Cow::Borrowed(_))
    );
    let ok = target.is_ascii()
        && !looks_remote(target.as_bytes())
        && !looks_remote(&decoded)
        && canonical
        && crate::answer::stays_on_site(target)
        && !is_reserved(path);
    if ok {
        target.to_owned()
    } else {
        "/".to_owned()
    }
}

/// Decodes percent-escapes repeatedly, until nothing changes (double
/// encoding hides `//` just as well as single).
fn percent_decode_all(bytes: &[u8]) -> Vec<u8> {
    let mut current = bytes.to_vec();
    for _ in 0..4 {
        let next = crate::target::percent_decode(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_accepts_only_same_origin_paths() {
        for good in ["/", "/books?page=2#top", "/a/b%20c", "/search?q=%2F%2F"] {
            assert_eq!(safe_return_to(good), good, "{good}");
        }
        for bad in [
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example/",
            "HTTP://EVIL.EXAMPLE",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/%2F%2Fevil.example",
            "/%5Cevil.example",
            "%2F%2Fevil.example",
            "/%252F%252Fevil.example",
            "/ok\r\nSet-Cookie: x=1",
            "/ok%0d%0aSet-Cookie:%20x=1",
            "/\tevil",
            "/caf\u{e9}",
            "/.cloakroom/logout",
            "/.CLOAKROOM/logout",
            "/%2ecloakroom/logout",
            "/.//evil.example/",
            "/./evil",
            "/a/../..//evil.example",
            "/%2e%2e//evil.example",
        ] {
            assert_eq!(safe_return_to(bad), "/", "{bad:?} was accepted");
        }
    }
}
