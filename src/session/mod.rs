//! Server-side sessions: [`Sessions`] finds the visitor's session, issues
//! new IDs, and keeps the store tidy.
//!
//! - [`id`]: signed IDs and the keys that sign them.
//! - [`cookie`]: reading, stripping and writing the session cookie.
//! - [`data`]: what a session holds, its lifetimes, the clock.
//! - [`store`]: the store contract and its memory and file backends.
//! - [`jar`]: the upstream's cookies, kept for clients in URL mode.
//! - [`budget`]: how many records anonymous clients may make the store write.
//! - [`ticket`]: URL tickets and client tokens, bound to the client.
//!
//! **Strict mode.** Only IDs this proxy signed are considered, and of those
//! only live ones are honoured: a malformed or forged ID (counted in
//! [`Sessions::forged`]), a revoked one, or an expired one is replaced by a
//! new ID, and never regains its user or data.
//!
//! **Nothing is stored for a visitor who has nothing to store.** A new
//! visitor gets a signed ID, but the store is written only once the session
//! holds something (a login, a value). Until then the ID is honoured on its
//! signature alone, for one idle period after it was issued: a flood of
//! cookieless requests costs a signature each, and no memory or disk. A
//! revoked ID is kept as a small tombstone for exactly that period, so it
//! cannot pass as fresh either.
//!
//! **An ID in a URL is bound to its client.** In URL mode the ID travels as
//! a *ticket*, `ID.TAG`, where the tag is a keyed hash of the ID and the
//! client that began the session (its User-Agent and, with
//! `session.url_bind_address`, its address). A ticket presented by any
//! other client is not honoured: a link that carries someone else's
//! session (an attacker's logged-in one, or a victim's leaked one) puts
//! nobody into it. An ID that arrived in a URL is never sent back as a
//! cookie, so one link cannot plant a session in a cookie-keeping browser.

pub mod budget;
pub mod cookie;
pub mod data;
pub mod id;
pub mod jar;
pub mod store;
pub mod ticket;

pub use self::ticket::Client;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ::cookie::SameSite;
use http::header::{HeaderMap, HeaderValue};

use self::cookie::CookieSpec;
use self::data::{Clock, Lifetimes, Session};
use self::id::{Keys, SessionId};
use self::store::file::FileStore;
use self::store::memory::MemoryStore;
use self::store::{Lookup, SessionStore, Store, StoreError};
use crate::config::{ConfigError, SameSiteKind, SessionConfig, StoreKind};

/// Tolerance for IDs issued "in the future" (another instance's clock).
const CLOCK_SKEW_MS: u64 = 60_000;
/// Whether a presented secret equals the expected one, in constant time
/// (for texts of the same length; the length itself is not secret).
fn same_secret(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// The visitor's session for one request.
#[derive(Debug, Clone)]
pub struct Current {
    /// The ID in force (the client's, or a new one).
    pub id: SessionId,
    /// What the store holds for it; `None` for a session with nothing stored.
    pub session: Option<Session>,
    /// The ID was issued for this request: the response must carry it.
    pub fresh: bool,
    /// The ID travels in URLs (the client returns no cookie): URL mode.
    pub in_url: bool,
}

/// How a local answer or the upstream changed the session; carried in the
/// response's extensions to the step that writes cookies and links.
#[derive(Debug, Clone)]
pub enum SessionChange {
    /// Logged in: this is the session (with its new ID) from now on.
    LoggedIn(Current),
    /// Logged out: the session is gone and its cookie must be expired.
    LoggedOut,
    /// The probe found that the client refuses cookies: from this answer
    /// on the session travels in URLs (and never in a cookie).
    EnteredUrlMode,
}

impl Current {
    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.session.as_ref()?.user.as_deref()
    }
}

/// Sessions: keys, store, cookie settings and lifetimes.
pub struct Sessions {
    keys: Keys,
    store: Store,
    cookie: CookieSpec,
    lifetimes: Lifetimes,
    clock: Clock,
    forged: AtomicU64,
    /// Whether IDs are also read from URLs (`session.cookieless`).
    cookieless: bool,
    /// Whether URL tickets are bound to the client's address too.
    bind_address: bool,
    /// URL tickets presented by a client they were not made for.
    misbound: AtomicU64,
    /// New records anonymous clients may still create.
    budget: budget::Budget,
}

impl Sessions {
    /// Opens what `[session]` describes: reads (or creates) the key file and
    /// opens the store. Errors name the key they are about.
    pub fn open(cfg: &SessionConfig) -> Result<Sessions, ConfigError> {
        let keys = Keys::load_or_create(&cfg.secret_file).map_err(|e| ConfigError::Key {
            key: "session.secret_file".into(),
            message: format!("{}: {e}", cfg.secret_file.display()),
        })?;
        let lifetimes = Lifetimes {
            idle: cfg.idle_timeout,
            absolute: cfg.absolute_timeout,
            remember_me: cfg.remember_me,
        };
        let clock = Clock::new();
        let store = match cfg.store {
            StoreKind::Memory => Store::Memory(MemoryStore::new(lifetimes)),
            StoreKind::File => Store::File(
                FileStore::open(&cfg.dir, lifetimes, clock.now_ms()).map_err(|e| {
                    ConfigError::Key {
                        key: "session.dir".into(),
                        message: format!("{}: {e}", cfg.dir.display()),
                    }
                })?,
            ),
            StoreKind::Redis => {
                return Err(ConfigError::Key {
                    key: "session.store".into(),
                    message: "redis is not available yet".into(),
                })
            }
        };
        let cookie = CookieSpec {
            name: cfg.name.clone(),
            path: cfg.cookie_path.clone(),
            domain: cfg.cookie_domain.clone(),
            same_site: match cfg.same_site {
                SameSiteKind::Lax => SameSite::Lax,
                SameSiteKind::Strict => SameSite::Strict,
                SameSiteKind::None => SameSite::None,
            },
            secure: cfg.secure,
        };
        let mut sessions = Sessions::new(keys, store, cookie, lifetimes);
        sessions.clock = clock;
        sessions.cookieless = cfg.cookieless;
        sessions.bind_address = cfg.url_bind_address;
        Ok(sessions)
    }

    /// Sessions over an opened store.
    pub fn new(keys: Keys, store: Store, cookie: CookieSpec, lifetimes: Lifetimes) -> Sessions {
        Sessions {
            keys,
            store,
            cookie,
            lifetimes,
            clock: Clock::new(),
            forged: AtomicU64::new(0),
            cookieless: true,
            bind_address: true,
            misbound: AtomicU64::new(0),
            budget: budget::Budget::default(),
        }
    }

    /// Finds the session the request carries in its cookie or, for clients
    /// that refuse cookies, in a URL ticket made for this `client`; a valid
    /// cookie wins. Without either, issues a new ID.
    pub async fn resolve(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: Client<'_>,
    ) -> Result<Current, StoreError> {
        let now = self.clock.now_ms();
        for candidate in cookie::values(headers, &self.cookie.name) {
            if let Some(current) = self.honour(candidate, now).await? {
                return Ok(current);
            }
        }
        if let Some(presented) = self.url_id(query) {
            if let Some(id) = self.ticket_id(presented, client) {
                if let Some(mut current) = self.honour(id.as_bytes(), now).await? {
                    current.in_url = true;
                    return Ok(current);
                }
            }
        }
        Ok(self.issue(now))
    }

    /// The ID in a query string, when URL mode is enabled.
    pub fn url_id<'q>(&self, query: Option<&'q str>) -> Option<&'q str> {
        if !self.cookieless {
            return None;
        }
        crate::rewrite::link::param(query?, &self.cookie.name)
    }

    /// Whether clients that refuse cookies are served (`session.cookieless`).
    pub fn cookieless(&self) -> bool {
        self.cookieless
    }

    /// The session for one presented ID, if it is to be honoured.
    async fn honour(&self, presented: &[u8], now: u64) -> Result<Option<Current>, StoreError> {
        let Some(id) = self.keys.verify(presented) else {
            let total = self.forged.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(total, "forged or malformed session ID presented");
            return Ok(None);
        };
        let session = match self.store.visit(&id, now).await? {
            Lookup::Live(session) => Some(session),
            Lookup::Gone => return Ok(None),
            Lookup::Unknown if self.fresh_enough(&id, now) => None,
            Lookup::Unknown => return Ok(None),
        };
        Ok(Some(Current {
            id,
            session,
            fresh: false,
            in_url: false,
        }))
    }

    /// An ID with nothing stored is honoured for one idle period after it
    /// was issued: the longest a session that was never used could live.
    fn fresh_enough(&self, id: &SessionId, now: u64) -> bool {
        self.within_one_idle_period(id.issued(), now)
    }

    /// Whether something issued at `issued_secs` is younger than one idle
    /// period at `now` (ms), allowing for another instance's clock skew.
    fn within_one_idle_period(&self, issued_secs: u64, now: u64) -> bool {
        let issued = issued_secs.saturating_mul(1000);
        let idle = u64::try_from(self.lifetimes.idle.as_millis()).unwrap_or(u64::MAX);
        issued <= now.saturating_add(CLOCK_SKEW_MS) && now < issued.saturating_add(idle)
    }

    fn issue(&self, now: u64) -> Current {
        Current {
            id: SessionId::generate(&self.keys, now / 1000),
            session: None,
            fresh: true,
            in_url: false,
        }
    }

    /// `Set-Cookie` for a session the client must be told about: a new ID
    /// in cookie mode. A session in URL mode never gets a cookie: an ID
    /// that arrived in a URL is never turned into a cookie.
    pub fn set_cookie(&self, current: &Current) -> Option<HeaderValue> {
        if !current.fresh || current.in_url {
            return None;
        }
        let remember = current.session.as_ref().is_some_and(|s| s.remember);
        let max_age = remember.then_some(self.lifetimes.remember_me);
        Some(self.cookie.set(current.id.as_str(), max_age))
    }

    /// Removes the session cookie from headers bound for the upstream.
    pub fn strip_cookie(&self, headers: &mut HeaderMap) {
        cookie::strip(headers, &self.cookie.name);
    }

    /// Logs the session in as `user`: a new ID (the old one is destroyed, so
    /// a planted ID is worth nothing), the old session's values kept, the
    /// lifetime counted from now. The result is fresh: its cookie must go out.
    pub async fn login(
        &self,
        current: &Current,
        user: &str,
        remember: bool,
    ) -> Result<Current, StoreError> {
        let now = self.clock.now_ms();
        let mut session = current.session.clone().unwrap_or_else(|| Session::new(now));
        session.user = Some(user.to_owned());
        session.remember = remember;
        session.created = now;
        session.last_seen = now;
        let id = SessionId::generate(&self.keys, now / 1000);
        self.store.save(&id, &session).await?;
        if !current.fresh {
            self.store.revoke(&current.id, now).await?;
        }
        Ok(Current {
            id,
            session: Some(session),
            fresh: true,
            in_url: current.in_url,
        })
    }

    /// `Set-Cookie` that removes the session cookie from the browser.
    pub fn expire_cookie(&self) -> HeaderValue {
        self.cookie.expire()
    }

    /// A keyed token bound to this session, e.g. for CSRF checks.
    pub fn token(&self, purpose: &[u8], id: &SessionId) -> String {
        use base64::Engine;
        let tag = self.keys.derive(purpose, &[id.as_str().as_bytes()]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
    }

    /// Whether `presented` is this session's token for `purpose`
    /// (compared in constant time).
    pub fn token_matches(&self, purpose: &[u8], id: &SessionId, presented: &str) -> bool {
        same_secret(&self.token(purpose, id), presented)
    }

    /// Stores `session` under `id`.
    pub async fn save(&self, id: &SessionId, session: &Session) -> Result<(), StoreError> {
        self.store.save(id, session).await
    }

    /// A new, empty session record as of now (to fill and [`Sessions::save`]).
    pub fn blank(&self) -> Session {
        Session::new(self.clock.now_ms())
    }

    /// Ends the session `id` for good.
    pub async fn destroy(&self, id: &SessionId) -> Result<(), StoreError> {
        self.store.revoke(id, self.clock.now_ms()).await
    }

    /// How many forged or malformed IDs have been presented since start.
    pub fn forged(&self) -> u64 {
        self.forged.load(Ordering::Relaxed)
    }

    /// How many records the store holds.
    pub fn stored(&self) -> usize {
        self.store.count()
    }

    /// The clock sessions are measured by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Session lifetimes in force.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// The name of the cookie (and, later, the URL parameter).
    pub fn name(&self) -> &str {
        &self.cookie.name
    }

    /// Whether a client at `ip` that is not logged in may have one more
    /// record created for it now (see [`budget`]).
    pub fn may_create_anonymous(&self, ip: IpAddr) -> bool {
        self.budget.spend(ip, self.clock.now_ms())
    }

    /// Forgets expired sessions; returns how many.
    pub async fn purge(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        self.budget.purge(now);
        self.store.purge(now).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::header;

    use super::*;

    const LIFETIMES: Lifetimes = Lifetimes {
        idle: Duration::from_secs(30 * 60),
        absolute: Duration::from_secs(12 * 3600),
        remember_me: Duration::from_secs(180 * 86400),
    };

    fn sessions() -> Sessions {
        Sessions::new(
            Keys::new(&[vec![9; 32]]).unwrap(),
            Store::Memory(MemoryStore::new(LIFETIMES)),
            CookieSpec {
                name: "CLOAKROOMSID".into(),
                path: "/".into(),
                domain: None,
                same_site: SameSite::Lax,
                secure: false,
            },
            LIFETIMES,
        )
    }

    fn client() -> Client<'static> {
        Client {
            ip: "192.0.2.1".parse().unwrap(),
            user_agent: b"test agent",
        }
    }

    #[tokio::test]
    async fn a_url_ticket_serves_only_the_client_it_was_made_for() {
        let s = sessions();
        let first = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        let ticket = s.ticket(&first.id, client());
        let query = format!("a=1&CLOAKROOMSID={ticket}");
        let got = s
            .resolve(&HeaderMap::new(), Some(&query), client())
            .await
            .unwrap();
        assert_eq!(got.id, first.id);
        assert!(got.in_url && !got.fresh);
        assert!(s.set_cookie(&got).is_none(), "a URL ID became a cookie");

        let other_ua = Client {
            user_agent: b"another agent",
            ..client()
        };
        let other_ip = Client {
            ip: "192.0.2.2".parse().unwrap(),
            ..client()
        };
        for other in [other_ua, other_ip] {
            let got = s
                .resolve(&HeaderMap::new(), Some(&query), other)
                .await
                .unwrap();
            assert!(
                got.fresh && !got.in_url,
                "another client was put into the session"
            );
            assert_ne!(got.id, first.id);
        }
        let bare = format!("CLOAKROOMSID={}", first.id.as_str());
        let got = s
            .resolve(&HeaderMap::new(), Some(&bare), client())
            .await
            .unwrap();
        assert!(got.fresh, "an unbound ID in a URL was honoured");
        assert_eq!(s.misbound(), 2);
    }

    #[tokio::test]
    async fn anonymous_form_tokens_are_bound_and_expire() {
        let s = sessions();
        let token = s.client_token(b"form", client());
        assert!(s.client_token_matches(b"form", &token, client()));
        assert!(
            !s.client_token_matches(b"probe", &token, client()),
            "purposes mixed"
        );
        let other = Client {
            ip: "192.0.2.9".parse().unwrap(),
            ..client()
        };
        assert!(!s.client_token_matches(b"form", &token, other));
        assert!(!s.client_token_matches(b"form", "a1.x", client()));
        assert!(!s.client_token_matches(b"form", "", client()));
        s.clock().skip(LIFETIMES.idle);
        assert!(
            !s.client_token_matches(b"form", &token, client()),
            "an old token was accepted"
        );
    }

    fn with_cookie(id: &SessionId) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("CLOAKROOMSID={}", id.as_str());
        h.insert(header::COOKIE, HeaderValue::from_str(&v).unwrap());
        h
    }

    #[tokio::test(start_paused = true)]
    async fn a_stored_session_expires_when_idle() {
        let s = sessions();
        let first = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        assert!(first.fresh);
        let mut data = s.blank();
        data.user = Some("alice".into());
        s.save(&first.id, &data).await.unwrap();

        // Requests every 20 minutes keep it alive for hours...
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(20 * 60)).await;
            let again = s
                .resolve(&with_cookie(&first.id), None, client())
                .await
                .unwrap();
            assert!(!again.fresh);
            assert_eq!(again.session.unwrap().user.as_deref(), Some("alice"));
        }
        // ...and 31 minutes of silence end it.
        tokio::time::advance(Duration::from_secs(31 * 60)).await;
        let after = s
            .resolve(&with_cookie(&first.id), None, client())
            .await
            .unwrap();
        assert!(after.fresh);
        assert_ne!(after.id, first.id);
        assert!(after.session.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_session_still_ends_at_its_absolute_limit() {
        let s = sessions();
        let first = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        s.save(&first.id, &s.blank()).await.unwrap();
        for _ in 0..(12 * 60 / 10 - 1) {
            tokio::time::advance(Duration::from_secs(10 * 60)).await;
            assert!(
                !s.resolve(&with_cookie(&first.id), None, client())
                    .await
                    .unwrap()
                    .fresh
            );
        }
        tokio::time::advance(Duration::from_secs(10 * 60)).await;
        assert!(
            s.resolve(&with_cookie(&first.id), None, client())
                .await
                .unwrap()
                .fresh
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_with_nothing_stored_lives_one_idle_period_from_issue() {
        let s = sessions();
        let first = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        tokio::time::advance(Duration::from_secs(29 * 60)).await;
        let again = s
            .resolve(&with_cookie(&first.id), None, client())
            .await
            .unwrap();
        assert!(!again.fresh);
        assert_eq!(again.id, first.id);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            s.resolve(&with_cookie(&first.id), None, client())
                .await
                .unwrap()
                .fresh
        );
        assert_eq!(s.stored(), 0, "an unused session was stored");
    }

    #[tokio::test]
    async fn forged_and_destroyed_ids_are_replaced() {
        let s = sessions();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("CLOAKROOMSID=attacker-chosen"),
        );
        let got = s.resolve(&h, None, client()).await.unwrap();
        assert!(got.fresh);
        assert_eq!(s.forged(), 1);

        let real = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        s.destroy(&real.id).await.unwrap();
        let replay = s
            .resolve(&with_cookie(&real.id), None, client())
            .await
            .unwrap();
        assert!(replay.fresh, "a destroyed ID was honoured");
        assert_eq!(s.forged(), 1, "a destroyed ID is not a forgery");
    }

    #[tokio::test]
    async fn the_first_valid_cookie_wins() {
        let s = sessions();
        let real = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        let mut h = HeaderMap::new();
        let v = format!(
            "CLOAKROOMSID=junk; other=1; CLOAKROOMSID={}; CLOAKROOMSID=also-junk",
            real.id.as_str()
        );
        h.insert(header::COOKIE, HeaderValue::from_str(&v).unwrap());
        let got = s.resolve(&h, None, client()).await.unwrap();
        assert_eq!(got.id, real.id);
        assert!(!got.fresh);
    }
}
