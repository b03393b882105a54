//! What the upstream learns about the client's connection, and only from
//! the proxy: `X-Forwarded-For`, `-Proto` and `-Host` are set by the proxy;
//! every other header with which a client could claim an address, a scheme,
//! a host, a path prefix or a different request target is removed.
//!
//! Frameworks read these headers to decide who the client is (`X-Real-IP`,
//! `Forwarded`), how to build URLs (`X-Forwarded-Prefix`, `-Port`), and even
//! which route to run (`X-Original-URL` and `X-Rewrite-URL` override the
//! request path in Symfony, Laminas and IIS). A client-sent copy would let
//! the client steer the upstream past the access rules, so every spelling
//! of them (any case, `_` for `-`) is dropped. This module imports nothing
//! of the proxy's: many modules need [`Peer`].

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Who sent a request, as the connection (not the request) tells it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the client reached the proxy over TLS.
    pub tls: bool,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers a client must never send to the upstream (lowercase, `-` form).
/// The proxy sets the first three itself; the rest it never sets.
pub const CLIENT_CLAIMS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-forwarded",
    "forwarded-for",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-url-scheme",
    "front-end-https",
];

/// Sets `X-Forwarded-For` to the client's address, and `-Proto` and `-Host`
/// to this hop's; whatever the client sent under these names was removed
/// before (no balancer is trusted to have written them).
pub fn set(headers: &mut HeaderMap, peer: Peer, host: Option<&HeaderValue>) {
    if let Ok(value) = HeaderValue::from_str(&peer.addr.ip().to_string()) {
        headers.insert(&X_FORWARDED_FOR, value);
    }
    let proto = if peer.tls { "https" } else { "http" };
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(host) => headers.insert(&X_FORWARDED_HOST, host.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_writes_the_forwarding_headers_itself() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
        let peer = Peer {
            addr: "192.0.2.7:5000".parse().unwrap(),
            tls: false,
        };
        set(&mut h, peer, Some(&HeaderValue::from_static("app.example")));
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example");
        set(&mut h, peer, None);
        assert!(h.get(&X_FORWARDED_HOST).is_none());
    }
}
