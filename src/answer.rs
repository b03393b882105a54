//! Responses the proxy writes itself: short text, its own HTML pages, and
//! redirects. None is cached (`Cache-Control: no-store`).

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, ProxyBody};

/// A short plain-text answer.
pub fn text(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(message));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One of the proxy's own HTML pages. It may not be framed (clickjacking)
/// nor load anything from elsewhere.
pub fn html(status: StatusCode, html: String) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// A redirect to `location`, a path on this site. Whatever a browser would
/// resolve to another origin (`//host`, `/\\host`, a tab or newline that
/// browsers drop, a scheme) or that cannot be a header value becomes `/`:
/// the proxy never writes an open redirect.
pub fn redirect(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    let location = if stays_on_site(location) {
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"))
    } else {
        tracing::debug!("a redirect that would leave the site became /");
        HeaderValue::from_static("/")
    };
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Whether a browser that follows `location` from any page of this site
/// stays on this site's origin. Judged the way browsers resolve URLs
/// (WHATWG URL parsing, which drops tabs and newlines and reads `\\` as `/`),
/// against a made-up origin no real link can name.
pub fn stays_on_site(location: &str) -> bool {
    static PAGE: std::sync::LazyLock<url::Url> = std::sync::LazyLock::new(|| {
        url::Url::parse("http://cloakroom.invalid/some/page").expect("a valid URL")
    });
    location.starts_with('/')
        && location.bytes().all(|b| b.is_ascii_graphic())
        && PAGE
            .join(location)
            .is_ok_and(|target| target.origin() == PAGE.origin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_never_leave_the_site() {
        for good in ["/", "/a/b?c=d#e", "/.//x", "/a?next=//evil.example"] {
            assert!(stays_on_site(good), "{good}");
        }
        for bad in [
            "//evil.example/",
            "/\\evil.example/",
            "\\\\evil.example",
            "/\t/evil.example",
            "http://evil.example/",
            "https:evil.example",
            "evil.example",
            "",
            "/a b",
            "/\r\nSet-Cookie: x=1",
        ] {
            assert!(!stays_on_site(bad), "{bad:?}");
            let resp = redirect(StatusCode::FOUND, bad);
            assert_eq!(resp.headers()[header::LOCATION], "/", "{bad:?}");
        }
    }
}
