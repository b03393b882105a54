//! Rewriting for clients in URL mode (they refuse cookies, so the session ID
//! travels in links): HTML bodies, `Location` headers, and the headers that
//! keep a URL with an ID in it out of referrers, search engines and caches.
//!
//! - [`link`]: which links may carry the ID, and how it is added or removed.
//! - [`html`]: the streaming lol_html rewriter.
//! - [`body`]: decoding compressed HTML and streaming it through the rewriter.

pub mod body;
pub mod html;
pub mod link;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use self::body::{charset, is_html, Coding};
use self::link::{Origin, Ticket};
use crate::body::ProxyBody;

/// Prepares a response for a client in URL mode: same-origin `Location`s
/// and HTML links carry `ticket`; the URL with the ID in it is kept out of
/// referrers, search indexes and shared caches. `origin` is the requested
/// page as the client addressed it (`None` if the request named no host:
/// then nothing can be judged same-origin, and nothing is rewritten).
pub fn for_url_mode(
    mut resp: Response<ProxyBody>,
    origin: Option<&Origin>,
    ticket: &Ticket,
    head: bool,
) -> Response<ProxyBody> {
    let headers = resp.headers_mut();
    if let (Some(origin), Some(location)) = (origin, headers.get(header::LOCATION)) {
        let rewritten = location
            .to_str()
            .ok()
            .and_then(|l| link::rewrite_url(l, &origin.document, origin, ticket, false))
            .and_then(|l| HeaderValue::from_str(&l).ok());
        if let Some(value) = rewritten {
            headers.insert(header::LOCATION, value);
        }
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );

    let status = resp.status();
    let has_body = !head && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED;
    let Some(origin) = origin else { return resp };
    if !has_body || !is_html(resp.headers()) {
        return resp;
    }
    let (Some(coding), Some(encoding)) = (Coding::of(resp.headers()), charset(resp.headers()))
    else {
        tracing::debug!("an HTML page in URL mode could not be rewritten (encoding)");
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::ETAG);
    let body = self::body::rewrite(body, coding, encoding, origin.clone(), ticket.clone());
    Response::from_parts(parts, body)
}
