//! cloakroom: a reverse proxy that gives an unmodified web application
//! server-side sessions.
//!
//! # Layout
//!
//! - [`config`]: `proxy.toml` → validated [`Config`]; errors name the key.
//! - [`server`]: accept loop, connection cap, client timeouts, graceful shutdown.
//! - [`proxy`]: [`proxy::handle`], the request pipeline as named steps.
//! - [`session`]: signed IDs, the session cookie, lifetimes, the stores.
//! - [`login`]: the proxy's own pages under `/.cloakroom/` (login, logout).
//! - [`reserved`]: the names of those paths, and which requests are for them.
//! - [`auth`]: users and passwords, access rules, login throttling.
//! - [`identity`]: the identity header and upstream-driven login/logout.
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
//! 4. Paths under `/.cloakroom/` are answered by [`login`] and end here.
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
//!    `identity.upstream_control` is on); a newly issued ID is added as
//!    `Set-Cookie` (never one that travels in URLs), and in URL mode
//!    [`rewrite`] puts the ticket into same-origin links, forms and
//!    redirects.
//! 9. When the body is finished (or abandoned), the log line is written.

pub mod access_log;
pub mod answer;
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
pub mod probe;
pub mod proxy;
pub mod reserved;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod target;
pub mod upstream;

use std::sync::Arc;

pub use config::Config;

/// Everything a request needs, shared by all connections.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The application behind the proxy.
    pub upstream: upstream::Upstream,
    /// Sessions: keys, store, cookie.
    pub sessions: Arc<session::Sessions>,
    /// Users, access rules, login throttling.
    pub auth: auth::Auth,
    /// The identity header.
    pub identity: identity::Identity,
    /// Recent cookie probes, so that no client is probed in a loop.
    pub probes: probe::Probes,
}

impl App {
    /// Builds the shared state from a validated configuration.
    pub fn new(config: Config) -> Result<Arc<App>, config::ConfigError> {
        let upstream = upstream::Upstream::new(&config.upstream)?;
        let sessions = Arc::new(session::Sessions::open(&config.session)?);
        let auth = auth::Auth::open(&config.auth)?;
        let identity = identity::Identity::new(&config.identity.header).ok_or_else(|| {
            config::ConfigError::Key {
                key: "identity.header".into(),
                message: "not a valid header name".into(),
            }
        })?;
        Ok(Arc::new(App {
            config,
            upstream,
            sessions,
            auth,
            identity,
            probes: probe::Probes::default(),
        }))
    }
}
