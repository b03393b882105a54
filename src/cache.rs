//! A response that carries a session cookie must never be stored by a
//! shared cache (a CDN, a corporate proxy): the next visitor would be handed
//! the same session. Nor may one made for a logged-in user: the next
//! visitor would get it without logging in. The application cannot know
//! that the proxy added a cookie, or that a login guards the path, so the
//! proxy marks such responses `private` itself (RFC 9111 §5.2.2.7), keeping
//! the application's other directives.

use http::header::{self, HeaderMap, HeaderValue};

/// Cache-Control fields aimed at one kind of cache, which such a cache
/// obeys instead of Cache-Control.
static TARGETED: [header::HeaderName; 4] = [
    header::HeaderName::from_static("cdn-cache-control"),
    header::HeaderName::from_static("cloudflare-cdn-cache-control"),
    header::HeaderName::from_static("surrogate-control"),
    header::HeaderName::from_static("edge-control"),
];

/// Makes `headers`' response uncacheable by shared caches, unless it
/// already is (a whole-response `private`, or `no-store`). `public`,
/// `s-maxage` and a `private` naming only some fields go.
pub fn keep_private(headers: &mut HeaderMap) {
    // A CDN that honours a field aimed at it (RFC 9213's CDN-Cache-Control,
    // Surrogate-Control and their vendor forms) ignores Cache-Control.
    for targeted in &TARGETED {
        headers.remove(targeted);
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        return;
    }
    let directives: Vec<String> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .collect();
    let name = |d: &str| {
        d.split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    // `private="Set-Cookie"` keeps only the fields it names from shared
    // caches (RFC 9111 §5.2.2.7): the response itself may still be stored.
    let whole = |d: &str| !d.contains('=');
    if directives
        .iter()
        .any(|d| whole(d) && matches!(name(d).as_str(), "private" | "no-store"))
    {
        return;
    }
    let mut kept: Vec<String> = vec!["private".to_owned()];
    kept.extend(directives.into_iter().filter(|d| {
        !matches!(
            name(d).as_str(),
            "public" | "s-maxage" | "proxy-revalidate" | "private"
        )
    }));
    if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
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
        assert_eq!(after(Some("no-store")), "no-store");
        assert_eq!(after(Some("Private, max-age=5")), "Private, max-age=5");
        // Private only in part: the rest could still be stored.
        assert_eq!(
            after(Some("private=\"Set-Cookie\", public, max-age=600")),
            "private, max-age=600"
        );
        assert_eq!(
            after(Some("no-store=\"x\", max-age=1")),
            "private, no-store=\"x\", max-age=1"
        );
    }

    #[test]
    fn fields_for_cdns_alone_go_too() {
        for name in [
            "CDN-Cache-Control",
            "Surrogate-Control",
            "Cloudflare-CDN-Cache-Control",
            "Edge-Control",
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
                assert_eq!(h[header::CACHE_CONTROL], own.unwrap_or("private"));
            }
        }
    }
}
