//! `proxy.toml`: the raw serde shape of the file, and the validated [`Config`]
//! the rest of the proxy reads.
//!
//! Parsing goes through `serde_path_to_error` so that every error, whether
//! the TOML is malformed, a key is unknown, or a value has the wrong type,
//! names the dotted key it is about (`upstream.timeout: invalid duration …`).
//! Validation that serde cannot express (URL schemes, ranges) happens in
//! [`validate`] and names its key the same way.
//!
//! - [`raw`]: the file's serde shape and parse errors.
//! - [`validate`]: raw file → [`Config`].
//! - [`duration_text`]: durations as `30s`, `12h`, `180d`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod duration_text;
mod raw;
mod validate;

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
    /// An error about `key`.
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
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
    /// The admin listener (health, readiness, sessions API).
    pub admin: AdminConfig,
    /// TLS on the public listener; none: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// `[tls]`: the public listener speaks TLS (1.2 and 1.3, ALPN h2 and http/1.1).
#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[admin]`: the operators' listener, never the public one.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AdminConfig {
    /// Where it listens; none: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The bearer token for `/sessions`; none: `/sessions` is not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
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
    /// CA certificates (PEM) an `https://` upstream is checked against,
    /// instead of the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
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
    /// A connection with a response in progress that makes no progress for
    /// this long (the client does not read, or nothing comes) is closed.
    #[serde(with = "duration_text")]
    pub send_timeout: Duration,
    /// Balancers whose `X-Forwarded-For`, `-Proto` and `-Host` are believed.
    #[serde(serialize_with = "ser_cidrs")]
    pub trusted_proxies: Vec<crate::forwarded::Cidr>,
    /// true: one runtime whose worker threads (one per core) take work
    /// from each other. false: one single-threaded runtime per core, each
    /// with its own listening socket (`SO_REUSEPORT`), as nginx's workers;
    /// less CPU per request, but a connection stays on its core.
    pub work_stealing: bool,
    /// Threads that serve connections: the work-stealing runtime's
    /// workers, or the runtimes per core (nginx's `worker_processes`).
    /// Default: one per core.
    pub threads: usize,
}

fn ser_cidrs<S: serde::Serializer>(
    list: &[crate::forwarded::Cidr],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(ToString::to_string))
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
    /// Bind an ID carried in URLs to the client's address as well as its
    /// User-Agent (a URL-mode session then ends when the address changes).
    pub url_bind_address: bool,
    /// Session variables for the application (`X-Cloakroom-Session`).
    pub app_values: bool,
    /// Where the Redis store is (`session.store = "redis"` only); its keys
    /// are `session.redis_*`.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
}

/// `session.redis_*`: where the Redis store is and how it is used.
#[derive(Debug, Clone, Serialize)]
pub struct RedisConfig {
    /// One server, a Cluster, or a Sentinel-managed primary.
    #[serde(flatten)]
    pub servers: RedisServers,
    /// Prefix of every key and channel cloakroom uses.
    #[serde(rename = "redis_prefix")]
    pub prefix: String,
    /// Longest any one Redis call may take before it counts as a failure.
    #[serde(rename = "redis_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// CA certificates (PEM) that `rediss://` servers are checked against,
    /// instead of the system's.
    #[serde(rename = "redis_ca_file", skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Which Redis deployment holds the sessions.
#[derive(Debug, Clone, Serialize)]
pub enum RedisServers {
    /// `session.redis_url`.
    #[serde(rename = "redis_url")]
    Single(String),
    /// `session.redis_cluster`: node URLs.
    #[serde(rename = "redis_cluster")]
    Cluster(Vec<String>),
    /// `session.redis_sentinel`.
    #[serde(rename = "redis_sentinel")]
    Sentinel {
        /// The name the sentinels know the primary by.
        master: String,
        /// Sentinel URLs.
        nodes: Vec<String>,
    },
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
    /// The signed identity assertion; none: off.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<AssertionConfig>,
}

/// `identity.assertion_*`: a short-lived signed JWT naming the user.
#[derive(Debug, Clone, Serialize)]
pub struct AssertionConfig {
    /// The request header carrying it.
    #[serde(rename = "assertion_header")]
    pub header: String,
    /// Its `aud` claim.
    #[serde(rename = "assertion_audience")]
    pub audience: String,
    /// The signing keys (PEM, PKCS#8 P-256; the last one signs), created
    /// with one key when missing.
    #[serde(rename = "assertion_key_file")]
    pub key_file: PathBuf,
    /// How long a token is valid (`exp - iat`).
    #[serde(rename = "assertion_lifetime", with = "duration_text")]
    pub lifetime: Duration,
}

/// `session.store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One file per session under `session.dir`.
    File,
    /// Process memory only.
    Memory,
    /// A Redis (or Valkey) server, Cluster or Sentinel-managed primary.
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
        let mut raw = raw::parse_raw(text)?;
        if let Some(listen) = env(LISTEN_ENV) {
            raw.listen = Some(listen);
        }
        if let Some(url) = env(UPSTREAM_URL_ENV) {
            raw.upstream.url = Some(url);
        }
        validate::from_raw(raw)
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

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })
}

fn ser_url<S: serde::Serializer>(url: &url::Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(url.as_str())
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
        assert_eq!(
            c.server.threads,
            std::thread::available_parallelism().unwrap().get()
        );
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
        assert_eq!(
            err(&format!("{MINIMAL}[server]\nthreads = 0\n")),
            "server.threads: must be at least 1, got 0"
        );
        assert_eq!(
            err(&format!("{MINIMAL}[server]\nthreads = 1025\n")),
            "server.threads: must be at most 1024, got 1025"
        );
        assert!(err(&format!("{MINIMAL}[server]\nthreads = -1\n"))
            .starts_with("server.threads: invalid value"));
        assert!(err(&format!("{MINIMAL}[log]\nformat = \"xml\"\n"))
            .starts_with("log.format: unknown variant"));
        assert!(err("[upstream\n").starts_with("(file): "));
        assert!(err(&format!("{MINIMAL}[session]\nname = \"a b\"\n"))
            .starts_with("session.name: must be"));
        assert!(err(&format!("{MINIMAL}[session]\nstore = \"redis\"\n"))
            .starts_with("session.store: redis needs session.redis_url"));
        assert!(err(&format!(
            "{MINIMAL}[session]\nstore = \"redis\"\nredis_url = \"redis://a\"\nredis_cluster = [\"redis://b\"]\n"
        ))
        .starts_with("session.redis_cluster: conflicts with session.redis_url"));
        assert!(err(&format!(
            "{MINIMAL}[session]\nstore = \"redis\"\nredis_url = \"http://a\"\n"
        ))
        .starts_with("session.redis_url: must be a redis://"));
        assert!(
            err(&format!("{MINIMAL}[session]\nredis_url = \"redis://a\"\n"))
                .starts_with("session.redis_url: only used with")
        );
        assert!(err(&format!(
            "{MINIMAL}[session]\nstore = \"redis\"\nredis_sentinel = {{ master = \"m\", nodes = [] }}\n"
        ))
        .starts_with("session.redis_sentinel.nodes: lists no sentinel"));
        let c = Config::parse(&format!(
            "{MINIMAL}[session]\nstore = \"redis\"\nredis_cluster = [\"redis://127.0.0.1:7000\"]\n"
        ))
        .unwrap();
        assert!(
            err(&format!("{MINIMAL}[admin]\nlisten = \"127.0.0.1:8000\"\n"))
                .starts_with("admin.listen: must not be the public listener")
        );
        assert!(err(&format!("{MINIMAL}[tls]\ncert = \"c.pem\"\n")).starts_with("tls.key: missing"));
        assert!(err(&format!(
            "{MINIMAL}[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n"
        ))
        .starts_with("server.trusted_proxies:"));
        assert!(err(&format!("{MINIMAL}[admin]\nlisten = \"nowhere\"\n"))
            .starts_with("admin.listen: expected an address"));
        assert!(err(&format!("{MINIMAL}[admin]\ntoken_file = \"t\"\n"))
            .starts_with("admin.token_file: needs admin.listen"));
        let redis = c.session.redis.unwrap();
        assert_eq!(redis.prefix, "cloakroom:");
        assert_eq!(redis.timeout, Duration::from_millis(500));
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
    fn assertion_keys_are_checked_and_named() {
        for (extra, key) in [
            (
                "[identity]\nassertion_audience = \"x\"\n",
                "identity.assertion_audience",
            ),
            (
                "[identity]\nassertion_header = \"bad header\"\n",
                "identity.assertion_header",
            ),
            (
                "[identity]\nassertion_header = \"X-A\"\nassertion_lifetime = \"5s\"\n",
                "identity.assertion_lifetime",
            ),
            (
                "[identity]\nassertion_header = \"X-A\"\nassertion_audience = \" \"\n",
                "identity.assertion_audience",
            ),
            (
                "[identity]\nassertion_header = \"Transfer-Encoding\"\n",
                "identity.assertion_header",
            ),
            (
                "[identity]\nassertion_header = \"content_length\"\n",
                "identity.assertion_header",
            ),
            (
                "[identity]\nassertion_header = \"X-Forwarded-User\"\n",
                "identity.assertion_header",
            ),
            (
                "[identity]\nassertion_header = \"X-Forwarded-For\"\n",
                "identity.assertion_header",
            ),
            ("[identity]\nheader = \"Host\"\n", "identity.header"),
            (
                "[identity]\nheader = \"X-Cloakroom-Session\"\n",
                "identity.header",
            ),
        ] {
            let e = Config::parse(&format!("{MINIMAL}{extra}")).unwrap_err();
            assert!(e.to_string().starts_with(key), "{extra}: {e}");
        }
        let c = Config::parse(&format!(
            "{MINIMAL}[identity]\nassertion_header = \"X-A\"\n"
        ))
        .unwrap();
        let a = c.identity.assertion.unwrap();
        assert_eq!(a.audience, c.upstream.url.origin().ascii_serialization());
        assert_eq!(a.lifetime, Duration::from_secs(300));
    }

    #[test]
    fn effective_config_renders_and_reparses() {
        let redis = [
            "",
            "[session]\nstore = \"redis\"\nredis_url = \"redis://a:6379/1\"\nredis_ca_file = \"ca.pem\"\n",
            "[session]\nstore = \"redis\"\nredis_cluster = [\"redis://a:7000\", \"redis://b:7000\"]\n",
            "[session]\nstore = \"redis\"\nredis_sentinel = { master = \"m\", nodes = [\"redis://s:26379\"] }\n",
            "[session]\napp_values = true\n[identity]\nassertion_header = \"X-Assert\"\nassertion_lifetime = \"90s\"\n",
        ];
        for extra in redis {
            let c = Config::parse(&format!("{MINIMAL}{extra}")).unwrap();
            let again =
                Config::parse(&c.to_toml()).unwrap_or_else(|e| panic!("{e}\n{}", c.to_toml()));
            assert_eq!(again.to_toml(), c.to_toml());
        }
    }
}
