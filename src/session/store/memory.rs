//! `session.store = "memory"`: a sharded concurrent map in process memory.
//! Fast and lost on restart: for tests, load tests and throwaway sidecars.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{lookup_of, tombstone, Lookup, SessionStore, StoreError};
use crate::session::data::{Lifetimes, Session};
use crate::session::id::SessionId;

/// Sessions in a `DashMap`: each request locks one shard, never the whole map.
pub struct MemoryStore {
    sessions: DashMap<[u8; 16], Session>,
    lifetimes: Lifetimes,
}

impl MemoryStore {
    /// An empty store whose sessions live for `lifetimes`.
    pub fn new(lifetimes: Lifetimes) -> MemoryStore {
        MemoryStore {
            sessions: DashMap::new(),
            lifetimes,
        }
    }
}

impl SessionStore for MemoryStore {
    async fn visit(&self, id: &SessionId, now: u64) -> Result<Lookup, StoreError> {
        let Some(mut record) = self.sessions.get_mut(id.nonce()) else {
            return Ok(Lookup::Unknown);
        };
        let lookup = lookup_of(&record, &self.lifetimes, now);
        if let Lookup::Live(session) = &lookup {
            record.last_seen = session.last_seen.max(now);
            return Ok(Lookup::Live(record.clone()));
        }
        Ok(lookup)
    }

    async fn save(&self, id: &SessionId, session: &Session) -> Result<(), StoreError> {
        // Checked and written under the shard's lock: a tombstone wins.
        match self.sessions.entry(*id.nonce()) {
            Entry::Occupied(e) if e.get().revoked => {}
            Entry::Occupied(mut e) => {
                e.insert(session.clone());
            }
            Entry::Vacant(e) => {
                e.insert(session.clone());
            }
        }
        Ok(())
    }

    async fn revoke(&self, id: &SessionId, now: u64) -> Result<(), StoreError> {
        self.sessions.insert(*id.nonce(), tombstone(id, now));
        Ok(())
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let before = self.sessions.len();
        self.sessions
            .retain(|_, s| !s.expired(&self.lifetimes, now));
        Ok(before.saturating_sub(self.sessions.len()))
    }

    fn count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    #[tokio::test]
    async fn conforms() {
        conformance::run(|| MemoryStore::new(conformance::LIFETIMES)).await;
    }
}
