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

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Who sent a request: as the connection tells it, or, behind a trusted
/// balancer, as the balancer tells it ([`Trusted::client`]).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Whether the client reached the proxy (or the balancer) over TLS.
    pub tls: bool,
    /// The trusted balancer the request came through, if any.
    pub via: Option<IpAddr>,
}

/// A network, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or
/// /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether this range holds every address of its family (`0.0.0.0/0`,
    /// `::/0`): trusting it lets any client claim any address.
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or network like 10.0.0.0/8"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `server.trusted_proxies`: the balancers whose `X-Forwarded-*` are
/// believed. Default: none.
#[derive(Debug, Clone, Default)]
pub struct Trusted(pub Vec<Cidr>);

impl Trusted {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that arrived from `conn`. From a trusted
    /// balancer: the right-most address in `X-Forwarded-For` that is not
    /// itself a trusted balancer is the client (so an address the client
    /// wrote at the left counts for nothing), and the right-most
    /// `X-Forwarded-Proto` says whether the client used TLS; a trusted
    /// `X-Forwarded-Host` becomes the request's `Host`. From anyone else,
    /// the connection is the client and those headers are ignored (and
    /// later replaced).
    pub fn client(&self, conn: Peer, headers: &mut HeaderMap) -> Peer {
        if !self.trusts(conn.addr.ip()) {
            return conn;
        }
        let mut hops: Vec<&str> = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let Ok(text) = value.to_str() else {
                return conn;
            };
            hops.extend(text.split(',').map(str::trim));
        }
        let mut client = None;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage: believe nothing to the left of it.
                break;
            };
            client = Some(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        let tls = match last_value(headers, &X_FORWARDED_PROTO) {
            Some(proto) => proto.eq_ignore_ascii_case("https"),
            None => conn.tls,
        };
        if let Some(host) = last_value(headers, &X_FORWARDED_HOST) {
            if let Some(value) = plain_host(&host) {
                headers.insert(header::HOST, value);
            }
        }
        Peer {
            addr: SocketAddr::new(client.unwrap_or(conn.addr.ip()), 0),
            tls,
            via: Some(conn.addr.ip()),
        }
    }
}

/// `host` when it is a plain host name or address with an optional port
/// (exactly what a URL would read back), else `None`.
fn plain_host(host: &str) -> Option<HeaderValue> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b);
    if host.is_empty() || !host.bytes().all(allowed) || host.starts_with(['-', '.']) {
        return None;
    }
    let url = url::Url::parse(&format!("http://{host}/")).ok()?;
    let mut again = url.host_str()?.to_owned();
    if let Some(port) = url.port() {
        again.push_str(&format!(":{port}"));
    }
    let explicit_default = host.ends_with(":80");
    (again.eq_ignore_ascii_case(host)
        || (explicit_default && format!("{again}:80").eq_ignore_ascii_case(host)))
    .then(|| HeaderValue::from_str(host).ok())
    .flatten()
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    // "1.2.3.4:5678" or "[2001:db8::1]:80"
    hop.parse::<SocketAddr>().ok().map(|a| a.ip())
}

fn last_value(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let all: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
    let text = all.last()?.to_str().ok()?;
    Some(text.rsplit(',').next()?.trim().to_owned())
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
    "client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "remote-addr",
    "x-envoy-external-address",
    "x-envoy-original-path",
    "x-appengine-user-ip",
    "x-scheme",
    "x-forwarded-protocol",
    "cf-visitor",
    "x-forwarded-client-cert",
    "x-ssl-client-cert",
    "ssl-client-cert",
    "x-client-cert",
    "ssl-client-verify",
    "x-client-verify",
    "x-ssl-client-verify",
    "x-ssl-client-dn",
    "x-ssl-client-s-dn",
    "x-client-dn",
    "x-arr-clientcert",
    "x-arr-ssl",
];

/// The address limits count a client under: an IPv4-mapped IPv6 address
/// as its IPv4 address, any other IPv6 address as its /64 (one subscriber's
/// usual share), so that a client cannot take a fresh budget from each
/// address of its network.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
        v4 => v4,
    }
}

/// Sets `X-Forwarded-For` to the client's address (followed by the
/// trusted balancer's, when it came through one), and `-Proto` and `-Host`
/// to what the client used; whatever arrived under these names was removed
/// before.
pub fn set(headers: &mut HeaderMap, peer: Peer, host: Option<&HeaderValue>) {
    // Written on the stack (two IPv6 addresses fit): the header value is
    // the request's only copy.
    const ROOM: usize = 100;
    let mut text = [0u8; ROOM];
    let mut rest = &mut text[..];
    let written = match peer.via {
        Some(via) => write!(rest, "{}, {via}", peer.addr.ip()),
        None => write!(rest, "{}", peer.addr.ip()),
    };
    let len = ROOM - rest.len();
    if let (Ok(()), Ok(value)) = (written, HeaderValue::from_bytes(&text[..len])) {
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
            via: None,
        };
        set(&mut h, peer, Some(&HeaderValue::from_static("app.example")));
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example");
        set(&mut h, peer, None);
        assert!(h.get(&X_FORWARDED_HOST).is_none());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn only_trusted_balancers_are_believed() {
        let trusted = Trusted(vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]);
        let conn = |ip: &str| Peer {
            addr: SocketAddr::new(ip.parse().unwrap(), 4000),
            tls: false,
            via: None,
        };
        let claims = [
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example"),
        ];
        // From a balancer: the right-most untrusted hop is the client.
        let mut h = headers(&claims);
        let p = trusted.client(conn("10.0.0.2"), &mut h);
        assert_eq!(p.addr.ip().to_string(), "203.0.113.9");
        assert!(p.tls);
        assert_eq!(p.via, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(h[header::HOST], "app.example");
        // From anyone else: nothing believed.
        let mut h = headers(&claims);
        let p = trusted.client(conn("203.0.113.50"), &mut h);
        assert_eq!(p.addr.ip().to_string(), "203.0.113.50");
        assert!(!p.tls && p.via.is_none() && h.get(header::HOST).is_none());
        // Split over two fields; a port; IPv6 and mapped IPv4 balancers.
        let mut h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.4:555"),
        ]);
        assert_eq!(
            trusted
                .client(conn("::ffff:10.9.9.9"), &mut h)
                .addr
                .ip()
                .to_string(),
            "198.51.100.4"
        );
        let mut h = headers(&[("x-forwarded-for", "garbage, 198.51.100.5")]);
        assert_eq!(
            trusted
                .client(conn("2001:db8::7"), &mut h)
                .addr
                .ip()
                .to_string(),
            "198.51.100.5"
        );
        // Garbage to the right: nothing to its left is believed.
        let mut h = headers(&[("x-forwarded-for", "198.51.100.6, garbage")]);
        assert_eq!(
            trusted
                .client(conn("10.0.0.2"), &mut h)
                .addr
                .ip()
                .to_string(),
            "10.0.0.2"
        );
        // No header: the balancer itself.
        let mut h = HeaderMap::new();
        assert_eq!(
            trusted
                .client(conn("10.0.0.2"), &mut h)
                .addr
                .ip()
                .to_string(),
            "10.0.0.2"
        );
        // A balancer's own forwarded address is written after the client's.
        let mut out = HeaderMap::new();
        let mut h = headers(&claims);
        set(&mut out, trusted.client(conn("10.0.0.2"), &mut h), None);
        assert_eq!(out[&X_FORWARDED_FOR], "203.0.113.9, 10.0.0.2");
        assert_eq!(out[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn only_plain_hosts_are_taken_from_a_balancer() {
        for good in [
            "app.example",
            "app.example:8443",
            "127.0.0.1",
            "[::1]:8080",
            "app.example:80",
        ] {
            assert!(plain_host(good).is_some(), "{good}");
        }
        for bad in [
            "evil.com:80:80",
            "[::1",
            "evil.com:abc",
            "evil.com:99999",
            "evil.com:",
            "-evil.com",
            "a/b",
            "a@b",
            "",
        ] {
            assert!(plain_host(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn limits_count_a_network_not_each_address() {
        let key = |s: &str| limit_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::18"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:9.9.9.9"), "9.9.9.9");
        assert_eq!(key("9.9.9.9"), "9.9.9.9");
    }

    #[test]
    fn networks_parse_and_match() {
        let c: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(c.contains("192.168.4.5".parse().unwrap()));
        assert!(!c.contains("192.169.0.1".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.1"
            .parse::<Cidr>()
            .unwrap()
            .contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
    }
}
