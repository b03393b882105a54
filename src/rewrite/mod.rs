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

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use self::body::{charset, is_html, Coding};
use self::link::{Carry, Origin, Ticket};
use crate::body::ProxyBody;

/// Prepares a response for a client in URL mode: same-origin `Location`s
/// and HTML links carry `ticket`; the URL with the ID in it is kept out of
/// referrers ([`guard_referrer`]), search indexes and shared caches. `origin` is the requested
/// page as the client addressed it (`None` if the request named no host:
/// then nothing can be judged same-origin, and nothing is rewritten).
pub fn for_url_mode(
    mut resp: Response<ProxyBody>,
    origin: Option<&Origin>,
    ticket: &Ticket,
    head: bool,
) -> Response<ProxyBody> {
    let headers = resp.headers_mut();
    if let Some(origin) = origin {
        rewrite_redirects(headers, origin, ticket);
    }
    guard_referrer(headers);
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

/// Same-origin `Location` and `Refresh` headers carry the ticket (written
/// absolute, like links); others are left as they are.
fn rewrite_redirects(headers: &mut HeaderMap, origin: &Origin, ticket: &Ticket) {
    let base = Some(&origin.document);
    if let Some(location) = headers.get(header::LOCATION) {
        let rewritten = location
            .to_str()
            .ok()
            .and_then(|l| link::rewrite_url(l, base, origin, ticket, Carry::Query))
            .and_then(|l| HeaderValue::from_str(&l).ok());
        if let Some(value) = rewritten {
            headers.insert(header::LOCATION, value);
        }
    }
    if let Some(refresh) = headers.get(&REFRESH).and_then(|v| v.to_str().ok()) {
        let rewritten = match link::refresh_parts(refresh) {
            Some((time, Some(url))) => link::rewrite_url(url, base, origin, ticket, Carry::Query)
                .map(|new| format!("{time}; url={new}")),
            _ => None,
        };
        if let Some(value) = rewritten.and_then(|r| HeaderValue::from_str(&r).ok()) {
            headers.insert(&REFRESH, value);
        }
    }
}

static REFRESH: HeaderName = HeaderName::from_static("refresh");

/// Keeps the address of a page seen in URL mode (which holds the ticket)
/// from reaching another origin through the response's headers:
/// `Referrer-Policy: same-origin` replaces the application's, a `Link`
/// that sets its own referrer policy and `Speculation-Rules` (whose
/// prefetches may set one) are dropped, and so are report endpoints.
///
/// Applied to URL-mode responses, and also to responses for requests whose
/// `Referer` is such a page: a subresource of a URL-mode page carries no
/// ticket itself, but a redirect it gets would apply the response's policy
/// to that `Referer`.
pub fn guard_referrer(headers: &mut HeaderMap) {
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.remove("speculation-rules");
    let links: Vec<HeaderValue> = headers
        .get_all(header::LINK)
        .iter()
        .filter(|v| {
            !v.as_bytes()
                .windows(b"referrerpolicy".len())
                .any(|w| w.eq_ignore_ascii_case(b"referrerpolicy"))
        })
        .cloned()
        .collect();
    headers.remove(header::LINK);
    for link in links {
        headers.append(header::LINK, link);
    }
    keep_address_from_reports(headers);
}

/// Violation and network-error reports carry the page's address (and so,
/// in URL mode, the ID) to wherever the application collects them, usually
/// another origin: in URL mode, the reporting directives and headers go.
fn keep_address_from_reports(headers: &mut HeaderMap) {
    for name in ["report-to", "reporting-endpoints", "nel"] {
        headers.remove(name);
    }
    for name in [
        header::CONTENT_SECURITY_POLICY,
        header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
    ] {
        let policies: Vec<HeaderValue> = headers
            .get_all(&name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|policy| {
                policy
                    .split(';')
                    .filter(|d| {
                        let directive =
                            d.trim_start().split_ascii_whitespace().next().unwrap_or("");
                        !directive.eq_ignore_ascii_case("report-uri")
                            && !directive.eq_ignore_ascii_case("report-to")
                    })
                    .collect::<Vec<_>>()
                    .join(";")
            })
            .filter_map(|p| HeaderValue::from_str(&p).ok())
            .collect();
        headers.remove(&name);
        for policy in policies {
            headers.append(&name, policy);
        }
    }
}
