//! Hop-by-hop headers: they describe one connection, so a proxy must not
//! pass them on (RFC 9110 §7.6.1).
//!
//! The fixed list is the RFC's (`Connection`, `Proxy-Connection`,
//! `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`) plus the
//! `Proxy-Authenticate`/`Proxy-Authorization` pair, which are meant for the
//! proxy itself (RFC 9110 §11.7). Any header a sender names in `Connection`
//! is hop-by-hop too. An `Upgrade` is re-established by the caller on both
//! hops when the upstream agrees to it.
//!
//! Order matters: a client's request is stripped *before* the proxy sets
//! its own headers (identity, `X-Forwarded-*`, `Host`), so `Connection:
//! X-Forwarded-User` cannot nominate the proxy's identity header away.
//! Only WebSocket upgrades are tunnelled (RFC 6455); any other protocol a
//! client asks for (`h2c`, TLS, a private one) is simply not upgraded, so
//! nothing the proxy cannot read is smuggled past it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// Headers that describe the message itself, not the connection: a
/// `Connection` header may not nominate them away (`Connection: Host` would
/// otherwise make the proxy send the upstream its own host).
static END_TO_END: [HeaderName; 3] = [header::HOST, header::CONTENT_LENGTH, header::CONTENT_TYPE];

/// Removes every hop-by-hop header, including those listed in `Connection`
/// (except the message's own [`END_TO_END`] headers).
pub fn strip(headers: &mut HeaderMap) {
    // Collect the names first: `Connection` itself is removed below. The
    // usual `keep-alive` is on the fixed list: nothing to collect.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !END_TO_END.contains(name) && !HOP_BY_HOP.contains(name))
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::PROXY_AUTHORIZATION);
}

/// The WebSocket upgrade a request asks for, when it asks properly: an
/// `Upgrade: websocket` header and the `upgrade` token in `Connection`.
/// Other protocols are never tunnelled.
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    let websocket = protocol
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"websocket");
    (asks && websocket).then(|| protocol.clone())
}

/// Marks `headers` as switching to `protocol` on this hop.
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_the_fixed_list_and_what_connection_names() {
        let mut h = map(&[
            (
                "connection",
                "keep-alive, X-Secret , x-other, Host, content-length",
            ),
            ("host", "app.example"),
            ("content-length", "0"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("content-type", "text/plain"),
        ]);
        strip(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "content-type", "host", "x-kept"]);
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(requested_upgrade(&ws).unwrap(), "websocket");
        assert!(requested_upgrade(&map(&[("upgrade", "websocket")])).is_none());
        assert!(requested_upgrade(&map(&[("connection", "upgrade")])).is_none());
        for smuggled in ["h2c", "TLS/1.0", "websocket, h2c", "custom"] {
            let h = map(&[("connection", "Upgrade"), ("upgrade", smuggled)]);
            assert!(requested_upgrade(&h).is_none(), "{smuggled} was tunnelled");
        }
    }
}
