//! cloakroom: a reverse proxy that gives an unmodified web application
//! server-side sessions.
//!
//! # Layout
//!
//! - [`config`]: `proxy.toml` → validated [`Config`]; errors name the key.
//! - [`server`]: accept loop, connection cap, client timeouts, graceful shutdown.
//! - [`admin`]: the admin listener (health, readiness, the sessions API).
//! - [`tls`]: TLS on the public listener.
//! - [`proxy`]: [`proxy::handle`], the request pipeline as named steps.
//! - [`session`]: signed IDs, the session cookie, lifetimes, the stores.
//! - [`settings`]: [`Settings`], what a reload swaps; the rest of [`App`]
//!   is state that outlives a reload.
//! - [`pages`]: the router of the proxy's own paths under `/.cloakroom/`.
//! - [`login`]: the login and logout pages.
//! - [`reserved`]: the names of those paths, and which requests are for them.
//! - [`auth`]: users and passwords, access rules, login throttling.
//! - [`identity`]: the identity header and upstream-driven login/logout.
//! - [`assertion`]: the signed identity assertion (a JWT) and its JWKS.
//! - [`app_values`]: the application's session variables, through headers.
//! - [`upstream`]: the pooled client, request rewriting, upgrade tunnels.
//! - [`hop`]: hop-by-hop header rules (RFC 9110 §7.6.1).
//! - [`target`]: ambiguous paths refused; every reading of the rest judged.
//! - [`forwarded`]: [`forwarded::Peer`], the forwarding headers the proxy
//!   sets and the client claims it strips.
//! - [`body`]: the response body type and a wrapper that watches it finish.
//! - [`cache`]: keeping responses that carry a session cookie out of shared caches.
//! - [`access_log`]: the one log line per request.
//! - [`answer`]: responses the proxy writes itself (text, HTML, redirects).
//! - [`demo`]: `cloakroom demo`, a built-in legacy app behind the proxy.
//! - [`client`]: [`client::Browser`], a client that browses like a person
//!   (the tests' and `cloakroom load`'s).
//! - [`load`]: `cloakroom load`, virtual users driving the session path.
//! - [`error`]: [`error::ProxyError`] → status and short body.
//! - [`redis`]: the Redis connection (breaker, deadlines) the Redis store,
//!   the shared login throttle and the shared probe guard use.
//!
//! # The life of a request
//!
//! 1. [`server`] accepts the connection (if under `server.max_connections`)
//!    and hyper reads a request head within `server.header_timeout`;
//!    oversized heads get 431, malformed ones 400, from hyper itself.
//! 2. [`proxy::handle`] starts the log record and runs the pipeline:
//!    requests a reverse proxy must not forward (`CONNECT`) are refused, and
//!    so are ambiguous paths ([`target`]: dot segments, hidden separators);
//!    the canonical path is what the rules judge and the upstream receives.
//! 3. [`session::Sessions::resolve`] finds the session in the cookie
//!    (strict: only live IDs this proxy signed) or, for a client in URL
//!    mode, in a URL ticket bound to that client; else it issues a new ID.
//!    The session cookie and URL ticket are removed before the request goes
//!    upstream (from `Referer` too).
//! 4. Paths under `/.cloakroom/` are answered by [`pages`] and end here.
//! 5. Access rules ([`auth::rules`]): a protected path without a login gets
//!    a redirect to the login page (browsers) or 401 (everything else).
//! 6. Hop-by-hop headers are stripped first; then [`identity`] removes every
//!    client-sent copy of the identity header and of the forwarding claims
//!    ([`forwarded`]) and, when logged in, sets the identity header.
//! 7. [`upstream::Upstream::forward`] rewrites the request (upstream path
//!    prefix, hop-by-hop headers dropped, `X-Forwarded-*` set, `Host` kept or
//!    replaced) and sends it over the pool; no connection → 502, no answer
//!    within `upstream.timeout` → 504.
//! 8. The response head is relayed with its hop-by-hop headers dropped and
//!    its body streamed; a `101 Switching Protocols` becomes a byte tunnel.
//!    Upstream login/logout headers are removed (and honoured when
//!    `identity.upstream_control` is on, and carried out at commit); a newly issued ID is added as
//!    `Set-Cookie` (never one that travels in URLs), and in URL mode
//!    [`rewrite`] puts the ticket into same-origin links, forms and
//!    redirects.
//! 9. What the steps changed in the request's [`session::SessionState`]
//!    (a login, a logout, URL mode's cookie jar, a due "last seen") is
//!    written once by [`session::Sessions::commit`] before the answer leaves;
//!    a store that cannot answer gives 503.
//! 10. When the body is finished (or abandoned), the log line is written.

#![recursion_limit = "256"]

pub mod access_log;
pub mod admin;
pub mod answer;
pub mod app_values;
pub mod assertion;
pub mod auth;
pub mod body;
pub mod cache;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
pub mod forwarded;
pub mod hop;
pub mod identity;
pub mod load;
pub mod login;
pub mod metrics;
pub mod pages;
pub mod pool;
pub mod probe;
pub mod proxy;
pub mod redis;
pub mod reserved;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod settings;
pub mod target;
#[doc(hidden)]
pub mod test_redis;
pub mod tls;
pub mod upstream;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use config::Config;
pub use settings::Settings;

use config::StoreKind;
use session::store::{file::FileStore, memory::MemoryStore, redis::RedisStore, Store};

/// Everything a request needs, shared by all connections: the state that
/// lives as long as the process, and the [`Settings`] a reload swaps.
pub struct App {
    /// The settings in force; a request takes them once ([`App::settings`]).
    settings: ArcSwap<Settings>,
    /// Sessions: keys, store, cookie.
    pub sessions: Arc<session::Sessions>,
    /// Login throttling and the password checker.
    pub auth: auth::Auth,
    /// Recent cookie probes, so that no client is probed in a loop.
    pub probes: probe::Probes,
    /// Counters for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The app's background tasks (purge, cache invalidation), stopped by
    /// [`App::shutdown`].
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// Why the app could not be built. Each names the key it is about and
/// keeps its source.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A configuration value that cannot be used.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The key file could not be read or created.
    #[error("session.secret_file: {path}: {source}")]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: session::id::KeyError,
    },
    /// The file store's directory could not be opened.
    #[error("session.dir: {path}: {source}")]
    SessionDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `admin.token_file` could not be read, or holds no usable token.
    #[error("admin.token_file: {path}: {message}")]
    AdminToken {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The Redis settings could not be used.
    #[error(transparent)]
    Redis(#[from] redis::OpenError),
    /// The assertion's signing keys could not be read or created.
    #[error(transparent)]
    Assertion(#[from] assertion::KeyError),
}

impl App {
    /// Builds the app from a validated configuration: the one place that
    /// composes it. Opens the store (a Redis store connects lazily: a
    /// Redis that is down makes requests fail with 503, not the start),
    /// and starts the background tasks the app owns.
    pub async fn build(config: Config) -> Result<Arc<App>, BuildError> {
        let settings = Settings::build(config, None)?;
        let config = &settings.config;
        let cfg = &config.session;
        let keys = session::id::Keys::load_or_create(&cfg.secret_file).map_err(|source| {
            BuildError::Key {
                path: cfg.secret_file.clone(),
                source,
            }
        })?;
        let clock_now = session::data::Clock::new().now_ms();
        let mut shared = None;
        let store = match cfg.store {
            StoreKind::Memory => Store::Memory(MemoryStore::new()),
            StoreKind::File => {
                Store::File(FileStore::open(&cfg.dir, clock_now).map_err(|source| {
                    BuildError::SessionDir {
                        path: cfg.dir.clone(),
                        source,
                    }
                })?)
            }
            StoreKind::Redis => {
                let settings = cfg.redis.as_ref().ok_or_else(|| {
                    config::ConfigError::key("session.store", "redis needs session.redis_url")
                })?;
                let redis = redis::Redis::open(settings)?;
                shared = Some(redis.clone());
                Store::Redis(RedisStore::new(redis))
            }
        };
        let listener = match &store {
            Store::Redis(s) => Some(s.clone()),
            _ => None,
        };
        let watcher = shared.clone();
        let metrics = Arc::new(metrics::Metrics::new());
        let mut sessions = session::Sessions::configured(cfg, keys, store);
        sessions.count_in(metrics.clone());
        if let Some(redis) = &shared {
            sessions.share_limits_through(redis.clone());
        }
        let sessions = Arc::new(sessions);
        let auth = auth::Auth::open(&config.auth, shared.clone());
        let probes = match shared {
            Some(redis) => probe::Probes::shared(redis),
            None => probe::Probes::default(),
        };
        let purge_interval = cfg.purge_interval;
        let app = Arc::new(App {
            settings: ArcSwap::from_pointee(settings),
            sessions,
            auth,
            probes,
            metrics,
            tasks: Mutex::new(Vec::new()),
            reloading: tokio::sync::Mutex::new(()),
        });
        let mut tasks = vec![tokio::spawn(purge_every(
            Arc::downgrade(&app),
            purge_interval,
        ))];
        if let Some(store) = listener {
            tasks.push(tokio::spawn(store.listen()));
        }
        if let Some(redis) = watcher {
            tasks.push(tokio::spawn(redis.watch()));
        }
        *app.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(app)
    }

    /// The settings in force. A request takes them once and keeps them to
    /// its end; a reload meanwhile affects the requests after it.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Reloads from `config` (the configuration read again, on SIGHUP):
    /// every reloadable key (see [`settings`]) takes effect for the requests
    /// that start after it. Nothing changes unless all of it loads; a user
    /// no longer in the users file is logged out everywhere at once. Keys
    /// whose change needs a restart are named in a warning. Counted in the
    /// reload metrics.
    pub async fn reload(&self, config: Result<Config, config::ConfigError>) -> Result<(), String> {
        let _one = self.reloading.lock().await;
        let outcome = self.try_reload(config).await;
        self.metrics.reloaded(outcome.is_ok());
        match &outcome {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(error) => {
                tracing::error!(%error, "reload refused; the running configuration stays")
            }
        }
        outcome
    }

    async fn try_reload(&self, config: Result<Config, config::ConfigError>) -> Result<(), String> {
        let new = config.map_err(|e| e.to_string())?;
        let running = self.settings();
        let restart = settings::restart_keys(&running.config, &new);
        let new = Settings::build(new, Some(&running)).map_err(|e| e.to_string())?;
        for key in restart {
            tracing::warn!(%key, "changed in the configuration, but takes effect only after a restart");
        }
        let gone = running.users_gone_in(&new);
        self.settings.store(Arc::new(new));
        for user in gone {
            match self.sessions.revoke_user(&user).await {
                Ok(n) => tracing::info!(
                    user,
                    revoked = n,
                    "user removed from the users file: logged out everywhere"
                ),
                Err(error) => {
                    tracing::error!(user, %error, "user removed from the users file, but their sessions could not be ended")
                }
            }
        }
        Ok(())
    }

    /// Stops the background tasks.
    pub fn shutdown(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The admin token: the file's first line, at least 16 characters (a file
/// others can read is warned about).
pub fn read_token(path: &std::path::Path) -> Result<String, BuildError> {
    let error = |message: String| BuildError::AdminToken {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            tracing::warn!(path = %path.display(), "the admin token file is readable by others; chmod 600 it");
        }
    }
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(error("the token must be at least 16 characters".into()));
    }
    Ok(token)
}

/// Forgets expired sessions and ended throttling windows every `interval`,
/// for as long as the app lives.
async fn purge_every(app: Weak<App>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        match app.sessions.purge().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired sessions purged"),
            Err(error) => tracing::warn!(%error, "purging expired sessions failed"),
        }
        let now = app.sessions.clock().now_ms();
        if let Some(assertion) = &app.settings().assertion {
            assertion.purge(now / 1000);
        }
        app.auth.throttle.purge(now);
        app.probes.purge(now);
    }
}
