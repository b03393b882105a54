//! `session.store = "redis"`: sessions in Redis (or Valkey), shared by every
//! proxy instance that names the same server, Cluster or Sentinel primary.
//!
//! Keys (all under `session.redis_prefix`, default `cloakroom:`):
//! - `s:<hex key>`: one session record, the same JSON as a file-store file;
//!   set with `PXAT`, so Redis drops it when the session layer says it
//!   expires. A tombstone is a record too (`{"revoked":…}`), expiring when
//!   it may be forgotten; a Lua script saves a record only where no
//!   tombstone stands (and an update only where the record still is), in
//!   one atomic step.
//! - `u:<user>`: the set of keys of that user's sessions (the per-user
//!   index), written when a session is created and lasting as long as the
//!   longest any of them could live (its absolute limit); stale members are
//!   dropped when the set is read.
//! - channel `invalidate`: every write publishes the key it wrote.
//!
//! **Cached, and invalidated within a second.** A lookup is served from
//! process memory for at most [`CACHE_FOR`]; every instance listens on the
//! `invalidate` channel and forgets a key as soon as another instance
//! writes it, so a logout or revocation anywhere is refused everywhere
//! within the pub/sub delay (milliseconds), [`CACHE_FOR`] at worst. While
//! the listener is not connected, nothing is served from the cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::StreamExt;
use redis::{Cmd, Value};

use super::{Changes, Lookup, Record, SessionKey, SessionStore, Stats, StoreError, Write};
use crate::redis::Redis;
use crate::session::data::Session;

/// Longest a lookup is answered from process memory.
pub const CACHE_FOR: Duration = Duration::from_millis(500);
/// Most lookups kept in process memory.
const CACHE_MAX: usize = 200_000;

/// Saves `ARGV[1]` under `KEYS[1]` to expire at `ARGV[2]` (Unix ms),
/// unless a tombstone stands there; `ARGV[3] = update` writes only over a
/// record that is there (an expired one Redis has already dropped), and
/// with `ARGV[4]` (a revision) only over a record of that revision: else
/// it answers -1, and the update is merged again. A create where a record
/// already is (a parallel first request made it) answers -1 too.
const SAVE: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 11) == '{"revoked":' then
  return 0
end
if ARGV[3] == 'update' and not current then
  return 0
end
if ARGV[3] == 'create' and current then
  return -1
end
if ARGV[4] ~= '' and current then
  local ok, doc = pcall(cjson.decode, current)
  local rev = 0
  if ok and type(doc) == 'table' and type(doc.live) == 'table'
     and type(doc.live.session) == 'table' and doc.live.session.rev then
    rev = tonumber(doc.live.session.rev) or 0
  end
  if rev ~= tonumber(ARGV[4]) then
    return -1
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"#;

/// The Redis store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    redis: Redis,
    cache: Arc<Cache>,
}

#[derive(Default)]
struct Cache {
    entries: DashMap<SessionKey, Cached>,
    /// The invalidation listener is subscribed: the cache may be used.
    listening: AtomicBool,
    /// Bumped by every invalidation: a lookup that began before one does
    /// not fill the cache with what it read.
    epoch: AtomicU64,
}

struct Cached {
    lookup: Lookup,
    at: Instant,
}

impl Cache {
    fn get(&self, key: &SessionKey) -> Option<Lookup> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let hit = self.entries.get(key)?;
        (hit.at.elapsed() < CACHE_FOR).then(|| hit.lookup.clone())
    }

    fn put(&self, key: SessionKey, lookup: Lookup, epoch: u64) {
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if self.entries.len() >= CACHE_MAX {
            let now = Instant::now();
            self.entries
                .retain(|_, c| now.duration_since(c.at) < CACHE_FOR);
            if self.entries.len() >= CACHE_MAX {
                return;
            }
        }
        self.entries.insert(
            key,
            Cached {
                lookup,
                at: Instant::now(),
            },
        );
    }

    fn forget(&self, key: &SessionKey) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(key);
    }

    fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
    }
}

impl RedisStore {
    /// The store over `redis`. Call [`RedisStore::listen`] (in a task the
    /// app owns) to use the cache.
    pub fn new(redis: Redis) -> RedisStore {
        RedisStore {
            redis,
            cache: Arc::new(Cache::default()),
        }
    }

    /// The connection this store uses (shared with throttling and probes).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    fn session_key(&self, key: &SessionKey) -> String {
        self.redis.key(&format!("s:{}", key.hex()))
    }

    fn user_key(&self, user: &str) -> String {
        self.redis.key(&format!("u:{user}"))
    }

    fn channel(&self) -> String {
        self.redis.key("invalidate")
    }

    /// Listens for other instances' writes and forgets what they wrote;
    /// reconnects when the subscription drops. Runs until aborted.
    pub async fn listen(self) {
        let channel = self.channel();
        loop {
            match self.redis.subscribe(&channel).await {
                Ok(pubsub) => {
                    // Whatever was cached may have changed while not listening.
                    self.cache.forget_all();
                    self.cache.listening.store(true, Ordering::Release);
                    tracing::debug!(%channel, "listening for session invalidations");
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                        match std::str::from_utf8(&payload)
                            .ok()
                            .and_then(SessionKey::parse_hex)
                        {
                            Some(key) => self.cache.forget(&key),
                            None => self.cache.forget_all(),
                        }
                    }
                    self.cache.listening.store(false, Ordering::Release);
                    self.cache.forget_all();
                    tracing::debug!("session invalidation subscription ended; reconnecting");
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot subscribe to session invalidations yet");
                }
            }
            tokio::time::sleep(crate::redis::RETRY_EVERY).await;
        }
    }

    fn decode(
        &self,
        key: SessionKey,
        value: Option<Vec<u8>>,
        now: u64,
    ) -> Result<Lookup, StoreError> {
        let Some(bytes) = value else {
            return Ok(Lookup::Unknown);
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            key,
            source: Box::new(e),
        })?;
        Ok(record.lookup(now))
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Lookup, StoreError> {
        if let Some(lookup) = self.cache.get(key) {
            return Ok(lookup);
        }
        let epoch = self.cache.epoch.load(Ordering::Acquire);
        let value: Option<Vec<u8>> = self
            .redis
            .query(redis::cmd("GET").arg(self.session_key(key)))
            .await?;
        let lookup = self.decode(*key, value, now)?;
        self.cache.put(*key, lookup.clone(), epoch);
        Ok(lookup)
    }

    async fn load_latest(&self, key: &SessionKey, now: u64) -> Result<Lookup, StoreError> {
        let value: Option<Vec<u8>> = self
            .redis
            .query(redis::cmd("GET").arg(self.session_key(key)))
            .await?;
        self.decode(*key, value, now)
    }

    async fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut cmds: Vec<Cmd> = Vec::new();
        let mut save_at = None;
        let channel = self.channel();
        if let Some(revoke) = &changes.revoke {
            let record = serde_json::to_vec(&Record::Revoked {
                until: revoke.until,
            })
            .map_err(StoreError::unavailable)?;
            let mut set = redis::cmd("SET");
            set.arg(self.session_key(&revoke.key))
                .arg(record)
                .arg("PXAT")
                .arg(revoke.until.max(1));
            cmds.push(set);
            let mut publish = redis::cmd("PUBLISH");
            publish.arg(&channel).arg(revoke.key.hex());
            cmds.push(publish);
        }
        if let Some(save) = &changes.save {
            let record = serde_json::to_vec(&Record::Live {
                session: save.session.clone(),
                expires_at: save.expires_at,
            })
            .map_err(StoreError::unavailable)?;
            let mut eval = redis::cmd("EVAL");
            let write = match save.write {
                Write::Create => "create",
                Write::Update => "update",
            };
            eval.arg(SAVE)
                .arg(1)
                .arg(self.session_key(&save.key))
                .arg(record)
                .arg(save.expires_at.max(1))
                .arg(write)
                .arg(save.expect_rev.map(|r| r.to_string()).unwrap_or_default());
            save_at = Some(cmds.len());
            cmds.push(eval);
            // The index names a session from its creation (a login) for as
            // long as it could live; updates leave it alone, so a refused
            // update writes nothing.
            if let (Some(user), Write::Create) = (&save.session.user, save.write) {
                let index = self.user_key(user);
                let mut add = redis::cmd("SADD");
                add.arg(&index).arg(save.key.hex());
                cmds.push(add);
                // A new set has no expiry (NX sets it); a later session
                // extends it (GT).
                for flag in ["NX", "GT"] {
                    let mut expire = redis::cmd("PEXPIREAT");
                    expire.arg(&index).arg(save.ends_by.max(1)).arg(flag);
                    cmds.push(expire);
                }
            }
            let mut publish = redis::cmd("PUBLISH");
            publish.arg(&channel).arg(save.key.hex());
            cmds.push(publish);
        }
        // Our own cache forgets before and after the write: a lookup here
        // that read the old record while the write was in flight is not
        // served afterwards.
        let written: Vec<SessionKey> = changes
            .revoke
            .iter()
            .map(|r| r.key)
            .chain(changes.save.iter().map(|s| s.key))
            .collect();
        for key in &written {
            self.cache.forget(key);
        }
        let outcome = self.redis.all(cmds).await;
        for key in &written {
            self.cache.forget(key);
        }
        let replies = outcome?;
        if let Some(at) = save_at {
            if matches!(replies.get(at), Some(redis::Value::Int(-1))) {
                return Err(StoreError::Conflict);
            }
        }
        Ok(())
    }

    async fn purge(&self, _now: u64) -> Result<usize, StoreError> {
        // Redis expires records itself.
        Ok(0)
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        // Records and tombstones; Redis has already dropped expired ones.
        let records = self.redis.count_keys(&self.redis.key("s:*")).await?;
        Ok(Stats { records })
    }

    async fn keys(&self) -> Result<Vec<SessionKey>, StoreError> {
        let prefix = self.redis.key("s:");
        let names = self.redis.keys_matching(&format!("{prefix}*")).await?;
        Ok(names
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix).and_then(SessionKey::parse_hex))
            .collect())
    }

    async fn of_user(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Vec<(SessionKey, Session)>, StoreError> {
        let index = self.user_key(user);
        let members: Vec<String> = self.redis.query(redis::cmd("SMEMBERS").arg(&index)).await?;
        let keys: Vec<SessionKey> = members
            .iter()
            .filter_map(|m| SessionKey::parse_hex(m))
            .collect();
        let gets = keys
            .iter()
            .map(|k| {
                let mut get = redis::cmd("GET");
                get.arg(self.session_key(k));
                get
            })
            .collect();
        let values = self.redis.all(gets).await?;
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (key, value) in keys.into_iter().zip(values) {
            let bytes: Option<Vec<u8>> =
                redis::FromRedisValue::from_redis_value(value).map_err(StoreError::unavailable)?;
            match self.decode(key, bytes, now) {
                Ok(Lookup::Live(s)) if s.user.as_deref() == Some(user) => live.push((key, s)),
                Ok(_) => stale.push(key.hex()),
                Err(error) => tracing::warn!(%error, "corrupt session record skipped"),
            }
        }
        if !stale.is_empty() {
            let mut srem = redis::cmd("SREM");
            srem.arg(&index).arg(stale);
            self.redis.query::<Value>(&srem).await?;
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    /// The whole conformance suite against a real `redis-server`, and again
    /// against a real three-node Cluster.
    #[tokio::test]
    async fn conforms_on_one_server_and_on_a_cluster() {
        let server = crate::test_redis::Server::start();
        let store = RedisStore::new(Redis::open(&server.config("conformance:")).unwrap());
        tokio::spawn(store.clone().listen());
        conformance::run(true, || store.clone()).await;

        let cluster = crate::test_redis::Cluster::start();
        let store = RedisStore::new(Redis::open(&cluster.config("conformance:")).unwrap());
        tokio::spawn(store.clone().listen());
        conformance::run(true, || store.clone()).await;
    }
}
