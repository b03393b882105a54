//! The raw serde shape of `proxy.toml`: every key optional, unknown keys
//! refused, and parse errors that name the dotted key they are about.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration_text;
use super::{ConfigError, LogFormat, SameSiteKind, StoreKind};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) session: RawSession,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) tls: RawTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) users_file: Option<PathBuf>,
    pub(super) protect: Option<Vec<String>>,
    pub(super) public: Option<Vec<String>>,
    pub(super) app_name: Option<String>,
    pub(super) max_failures_per_ip: Option<u32>,
    pub(super) max_failures_per_user: Option<u32>,
    #[serde(default, with = "duration_text::option")]
    pub(super) failure_window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) header: Option<String>,
    pub(super) upstream_control: Option<bool>,
    pub(super) assertion_header: Option<String>,
    pub(super) assertion_audience: Option<String>,
    pub(super) assertion_key_file: Option<PathBuf>,
    #[serde(default, with = "duration_text::option")]
    pub(super) assertion_lifetime: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub(super) name: Option<String>,
    pub(super) store: Option<StoreKind>,
    pub(super) dir: Option<PathBuf>,
    pub(super) secret_file: Option<PathBuf>,
    #[serde(default, with = "duration_text::option")]
    pub(super) idle_timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    pub(super) absolute_timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    pub(super) remember_me: Option<Duration>,
    pub(super) cookie_domain: Option<String>,
    pub(super) cookie_path: Option<String>,
    pub(super) same_site: Option<SameSiteKind>,
    pub(super) secure: Option<bool>,
    #[serde(default, with = "duration_text::option")]
    pub(super) purge_interval: Option<Duration>,
    pub(super) cookieless: Option<bool>,
    pub(super) url_bind_address: Option<bool>,
    pub(super) app_values: Option<bool>,
    pub(super) redis_url: Option<String>,
    pub(super) redis_cluster: Option<Vec<String>>,
    pub(super) redis_sentinel: Option<RawSentinel>,
    pub(super) redis_prefix: Option<String>,
    pub(super) redis_ca_file: Option<PathBuf>,
    #[serde(default, with = "duration_text::option")]
    pub(super) redis_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSentinel {
    pub(super) master: String,
    pub(super) nodes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: Option<String>,
    #[serde(default, with = "duration_text::option")]
    pub(super) timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    pub(super) connect_timeout: Option<Duration>,
    pub(super) preserve_host: Option<bool>,
    pub(super) pool_max_idle: Option<usize>,
    #[serde(default, with = "duration_text::option")]
    pub(super) pool_idle_timeout: Option<Duration>,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) max_connections: Option<usize>,
    #[serde(default, with = "duration_text::option")]
    pub(super) header_timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    pub(super) idle_timeout: Option<Duration>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_headers: Option<usize>,
    #[serde(default, with = "duration_text::option")]
    pub(super) shutdown_timeout: Option<Duration>,
    #[serde(default, with = "duration_text::option")]
    pub(super) send_timeout: Option<Duration>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) work_stealing: Option<bool>,
    pub(super) threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<String>,
}

pub(super) fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
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
