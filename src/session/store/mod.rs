//! Where sessions are kept: one contract ([`SessionStore`]), one enum
//! ([`Store`]) chosen by `session.store`.
//!
//! The contract, which the conformance tests below hold every backend to:
//! - **The session layer decides expiry; a store is told it.** Every save
//!   carries the instant the record expires ([`Save::expires_at`], Unix
//!   ms); a store keeps that instant (Redis: `PXAT`) and never answers
//!   [`Lookup::Live`] at or past it. Stores know nothing of lifetimes.
//! - [`SessionStore::load`] answers [`Lookup::Live`] only for a record that
//!   was saved, is not revoked and has not passed its expiry. It records
//!   nothing: "last seen" is written by the session layer, coalesced (see
//!   [`super::Sessions`]).
//! - [`SessionStore::commit`] applies one request's writes (a save, a
//!   revocation, or both: a login saves the new ID and revokes the old) in
//!   as few round trips as the backend allows, and is durable when it
//!   returns (for backends that are durable at all).
//! - **A tombstone wins.** A revoked key is [`Lookup::Gone`] until the
//!   instant given with the revocation; a save never replaces it, so a
//!   request that loaded the session before a logout and saves it after (a
//!   URL-mode cookie jar, say) cannot bring it back to life.
//! - **An update never recreates.** A save is a [`Write::Create`] (a
//!   session that had nothing stored, or a login's new ID) or a
//!   [`Write::Update`] of a record the request loaded. An update writes
//!   only over a live record: once the record is gone (expired, revoked
//!   and its tombstone forgotten, flushed, lost with a Redis that came
//!   back empty), a request still in flight cannot bring it back.
//! - **A per-user index.** [`SessionStore::of_user`] lists the live
//!   sessions of one user, for "log out everywhere".
//! - Errors say what failed ([`StoreError`]): *unavailable* (retry later:
//!   503) or *corrupt* (a record that does not decode: treat it as absent).

pub mod file;
pub mod memory;
pub mod redis;

use std::fmt;

use super::data::Session;

/// Where a session lives in a store: the random half of its ID. Made only
/// from a verified [`super::id::SessionId`] (or read back from the store's
/// own records), never from client bytes, so no store is ever asked about
/// an ID this proxy did not sign.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; 16]);

impl SessionKey {
    pub(crate) const MIN: SessionKey = SessionKey([0; 16]);
    pub(crate) const MAX: SessionKey = SessionKey([0xff; 16]);

    pub(crate) fn from_nonce(nonce: [u8; 16]) -> SessionKey {
        SessionKey(nonce)
    }

    /// The key as 32 lowercase hex digits (file names, Redis keys).
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(32);
        for b in self.0 {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }

    /// Reads back what [`SessionKey::hex`] wrote (a store's own records).
    pub(crate) fn parse_hex(text: &str) -> Option<SessionKey> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(SessionKey(out))
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}…)", &self.hex()[..8])
    }
}

/// What a store knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live session.
    Live(Session),
    /// Revoked: never to be honoured again.
    Gone,
    /// Never saved here, expired, or purged.
    Unknown,
}

/// Whether a save makes a record or changes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A new record: written unless a tombstone stands there.
    Create,
    /// A change to a record the request loaded: written only over a live
    /// record, never where it is gone.
    Update,
}

/// A record to write: the whole session, and when it expires.
#[derive(Debug, Clone)]
pub struct Save {
    /// Where.
    pub key: SessionKey,
    /// Make or change.
    pub write: Write,
    /// What (replaces what was there, unless that is a tombstone).
    pub session: Session,
    /// Unix ms at which the record is no longer live.
    pub expires_at: u64,
    /// The latest it could ever live, however busy (its absolute limit):
    /// how long indexes that name it must last.
    pub ends_by: u64,
    /// For an update merged onto the stored record: the revision it was
    /// merged onto. The store writes it only if the stored record still
    /// has that revision, else answers [`StoreError::Conflict`].
    pub expect_rev: Option<u64>,
}

/// A key to revoke, and how long its tombstone must last.
#[derive(Debug, Clone, Copy)]
pub struct Revoke {
    /// Which.
    pub key: SessionKey,
    /// Unix ms until which the key answers [`Lookup::Gone`].
    pub until: u64,
}

/// One request's writes, applied together by [`SessionStore::commit`].
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// When the writes happen (Unix ms): what has ended by then is gone.
    pub now: u64,
    /// A record to save.
    pub save: Option<Save>,
    /// A key to revoke (e.g. the ID a login rotated away).
    pub revoke: Option<Revoke>,
}

impl Changes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.save.is_none() && self.revoke.is_none()
    }
}

/// What a store holds, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Records (live sessions and tombstones not yet forgotten); for Redis,
    /// the keys under the prefix that name sessions.
    pub records: usize,
}

/// A store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot answer now (timeout, connection refused, disk
    /// full): the request gets 503 and may be retried.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] crate::error::BoxError),
    /// An update merged onto a revision that another write replaced
    /// meanwhile: merge again (never leaves [`crate::session::Sessions`]).
    #[error("session record changed meanwhile")]
    Conflict,
    /// A record did not decode: it is treated as absent (and logged).
    #[error("corrupt session record: {source}")]
    Corrupt {
        /// Which record.
        key: SessionKey,
        /// Why it did not decode.
        #[source]
        source: crate::error::BoxError,
    },
}

impl StoreError {
    /// Unavailable, because of `source`.
    pub fn unavailable(source: impl Into<crate::error::BoxError>) -> StoreError {
        StoreError::Unavailable(source.into())
    }
}

impl From<crate::redis::RedisError> for StoreError {
    fn from(e: crate::redis::RedisError) -> StoreError {
        StoreError::Unavailable(Box::new(e))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> StoreError {
        StoreError::Unavailable(Box::new(e))
    }
}

/// The contract every session store keeps (see the module docs).
pub trait SessionStore {
    /// Looks `key` up as of `now` (Unix ms).
    fn load(
        &self,
        key: &SessionKey,
        now: u64,
    ) -> impl std::future::Future<Output = Result<Lookup, StoreError>> + Send;

    /// Looks `key` up as `load` does, but past any cache: what a write
    /// about to merge into the record must start from.
    fn load_latest(
        &self,
        key: &SessionKey,
        now: u64,
    ) -> impl std::future::Future<Output = Result<Lookup, StoreError>> + Send;

    /// Applies one request's writes.
    fn commit(
        &self,
        changes: Changes,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Forgets records past their expiry at `now`; returns how many (0 for
    /// stores that expire records themselves).
    fn purge(
        &self,
        now: u64,
    ) -> impl std::future::Future<Output = Result<usize, StoreError>> + Send;

    /// How much the store holds.
    fn stats(&self) -> impl std::future::Future<Output = Result<Stats, StoreError>> + Send;

    /// Every key the store holds (records and tombstones), for operators'
    /// lookups by hash; bounded by what the store holds.
    fn keys(&self)
        -> impl std::future::Future<Output = Result<Vec<SessionKey>, StoreError>> + Send;

    /// The live sessions of `user` at `now`, with their keys.
    fn of_user(
        &self,
        user: &str,
        now: u64,
    ) -> impl std::future::Future<Output = Result<Vec<(SessionKey, Session)>, StoreError>> + Send;
}

/// The configured store.
pub enum Store {
    /// `session.store = "memory"`.
    Memory(memory::MemoryStore),
    /// `session.store = "file"`.
    File(file::FileStore),
    /// `session.store = "redis"`.
    Redis(redis::RedisStore),
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self {
            Store::Memory($s) => $body,
            Store::File($s) => $body,
            Store::Redis($s) => $body,
        }
    };
}

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Lookup, StoreError> {
        each!(self, s => s.load(key, now).await)
    }

    async fn load_latest(&self, key: &SessionKey, now: u64) -> Result<Lookup, StoreError> {
        each!(self, s => s.load_latest(key, now).await)
    }

    async fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        each!(self, s => s.commit(changes).await)
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        each!(self, s => s.purge(now).await)
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        each!(self, s => s.stats().await)
    }

    async fn keys(&self) -> Result<Vec<SessionKey>, StoreError> {
        each!(self, s => s.keys().await)
    }

    async fn of_user(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Vec<(SessionKey, Session)>, StoreError> {
        each!(self, s => s.of_user(user, now).await)
    }
}

/// A record as the in-process stores keep it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Record {
    /// A session, live until `expires_at`.
    #[serde(rename = "live")]
    Live { session: Session, expires_at: u64 },
    /// A revoked key, answered as gone until `until`.
    #[serde(rename = "revoked")]
    Revoked { until: u64 },
}

impl Record {
    /// How the record answers a lookup at `now`.
    pub(crate) fn lookup(&self, now: u64) -> Lookup {
        match self {
            Record::Live {
                session,
                expires_at,
            } if now < *expires_at => Lookup::Live(session.clone()),
            Record::Revoked { until } if now < *until => Lookup::Gone,
            _ => Lookup::Unknown,
        }
    }

    /// Whether it can be forgotten at `now`.
    pub(crate) fn ended(&self, now: u64) -> bool {
        match self {
            Record::Live { expires_at, .. } => now >= *expires_at,
            Record::Revoked { until } => now >= *until,
        }
    }

    /// Whether it is a tombstone that still stands at `now`.
    pub(crate) fn is_tombstone(&self, now: u64) -> bool {
        matches!(self, Record::Revoked { until } if now < *until)
    }

    /// The user of a live record.
    pub(crate) fn user(&self) -> Option<&str> {
        match self {
            Record::Live { session, .. } => session.user.as_deref(),
            Record::Revoked { .. } => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! One suite, run against every backend.

    use std::sync::Arc;

    use super::*;

    const T0: u64 = 1_800_000_000_000;

    /// A key no other test uses.
    pub fn key() -> SessionKey {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).unwrap();
        SessionKey::from_nonce(nonce)
    }

    fn session(user: &str) -> Session {
        let mut s = Session::new(T0);
        s.user = Some(user.into());
        s.values.insert("k".into(), "v".into());
        // The application's values, with what encodings must not mangle.
        s.app.insert("note".into(), "a&b=c d %20 été ✓".into());
        s
    }

    fn save(key: SessionKey, session: Session, expires_at: u64) -> Changes {
        Changes {
            now: 0,
            save: Some(Save {
                key,
                write: Write::Create,
                session,
                expires_at,
                ends_by: expires_at,
                expect_rev: None,
            }),
            revoke: None,
        }
    }

    /// An update made at `now`.
    fn update(key: SessionKey, session: Session, expires_at: u64, now: u64) -> Changes {
        let mut changes = save(key, session, expires_at);
        changes.now = now;
        if let Some(s) = &mut changes.save {
            s.write = Write::Update;
        }
        changes
    }

    fn revoke(key: SessionKey, until: u64) -> Changes {
        Changes {
            now: 0,
            save: None,
            revoke: Some(Revoke { key, until }),
        }
    }

    /// `real_clock`: the store keeps its own clock (Redis), so each test
    /// writes relative to the real time; the others are told a fixed one.
    /// `make` gives an empty store.
    pub async fn run<S: SessionStore + Send + Sync + 'static>(
        real_clock: bool,
        make: impl Fn() -> S,
    ) {
        let t0 = || {
            if real_clock {
                crate::session::data::Clock::new().now_ms()
            } else {
                T0
            }
        };
        save_then_load(&make(), t0()).await;
        unknown_keys(&make(), t0()).await;
        expiry_is_what_it_was_told(&make(), t0()).await;
        revoke_and_no_resurrection(&make(), t0()).await;
        login_in_one_commit(&make(), t0()).await;
        per_user_index(&make(), t0()).await;
        concurrency(Arc::new(make()), t0()).await;
        revisions(&make(), t0()).await;
        if !real_clock {
            // Stores that keep no clock of their own are purged by the caller.
            purge(&make()).await;
        }
    }

    /// An update merged onto a revision is written only over that
    /// revision; a second one made from the same revision is a conflict.
    async fn revisions(store: &impl SessionStore, t0: u64) {
        let key = key();
        store
            .commit(save(key, session("alice"), t0 + 60_000))
            .await
            .unwrap();
        let merged = |rev: u64, note: &str| {
            let mut s = session("alice");
            s.rev = rev + 1;
            s.app.insert("note".into(), note.into());
            let mut changes = update(key, s, t0 + 60_000, t0 + 1);
            if let Some(save) = &mut changes.save {
                save.expect_rev = Some(rev);
            }
            changes
        };
        store.commit(merged(0, "first")).await.unwrap();
        assert!(
            matches!(
                store.commit(merged(0, "stale")).await,
                Err(StoreError::Conflict)
            ),
            "an update from an old revision was written"
        );
        let Lookup::Live(s) = store.load_latest(&key, t0 + 2).await.unwrap() else {
            panic!("the record is gone");
        };
        assert_eq!((s.rev, s.app["note"].as_str()), (1, "first"));
        store.commit(merged(1, "second")).await.unwrap();
    }

    async fn save_then_load(store: &impl SessionStore, t0: u64) {
        let key = key();
        store
            .commit(save(key, session("alice"), t0 + 60_000))
            .await
            .unwrap();
        let Lookup::Live(s) = store.load(&key, t0 + 1).await.unwrap() else {
            panic!("saved session not live")
        };
        assert_eq!(s, session("alice"), "what was saved comes back whole");
        // Creating again where a live record is: a conflict (the caller
        // merges); updating replaces.
        assert!(matches!(
            store
                .commit(save(key, session("mallory"), t0 + 60_000))
                .await,
            Err(StoreError::Conflict)
        ));
        store
            .commit(update(key, session("bob"), t0 + 60_000, t0 + 1))
            .await
            .unwrap();
        let Lookup::Live(s) = store.load(&key, t0 + 2).await.unwrap() else {
            panic!()
        };
        assert_eq!(s.user.as_deref(), Some("bob"));
        assert!(store.stats().await.unwrap().records >= 1);
        assert!(
            store.keys().await.unwrap().contains(&key),
            "keys() misses a record"
        );
    }

    async fn unknown_keys(store: &impl SessionStore, t0: u64) {
        assert_eq!(store.load(&key(), t0).await.unwrap(), Lookup::Unknown);
        assert!(store.commit(Changes::default()).await.is_ok());
    }

    async fn expiry_is_what_it_was_told(store: &impl SessionStore, t0: u64) {
        let key = key();
        store
            .commit(save(key, session("alice"), t0 + 1_500))
            .await
            .unwrap();
        assert!(matches!(
            store.load(&key, t0 + 1_000).await.unwrap(),
            Lookup::Live(_)
        ));
        // An update with a later expiry extends it (the session layer's touch).
        store
            .commit(update(key, session("alice"), t0 + 3_000, t0 + 1_100))
            .await
            .unwrap();
        wait_past(t0 + 1_600).await;
        assert!(matches!(
            store.load(&key, t0 + 1_600).await.unwrap(),
            Lookup::Live(_)
        ));
        wait_past(t0 + 3_100).await;
        assert_eq!(store.load(&key, t0 + 3_100).await.unwrap(), Lookup::Unknown);
        // A request still in flight updates what has expired: it stays gone.
        store
            .commit(update(key, session("alice"), t0 + 600_000, t0 + 3_150))
            .await
            .unwrap();
        assert_eq!(
            store.load(&key, t0 + 3_200).await.unwrap(),
            Lookup::Unknown,
            "revived"
        );
        // An update of what was never there writes nothing either.
        let never = self::key();
        store
            .commit(update(never, session("x"), t0 + 600_000, t0 + 3_150))
            .await
            .unwrap();
        assert_eq!(
            store.load(&never, t0 + 3_200).await.unwrap(),
            Lookup::Unknown
        );
        assert!(
            store.of_user("alice", t0 + 3_100).await.unwrap().is_empty(),
            "an expired session is listed"
        );
    }

    async fn revoke_and_no_resurrection(store: &impl SessionStore, t0: u64) {
        let key = key();
        store
            .commit(save(key, session("alice"), t0 + 600_000))
            .await
            .unwrap();
        let Lookup::Live(mut loaded) = store.load(&key, t0 + 1).await.unwrap() else {
            panic!("saved session not live")
        };
        store.commit(revoke(key, t0 + 2_000)).await.unwrap();
        assert_eq!(store.load(&key, t0 + 2).await.unwrap(), Lookup::Gone);
        // The request that loaded it before the revocation saves it after.
        loaded.values.insert("jar".into(), "late write".into());
        store
            .commit(update(key, loaded.clone(), t0 + 600_000, t0 + 3))
            .await
            .unwrap();
        store
            .commit(save(key, loaded.clone(), t0 + 600_000))
            .await
            .unwrap();
        assert_eq!(
            store.load(&key, t0 + 3).await.unwrap(),
            Lookup::Gone,
            "resurrected"
        );
        // Revoking what was never saved still marks the key.
        let never = self::key();
        store.commit(revoke(never, t0 + 2_000)).await.unwrap();
        assert_eq!(store.load(&never, t0 + 4).await.unwrap(), Lookup::Gone);
        // The tombstone lasts as long as it was told, then goes.
        wait_past(t0 + 2_100).await;
        assert_eq!(
            store.load(&never, t0 + 2_100).await.unwrap(),
            Lookup::Unknown
        );
    }

    async fn login_in_one_commit(store: &impl SessionStore, t0: u64) {
        let (old, new) = (key(), key());
        store
            .commit(save(old, session("anon"), t0 + 600_000))
            .await
            .unwrap();
        store
            .commit(Changes {
                now: t0,
                save: Some(Save {
                    key: new,
                    write: Write::Create,
                    session: session("alice"),
                    expires_at: t0 + 600_000,
                    ends_by: t0 + 600_000,
                    expect_rev: None,
                }),
                revoke: Some(Revoke {
                    key: old,
                    until: t0 + 600_000,
                }),
            })
            .await
            .unwrap();
        assert_eq!(store.load(&old, t0 + 1).await.unwrap(), Lookup::Gone);
        assert!(matches!(
            store.load(&new, t0 + 1).await.unwrap(),
            Lookup::Live(_)
        ));
    }

    async fn per_user_index(store: &impl SessionStore, t0: u64) {
        let user = format!("dora-{}", key().hex());
        let (a, b, c, other) = (key(), key(), key(), key());
        for k in [a, b, c] {
            store
                .commit(save(k, session(&user), t0 + 600_000))
                .await
                .unwrap();
        }
        store
            .commit(save(other, session(&format!("{user}x")), t0 + 600_000))
            .await
            .unwrap();
        let mut listed: Vec<SessionKey> = store
            .of_user(&user, t0 + 1)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, s)| {
                assert_eq!(s.user.as_deref(), Some(user.as_str()));
                k
            })
            .collect();
        listed.sort_by_key(|k| *k.bytes());
        let mut want = vec![a, b, c];
        want.sort_by_key(|k| *k.bytes());
        assert_eq!(listed, want);
        // A revoked one is no longer listed.
        store.commit(revoke(b, t0 + 600_000)).await.unwrap();
        assert_eq!(store.of_user(&user, t0 + 2).await.unwrap().len(), 2);
        assert!(store.of_user("nobody-at-all", t0).await.unwrap().is_empty());
    }

    async fn purge(store: &impl SessionStore) {
        let (old, young, dead) = (key(), key(), key());
        store
            .commit(save(old, session("old"), T0 + 60_000))
            .await
            .unwrap();
        store
            .commit(save(young, session("young"), T0 + 200_000))
            .await
            .unwrap();
        store.commit(revoke(dead, T0 + 60_000)).await.unwrap();
        assert_eq!(store.stats().await.unwrap().records, 3);
        assert_eq!(store.purge(T0 + 90_000).await.unwrap(), 2);
        assert_eq!(store.stats().await.unwrap().records, 1);
        assert!(matches!(
            store.load(&young, T0 + 100_001).await.unwrap(),
            Lookup::Live(_)
        ));
        assert!(store.of_user("old", T0 + 90_000).await.unwrap().is_empty());
    }

    async fn concurrency<S: SessionStore + Send + Sync + 'static>(store: Arc<S>, t0: u64) {
        let keys: Vec<SessionKey> = (0..16).map(|_| key()).collect();
        let mut tasks = Vec::new();
        for (n, key) in keys.iter().enumerate() {
            for round in 0..8u64 {
                let (store, key) = (store.clone(), *key);
                tasks.push(tokio::spawn(async move {
                    let mut s = session(&format!("user{n}"));
                    s.values.insert("round".into(), round.to_string());
                    // The first create wins; the others are told so
                    // (the caller merges) and write as updates.
                    match store.commit(save(key, s.clone(), t0 + 600_000)).await {
                        Ok(()) => {}
                        Err(StoreError::Conflict) => store
                            .commit(update(key, s, t0 + 600_000, t0))
                            .await
                            .unwrap(),
                        Err(e) => panic!("{e}"),
                    }
                    for k in 0..20 {
                        let got = store.load(&key, t0 + k).await.unwrap();
                        let Lookup::Live(got) = got else {
                            panic!("{got:?}")
                        };
                        assert_eq!(got.user, Some(format!("user{n}")), "sessions mixed up");
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// Stores with their own clock (Redis) expire records in real time; the
    /// in-process ones take `now` as given, so waiting is harmless there.
    async fn wait_past(at: u64) {
        let now = crate::session::data::Clock::new().now_ms();
        if at > now && at - now < 10_000 {
            tokio::time::sleep(std::time::Duration::from_millis(at - now + 20)).await;
        }
    }
}
