//! Server-side sessions: [`Sessions`] finds the visitor's session, issues
//! new IDs, and keeps the store tidy.
//!
//! - [`id`]: signed IDs and the keys that sign them.
//! - [`cookie`]: reading, stripping and writing the session cookie.
//! - [`data`]: what a session holds, its lifetimes, the clock.
//! - [`store`]: the store contract and its memory, file and Redis backends.
//! - [`state`]: one request's session and the writes it owes, committed once.
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
//! **"Last seen" is written coalesced.** A request records its visit only
//! when the stored "last seen" is older than the touch interval (a quarter
//! of `idle_timeout`, at most a minute), like PHP's `lazy_write`: no store
//! is written on every request. The idle limit is judged from the stored
//! value, so an idle session may end up to one touch interval early, never
//! late.
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
pub mod state;
pub mod store;
pub mod ticket;

pub use self::state::SessionState;
pub use self::ticket::Client;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ::cookie::SameSite;
use http::header::{HeaderMap, HeaderValue};

use self::cookie::CookieSpec;
use self::data::{Clock, Lifetimes, Session};
use self::id::{Keys, SessionId};
use self::store::{
    Changes, Lookup, Revoke, Save, SessionKey, SessionStore, Stats, Store, StoreError, Write,
};
use crate::config::{SameSiteKind, SessionConfig};
use crate::metrics::{Metrics, SessionEvent};

/// Tolerance for IDs issued "in the future" (another instance's clock).
const CLOCK_SKEW_MS: u64 = 60_000;
/// Whether a presented secret equals the expected one, in constant time
/// (for texts of the same length; the length itself is not secret).
pub(crate) fn same_secret(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// Where a request carried its session ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Cookie,
    Url,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    /// How stale the stored "last seen" may get before a visit writes it.
    touch_interval: u64,
    /// Where limits are counted when several instances share a store.
    shared: Option<crate::redis::Redis>,
    /// Where session events and store calls are counted.
    metrics: Arc<Metrics>,
}

impl Sessions {
    /// Sessions as `[session]` describes them, over an opened store with
    /// its signing keys.
    pub fn configured(cfg: &SessionConfig, keys: Keys, store: Store) -> Sessions {
        let lifetimes = Lifetimes {
            idle: cfg.idle_timeout,
            absolute: cfg.absolute_timeout,
            remember_me: cfg.remember_me,
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
        sessions.cookieless = cfg.cookieless;
        sessions.bind_address = cfg.url_bind_address;
        sessions
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
            touch_interval: ms(lifetimes.idle / 4).min(60_000),
            shared: None,
            metrics: Arc::default(),
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
    ) -> Result<SessionState, StoreError> {
        let now = self.clock.now_ms();
        for candidate in cookie::values(headers, &self.cookie.name) {
            if let Some(state) = self.honour(candidate, Channel::Cookie, now).await? {
                return Ok(state);
            }
        }
        if let Some(presented) = self.url_id(query) {
            if let Some(id) = self.ticket_id(presented, client) {
                if let Some(mut state) = self.honour(id.as_bytes(), Channel::Url, now).await? {
                    state.enter_url_mode();
                    return Ok(state);
                }
            }
        }
        Ok(self.issue())
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

    /// The session for one presented ID, if it is to be honoured. A stored
    /// session is honoured only through the channel it lives in: one in URL
    /// mode only in a ticket bound to its client (its bare ID in a cookie
    /// is worth nothing), one in cookie mode only in the cookie.
    async fn honour(
        &self,
        presented: &[u8],
        channel: Channel,
        now: u64,
    ) -> Result<Option<SessionState>, StoreError> {
        let Some(id) = self.keys.verify(presented) else {
            let total = self.forged.fetch_add(1, Ordering::Relaxed) + 1;
            self.metrics.session(SessionEvent::Forged);
            tracing::debug!(total, "forged or malformed session ID presented");
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let loaded = self.store.load(&id.key(), now).await;
        let failed = matches!(loaded, Err(StoreError::Unavailable(_)));
        self.metrics.store_call("load", started.elapsed(), failed);
        let lookup = match loaded {
            Ok(lookup) => lookup,
            Err(StoreError::Corrupt { key, source }) => {
                tracing::warn!(session = %self.key_hash(&key), error = %source, "corrupt session record treated as absent");
                Lookup::Unknown
            }
            Err(error) => return Err(error),
        };
        let session = match lookup {
            Lookup::Live(session) if session.url_mode != (channel == Channel::Url) => {
                self.misbound.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    ?channel,
                    "a session presented outside the channel it lives in was refused"
                );
                return Ok(None);
            }
            Lookup::Live(session) if !session.expired(&self.lifetimes, now) => Some(session),
            Lookup::Live(_) => {
                self.metrics.session(SessionEvent::Expired);
                return Ok(None);
            }
            Lookup::Gone => return Ok(None),
            Lookup::Unknown if self.fresh_enough(&id, now) => None,
            Lookup::Unknown => return Ok(None),
        };
        let touch = session
            .as_ref()
            .is_some_and(|s| now.saturating_sub(s.last_seen) >= self.touch_interval);
        let current = Current {
            id,
            session,
            fresh: false,
            in_url: false,
        };
        Ok(Some(SessionState::new(current, touch)))
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

    /// A new session for this request: a new ID, nothing stored.
    pub fn issue(&self) -> SessionState {
        let now = self.clock.now_ms();
        let current = Current {
            id: SessionId::generate(&self.keys, now / 1000),
            session: None,
            fresh: true,
            in_url: false,
        };
        SessionState::new(current, false)
    }

    /// A new session that stands in for the one the request carries while
    /// the store cannot be asked (so the login page can still be shown).
    /// Its cookie is never sent: the client keeps the one it has.
    pub fn stand_in(&self) -> SessionState {
        let mut state = self.issue();
        state.stand_in = true;
        state
    }

    /// `Set-Cookie` for a session the client must be told about: a new ID
    /// in cookie mode. A session in URL mode never gets a cookie: an ID
    /// that arrived in a URL is never turned into a cookie.
    /// `tls`: the client reached us (or a trusted balancer) over TLS: the
    /// cookie is `Secure`.
    pub fn set_cookie(&self, current: &Current, tls: bool) -> Option<HeaderValue> {
        if !current.fresh || current.in_url {
            return None;
        }
        let remember = current.session.as_ref().is_some_and(|s| s.remember);
        let max_age = remember.then_some(self.lifetimes.remember_me);
        Some(self.cookie.set(current.id.as_str(), max_age, tls))
    }

    /// Removes the session cookie from headers bound for the upstream.
    pub fn strip_cookie(&self, headers: &mut HeaderMap) {
        cookie::strip(headers, &self.cookie.name);
    }

    /// Logs the session in as `user`: a new ID (the old one is revoked at
    /// commit, so a planted ID is worth nothing), the old session's values
    /// kept (the application's only if no other user held them), the lifetime counted from now. The new ID's cookie goes out
    /// with the answer.
    pub fn login(&self, state: &mut SessionState, user: &str, remember: bool) {
        let now = self.clock.now_ms();
        let mut session = state
            .current
            .session
            .take()
            .unwrap_or_else(|| Session::new(now));
        // The application's values follow the session through the ID
        // change, but never from one user to another.
        if session.user.as_deref().is_some_and(|u| u != user) {
            session.app.clear();
        }
        session.user = Some(user.to_owned());
        session.remember = remember;
        session.created = now;
        session.last_seen = now;
        let old = std::mem::replace(
            &mut state.current.id,
            SessionId::generate(&self.keys, now / 1000),
        );
        if !state.current.fresh && state.revoke.is_none() {
            state.revoke = Some(old);
        }
        self.metrics.session(SessionEvent::Rotated);
        state.current.session = Some(session);
        state.current.fresh = true;
        state.loaded = false;
        state.dirty = true;
        state.ended = false;
    }

    /// Ends the session: its ID is revoked at commit (when anything was
    /// stored for it: an empty session has nothing to end and writes
    /// nothing) and its cookie is expired.
    pub fn logout(&self, state: &mut SessionState) {
        if state.current.session.is_some() && state.revoke.is_none() {
            state.revoke = Some(state.current.id.clone());
        }
        state.current.session = None;
        state.dirty = false;
        state.ended = true;
    }

    /// Writes what `state` owes the store, in one commit: the revoked ID's
    /// tombstone, the changed record, or a coalesced "last seen".
    pub async fn commit(&self, state: &mut SessionState) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut changes = Changes {
            now,
            save: None,
            revoke: state.revoke.take().map(|id| Revoke {
                key: id.key(),
                until: self.tombstone_until(&id, now),
            }),
        };
        // A record the request loaded is updated (never recreated where it
        // is gone by now); one it makes is created, but only for an ID
        // still young enough to pass as newly issued.
        let write = if state.loaded {
            Write::Update
        } else {
            Write::Create
        };
        let may_write = write == Write::Update || self.fresh_enough(&state.current.id, now);
        if write == Write::Update && !state.ended && (state.dirty || state.touch) {
            // Another request may have changed the record meanwhile: this
            // one's changes go onto the latest copy (of a known revision,
            // which the store checks) instead of replacing it with the copy
            // this request started from.
            let revoke = changes.revoke.take();
            let original = state.original.take();
            let result = self
                .commit_merged(state, original.as_ref(), revoke, now)
                .await;
            state.dirty = false;
            state.touch = false;
            return result;
        }
        if !state.ended && (state.dirty || state.touch) && may_write {
            let in_url = state.current.in_url;
            let client = state.client_ip;
            if let Some(session) = &mut state.current.session {
                session.last_seen = session.last_seen.max(now);
                session.url_mode = in_url;
                if write == Write::Create && session.client.is_none() {
                    session.client = client;
                }
                changes.save = Some(Save {
                    key: state.current.id.key(),
                    write,
                    session: session.clone(),
                    expires_at: session.expires_at(&self.lifetimes),
                    ends_by: session.ends_by(&self.lifetimes),
                    expect_rev: None,
                });
            }
        }
        state.dirty = false;
        state.touch = false;
        if changes.is_empty() {
            return Ok(());
        }
        let (created, revoked) = (
            changes
                .save
                .as_ref()
                .is_some_and(|s| s.write == Write::Create),
            changes.revoke.is_some(),
        );
        match self.commit_changes(changes).await {
            // Parallel first requests of one new session: another made the
            // record first. This one's changes (all of them: it started
            // from nothing) are merged onto that record instead.
            Err(StoreError::Conflict) if created => {
                if revoked {
                    self.metrics.session(SessionEvent::Revoked);
                }
                let blank = state.current.session.as_ref().map(blank_like);
                return self.commit_merged(state, blank.as_ref(), None, now).await;
            }
            done => done?,
        }
        if created {
            self.metrics.session(SessionEvent::Created);
        }
        if revoked {
            self.metrics.session(SessionEvent::Revoked);
        }
        Ok(())
    }

    /// Commits an update of a loaded record: merged onto the latest stored
    /// revision and written only over that revision, merged again when
    /// another write came first (after a short random pause, so that many
    /// requests racing on one session take turns; after [`ATTEMPTS`] this
    /// request's change is dropped and logged rather than written over the
    /// others').
    async fn commit_merged(
        &self,
        state: &mut SessionState,
        original: Option<&Session>,
        mut revoke: Option<Revoke>,
        now: u64,
    ) -> Result<(), StoreError> {
        let key = state.current.id.key();
        let in_url = state.current.in_url;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let mut r = [0u8; 2];
                let _ = getrandom::fill(&mut r);
                let cap = (attempt as u64).min(10) * 1000;
                let pause = u64::from(u16::from_le_bytes(r)) % cap.max(1);
                tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
            }
            let latest = match self.store.load_latest(&key, now).await {
                Ok(Lookup::Live(latest)) => latest,
                // Gone meanwhile (logged out, revoked, expired): nothing to
                // update, but a revocation still happens.
                Ok(_) | Err(StoreError::Corrupt { .. }) => {
                    return self.commit_revoke_only(revoke, now).await;
                }
                Err(error) => return Err(error),
            };
            let Some(mine) = &state.current.session else {
                return self.commit_revoke_only(revoke, now).await;
            };
            let rev = latest.rev;
            let mut next = merged(latest, original, mine);
            next.last_seen = next.last_seen.max(now);
            next.url_mode = in_url;
            next.rev = rev.wrapping_add(1);
            let changes = Changes {
                now,
                save: Some(Save {
                    key,
                    write: Write::Update,
                    expires_at: next.expires_at(&self.lifetimes),
                    ends_by: next.ends_by(&self.lifetimes),
                    session: next.clone(),
                    expect_rev: Some(rev),
                }),
                revoke: revoke.take(),
            };
            let revoked = changes.revoke;
            match self.commit_changes(changes).await {
                Ok(()) => {
                    if revoked.is_some() {
                        self.metrics.session(SessionEvent::Revoked);
                    }
                    state.current.session = Some(next);
                    return Ok(());
                }
                Err(StoreError::Conflict) => {
                    // The revocation (if any) was written with it.
                    revoke = None;
                    if revoked.is_some() {
                        self.metrics.session(SessionEvent::Revoked);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        tracing::warn!(session = %self.key_hash(&key), "session update dropped: the record kept changing under it");
        self.commit_revoke_only(revoke, now).await
    }

    async fn commit_revoke_only(&self, revoke: Option<Revoke>, now: u64) -> Result<(), StoreError> {
        if revoke.is_none() {
            return Ok(());
        }
        let revoked = revoke.is_some();
        self.commit_changes(Changes {
            now,
            save: None,
            revoke,
        })
        .await?;
        if revoked {
            self.metrics.session(SessionEvent::Revoked);
        }
        Ok(())
    }

    /// One timed store commit.
    async fn commit_changes(&self, changes: Changes) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let done = self.store.commit(changes).await;
        self.metrics
            .store_call("commit", started.elapsed(), done.is_err());
        done
    }

    /// How long a revoked ID's tombstone stands: one idle period from the
    /// revocation (or from its issue, if that is later), which outlasts
    /// both the time the ID could pass as newly issued and any request in
    /// flight at the revocation that might still try to save it.
    fn tombstone_until(&self, id: &SessionId, now: u64) -> u64 {
        let issued = id.issued().saturating_mul(1000);
        issued.max(now).saturating_add(ms(self.lifetimes.idle))
    }

    /// Logs `user` out everywhere: every live session of theirs is revoked.
    /// Returns how many.
    pub async fn revoke_user(&self, user: &str) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let live = self.store.of_user(user, now).await?;
        let until = now.saturating_add(ms(self.lifetimes.idle));
        for (key, _) in &live {
            let changes = Changes {
                now,
                save: None,
                revoke: Some(Revoke { key: *key, until }),
            };
            self.commit_changes(changes).await?;
            self.metrics.session(SessionEvent::Revoked);
        }
        Ok(live.len())
    }

    /// The live sessions of `user`.
    pub async fn of_user(&self, user: &str) -> Result<Vec<(SessionKey, Session)>, StoreError> {
        self.store.of_user(user, self.clock.now_ms()).await
    }

    /// A short keyed hash that names a session to operators and in logs,
    /// never the ID itself (and useless as one).
    pub fn key_hash(&self, key: &SessionKey) -> String {
        use base64::Engine;
        let tag = self
            .keys
            .derive(b"session name for operators", &[key.bytes()]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..12])
    }

    /// Whether the session at `key` is still live and logged in as `user`
    /// (an open tunnel asks; a corrupt record counts as ended).
    pub async fn still_logged_in(&self, key: &SessionKey, user: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        match self.store.load(key, now).await {
            Ok(Lookup::Live(session)) => {
                Ok(!session.expired(&self.lifetimes, now) && session.user.as_deref() == Some(user))
            }
            Ok(Lookup::Gone | Lookup::Unknown) | Err(StoreError::Corrupt { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Ends the session whose [`Sessions::key_hash`] is `hash`; `false`
    /// when no live session has it.
    pub async fn revoke_hash(&self, hash: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let keys = self.store.keys().await?;
        let Some(key) = keys
            .into_iter()
            .find(|k| same_secret(&self.key_hash(k), hash))
        else {
            return Ok(false);
        };
        if !matches!(self.store.load(&key, now).await?, Lookup::Live(_)) {
            return Ok(false);
        }
        let changes = Changes {
            now,
            save: None,
            revoke: Some(Revoke {
                key,
                until: now.saturating_add(ms(self.lifetimes.idle)),
            }),
        };
        self.commit_changes(changes).await?;
        self.metrics.session(SessionEvent::Revoked);
        Ok(true)
    }

    /// Whether the store answers now (for readiness).
    pub async fn store_ready(&self) -> Result<(), StoreError> {
        self.store.stats().await.map(|_| ())
    }

    /// `Set-Cookie` that removes the session cookie from the browser.
    pub fn expire_cookie(&self) -> HeaderValue {
        self.cookie.expire()
    }

    /// A keyed hash of `parts` for `purpose`, the same on every instance
    /// that shares the key file (names of shared counters, say).
    pub fn keyed_hash(&self, purpose: &[u8], parts: &[&[u8]]) -> [u8; 16] {
        let tag = self.keys.derive(purpose, parts);
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag[..16]);
        out
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

    /// How many forged or malformed IDs have been presented since start.
    pub fn forged(&self) -> u64 {
        self.forged.load(Ordering::Relaxed)
    }

    /// What the store holds.
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        self.store.stats().await
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
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

    /// Counts session events and store calls in `metrics`.
    pub fn count_in(&mut self, metrics: Arc<Metrics>) {
        self.metrics = metrics;
    }

    /// Counts the anonymous-record budget in `redis`, shared by every
    /// instance (see [`budget`]).
    pub fn share_limits_through(&mut self, redis: crate::redis::Redis) {
        self.shared = Some(redis);
    }

    /// Whether a client at `ip` that is not logged in may have one more
    /// record created for it now (see [`budget`]); with a shared store, the
    /// budget is every instance's together. A count that cannot be made
    /// refuses (fails closed).
    pub async fn may_create_anonymous(&self, ip: IpAddr, record: &SessionKey) -> bool {
        let ip = crate::forwarded::limit_key(ip);
        let Some(redis) = &self.shared else {
            return self.budget.spend(ip, self.clock.now_ms(), *record.bytes());
        };
        let key = redis.key(&format!("budget:{ip}"));
        let now = self.clock.now_ms();
        redis
            .admit_in_window(
                &key,
                now,
                budget::WINDOW_MS,
                budget::PER_ADDRESS,
                Some(&record.hex()),
            )
            .await
            .unwrap_or(false)
    }

    /// Forgets expired sessions; returns how many.
    pub async fn purge(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        self.budget.purge(now);
        self.store.purge(now).await
    }
}

/// What a session held before a request created it: nothing (so that
/// every field and value the request set counts as its change).
fn blank_like(session: &Session) -> Session {
    Session::new(session.created)
}

/// Merges a write may try before it gives up (see `Sessions::commit_merged`).
const ATTEMPTS: usize = 64;

/// `latest` (the record as stored now) with what this request changed:
/// every field and value where `mine` differs from `original` (the record
/// as this request loaded it; none: only "last seen" changed). The
/// application's values are merged name by name and kept within their
/// limits: a merge that would break one keeps the latest values.
fn merged(mut latest: Session, original: Option<&Session>, mine: &Session) -> Session {
    latest.last_seen = latest.last_seen.max(mine.last_seen);
    let Some(original) = original else {
        return latest;
    };
    if mine.user != original.user {
        latest.user.clone_from(&mine.user);
    }
    if mine.remember != original.remember {
        latest.remember = mine.remember;
    }
    if mine.client != original.client {
        latest.client.clone_from(&mine.client);
    }
    merge_map(&mut latest.values, &original.values, &mine.values);
    let mut app = latest.app.clone();
    merge_map(&mut app, &original.app, &mine.app);
    if crate::app_values::within_limits(&app) {
        latest.app = app;
    } else {
        tracing::warn!("session values from the application refused: merged with a concurrent change they break a limit");
    }
    latest
}

/// Applies to `into` every entry where `mine` differs from `original`
/// (set, changed or removed).
fn merge_map(
    into: &mut std::collections::BTreeMap<String, String>,
    original: &std::collections::BTreeMap<String, String>,
    mine: &std::collections::BTreeMap<String, String>,
) {
    for (name, value) in mine {
        if original.get(name) != Some(value) {
            into.insert(name.clone(), value.clone());
        }
    }
    for name in original.keys() {
        if !mine.contains_key(name) {
            into.remove(name);
        }
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
            Store::Memory(store::memory::MemoryStore::new()),
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
        assert!(
            s.set_cookie(&got, false).is_none(),
            "a URL ID became a cookie"
        );

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
        let mut first = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        assert!(first.fresh);
        let now = s.clock().now_ms();
        first.record_mut(now).user = Some("alice".into());
        s.commit(&mut first).await.unwrap();

        // Requests every 20 minutes keep it alive for hours...
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(20 * 60)).await;
            let again = s
                .resolve(&with_cookie(&first.id), None, client())
                .await
                .unwrap();
            assert!(!again.fresh);
            assert_eq!(again.user(), Some("alice"));
            let mut again = again;
            s.commit(&mut again).await.unwrap();
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
        assert_eq!(
            s.stats().await.unwrap().records,
            1,
            "the record stays until purged"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_session_still_ends_at_its_absolute_limit() {
        let s = sessions();
        let mut first = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        first.record_mut(s.clock().now_ms());
        s.commit(&mut first).await.unwrap();
        for _ in 0..(12 * 60 / 10 - 1) {
            tokio::time::advance(Duration::from_secs(10 * 60)).await;
            let mut again = s
                .resolve(&with_cookie(&first.id), None, client())
                .await
                .unwrap();
            assert!(!again.fresh);
            // The visit is recorded (coalesced: every one here is due).
            s.commit(&mut again).await.unwrap();
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
        assert_eq!(
            s.stats().await.unwrap().records,
            0,
            "an unused session was stored"
        );
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

        let mut real = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        real.record_mut(s.clock().now_ms());
        s.commit(&mut real).await.unwrap();
        let mut again = s
            .resolve(&with_cookie(&real.id), None, client())
            .await
            .unwrap();
        s.logout(&mut again);
        s.commit(&mut again).await.unwrap();
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

    #[tokio::test(start_paused = true)]
    async fn last_seen_is_written_only_once_per_touch_interval() {
        let s = sessions();
        let mut first = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        first.record_mut(s.clock().now_ms()).user = Some("alice".into());
        s.commit(&mut first).await.unwrap();
        async fn stored(s: &Sessions, id: &SessionId) -> u64 {
            match s.store().load(&id.key(), s.clock().now_ms()).await.unwrap() {
                Lookup::Live(session) => session.last_seen,
                other => panic!("{other:?}"),
            }
        }
        let saved = stored(&s, &first.id).await;
        // Visits within the interval (a minute here) write nothing...
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(10)).await;
            let mut visit = s
                .resolve(&with_cookie(&first.id), None, client())
                .await
                .unwrap();
            s.commit(&mut visit).await.unwrap();
        }
        assert_eq!(
            stored(&s, &first.id).await,
            saved,
            "a visit inside the interval wrote"
        );
        // ...the first one past it does.
        tokio::time::advance(Duration::from_secs(11)).await;
        let mut visit = s
            .resolve(&with_cookie(&first.id), None, client())
            .await
            .unwrap();
        s.commit(&mut visit).await.unwrap();
        assert_eq!(stored(&s, &first.id).await, saved + 61_000);
    }

    #[tokio::test]
    async fn login_rotates_the_id_and_revokes_the_old_one_in_one_commit() {
        let s = sessions();
        let mut anon = s.resolve(&HeaderMap::new(), None, client()).await.unwrap();
        anon.record_mut(s.clock().now_ms())
            .values
            .insert("cart".into(), "3".into());
        s.commit(&mut anon).await.unwrap();
        let old = anon.id.clone();
        let mut state = s.resolve(&with_cookie(&old), None, client()).await.unwrap();
        s.login(&mut state, "alice", false);
        assert_ne!(state.id, old);
        assert!(state.fresh, "the new ID must be sent");
        // Nothing is written until the commit.
        assert!(s
            .resolve(&with_cookie(&state.id), None, client())
            .await
            .unwrap()
            .user()
            .is_none());
        s.commit(&mut state).await.unwrap();
        let now = s
            .resolve(&with_cookie(&state.id), None, client())
            .await
            .unwrap();
        assert_eq!(now.user(), Some("alice"));
        assert_eq!(
            now.session.as_ref().unwrap().values["cart"],
            "3",
            "values kept"
        );
        assert!(
            s.resolve(&with_cookie(&old), None, client())
                .await
                .unwrap()
                .fresh,
            "the old ID lives on"
        );
        assert_eq!(s.of_user("alice").await.unwrap().len(), 1);
        // Log out everywhere.
        assert_eq!(s.revoke_user("alice").await.unwrap(), 1);
        assert!(
            s.resolve(&with_cookie(&state.id), None, client())
                .await
                .unwrap()
                .fresh
        );
    }
}
