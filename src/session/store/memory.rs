//! `session.store = "memory"`: a sharded concurrent map in process memory.
//! Fast and lost on restart: for tests, load tests and throwaway sidecars.

use std::collections::HashSet;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{Changes, Lookup, Record, SessionKey, SessionStore, Stats, StoreError, Write};
use crate::session::data::Session;

/// Sessions in a `DashMap`: each request locks one shard, never the whole map.
#[derive(Default)]
pub struct MemoryStore {
    records: DashMap<SessionKey, Record>,
    by_user: UserIndex,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

/// Which keys each user's sessions live under. Entries may outlive their
/// record (it expired or was revoked); readers check the record, and the
/// purge drops what no longer stands.
#[derive(Default)]
pub(crate) struct UserIndex(DashMap<String, HashSet<SessionKey>>);

impl UserIndex {
    pub(crate) fn add(&self, user: &str, key: SessionKey) {
        self.0.entry(user.to_owned()).or_default().insert(key);
    }

    pub(crate) fn keys(&self, user: &str) -> Vec<SessionKey> {
        self.0
            .get(user)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Keeps only the keys `live` still says belong to their user.
    pub(crate) fn retain(&self, live: impl Fn(&str, &SessionKey) -> bool) {
        self.0.retain(|user, keys| {
            keys.retain(|k| live(user, k));
            !keys.is_empty()
        });
    }
}

/// Applies `changes` to an in-process map: the tombstone check and the
/// write happen under the shard's lock, so a tombstone always wins.
pub(crate) fn apply(
    records: &DashMap<SessionKey, Record>,
    index: &UserIndex,
    changes: &Changes,
    now: u64,
) -> Result<(), StoreError> {
    if let Some(revoke) = &changes.revoke {
        records.insert(
            revoke.key,
            Record::Revoked {
                until: revoke.until,
            },
        );
    }
    if let Some(save) = &changes.save {
        let record = Record::Live {
            session: save.session.clone(),
            expires_at: save.expires_at,
        };
        match records.entry(save.key) {
            Entry::Occupied(e) if matches!(e.get(), Record::Revoked { .. }) => return Ok(()),
            // An update writes only over a record still live.
            Entry::Occupied(e) if save.write == Write::Update && e.get().ended(now) => {
                return Ok(())
            }
            // ...and, merged onto a revision, only over that revision.
            Entry::Occupied(e)
                if save.expect_rev.is_some_and(|rev| match e.get() {
                    Record::Live { session, .. } => session.rev != rev,
                    Record::Revoked { .. } => false,
                }) =>
            {
                return Err(StoreError::Conflict)
            }
            // A create where another request's create (still live) came
            // first: merge onto it rather than replace it.
            Entry::Occupied(e) if save.write == Write::Create && !e.get().ended(now) => {
                return Err(StoreError::Conflict)
            }
            Entry::Occupied(mut e) => {
                e.insert(record);
            }
            Entry::Vacant(_) if save.write == Write::Update => return Ok(()),
            Entry::Vacant(e) => {
                e.insert(record);
            }
        }
        if let Some(user) = &save.session.user {
            index.add(user, save.key);
        }
    }
    Ok(())
}

/// The live sessions of `user` among `records`.
pub(crate) fn of_user(
    records: &DashMap<SessionKey, Record>,
    index: &UserIndex,
    user: &str,
    now: u64,
) -> Vec<(SessionKey, Session)> {
    index
        .keys(user)
        .into_iter()
        .filter_map(|key| match records.get(&key)?.lookup(now) {
            Lookup::Live(s) if s.user.as_deref() == Some(user) => Some((key, s)),
            _ => None,
        })
        .collect()
}

/// Forgets what has ended at `now`; returns how many records went.
pub(crate) fn purge(
    records: &DashMap<SessionKey, Record>,
    index: &UserIndex,
    now: u64,
) -> Vec<SessionKey> {
    let mut gone = Vec::new();
    records.retain(|key, r| {
        let keep = !r.ended(now);
        if !keep {
            gone.push(*key);
        }
        keep
    });
    index.retain(|user, key| {
        records
            .get(key)
            .is_some_and(|r| !r.is_tombstone(now) && r.user() == Some(user))
    });
    gone
}

impl SessionStore for MemoryStore {
    async fn load_latest(&self, key: &SessionKey, now: u64) -> Result<Lookup, StoreError> {
        self.load(key, now).await
    }

    async fn load(&self, key: &SessionKey, now: u64) -> Result<Lookup, StoreError> {
        Ok(self
            .records
            .get(key)
            .map_or(Lookup::Unknown, |r| r.lookup(now)))
    }

    async fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        apply(&self.records, &self.by_user, &changes, changes.now)
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        Ok(purge(&self.records, &self.by_user, now).len())
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        Ok(Stats {
            records: self.records.len(),
        })
    }

    async fn keys(&self) -> Result<Vec<SessionKey>, StoreError> {
        Ok(self.records.iter().map(|e| *e.key()).collect())
    }

    async fn of_user(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Vec<(SessionKey, Session)>, StoreError> {
        Ok(of_user(&self.records, &self.by_user, user, now))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    #[tokio::test]
    async fn conforms() {
        conformance::run(false, MemoryStore::new).await;
    }
}
