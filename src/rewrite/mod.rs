//! Rewriting for clients in URL mode (they refuse cookies, so the session ID
//! travels in links): HTML bodies, `Location` headers, and the headers that
//! keep a URL with an ID in it out of referrers, search engines and caches.
//!
//! - [`link`]: which links may carry the ID, and how it is added or removed.
//! - [`html`]: the streaming lol_html rewriter.
//! - [`body`]: decoding compressed HTML and streaming it through the rewriter.
//! - [`kind`]: which bodies are rewritten, passed, or (failing closed) refused.

pub mod body;
pub mod html;
pub mod kind;
pub mod link;

use http::header::{self, HeaderMap, HeaderValue};
use http::Response;

use self::kind::Kind;
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
    // Links and redirects carry the ticket: no CDN-aimed field may let a
    // cache keep them either.
    crate::cache::strip_targeted(headers);

    // A browser must not sniff what the proxy judged.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    let verdict = kind::of(resp.status(), resp.headers(), head);
    let (coding, charset, origin) = match (verdict, origin) {
        (Kind::Nothing | Kind::Inert, _) => return resp,
        (Kind::Html(coding, charset), Some(origin)) => (coding, charset, origin),
        (Kind::Html(..), None) => return refuse(resp, "a page with no host to judge links by"),
        (Kind::Unsafe(why), _) => return refuse(resp, why),
    };
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::ETAG);
    let body = self::body::rewrite(body, coding, charset, origin.clone(), ticket.clone());
    Response::from_parts(parts, body)
}

/// A URL-mode response whose body cannot be made safe: the status and the
/// proxy's headers stay, the body becomes a short notice (fails closed).
fn refuse(resp: Response<ProxyBody>, why: &'static str) -> Response<ProxyBody> {
    tracing::warn!(
        why,
        status = resp.status().as_u16(),
        "a URL-mode response was withheld"
    );
    let (mut parts, _) = resp.into_parts();
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::ETAG,
        header::CONTENT_TYPE,
        header::LINK,
        header::REFRESH,
    ] {
        parts.headers.remove(name);
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let notice = "<!doctype html><meta charset=\"utf-8\"><title>Cannot show this page</title>\
        <p>This page cannot be shown to a browser that refuses cookies: its format \
        cannot be made safe for carrying the session in the address. Allow cookies \
        for this site to see it.</p>\n";
    Response::from_parts(parts, crate::body::full(notice))
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
    if let Some(refresh) = headers.get(header::REFRESH).and_then(|v| v.to_str().ok()) {
        let rewritten = match link::refresh_parts(refresh) {
            Some((time, Some(url))) => link::rewrite_url(url, base, origin, ticket, Carry::Query)
                .map(|new| format!("{time}; url={new}")),
            _ => None,
        };
        if let Some(value) = rewritten.and_then(|r| HeaderValue::from_str(&r).ok()) {
            headers.insert(header::REFRESH, value);
        }
    }
}

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

/// A redirect's own `Referrer-Policy` decides what `Referer` the next hop
/// gets, and a browser may replay a cached redirect for a request made by
/// a URL-mode page, whose address holds the ticket. So, whenever URL mode
/// is possible, a redirect that would send full addresses to other origins
/// (`unsafe-url`, `no-referrer-when-downgrade`) gets
/// `strict-origin-when-cross-origin` (the browsers' default) instead.
pub fn temper_redirect_policy(status: http::StatusCode, headers: &mut HeaderMap) {
    if !status.is_redirection() {
        return;
    }
    let weak = headers
        .get_all(header::REFERRER_POLICY)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .any(|t| {
            t.eq_ignore_ascii_case("unsafe-url")
                || t.eq_ignore_ascii_case("no-referrer-when-downgrade")
        });
    if weak {
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        );
    }
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
