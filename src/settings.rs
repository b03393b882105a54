//! [`Settings`]: what `proxy.toml` decides that a reload (SIGHUP) swaps
//! whole, apart from the state that outlives a reload (the store, the
//! signing keys, the counters, the throttles; see [`crate::App`]).
//!
//! A request takes one [`Settings`] when it starts and keeps it to the end,
//! so it never sees half of an old configuration and half of a new one.
//!
//! Reloaded: `upstream.*`, `auth.users_file`, `auth.protect`, `auth.public`,
//! `auth.app_name`, `identity.*`, `admin.token_file`, `tls.*` (while TLS
//! stays on) and `server.trusted_proxies`. Everything else describes the
//! listeners, the sessions already issued or the counters already running;
//! a change there is named in a warning and waits for a restart (the value
//! in force stays the old one, here too, so nothing reads half a change).

use std::sync::Arc;

use crate::assertion::Assertion;
use crate::auth::password::Users;
use crate::auth::rules::Rules;
use crate::config::{self, Config};
use crate::forwarded::Trusted;
use crate::identity::Identity;
use crate::upstream::Upstream;
use crate::BuildError;

/// The settings in force.
pub struct Settings {
    /// The configuration in force (restart-only keys as they were at start).
    pub config: Config,
    /// The application behind the proxy and its connection pool (kept
    /// across a reload that does not change `[upstream]`).
    pub upstream: Arc<Upstream>,
    /// `auth.protect` / `auth.public`.
    pub rules: Rules,
    /// The users file; none: the login form logs nobody in.
    pub users: Option<Arc<Users>>,
    /// The identity header.
    pub identity: Identity,
    /// The signed identity assertion (`identity.assertion_*`), if on.
    pub assertion: Option<Assertion>,
    /// The balancers whose forwarding headers are believed.
    pub trusted: Trusted,
    /// The bearer token of the admin listener (`admin.token_file`).
    pub admin_token: Option<String>,
    /// TLS on the public listener (`[tls]`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Settings {
    /// Builds the settings `config` describes. Given the `running` ones (a
    /// reload), keys that need a restart keep their running values and the
    /// upstream's pool is kept when `[upstream]` did not change.
    pub fn build(mut config: Config, running: Option<&Settings>) -> Result<Settings, BuildError> {
        if let Some(old) = running {
            keep_restart_keys(&old.config, &mut config);
        }
        let upstream = match running {
            Some(old) if same(&old.config.upstream, &config.upstream) => old.upstream.clone(),
            _ => Arc::new(Upstream::new(&config.upstream)?),
        };
        let users = match &config.auth.users_file {
            Some(path) => Some(Arc::new(Users::load(path).map_err(|message| {
                config::ConfigError::Key {
                    key: "auth.users_file".into(),
                    message,
                }
            })?)),
            None => None,
        };
        let assertion = config
            .identity
            .assertion
            .as_ref()
            .map(|cfg| {
                // A key file that vanishes under a running assertion is not
                // silently replaced by a new key.
                // Nor by a new path on reload: a mistyped path would
                // replace the published keys (create only at start).
                Assertion::open(cfg, running.is_none())
            })
            .transpose()?;
        let also: Vec<&str> = assertion.iter().map(|a| a.header().as_str()).collect();
        let identity = Identity::new(&config.identity.header, &also).ok_or_else(|| {
            config::ConfigError::key("identity.header", "not a valid header name")
        })?;
        let admin_token = match &config.admin.token_file {
            Some(path) => Some(crate::read_token(path)?),
            None => None,
        };
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        if let Some(all) = config
            .server
            .trusted_proxies
            .iter()
            .find(|c| c.is_everything())
        {
            tracing::warn!(range = %all, "server.trusted_proxies trusts every address: any client can claim any address, scheme and host");
        }
        Ok(Settings {
            rules: Rules::new(&config.auth.protect, &config.auth.public),
            trusted: Trusted(config.server.trusted_proxies.clone()),
            upstream,
            users,
            identity,
            assertion,
            admin_token,
            tls,
            config,
        })
    }

    /// The users in these settings that are not in `new`.
    pub fn users_gone_in(&self, new: &Settings) -> Vec<String> {
        match (&self.users, &new.users) {
            (Some(old), Some(new)) => old
                .names()
                .filter(|n| !new.contains(n))
                .map(str::to_owned)
                .collect(),
            (Some(old), None) => old.names().map(str::to_owned).collect(),
            (None, _) => Vec::new(),
        }
    }
}

/// The keys that differ between the running configuration and `new` and
/// take effect only after a restart.
pub fn restart_keys(running: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (flat(running), flat(new));
    let mut keys: Vec<String> = Vec::new();
    for (key, _) in a
        .iter()
        .filter(|kv| !b.contains(kv))
        .chain(b.iter().filter(|kv| !a.contains(kv)))
    {
        if !reloads(key, running, new) && !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    keys
}

/// Whether a change of `key` takes effect on reload.
fn reloads(key: &str, running: &Config, new: &Config) -> bool {
    let section = key.split('.').next().unwrap_or(key);
    match section {
        "upstream" | "identity" => true,
        // TLS on or off changes what the listener speaks: a restart.
        "tls" => running.tls.is_some() == new.tls.is_some(),
        "auth" => matches!(
            key,
            "auth.users_file" | "auth.protect" | "auth.public" | "auth.app_name"
        ),
        "admin" => key == "admin.token_file",
        "server" => key == "server.trusted_proxies",
        _ => false,
    }
}

/// Puts the running values of the restart-only keys into `new`.
fn keep_restart_keys(running: &Config, new: &mut Config) {
    new.listen = running.listen;
    let trusted = std::mem::take(&mut new.server.trusted_proxies);
    new.server = running.server.clone();
    new.server.trusted_proxies = trusted;
    new.session = running.session.clone();
    new.log = running.log.clone();
    new.admin.listen = running.admin.listen;
    new.auth.max_failures_per_ip = running.auth.max_failures_per_ip;
    new.auth.max_failures_per_user = running.auth.max_failures_per_user;
    new.auth.failure_window = running.auth.failure_window;
    if running.tls.is_some() != new.tls.is_some() {
        new.tls = running.tls.clone();
    }
}

fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    toml::Value::try_from(a).ok() == toml::Value::try_from(b).ok()
}

fn flat(config: &Config) -> Vec<(String, String)> {
    let value = toml::Value::try_from(config).unwrap_or(toml::Value::Table(Default::default()));
    let mut out = Vec::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `extra` may begin with top-level keys: they go before `[upstream]`.
    fn config(extra: &str) -> Config {
        let (top, tables) = match extra.find('[') {
            Some(at) => extra.split_at(at),
            None => (extra, ""),
        };
        let text = format!("{top}[upstream]\nurl = \"http://127.0.0.1:9\"\n{tables}");
        Config::parse(&text).unwrap()
    }

    #[test]
    fn reloadable_keys_are_not_named_and_the_others_are() {
        let old = config("[auth]\nprotect = [\"/a\"]\nusers_file = \"/dev/null\"\n");
        let new = config(
            "listen = \"127.0.0.1:1\"\n[auth]\nprotect = [\"/b\"]\nusers_file = \"/dev/null\"\nmax_failures_per_ip = 3\n[session]\nidle_timeout = \"1m\"\n",
        );
        let mut keys = restart_keys(&old, &new);
        keys.sort();
        assert_eq!(
            keys,
            ["auth.max_failures_per_ip", "listen", "session.idle_timeout"]
        );
    }

    #[test]
    fn restart_keys_keep_their_running_values() {
        let old = config("");
        let mut new = config("listen = \"127.0.0.1:1\"\n[session]\nidle_timeout = \"1m\"\n[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
        keep_restart_keys(&old, &mut new);
        assert_eq!(new.listen, old.listen);
        assert_eq!(new.session.idle_timeout, old.session.idle_timeout);
        assert_eq!(
            new.server.trusted_proxies.len(),
            1,
            "trusted_proxies reloads"
        );
    }
}
