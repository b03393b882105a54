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

/// A redirect to `location` (a path on this site; anything that cannot be
/// a header value becomes `/`).
pub fn redirect(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
