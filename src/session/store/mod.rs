//! Where sessions are kept: one contract ([`SessionStore`]), one enum
//! ([`Store`]) chosen by `session.store`.
//!
//! The contract, which the conformance tests below hold every backend to:
//! - [`SessionStore::visit`] answers [`Lookup::Live`] only for a session that
//!   was saved, is not revoked and has not expired; it records the visit
//!   (last seen) without necessarily writing it through at once.
//! - [`SessionStore::save`] replaces the whole session and is durable when
//!   it returns (for backends that are durable at all).
//! - [`SessionStore::revoke`] makes the ID [`Lookup::Gone`] for at least one
//!   idle period from the revocation, after which [`SessionStore::purge`]
//!   may forget it.
//! - **A tombstone wins.** [`SessionStore::save`] never replaces a revoked
//!   record: a request that loaded the session before a logout and saves
//!   it after (a URL-mode cookie jar, say) cannot bring it back to life.
//! - Expired sessions answer [`Lookup::Gone`] until purged, then
//!   [`Lookup::Unknown`]: neither ever yields its data again.

pub mod file;
pub mod memory;

use super::data::{Lifetimes, Session};
use super::id::SessionId;

/// What a store knows about an ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live session, as of this visit.
    Live(Session),
    /// Revoked or expired: never to be honoured again.
    Gone,
    /// Never saved here (or purged long ago).
    Unknown,
}

/// A store failed (disk full, a remote store unreachable).
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(#[from] pub std::io::Error);

/// The contract every session store keeps (see the module docs).
pub trait SessionStore {
    /// Looks `id` up as of `now` (Unix ms) and records the visit.
    fn visit(
        &self,
        id: &SessionId,
        now: u64,
    ) -> impl std::future::Future<Output = Result<Lookup, StoreError>> + Send;

    /// Stores `session` under `id`, replacing what was there, unless what
    /// is there is a revoked record (then nothing changes).
    fn save(
        &self,
        id: &SessionId,
        session: &Session,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Ends the session: its ID is never live again.
    fn revoke(
        &self,
        id: &SessionId,
        now: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Forgets sessions expired at `now`; returns how many.
    fn purge(
        &self,
        now: u64,
    ) -> impl std::future::Future<Output = Result<usize, StoreError>> + Send;

    /// How many sessions (live, revoked or not yet purged) it holds.
    fn count(&self) -> usize;
}

/// The configured store.
pub enum Store {
    /// `session.store = "memory"`.
    Memory(memory::MemoryStore),
    /// `session.store = "file"`.
    File(file::FileStore),
}

impl SessionStore for Store {
    async fn visit(&self, id: &SessionId, now: u64) -> Result<Lookup, StoreError> {
        match self {
            Store::Memory(s) => s.visit(id, now).await,
            Store::File(s) => s.visit(id, now).await,
        }
    }

    async fn save(&self, id: &SessionId, session: &Session) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.save(id, session).await,
            Store::File(s) => s.save(id, session).await,
        }
    }

    async fn revoke(&self, id: &SessionId, now: u64) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.revoke(id, now).await,
            Store::File(s) => s.revoke(id, now).await,
        }
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        match self {
            Store::Memory(s) => s.purge(now).await,
            Store::File(s) => s.purge(now).await,
        }
    }

    fn count(&self) -> usize {
        match self {
            Store::Memory(s) => s.count(),
            Store::File(s) => s.count(),
        }
    }
}

/// The record that marks an ID revoked at `now`: it lives one idle period
/// from then, which outlasts both the time the ID could pass as newly
/// issued (see [`super::Sessions`]) and any request in flight at the
/// revocation that might still try to save it.
pub(crate) fn tombstone(id: &SessionId, now: u64) -> Session {
    let issued = id.issued().saturating_mul(1000);
    let mut s = Session::new(issued.max(now));
    s.revoked = true;
    s
}

/// How a stored record answers a visit at `now`.
pub(crate) fn lookup_of(record: &Session, lifetimes: &Lifetimes, now: u64) -> Lookup {
    if record.revoked || record.expired(lifetimes, now) {
        Lookup::Gone
    } else {
        Lookup::Live(record.clone())
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! One suite, run against every backend.

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::session::id::Keys;

    pub const LIFETIMES: Lifetimes = Lifetimes {
        idle: Duration::from_secs(60),
        absolute: Duration::from_secs(3600),
        remember_me: Duration::from_secs(86400),
    };
    const T0: u64 = 1_800_000_000_000;

    fn keys() -> Keys {
        Keys::new(&[vec![7; 32]]).unwrap()
    }

    fn id() -> SessionId {
        SessionId::generate(&keys(), T0 / 1000)
    }

    fn session(user: &str) -> Session {
        let mut s = Session::new(T0);
        s.user = Some(user.into());
        s.values.insert("k".into(), "v".into());
        s
    }

    pub async fn run<S: SessionStore + Send + Sync + 'static>(make: impl Fn() -> S) {
        save_then_load(&make()).await;
        unknown_ids(&make()).await;
        idle_expiry_and_refresh(&make()).await;
        absolute_expiry(&make()).await;
        revoke(&make()).await;
        no_resurrection(&make()).await;
        purge(&make()).await;
        concurrency(Arc::new(make())).await;
    }

    async fn save_then_load(store: &impl SessionStore) {
        let id = id();
        store.save(&id, &session("alice")).await.unwrap();
        let Lookup::Live(s) = store.visit(&id, T0 + 1).await.unwrap() else {
            panic!("saved session not live")
        };
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!(s.values["k"], "v");
        assert_eq!(s.last_seen, T0 + 1, "visit records last seen");
        // Saving again replaces.
        store.save(&id, &session("bob")).await.unwrap();
        let Lookup::Live(s) = store.visit(&id, T0 + 2).await.unwrap() else {
            panic!()
        };
        assert_eq!(s.user.as_deref(), Some("bob"));
    }

    async fn unknown_ids(store: &impl SessionStore) {
        assert_eq!(store.visit(&id(), T0).await.unwrap(), Lookup::Unknown);
    }

    async fn idle_expiry_and_refresh(store: &impl SessionStore) {
        let id = id();
        store.save(&id, &session("alice")).await.unwrap();
        // Visits 50 s apart keep it alive well past one idle period...
        for i in 1..=5 {
            let at = T0 + i * 50_000;
            assert!(matches!(
                store.visit(&id, at).await.unwrap(),
                Lookup::Live(_)
            ));
        }
        // ...then 61 s of silence ends it, and a later visit does not revive it.
        let late = T0 + 5 * 50_000 + 61_000;
        assert_eq!(store.visit(&id, late).await.unwrap(), Lookup::Gone);
        assert_eq!(store.visit(&id, late + 1).await.unwrap(), Lookup::Gone);
    }

    async fn absolute_expiry(store: &impl SessionStore) {
        let id = id();
        store.save(&id, &session("alice")).await.unwrap();
        let mut at = T0;
        while at + 30_000 < T0 + 3_600_000 {
            at += 30_000;
            assert!(matches!(
                store.visit(&id, at).await.unwrap(),
                Lookup::Live(_)
            ));
        }
        assert_eq!(
            store.visit(&id, T0 + 3_600_000).await.unwrap(),
            Lookup::Gone
        );

        // Remember-me: no idle limit, its own absolute limit.
        let id = super::super::id::SessionId::generate(&keys(), T0 / 1000);
        let mut s = session("carol");
        s.remember = true;
        store.save(&id, &s).await.unwrap();
        assert!(matches!(
            store.visit(&id, T0 + 3_600_000 * 2).await.unwrap(),
            Lookup::Live(_)
        ));
        assert_eq!(
            store.visit(&id, T0 + 86_400_000).await.unwrap(),
            Lookup::Gone
        );
    }

    async fn revoke(store: &impl SessionStore) {
        let id = id();
        store.save(&id, &session("alice")).await.unwrap();
        store.revoke(&id, T0 + 10).await.unwrap();
        assert_eq!(store.visit(&id, T0 + 20).await.unwrap(), Lookup::Gone);
        // Revoking what was never saved still marks the ID.
        let never = self::id();
        store.revoke(&never, T0).await.unwrap();
        assert_eq!(store.visit(&never, T0 + 1).await.unwrap(), Lookup::Gone);
    }

    async fn no_resurrection(store: &impl SessionStore) {
        // A session issued long ago, loaded by a request, revoked by another,
        // then saved by the first: it stays revoked.
        let id = id();
        let late = T0 + 50_000;
        let mut s = session("alice");
        s.last_seen = late;
        store.save(&id, &s).await.unwrap();
        let Lookup::Live(mut loaded) = store.visit(&id, late).await.unwrap() else {
            panic!("saved session not live")
        };
        store.revoke(&id, late + 1).await.unwrap();
        loaded.values.insert("jar".into(), "late write".into());
        store.save(&id, &loaded).await.unwrap();
        assert_eq!(store.visit(&id, late + 2).await.unwrap(), Lookup::Gone);
        // ...and the tombstone outlives the ID's own first idle period.
        assert_eq!(store.visit(&id, late + 59_000).await.unwrap(), Lookup::Gone);
        store.purge(late + 30_000).await.unwrap();
        store.save(&id, &loaded).await.unwrap();
        assert_eq!(store.visit(&id, late + 30_001).await.unwrap(), Lookup::Gone);
    }

    async fn purge(store: &impl SessionStore) {
        let (old, fresh, dead) = (id(), id(), id());
        store.save(&old, &session("old")).await.unwrap();
        let mut young = session("young");
        young.created = T0 + 100_000;
        young.last_seen = T0 + 100_000;
        store.save(&fresh, &young).await.unwrap();
        store.revoke(&dead, T0).await.unwrap();
        assert_eq!(store.count(), 3);
        // At T0 + 90 s: `old` and the tombstone are past idle, `young` is not.
        assert_eq!(store.purge(T0 + 90_000).await.unwrap(), 2);
        assert_eq!(store.count(), 1);
        assert_eq!(
            store.visit(&old, T0 + 90_000).await.unwrap(),
            Lookup::Unknown
        );
        assert!(matches!(
            store.visit(&fresh, T0 + 100_001).await.unwrap(),
            Lookup::Live(_)
        ));
    }

    async fn concurrency<S: SessionStore + Send + Sync + 'static>(store: Arc<S>) {
        let ids: Vec<SessionId> = (0..16).map(|_| id()).collect();
        let mut tasks = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            for round in 0..8u64 {
                let (store, id) = (store.clone(), id.clone());
                tasks.push(tokio::spawn(async move {
                    let mut s = session(&format!("user{n}"));
                    s.values.insert("round".into(), round.to_string());
                    store.save(&id, &s).await.unwrap();
                    for k in 0..20 {
                        let got = store.visit(&id, T0 + k).await.unwrap();
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
        assert_eq!(store.count(), 16);
    }
}
