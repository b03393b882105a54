//! The connection to Redis (or Valkey) that the Redis session store, the
//! shared login throttle and the shared probe guard all use.
//!
//! - **One server, a Cluster, or a Sentinel-managed primary**, through the
//!   `redis` crate: its auto-reconnecting multiplexed `ConnectionManager`
//!   (one server; for Sentinel, the primary the sentinels name, asked again
//!   after a failure), or its async cluster client.
//! - **Every call has a deadline** (`session.redis_timeout`) and passes a
//!   breaker ([`Health`]): after [`TRIP_AFTER`] failures in a row, calls
//!   fail at once for [`RETRY_EVERY`], then one call is let through to test
//!   the water. (One slow call on a saturated machine fails only itself.) While
//!   Redis is down or frozen, requests get a fast 503 instead of queueing
//!   behind timeouts. The change each way is logged once.
//! - Starting while Redis is down works: nothing connects until first use.
//!
//! A leaf: it knows the configuration and nothing of sessions; its
//! [`RedisError`] becomes a store error where the store uses it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, Value};

use crate::config::{RedisConfig, RedisServers};

/// How long the breaker keeps calls from reaching a failed Redis before it
/// lets one through again.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

/// `KEYS[1]`: a sorted set of event times; ARGV: now, window, limit, a
/// unique member. Returns 1 when the event is admitted (and recorded).
const SLIDING_WINDOW: &str = r#"
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if ARGV[5] == 'once' and redis.call('ZSCORE', KEYS[1], ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"#;

/// Failures in a row that open the breaker.
pub const TRIP_AFTER: u32 = 3;

/// A handle on the configured Redis. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Servers,
    prefix: String,
    timeout: Duration,
    health: Health,
}

enum Servers {
    /// One server (`redis_url`), or the primary the sentinels named.
    Single {
        /// `None` until a Sentinel has named the primary.
        manager: RwLock<Option<(redis::Client, ConnectionManager)>>,
        /// Asked for the primary at start and after every failure.
        sentinel: Option<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
    },
    /// `redis_cluster`.
    Cluster {
        client: redis::cluster::ClusterClient,
        /// Connected on first use (the cluster may be down at start).
        connection: tokio::sync::Mutex<Option<ClusterConnection>>,
        /// Each node, for the invalidation subscription.
        nodes: Vec<redis::Client>,
    },
}

/// Why the Redis settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `session.redis_ca_file` could not be read.
    #[error("session.redis_ca_file: {path}: {source}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client library refused the URLs.
    #[error("session.redis_url: {0}")]
    Settings(#[from] redis::RedisError),
}

/// Why Redis cannot be used right now.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The breaker is open: a recent call failed.
    #[error("redis is unavailable (a recent call failed; retrying every {RETRY_EVERY:?})")]
    Down,
    /// The call took longer than `session.redis_timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// What the client library said.
    #[error(transparent)]
    Client(#[from] redis::RedisError),
    /// A reply that is not what the command returns.
    #[error("unexpected reply from redis: {0}")]
    Reply(&'static str),
}

impl Redis {
    /// A handle on what `cfg` names. Connects lazily: a Redis that is down
    /// at start makes calls fail (and the proxy report unready), not the
    /// start.
    pub fn open(cfg: &RedisConfig) -> Result<Redis, OpenError> {
        let roots = match &cfg.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| OpenError::CaFile {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: roots.clone(),
        };
        let client = |url: &str| match &roots {
            Some(_) => redis::Client::build_with_tls(url, certs()),
            None => redis::Client::open(url),
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let servers = match &cfg.servers {
            RedisServers::Single(url) => {
                let client = client(url)?;
                let manager = client.get_connection_manager_lazy(manager_config)?;
                Servers::Single {
                    manager: RwLock::new(Some((client, manager))),
                    sentinel: None,
                }
            }
            RedisServers::Sentinel { master, nodes } => {
                let first = redis::IntoConnectionInfo::into_connection_info(nodes[0].as_str())?;
                let sentinel = redis::sentinel::SentinelClient::build(
                    nodes.iter().map(String::as_str).collect(),
                    master.clone(),
                    Some(
                        redis::sentinel::SentinelNodeConnectionInfo::default()
                            .set_redis_connection_info(first.redis_settings().clone()),
                    ),
                    redis::sentinel::SentinelServerType::Master,
                )?;
                Servers::Single {
                    manager: RwLock::new(None),
                    sentinel: Some(tokio::sync::Mutex::new(sentinel)),
                }
            }
            RedisServers::Cluster(urls) => {
                let client =
                    redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                        .connection_timeout(cfg.timeout)
                        .response_timeout(cfg.timeout)
                        .retries(1)
                        .build()?;
                let nodes = urls
                    .iter()
                    .map(|u| redis::Client::open(u.as_str()))
                    .collect::<Result<_, _>>()?;
                Servers::Cluster {
                    client,
                    connection: tokio::sync::Mutex::new(None),
                    nodes,
                }
            }
        };
        Ok(Redis {
            inner: Arc::new(Inner {
                servers,
                prefix: cfg.prefix.clone(),
                timeout: cfg.timeout,
                health: Health::new(),
            }),
        })
    }

    /// `session.redis_prefix` followed by `rest`: every key and channel.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.inner.prefix)
    }

    /// Whether the last call succeeded (for readiness).
    pub fn is_up(&self) -> bool {
        !self.inner.health.down.load(Ordering::Acquire)
    }

    /// Runs one idempotent command; a call that finds the connection
    /// broken (Redis restarted since it was last used) is sent once more on
    /// the new one, within the same deadline.
    pub async fn query<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        self.guarded(Retry::Once, || self.send(cmd)).await
    }

    /// Runs one command that must not run twice (a counter).
    pub async fn query_once<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        self.guarded(Retry::Never, || self.send(cmd)).await
    }

    /// Runs several idempotent commands: one round trip to one server; on
    /// a Cluster, where they may live on different nodes, one after the
    /// other. Retried once on a broken connection, as [`Redis::query`].
    pub async fn all(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, RedisError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        self.guarded(Retry::Once, || self.send_all(&cmds)).await
    }

    /// [`Redis::all`] for commands that must not run twice.
    pub async fn all_once(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, RedisError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        self.guarded(Retry::Never, || self.send_all(&cmds)).await
    }

    async fn send<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        match self.connection().await? {
            Conn::Single(mut c) => Ok(cmd.query_async(&mut c).await?),
            Conn::Cluster(mut c) => Ok(cmd.query_async(&mut c).await?),
        }
    }

    async fn send_all(&self, cmds: &[Cmd]) -> Result<Vec<Value>, RedisError> {
        match self.connection().await? {
            Conn::Single(mut c) => {
                let mut pipe = Pipeline::with_capacity(cmds.len());
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                Ok(pipe.query_async(&mut c).await?)
            }
            Conn::Cluster(mut c) => {
                let mut out = Vec::with_capacity(cmds.len());
                for cmd in cmds {
                    out.push(cmd.query_async(&mut c).await?);
                }
                Ok(out)
            }
        }
    }

    /// Pings Redis every second for as long as it runs: the breaker and its
    /// log lines follow Redis even when no request comes, and a connection
    /// broken while idle (Redis restarted) is replaced before a request
    /// needs it.
    pub async fn watch(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = self.query::<Value>(&redis::cmd("PING")).await;
        }
    }

    /// Admits one more event under `key` if fewer than `limit` happened
    /// in the last `window_ms` before `now` (a sliding window, kept as a
    /// sorted set of at most `limit` times: no edge lets twice the limit
    /// through). Refused events are not counted. Shared limits: the probe
    /// guard, new anonymous records.
    /// With `once`, the event is named: the same name within the window
    /// is admitted again without being counted again.
    pub async fn admit_in_window(
        &self,
        key: &str,
        now: u64,
        window_ms: u64,
        limit: u32,
        once: Option<&str>,
    ) -> Result<bool, RedisError> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|_| RedisError::Reply("no randomness"))?;
        let member = match once {
            Some(name) => name.to_owned(),
            None => format!("{now}-{}", u64::from_be_bytes(nonce)),
        };
        let mut eval = redis::cmd("EVAL");
        eval.arg(SLIDING_WINDOW)
            .arg(1)
            .arg(key)
            .arg(now)
            .arg(window_ms)
            .arg(limit)
            .arg(member)
            .arg(if once.is_some() { "once" } else { "each" });
        let admitted: i64 = self.query_once(&eval).await?;
        Ok(admitted == 1)
    }

    /// How many keys match `pattern` (see [`Redis::keys_matching`]).
    pub async fn count_keys(&self, pattern: &str) -> Result<usize, RedisError> {
        Ok(self.keys_matching(pattern).await?.len())
    }

    /// The keys that match `pattern`, by `SCAN` (bounded: at most a
    /// thousand rounds of a thousand). On a Cluster, every configured
    /// primary is scanned.
    pub async fn keys_matching(&self, pattern: &str) -> Result<Vec<String>, RedisError> {
        match &self.inner.servers {
            Servers::Single { .. } => {
                self.guarded(Retry::Once, || async {
                    let Conn::Single(mut c) = self.connection().await? else {
                        return Err(RedisError::Down);
                    };
                    scan_keys(&mut c, pattern).await
                })
                .await
            }
            Servers::Cluster { nodes, .. } => {
                let mut total = Vec::new();
                for node in nodes {
                    let count = || async {
                        let mut c = node.get_multiplexed_async_connection().await?;
                        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut c).await?;
                        if !matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") {
                            return Ok(Vec::new());
                        }
                        scan_keys(&mut c, pattern).await
                    };
                    total.extend(self.guarded(Retry::Once, count).await?);
                }
                Ok(total)
            }
        }
    }

    /// A fresh pub/sub connection subscribed to `channel`, for listeners.
    /// On a Cluster, a `PUBLISH` reaches every node, so any node will do.
    pub async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, RedisError> {
        let clients: Vec<redis::Client> = match &self.inner.servers {
            Servers::Single { manager, sentinel } => {
                if sentinel.is_some() && read(manager).is_none() {
                    self.resolve_primary().await?;
                }
                read(manager)
                    .map(|(client, _)| client)
                    .into_iter()
                    .collect()
            }
            Servers::Cluster { nodes, .. } => nodes.clone(),
        };
        let mut last = RedisError::Down;
        for client in clients {
            let attempt = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(self.inner.timeout * 4, attempt).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = RedisError::Client(e),
                Err(_) => last = RedisError::Timeout(self.inner.timeout * 4),
            }
        }
        Err(last)
    }

    /// Runs `call` under the deadline and the breaker.
    async fn guarded<T, F, Fut>(&self, retry: Retry, mut call: F) -> Result<T, RedisError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let health = &self.inner.health;
        if !health.may_call() {
            return Err(RedisError::Down);
        }
        // Boxed: the redis crate's futures are several KB, and every
        // request's future that may reach Redis (the budget, the store)
        // would otherwise be sized by them, Redis configured or not.
        let attempts = Box::pin(async {
            match call().await {
                Err(RedisError::Client(e)) if retry == Retry::Once && broken_connection(&e) => {
                    tracing::debug!(error = %e, "redis connection broken; sending again");
                    call().await
                }
                outcome => outcome,
            }
        });
        let outcome = match tokio::time::timeout(self.inner.timeout, attempts).await {
            Ok(outcome) => outcome,
            Err(_) => Err(RedisError::Timeout(self.inner.timeout)),
        };
        match outcome {
            Ok(value) => {
                health.succeeded();
                Ok(value)
            }
            Err(error) => {
                if health.failed(&error) {
                    if let Servers::Single {
                        manager,
                        sentinel: Some(_),
                    } = &self.inner.servers
                    {
                        // Ask the sentinels again next time: the primary may have moved.
                        *manager.write().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                }
                Err(error)
            }
        }
    }

    async fn connection(&self) -> Result<Conn, RedisError> {
        match &self.inner.servers {
            Servers::Single { manager, .. } => {
                if let Some((_, m)) = read(manager) {
                    return Ok(Conn::Single(m));
                }
                self.resolve_primary().await?;
                read(manager)
                    .map(|(_, m)| Conn::Single(m))
                    .ok_or(RedisError::Down)
            }
            Servers::Cluster {
                client, connection, ..
            } => {
                let mut slot = connection.lock().await;
                if let Some(c) = &*slot {
                    return Ok(Conn::Cluster(c.clone()));
                }
                let c = client.get_async_connection().await?;
                *slot = Some(c.clone());
                Ok(Conn::Cluster(c))
            }
        }
    }

    /// Asks the sentinels which server is the primary and connects to it.
    async fn resolve_primary(&self) -> Result<(), RedisError> {
        let Servers::Single {
            manager,
            sentinel: Some(sentinel),
        } = &self.inner.servers
        else {
            return Ok(());
        };
        let client = {
            let mut sentinel = sentinel.lock().await;
            match tokio::time::timeout(self.inner.timeout * 4, sentinel.async_get_client()).await {
                Ok(client) => client?,
                Err(_) => return Err(RedisError::Timeout(self.inner.timeout * 4)),
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout))
            .set_number_of_retries(2);
        let m = client.get_connection_manager_lazy(config)?;
        *manager.write().unwrap_or_else(|p| p.into_inner()) = Some((client, m));
        Ok(())
    }
}

async fn scan_keys(
    c: &mut impl redis::aio::ConnectionLike,
    pattern: &str,
) -> Result<Vec<String>, RedisError> {
    let (mut cursor, mut keys) = (0u64, Vec::new());
    for _ in 0..1000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(c)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(keys)
}

/// Whether a failed call may be sent once more.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent: again on a broken connection.
    Once,
    /// Must not run twice.
    Never,
}

/// The connection was lost (not Redis refusing the command).
fn broken_connection(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal()
}

enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

fn read(
    lock: &RwLock<Option<(redis::Client, ConnectionManager)>>,
) -> Option<(redis::Client, ConnectionManager)> {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The breaker: down after [`TRIP_AFTER`] failures in a row; while down,
/// one call per [`RETRY_EVERY`] is let through to find out whether Redis
/// is back.
struct Health {
    down: AtomicBool,
    /// Failures since the last success.
    failures: AtomicU32,
    /// When (ms since `origin`) the next trial call may go through.
    next_trial: AtomicU64,
    origin: Instant,
}

impl Health {
    fn new() -> Health {
        Health {
            down: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            next_trial: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may go to Redis now.
    fn may_call(&self) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now();
        let due = self.next_trial.load(Ordering::Acquire);
        // Exactly one caller wins the trial; the rest fail fast.
        now >= due
            && self
                .next_trial
                .compare_exchange(due, now + retry_ms(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("redis is available again");
        }
    }

    /// Records a failure; `true` when it is the one that took Redis down.
    fn failed(&self, error: &RedisError) -> bool {
        self.next_trial
            .store(self.now() + retry_ms(), Ordering::Release);
        let went_down = !self.down.swap(true, Ordering::AcqRel);
        if went_down {
            tracing::error!(%error, "redis is unavailable: requests that need a session get 503 until it is back");
        }
        went_down
    }
}

fn retry_ms() -> u64 {
    u64::try_from(RETRY_EVERY.as_millis()).unwrap_or(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_lets_one_trial_through_per_period() {
        let h = Health::new();
        assert!(h.may_call());
        assert!(
            h.failed(&RedisError::Down),
            "the first failure takes it down"
        );
        assert!(!h.failed(&RedisError::Down), "and only the first");
        assert!(!h.may_call(), "calls fail fast right after a failure");
        h.next_trial.store(0, Ordering::Release);
        assert!(h.may_call(), "one trial once the period is over");
        assert!(!h.may_call(), "and only one");
        h.succeeded();
        assert!(h.may_call() && h.may_call());
    }
}
