//! A response that carries a session cookie must never be stored by a
//! shared cache (a CDN, a corporate proxy): the next visitor would be handed
//! the same session. Nor may one made for a logged-in user: the next
//! visitor would get it without logging in. The application cannot know
//! that the proxy added a cookie, or that a login guards the path, so the
//! proxy marks such responses `private` itself (RFC 9111 §5.2.2.7), keeping
//! the application's other directives.

use http::header::{self, HeaderMap, HeaderValue};

/// Whether a response field is caching aimed at one kind of cache, which
/// such a cache obeys instead of Cache-Control: RFC 9213's
/// `CDN-Cache-Control` and its vendor forms (`Cloudflare-`, `Vercel-`,
/// `Netlify-`…), `Surrogate-Control`, Akamai's `Edge-Control` and
/// `Akamai-Cache-Control`, nginx's `X-Accel-Expires` (an nginx cache in
/// front of the proxy) and LiteSpeed's `X-LiteSpeed-Cache-Control`.
fn targeted(name: &str) -> bool {
    name == "cdn-cache-control"
        || name.ends_with("-cdn-cache-control")
        || matches!(
            name,
            "surrogate-control"
                | "edge-control"
                | "akamai-cache-control"
                | "x-accel-expires"
                | "x-litespeed-cache-control"
        )
}

/// Removes the caching fields aimed at one kind of cache (see [`targeted`]),
/// so that Cache-Control alone decides.
pub fn strip_targeted(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| targeted(name.as_str())) {
        return;
    }
    let names: Vec<header::HeaderName> = headers
        .keys()
        .filter(|name| targeted(name.as_str()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Makes `headers`' response uncacheable by shared caches: one
/// Cache-Control field that starts with `private`, with the application's
/// other directives after it (its `public`, `s-maxage`, `proxy-revalidate`
/// and any `private`, whole or naming fields, go), and no field aimed at
/// one kind of cache.
pub fn keep_private(headers: &mut HeaderMap) {
    strip_targeted(headers);
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        return;
    }
    let mut kept: Vec<&str> = vec!["private"];
    for value in headers.get_all(header::CACHE_CONTROL) {
        // A value that is not text cannot be judged, and goes.
        let Ok(text) = value.to_str() else { continue };
        for directive in directives(text) {
            let name = directive.split('=').next().unwrap_or("").trim();
            let dropped = ["public", "s-maxage", "proxy-revalidate", "private"]
                .iter()
                .any(|d| name.eq_ignore_ascii_case(d));
            if !dropped {
                kept.push(directive);
            }
        }
    }
    let value = HeaderValue::from_str(&kept.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static("private"));
    headers.insert(header::CACHE_CONTROL, value);
}

/// The directives of one Cache-Control value, trimmed: split at commas
/// outside quoted strings (`community="a,public"` is one directive).
fn directives(text: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    // A quoted string left open swallows the rest: that part is dropped,
    // whatever a cache that ignores quotes would read in it.
    if !quoted {
        parts.push(&text[start..]);
    }
    parts.into_iter().map(str::trim).filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(value: Option<&str>) -> String {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
        }
        keep_private(&mut h);
        h[header::CACHE_CONTROL].to_str().unwrap().to_owned()
    }

    #[test]
    fn shared_caches_are_kept_out() {
        assert_eq!(after(None), "private");
        assert_eq!(
            after(Some("public, max-age=600, s-maxage=3600")),
            "private, max-age=600"
        );
        assert_eq!(after(Some("max-age=60")), "private, max-age=60");
        // The application's own private or no-store: still one private
        // first, and public and s-maxage gone (a cache that reads only the
        // first field, or matches case, would otherwise store it).
        assert_eq!(after(Some("no-store")), "private, no-store");
        assert_eq!(after(Some("Private, max-age=5")), "private, max-age=5");
        assert_eq!(
            after(Some("NO-STORE,public,s-maxage=60")),
            "private, NO-STORE"
        );
        // Private only in part: the rest could still be stored.
        assert_eq!(
            after(Some("private=\"Set-Cookie\", public, max-age=600")),
            "private, max-age=600"
        );
        // Commas inside quoted strings split nothing.
        assert_eq!(
            after(Some("community=\"x,private,y\",public,s-maxage=60")),
            "private, community=\"x,private,y\""
        );
        assert_eq!(after(Some("private=\"a,b\",public,s-maxage=60")), "private");
        // A quote left open: what follows it is not trusted.
        assert_eq!(
            after(Some("max-age=5, ext=\"abc, public, s-maxage=60")),
            "private, max-age=5"
        );
        assert_eq!(
            after(Some("foo=\"a\\\",b,private\", max-age=1")),
            "private, foo=\"a\\\",b,private\", max-age=1"
        );
    }

    #[test]
    fn several_fields_become_one() {
        let mut h = HeaderMap::new();
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public,s-maxage=60"),
        );
        h.append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"max-age=\xff").unwrap(),
        );
        keep_private(&mut h);
        let all: Vec<_> = h.get_all(header::CACHE_CONTROL).iter().collect();
        assert_eq!(all, ["private"]);
    }

    #[test]
    fn fields_for_one_kind_of_cache_go_too() {
        for name in [
            "CDN-Cache-Control",
            "Cloudflare-CDN-Cache-Control",
            "Vercel-CDN-Cache-Control",
            "Netlify-CDN-Cache-Control",
            "Surrogate-Control",
            "Edge-Control",
            "Akamai-Cache-Control",
            "X-Accel-Expires",
            "X-LiteSpeed-Cache-Control",
        ] {
            for own in [None, Some("no-store")] {
                let mut h = HeaderMap::new();
                h.insert(
                    header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static("max-age=600"),
                );
                if let Some(own) = own {
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(own));
                }
                keep_private(&mut h);
                assert!(!h.contains_key(name), "{name} kept");
                let expected = own.map_or("private".to_owned(), |o| format!("private, {o}"));
                assert_eq!(h[header::CACHE_CONTROL], expected.as_str());
            }
        }
        let mut h = HeaderMap::new();
        h.insert("x-cache-control-note", HeaderValue::from_static("kept"));
        strip_targeted(&mut h);
        assert!(h.contains_key("x-cache-control-note"));
    }
}
