//! `proxy.toml`: the raw serde shape of the file, and the validated [`Config`]
//! the rest of the proxy reads.
//!
//! Parsing goes through `serde_path_to_error` so that every error, whether
//! the TOML is malformed, a key is unknown, or a value has the wrong type,
//! names the dotted key it is about (`upstream.timeout: invalid duration …`).
//! Validation that serde cannot express (URL schemes, ranges) happens in
//! [`Config::from_raw`] and names its key the same way.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "CLOAKROOM_CONFIG";
/// Environment override for `listen` (what a sidecar sets most).
pub const LISTEN_ENV: &str = "CLOAKROOM_LISTEN";
/// Environment override for `upstream.url`.
pub const UPSTREAM_URL_ENV: &str = "CLOAKROOM_UPSTREAM_URL";
/// The config file read when neither `--config` nor `CLOAKROOM_CONFIG` is given.
pub const DEFAULT_CONFIG_FILE: &str = "proxy.toml";

/// A problem with the configuration, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A key is missing, unknown, mistyped or has a value that is not allowed.
    #[error("{key}: {message}")]
    Key {
        /// The dotted key, e.g. `upstream.url`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// Where requests go.
    pub upstream: UpstreamConfig,
    /// Limits and timeouts of the client-facing side.
    pub server: ServerConfig,
    /// Sessions: cookie, lifetimes, store, key.
    pub session: SessionConfig,
    /// Login and access rules.
    pub auth: AuthConfig,
    /// How the upstream learns who the user is.
    pub identity: IdentityConfig,
    /// Request logging.
    pub log: LogConfig,
}

/// `[upstream]`: the application behind the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    /// Base URL; a path in it is prefixed to every forwarded path.
    #[serde(serialize_with = "ser_url")]
    pub url: url::Url,
    /// How long to wait for the upstream's response headers before a 504.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// How long to wait for a TCP connection before a 502.
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// Send the client's `Host` upstream (true) or the upstream URL's (false).
    pub preserve_host: bool,
    /// Idle pooled connections to the upstream kept per host.
    pub pool_max_idle: usize,
    /// How long an idle pooled upstream connection is kept.
    #[serde(with = "duration_text")]
    pub pool_idle_timeout: Duration,
}

/// `[server]`: what the proxy accepts from clients.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send a complete request head (slowloris guard).
    #[serde(with = "duration_text")]
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Largest request head (request line + headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more gets 431.
    pub max_headers: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[serde(with = "duration_text")]
    pub shutdown_timeout: Duration,
}

/// `[session]`: how sessions are identified, kept and aged.
#[derive(Debug, Clone, Serialize)]
pub struct SessionConfig {
    /// Cookie name and URL parameter name.
    pub name: String,
    /// Which store keeps the sessions.
    pub store: StoreKind,
    /// Directory of the file store.
    pub dir: PathBuf,
    /// File holding the signing keys (created with mode 0600 when missing).
    pub secret_file: PathBuf,
    /// A session ends this long after its last request.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// A session ends this long after it began, however busy.
    #[serde(with = "duration_text")]
    pub absolute_timeout: Duration,
    /// Lifetime of a "remember me" session (and its cookie's Max-Age).
    #[serde(with = "duration_text")]
    pub remember_me: Duration,
    /// `Domain` of the cookie; none means host-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_domain: Option<String>,
    /// `Path` of the cookie.
    pub cookie_path: String,
    /// `SameSite` of the cookie.
    pub same_site: SameSiteKind,
    /// Always mark the cookie `Secure` (e.g. behind a TLS-terminating balancer).
    pub secure: bool,
    /// How often expired sessions are purged from the store.
    #[serde(with = "duration_text")]
    pub purge_interval: Duration,
    /// Serve clients that refuse cookies (probe, URL mode, link rewriting).
    pub cookieless: bool,
}

/// `[auth]`: users, protected paths, login throttling.
#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// TOML table `name = "argon2id PHC string"`; no file, no login form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// Path prefixes that need a login.
    pub protect: Vec<String>,
    /// Path prefixes inside protected ones that do not.
    pub public: Vec<String>,
    /// The application's name, shown on the login page.
    pub app_name: String,
    /// Failed logins per client IP within `failure_window` before refusing.
    pub max_failures_per_ip: u32,
    /// Failed logins per username within `failure_window` before refusing.
    pub max_failures_per_user: u32,
    /// The throttling window.
    #[serde(with = "duration_text")]
    pub failure_window: Duration,
}

/// `[identity]`: the header that tells the upstream who the user is.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityConfig {
    /// Header carrying the logged-in user's name.
    pub header: String,
    /// Let the upstream log sessions in and out with response headers.
    pub upstream_control: bool,
}

/// `session.store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One file per session under `session.dir`.
    File,
    /// Process memory only.
    Memory,
    /// A Redis server (not available yet).
    Redis,
}

/// `session.same_site`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSiteKind {
    /// Sent on top-level navigations from other sites (the default).
    Lax,
    /// Never sent on requests from other sites.
    Strict,
    /// Sent everywhere; forces `Secure`.
    None,
}

/// `[log]`: the request log.
#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    /// `plain` or `json`.
    pub format: LogFormat,
    /// Filter used when `RUST_LOG` is not set, e.g. `info` or `cloakroom=debug`.
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

// ---- the raw shape of the file ----------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    users_file: Option<PathBuf>,
    protect: Option<Vec<String>>,
    public: Option<Vec<String>>,
    app_name: Option<String>,
    max_failures_per_ip: Option<u32>,
    max_failures_per_user: Option<u32>,
    #[serde(default, with = "duration_text::option")]
    failure_window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    header: Option<String>,
    upstream_control: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    name: Option<String>,
    store: Option<StoreKind>,
    dir: Option<PathBuf>,
    secret_file: Option<PathBuf>,
    #[serde(default, with = "duration_text::option")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    absolute_timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    remember_me: Option<Duration>,
    cookie_domain: Option<String>,
    cookie_path: Option<String>,
    same_site: Option<SameSiteKind>,
    secure: Option<bool>,
    #[serde(default, with = "duration_text::option")]
    purge_interval: Option<Duration>,
    cookieless: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
    #[serde(default, with = "duration_text::option")]
    timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    connect_timeout: Option<Duration>,
    preserve_host: Option<bool>,
    pool_max_idle: Option<usize>,
    #[serde(default, with = "duration_text::option")]
    pool_idle_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    max_connections: Option<usize>,
    #[serde(default, with = "duration_text::option")]
    header_timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    idle_timeout: Option<Duration>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    #[serde(default, with = "duration_text::option")]
    shutdown_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file the user named (`--config` or `CLOAKROOM_CONFIG`): it must exist.
    Named(PathBuf),
    /// `./proxy.toml`, which may be absent when the environment supplies
    /// `CLOAKROOM_UPSTREAM_URL` (a sidecar configured by environment alone).
    Default,
}

impl Config {
    /// Reads, applies environment overrides and validates.
    pub fn load(source: &Source) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let text = match source {
            Source::Named(path) => read(path)?,
            Source::Default => {
                let path = Path::new(DEFAULT_CONFIG_FILE);
                match std::fs::read_to_string(path) {
                    Ok(text) => text,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && env(UPSTREAM_URL_ENV).is_some() =>
                    {
                        String::new()
                    }
                    Err(source) => {
                        return Err(ConfigError::Read {
                            path: path.into(),
                            source,
                        })
                    }
                }
            }
        };
        Config::parse_with_env(&text, env)
    }

    /// Parses `text` as `proxy.toml`, with no environment overrides.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, |_| None)
    }

    /// Parses `text`, then lets `env` override the keys a sidecar sets most.
    pub fn parse_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut raw = parse_raw(text)?;
        if let Some(listen) = env(LISTEN_ENV) {
            raw.listen = Some(listen);
        }
        if let Some(url) = env(UPSTREAM_URL_ENV) {
            raw.upstream.url = Some(url);
        }
        Config::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
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
        };

        let sv = raw.server;
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
        };

        let session = session_config(raw.session)?;
        let identity = IdentityConfig {
            header: raw
                .identity
                .header
                .unwrap_or_else(|| "X-Forwarded-User".to_owned()),
            upstream_control: raw.identity.upstream_control.unwrap_or(false),
        };
        if http::HeaderName::from_bytes(identity.header.as_bytes()).is_err() {
            return Err(ConfigError::key(
                "identity.header",
                format!("not a valid header name: {:?}", identity.header),
            ));
        }
        let auth = auth_config(raw.auth, identity.upstream_control)?;

        let log = LogConfig {
            format: raw.log.format.unwrap_or(LogFormat::Plain),
            level: raw.log.level.unwrap_or_else(|| "info".to_owned()),
        };
        tracing_subscriber::EnvFilter::try_new(&log.level)
            .map_err(|e| ConfigError::key("log.level", format!("not a log filter: {e}")))?;

        Ok(Config {
            listen,
            upstream,
            server,
            session,
            auth,
            identity,
            log,
        })
    }

    /// The effective configuration as TOML, defaults filled in (`cloakroom check`).
    pub fn to_toml(&self) -> String {
        // Serializing plain strings, numbers and tables cannot fail.
        let mut text = toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

fn session_config(raw: RawSession) -> Result<SessionConfig, ConfigError> {
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
    let store = raw.store.unwrap_or(StoreKind::File);
    if store == StoreKind::Redis {
        return Err(ConfigError::key(
            "session.store",
            "redis is not available yet; use file or memory",
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
    })
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

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })
}

fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error("(file)", &e, text))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { "(file)".to_owned() } else { key };
        toml_error(&key, e.inner(), text)
    })
}

/// One line: the key, toml's message and where in the file it points.
fn toml_error(key: &str, e: &toml::de::Error, text: &str) -> ConfigError {
    let mut message = e.message().trim().replace("unknown field", "unknown key");
    if let Some(span) = e.span() {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        message.push_str(&format!(" (line {line})"));
    }
    ConfigError::key(key, message)
}

fn parse_upstream_url(text: &str) -> Result<url::Url, ConfigError> {
    let key = "upstream.url";
    let url = url::Url::parse(text)
        .map_err(|e| ConfigError::key(key, format!("not a URL ({e}): {text:?}")))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(ConfigError::key(
                key,
                "https upstreams are not supported yet; use http to a local upstream",
            ))
        }
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

fn ser_url<S: serde::Serializer>(url: &url::Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(url.as_str())
}

/// Durations written as text: `30s`, `30m`, `12h`, `180d`, `1h 30m`.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write it like 30s, 30m, 12h or 180d"
            ))
        })
    }

    pub mod option {
        use std::time::Duration;

        use serde::Deserializer;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    const MINIMAL: &str = "[upstream]\nurl = \"http://127.0.0.1:8080\"\n";

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(c.upstream.timeout, Duration::from_secs(60));
        assert!(c.upstream.preserve_host);
        assert_eq!(c.server.max_headers, 100);
        assert_eq!(c.log.format, LogFormat::Plain);
    }

    #[test]
    fn durations_are_human_readable() {
        let c = Config::parse(&format!(
            "{MINIMAL}timeout = \"30s\"\n[server]\nidle_timeout = \"30m\"\nshutdown_timeout = \"180d\"\nheader_timeout = \"12h\"\n"
        ))
        .unwrap();
        assert_eq!(c.upstream.timeout, Duration::from_secs(30));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(30 * 60));
        assert_eq!(c.server.header_timeout, Duration::from_secs(12 * 3600));
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(180 * 86400));
    }

    #[test]
    fn every_error_names_its_key() {
        assert_eq!(
            err("[upstream]\nurl = \"ftp://x\"\n"),
            "upstream.url: scheme must be http or https, got ftp"
        );
        assert!(err("").starts_with("upstream.url: missing"));
        assert!(err(&format!("{MINIMAL}timeout = \"soon\"\n"))
            .starts_with("upstream.timeout: invalid duration"));
        assert!(
            err(&format!("{MINIMAL}timeout = 5\n")).starts_with("upstream.timeout: invalid type")
        );
        assert!(err(&format!("{MINIMAL}colour = \"red\"\n"))
            .starts_with("upstream.colour: unknown key `colour`"));
        assert!(err(&format!("bogus = 1\n{MINIMAL}")).starts_with("bogus: unknown key `bogus`"));
        assert!(err(&format!("listen = \"nowhere\"\n{MINIMAL}"))
            .starts_with("listen: expected an address"));
        assert!(err(&format!("{MINIMAL}[server]\nmax_connections = 0\n"))
            .starts_with("server.max_connections: must be at least 1"));
        assert!(err(&format!("{MINIMAL}[log]\nformat = \"xml\"\n"))
            .starts_with("log.format: unknown variant"));
        assert!(err("[upstream\n").starts_with("(file): "));
        assert!(err(&format!("{MINIMAL}[session]\nname = \"a b\"\n"))
            .starts_with("session.name: must be"));
        assert!(err(&format!("{MINIMAL}[session]\nstore = \"redis\"\n"))
            .starts_with("session.store: redis is not available"));
        assert!(err(&format!("{MINIMAL}[session]\nstore = \"disk\"\n"))
            .starts_with("session.store: unknown variant"));
        assert!(
            err(&format!("{MINIMAL}[session]\nidle_timeout = \"13h\"\n"))
                .starts_with("session.idle_timeout: must not be longer")
        );
        assert!(err(&format!("{MINIMAL}[session]\ncookie_path = \"x;y\"\n"))
            .starts_with("session.cookie_path: must be"));
        assert!(
            err(&format!("{MINIMAL}[session]\ncookie_domain = \"a b\"\n"))
                .starts_with("session.cookie_domain: must be")
        );
        assert!(err(&format!("{MINIMAL}[auth]\nprotect = [\"/\"]\n"))
            .starts_with("auth.protect: paths are protected but nobody"));
        assert!(err(&format!(
            "{MINIMAL}[auth]\nusers_file = \"u\"\npublic = [\"x\"]\n"
        ))
        .starts_with("auth.public: paths must start"));
        assert!(err(&format!("{MINIMAL}[identity]\nheader = \"X User\"\n"))
            .starts_with("identity.header: not a valid header name"));
        assert!(err(&format!("{MINIMAL}[session]\nsame_site = \"loose\"\n"))
            .starts_with("session.same_site: unknown variant"));
    }

    #[test]
    fn environment_overrides_listen_and_upstream() {
        let c = Config::parse_with_env("", |name| match name {
            LISTEN_ENV => Some("0.0.0.0:9000".into()),
            UPSTREAM_URL_ENV => Some("http://app:3000/base".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.upstream.url.path(), "/base");
        let e = Config::parse_with_env(MINIMAL, |name| {
            (name == UPSTREAM_URL_ENV).then(|| "gopher://x".into())
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("upstream.url: scheme"));
    }

    #[test]
    fn effective_config_renders_and_reparses() {
        let c = Config::parse(MINIMAL).unwrap();
        let again = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(again.to_toml(), c.to_toml());
    }
}
