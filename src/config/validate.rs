//! Validation that serde cannot express (URL schemes, ranges, relations
//! between keys), turning the raw file into a [`Config`]. Every error names
//! its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawAdmin, RawAuth, RawConfig, RawIdentity, RawSession};
use super::{
    AdminConfig, AssertionConfig, AuthConfig, Config, ConfigError, IdentityConfig, LogConfig,
    LogFormat, RedisConfig, RedisServers, SameSiteKind, ServerConfig, SessionConfig, StoreKind,
    TlsConfig, UpstreamConfig, UPSTREAM_URL_ENV,
};

pub(super) fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8000");
    let listen: SocketAddr = listen.parse().map_err(|_| {
        ConfigError::key(
            "listen",
            format!("expected an address like 127.0.0.1:8000, got {listen:?}"),
        )
    })?;

    let up = raw.upstream;
    let url = up.url.ok_or_else(|| {
        ConfigError::key(
            "upstream.url",
            format!("missing: set it in the file or with {UPSTREAM_URL_ENV}"),
        )
    })?;
    let upstream = UpstreamConfig {
        url: parse_upstream_url(&url)?,
        timeout: positive("upstream.timeout", up.timeout, Duration::from_secs(60))?,
        connect_timeout: positive(
            "upstream.connect_timeout",
            up.connect_timeout,
            Duration::from_secs(5),
        )?,
        preserve_host: up.preserve_host.unwrap_or(true),
        pool_max_idle: up.pool_max_idle.unwrap_or(64),
        pool_idle_timeout: positive(
            "upstream.pool_idle_timeout",
            up.pool_idle_timeout,
            Duration::from_secs(90),
        )?,
        ca_file: up.ca_file.clone(),
    };

    let mut sv = raw.server;
    let trusted_proxies = sv
        .trusted_proxies
        .take()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e: String| ConfigError::key("server.trusted_proxies", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let server = ServerConfig {
        max_connections: at_least("server.max_connections", sv.max_connections, 1, 10_000)
            .and_then(|n| {
                if n > crate::server::MAX_CONNECTIONS_LIMIT {
                    Err(ConfigError::key(
                        "server.max_connections",
                        format!(
                            "must be at most {}, got {n}",
                            crate::server::MAX_CONNECTIONS_LIMIT
                        ),
                    ))
                } else {
                    Ok(n)
                }
            })?,
        header_timeout: positive(
            "server.header_timeout",
            sv.header_timeout,
            Duration::from_secs(10),
        )?,
        idle_timeout: positive(
            "server.idle_timeout",
            sv.idle_timeout,
            Duration::from_secs(60),
        )?,
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        max_header_bytes: at_least(
            "server.max_header_bytes",
            sv.max_header_bytes,
            8192,
            32 * 1024,
        )?,
        max_headers: at_least("server.max_headers", sv.max_headers, 1, 100)?,
        shutdown_timeout: positive(
            "server.shutdown_timeout",
            sv.shutdown_timeout,
            Duration::from_secs(30),
        )?,
        send_timeout: positive(
            "server.send_timeout",
            sv.send_timeout,
            Duration::from_secs(60),
        )?,
        trusted_proxies,
        work_stealing: sv.work_stealing.unwrap_or(true),
        threads: threads(sv.threads)?,
    };

    let session = session_config(raw.session)?;
    let identity = IdentityConfig {
        header: raw
            .identity
            .header
            .clone()
            .unwrap_or_else(|| "X-Forwarded-User".to_owned()),
        upstream_control: raw.identity.upstream_control.unwrap_or(false),
        assertion: assertion_config(&raw.identity, &upstream.url)?,
    };
    proxy_header("identity.header", &identity.header)?;
    if let Some(a) = &identity.assertion {
        proxy_header("identity.assertion_header", &a.header)?;
        if fold_name(&a.header) == fold_name(&identity.header) {
            return Err(ConfigError::key(
                "identity.assertion_header",
                "must differ from identity.header",
            ));
        }
    }
    let auth = auth_config(raw.auth, identity.upstream_control)?;

    let log = LogConfig {
        format: raw.log.format.unwrap_or(LogFormat::Plain),
        level: raw.log.level.unwrap_or_else(|| "info".to_owned()),
    };
    tracing_subscriber::EnvFilter::try_new(&log.level)
        .map_err(|e| ConfigError::key("log.level", format!("not a log filter: {e}")))?;

    let admin = admin_config(raw.admin, listen)?;
    let tls = match (raw.tls.cert, raw.tls.key) {
        (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError::key("tls.key", "missing: tls.cert needs it")),
        (None, Some(_)) => return Err(ConfigError::key("tls.cert", "missing: tls.key needs it")),
    };
    Ok(Config {
        listen,
        upstream,
        server,
        session,
        auth,
        identity,
        log,
        admin,
        tls,
    })
}

fn admin_config(raw: RawAdmin, public: SocketAddr) -> Result<AdminConfig, ConfigError> {
    let listen = match raw.listen.as_deref() {
        Some(text) => {
            let addr: SocketAddr = text.parse().map_err(|_| {
                ConfigError::key(
                    "admin.listen",
                    format!("expected an address like 127.0.0.1:9180, got {text:?}"),
                )
            })?;
            if addr == public || (addr.port() == public.port() && addr.port() != 0) {
                return Err(ConfigError::key(
                    "admin.listen",
                    "must not be the public listener's address or port",
                ));
            }
            Some(addr)
        }
        None => None,
    };
    if raw.token_file.is_some() && listen.is_none() {
        return Err(ConfigError::key("admin.token_file", "needs admin.listen"));
    }
    Ok(AdminConfig {
        listen,
        token_file: raw.token_file,
    })
}

fn session_config(mut raw: RawSession) -> Result<SessionConfig, ConfigError> {
    let store = raw.store.unwrap_or(StoreKind::File);
    let redis = redis_config(store, &mut raw)?;
    let name = raw.name.unwrap_or_else(|| "CLOAKROOMSID".to_owned());
    // The name is both a cookie name and a URL parameter: keep it to
    // characters that need no escaping in either.
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(ConfigError::key(
            "session.name",
            format!("must be letters, digits, '_', '-' or '.', got {name:?}"),
        ));
    }
    let idle = positive(
        "session.idle_timeout",
        raw.idle_timeout,
        Duration::from_secs(30 * 60),
    )?;
    let absolute = positive(
        "session.absolute_timeout",
        raw.absolute_timeout,
        Duration::from_secs(12 * 3600),
    )?;
    let remember = positive(
        "session.remember_me",
        raw.remember_me,
        Duration::from_secs(180 * 86400),
    )?;
    if idle > absolute {
        return Err(ConfigError::key(
            "session.idle_timeout",
            "must not be longer than session.absolute_timeout",
        ));
    }
    if idle > remember {
        return Err(ConfigError::key(
            "session.idle_timeout",
            "must not be longer than session.remember_me",
        ));
    }
    let cookie_path = raw.cookie_path.unwrap_or_else(|| "/".to_owned());
    if !cookie_path.starts_with('/') || !is_attribute_safe(&cookie_path) {
        return Err(ConfigError::key(
            "session.cookie_path",
            format!("must be a path starting with '/', without ';' or spaces, got {cookie_path:?}"),
        ));
    }
    if let Some(domain) = &raw.cookie_domain {
        let ok = !domain.is_empty()
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(ConfigError::key(
                "session.cookie_domain",
                format!("must be a host name like example.com, got {domain:?}"),
            ));
        }
    }
    Ok(SessionConfig {
        name,
        store,
        dir: raw.dir.unwrap_or_else(|| PathBuf::from("sessions")),
        secret_file: raw
            .secret_file
            .unwrap_or_else(|| PathBuf::from("cloakroom.key")),
        idle_timeout: idle,
        absolute_timeout: absolute,
        remember_me: remember,
        cookie_domain: raw.cookie_domain,
        cookie_path,
        same_site: raw.same_site.unwrap_or(SameSiteKind::Lax),
        secure: raw.secure.unwrap_or(false),
        purge_interval: positive(
            "session.purge_interval",
            raw.purge_interval,
            Duration::from_secs(60),
        )?,
        cookieless: raw.cookieless.unwrap_or(true),
        url_bind_address: raw.url_bind_address.unwrap_or(true),
        app_values: raw.app_values.unwrap_or(false),
        redis,
    })
}

/// `session.redis_*`: exactly one of `redis_url`, `redis_cluster` and
/// `redis_sentinel` with the Redis store, none of them without it.
fn redis_config(
    store: StoreKind,
    raw: &mut RawSession,
) -> Result<Option<RedisConfig>, ConfigError> {
    let given: Vec<&str> = [
        raw.redis_url.as_ref().map(|_| "session.redis_url"),
        raw.redis_cluster.as_ref().map(|_| "session.redis_cluster"),
        raw.redis_sentinel
            .as_ref()
            .map(|_| "session.redis_sentinel"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if store != StoreKind::Redis {
        let stray = given
            .first()
            .copied()
            .or(raw.redis_prefix.as_ref().map(|_| "session.redis_prefix"))
            .or(raw.redis_timeout.as_ref().map(|_| "session.redis_timeout"))
            .or(raw.redis_ca_file.as_ref().map(|_| "session.redis_ca_file"));
        return match stray {
            Some(key) => Err(ConfigError::key(
                key,
                "only used with session.store = \"redis\"",
            )),
            None => Ok(None),
        };
    }
    let servers =
        match (
            raw.redis_url.take(),
            raw.redis_cluster.take(),
            raw.redis_sentinel.take(),
        ) {
            (Some(url), None, None) => {
                check_redis_url("session.redis_url", &url)?;
                RedisServers::Single(url)
            }
            (None, Some(nodes), None) => {
                if nodes.is_empty() {
                    return Err(ConfigError::key("session.redis_cluster", "lists no node"));
                }
                for node in &nodes {
                    check_redis_url("session.redis_cluster", node)?;
                }
                RedisServers::Cluster(nodes)
            }
            (None, None, Some(sentinel)) => {
                if sentinel.master.is_empty() {
                    return Err(ConfigError::key(
                        "session.redis_sentinel.master",
                        "is empty",
                    ));
                }
                if sentinel.nodes.is_empty() {
                    return Err(ConfigError::key(
                        "session.redis_sentinel.nodes",
                        "lists no sentinel",
                    ));
                }
                for node in &sentinel.nodes {
                    check_redis_url("session.redis_sentinel.nodes", node)?;
                }
                RedisServers::Sentinel {
                    master: sentinel.master,
                    nodes: sentinel.nodes,
                }
            }
            (None, None, None) => return Err(ConfigError::key(
                "session.store",
                "redis needs session.redis_url, session.redis_cluster or session.redis_sentinel",
            )),
            _ => {
                return Err(ConfigError::key(
                    given[1],
                    format!("conflicts with {}: give only one", given[0]),
                ))
            }
        };
    let prefix = raw
        .redis_prefix
        .take()
        .unwrap_or_else(|| "cloakroom:".to_owned());
    if prefix.is_empty() || prefix.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(ConfigError::key(
            "session.redis_prefix",
            format!("must be non-empty, without spaces or control characters, got {prefix:?}"),
        ));
    }
    let timeout = positive(
        "session.redis_timeout",
        raw.redis_timeout,
        Duration::from_millis(500),
    )?;
    Ok(Some(RedisConfig {
        servers,
        prefix,
        timeout,
        ca_file: raw.redis_ca_file.take(),
    }))
}

fn check_redis_url(key: &str, text: &str) -> Result<(), ConfigError> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => Ok(()),
        Ok(u) => Err(ConfigError::key(
            key,
            format!(
                "must be a redis:// or rediss:// URL with a host, got scheme {:?}",
                u.scheme()
            ),
        )),
        Err(e) => Err(ConfigError::key(key, format!("not a URL ({e}): {text:?}"))),
    }
}

/// Headers that describe the message or the connection, that the proxy
/// writes itself, or that carry cookies: a header the proxy sets for the
/// application must be none of them (an assertion in `Transfer-Encoding`
/// would desynchronise the upstream's parser).
const NOT_FOR_THE_PROXY_TO_SET: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
    "content-type",
    "content-encoding",
    "host",
    "cookie",
    "set-cookie",
    "authorization",
    "expect",
    "via",
];

/// A header name the proxy may set on requests to the application.
fn proxy_header(key: &str, name: &str) -> Result<(), ConfigError> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(ConfigError::key(
            key,
            format!("not a valid header name: {name:?}"),
        ));
    }
    let folded = fold_name(name);
    let taken = NOT_FOR_THE_PROXY_TO_SET
        .iter()
        .chain(crate::forwarded::CLIENT_CLAIMS)
        .chain(crate::identity::OWN_HEADERS)
        .chain(["x-cloakroom-login", "x-cloakroom-logout"].iter())
        .any(|n| fold_name(n) == folded);
    if taken {
        return Err(ConfigError::key(
            key,
            format!("{name:?} is a header with another meaning (framing, forwarding, cookies or the proxy's own)"),
        ));
    }
    Ok(())
}

fn fold_name(name: &str) -> Vec<u8> {
    crate::identity::fold(name.as_bytes())
}

/// `identity.assertion_*`: on when `assertion_header` is set; the other
/// keys without it are refused (they would do nothing).
fn assertion_config(
    raw: &RawIdentity,
    upstream: &url::Url,
) -> Result<Option<AssertionConfig>, ConfigError> {
    let Some(header) = raw.assertion_header.clone() else {
        for (key, set) in [
            (
                "identity.assertion_audience",
                raw.assertion_audience.is_some(),
            ),
            (
                "identity.assertion_key_file",
                raw.assertion_key_file.is_some(),
            ),
            (
                "identity.assertion_lifetime",
                raw.assertion_lifetime.is_some(),
            ),
        ] {
            if set {
                return Err(ConfigError::key(
                    key,
                    "has no effect without identity.assertion_header",
                ));
            }
        }
        return Ok(None);
    };
    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(ConfigError::key(
            "identity.assertion_header",
            format!("not a valid header name: {header:?}"),
        ));
    }
    let lifetime = raw.assertion_lifetime.unwrap_or(Duration::from_secs(300));
    if !(Duration::from_secs(30)..=Duration::from_secs(3600)).contains(&lifetime) {
        return Err(ConfigError::key(
            "identity.assertion_lifetime",
            "must be between 30s and 1h",
        ));
    }
    let audience = match &raw.assertion_audience {
        Some(a) if a.trim().is_empty() => {
            return Err(ConfigError::key("identity.assertion_audience", "is empty"))
        }
        Some(a) => a.clone(),
        None => upstream.origin().ascii_serialization(),
    };
    Ok(Some(AssertionConfig {
        header,
        audience,
        key_file: raw
            .assertion_key_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("./cloakroom-assertion.key")),
        lifetime,
    }))
}

fn auth_config(raw: RawAuth, upstream_control: bool) -> Result<AuthConfig, ConfigError> {
    // With users to log in, protecting everything is the safe default;
    // without, nothing can be protected.
    let default_protect = if raw.users_file.is_some() {
        vec!["/".to_owned()]
    } else {
        Vec::new()
    };
    let protect = raw.protect.unwrap_or(default_protect);
    let public = raw.public.unwrap_or_default();
    for (key, rules) in [("auth.protect", &protect), ("auth.public", &public)] {
        if let Some(bad) = rules
            .iter()
            .find(|r| !r.starts_with('/') || r.chars().any(char::is_control))
        {
            return Err(ConfigError::key(
                key,
                format!("paths must start with '/', got {bad:?}"),
            ));
        }
    }
    if !protect.is_empty() && raw.users_file.is_none() && !upstream_control {
        return Err(ConfigError::key(
            "auth.protect",
            "paths are protected but nobody could log in: set auth.users_file (or identity.upstream_control = true)",
        ));
    }
    let failure_window = positive(
        "auth.failure_window",
        raw.failure_window,
        Duration::from_secs(15 * 60),
    )?;
    let at_least_one = |key: &str, v: Option<u32>, default: u32| match v {
        Some(0) => Err(ConfigError::key(key, "must be at least 1")),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    Ok(AuthConfig {
        users_file: raw.users_file,
        protect,
        public,
        app_name: raw.app_name.unwrap_or_else(|| "the application".to_owned()),
        max_failures_per_ip: at_least_one("auth.max_failures_per_ip", raw.max_failures_per_ip, 20)?,
        max_failures_per_user: at_least_one(
            "auth.max_failures_per_user",
            raw.max_failures_per_user,
            5,
        )?,
        failure_window,
    })
}

fn is_attribute_safe(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic() && b != b';')
}

fn parse_upstream_url(text: &str) -> Result<url::Url, ConfigError> {
    let key = "upstream.url";
    let url = url::Url::parse(text)
        .map_err(|e| ConfigError::key(key, format!("not a URL ({e}): {text:?}")))?;
    match url.scheme() {
        "http" => {}
        "https" => {}
        other => {
            return Err(ConfigError::key(
                key,
                format!("scheme must be http or https, got {other}"),
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::key(key, "has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::key(
            key,
            "must not have a query string or fragment",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::key(key, "must not carry credentials"));
    }
    Ok(url)
}

fn positive(
    key: &str,
    value: Option<Duration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(d) if d.is_zero() => Err(ConfigError::key(key, "must be longer than zero")),
        Some(d) => Ok(d),
        None => Ok(default),
    }
}

/// `server.threads`: one per core unless set; at least 1, and no more than
/// a thread per connection could use (`MAX_THREADS`).
fn threads(value: Option<usize>) -> Result<usize, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match at_least("server.threads", value, 1, cores)? {
        n if n > MAX_THREADS => Err(ConfigError::key(
            "server.threads",
            format!("must be at most {MAX_THREADS}, got {n}"),
        )),
        n => Ok(n),
    }
}

/// More threads than this only cost memory and switches.
const MAX_THREADS: usize = 1024;

fn at_least(
    key: &str,
    value: Option<usize>,
    min: usize,
    default: usize,
) -> Result<usize, ConfigError> {
    match value {
        Some(v) if v < min => Err(ConfigError::key(
            key,
            format!("must be at least {min}, got {v}"),
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}
