//! [`Limiter`]: login throttling in this process ([`Throttle`]) or, with
//! the Redis store, shared by every instance through Redis, so that N
//! instances do not give an attacker N times the attempts.
//!
//! The shared limiter keeps the same rules as [`Throttle`]: per client
//! address and per username, an attempt is counted as *pending* before the
//! password is checked, failures plus pending attempts may not pass the
//! limit, a success clears the username's count. Each subject is one Redis
//! hash (`t:ip:<address>`, `t:user:<name>`) changed only by Lua scripts, so
//! check-and-count is one atomic step on the server. A hash expires a
//! minute after its window, so a pending count left by an instance that
//! died mid-check does not stay.

use std::net::IpAddr;
use std::time::Duration;

use redis::Cmd;

use super::throttle::{self, Throttle};
use crate::redis::Redis;
use crate::session::store::StoreError;

/// Admits an attempt on one subject, or says how long to wait. Returns
/// -1 (admitted), -2 (others pending: retry in a second) or the ms left
/// in the window.
const ADMIT: &str = r#"
local now, max, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ends = tonumber(redis.call('HGET', KEYS[1], 'ends') or '0')
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
if now >= ends then
  failures = 0
  ends = now + window
  redis.call('HSET', KEYS[1], 'failures', 0, 'ends', ends)
end
redis.call('PEXPIRE', KEYS[1], ends - now + 60000)
if failures >= max then return math.max(ends - now, 1) end
local pending = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
if failures + pending >= max then return -2 end
redis.call('HINCRBY', KEYS[1], 'pending', 1)
return -1
"#;

/// Ends a pending attempt on one subject: `fail` counts a failure,
/// `release` only gives the place back.
const SETTLE: &str = r#"
local pending = tonumber(redis.call('HGET', KEYS[1], 'pending') or '0')
if pending > 0 then redis.call('HINCRBY', KEYS[1], 'pending', -1) end
if ARGV[1] == 'fail' then redis.call('HINCRBY', KEYS[1], 'failures', 1) end
return 0
"#;

/// Why an attempt is not admitted.
#[derive(Debug)]
pub enum Refusal {
    /// Too many failures (or attempts in flight): try again after this.
    Wait(Duration),
    /// The shared counters cannot be reached: refused (fail closed).
    Unavailable(StoreError),
}

/// Login throttling, local or shared.
pub enum Limiter {
    /// This process only.
    Local(Throttle),
    /// Every instance that shares the Redis.
    Shared(Shared),
}

/// Throttling counters in Redis.
pub struct Shared {
    redis: Redis,
    max_per_ip: u32,
    max_per_user: u32,
    window_ms: u64,
}

/// An attempt admitted and not yet judged.
#[must_use = "report the outcome with `failed` or `succeeded`"]
pub enum Attempt<'t> {
    /// Counted in this process.
    Local(throttle::Attempt<'t>),
    /// Counted in Redis.
    Shared(SharedAttempt),
}

/// A pending attempt in Redis; dropped unjudged, it is released.
pub struct SharedAttempt {
    redis: Redis,
    ip_key: String,
    user_key: Option<String>,
    judged: bool,
}

impl Limiter {
    /// Shared through `redis`, with the same limits as [`Throttle::new`].
    pub fn shared(redis: Redis, max_per_ip: u32, max_per_user: u32, window: Duration) -> Limiter {
        Limiter::Shared(Shared {
            redis,
            max_per_ip,
            max_per_user,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Starts an attempt from `ip` for `user` at `now` (see [`Throttle::attempt`]).
    pub async fn attempt(&self, ip: IpAddr, user: &str, now: u64) -> Result<Attempt<'_>, Refusal> {
        // One budget per IPv6 /64, and a mapped IPv4 address is its IPv4 one.
        let ip = crate::forwarded::limit_key(ip);
        match self {
            Limiter::Local(t) => t
                .attempt(ip, user, now)
                .map(Attempt::Local)
                .map_err(Refusal::Wait),
            Limiter::Shared(s) => s.attempt(ip, user, now).await.map(Attempt::Shared),
        }
    }

    /// Forgets ended windows (the shared ones expire in Redis).
    pub fn purge(&self, now: u64) {
        if let Limiter::Local(t) = self {
            t.purge(now);
        }
    }
}

impl Shared {
    async fn attempt(&self, ip: IpAddr, user: &str, now: u64) -> Result<SharedAttempt, Refusal> {
        let ip_key = self.redis.key(&format!("t:ip:{ip}"));
        self.admit(&ip_key, self.max_per_ip, now).await?;
        let mut attempt = SharedAttempt {
            redis: self.redis.clone(),
            ip_key,
            user_key: None,
            judged: false,
        };
        if super::password::valid_user_name(user) {
            let user_key = self.redis.key(&format!("t:user:{user}"));
            // Refused here, the attempt is dropped: its address place is given back.
            self.admit(&user_key, self.max_per_user, now).await?;
            attempt.user_key = Some(user_key);
        }
        Ok(attempt)
    }

    async fn admit(&self, key: &str, max: u32, now: u64) -> Result<(), Refusal> {
        let mut eval = redis::cmd("EVAL");
        eval.arg(ADMIT)
            .arg(1)
            .arg(key)
            .arg(now)
            .arg(max)
            .arg(self.window_ms);
        let answer: i64 = self
            .redis
            .query_once(&eval)
            .await
            .map_err(|e| Refusal::Unavailable(e.into()))?;
        match answer {
            -1 => Ok(()),
            -2 => Err(Refusal::Wait(Duration::from_secs(1))),
            ms => Err(Refusal::Wait(Duration::from_millis(
                u64::try_from(ms).unwrap_or(1),
            ))),
        }
    }
}

fn settle(key: &str, how: &str) -> Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(SETTLE).arg(1).arg(key).arg(how);
    eval
}

impl SharedAttempt {
    async fn report(&mut self, user: Option<Cmd>, ip_how: &str) {
        self.judged = true;
        let mut cmds = vec![settle(&self.ip_key, ip_how)];
        cmds.extend(user);
        if let Err(error) = self.redis.all_once(cmds).await {
            tracing::warn!(%error, "could not record a login attempt in redis");
        }
    }
}

impl Attempt<'_> {
    /// The password was wrong: a failure of the address and the username.
    pub async fn failed(self) {
        match self {
            Attempt::Local(a) => a.failed(),
            Attempt::Shared(mut a) => {
                let user = a.user_key.as_deref().map(|k| settle(k, "fail"));
                a.report(user, "fail").await;
            }
        }
    }

    /// The password was right: no failure, and the username's count starts over.
    pub async fn succeeded(self) {
        match self {
            Attempt::Local(a) => a.succeeded(),
            Attempt::Shared(mut a) => {
                let user = a.user_key.as_deref().map(|k| {
                    let mut del = redis::cmd("DEL");
                    del.arg(k);
                    del
                });
                a.report(user, "release").await;
            }
        }
    }
}

impl Drop for SharedAttempt {
    fn drop(&mut self) {
        if self.judged {
            return;
        }
        let mut cmds = vec![settle(&self.ip_key, "release")];
        cmds.extend(self.user_key.as_deref().map(|k| settle(k, "release")));
        let redis = self.redis.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = redis.all_once(cmds).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ipv6_network_shares_one_budget() {
        // Found by an outside review: each /128 had its own budget.
        let l = Limiter::Local(Throttle::new(2, 100, Duration::from_secs(60)));
        for (i, ip) in ["2001:db8:1:2::1", "2001:db8:1:2::2"].iter().enumerate() {
            let ip: IpAddr = ip.parse().unwrap();
            l.attempt(ip, &format!("user{i}"), 0)
                .await
                .unwrap()
                .failed()
                .await;
        }
        let same_net: IpAddr = "2001:db8:1:2:abcd::9".parse().unwrap();
        assert!(matches!(
            l.attempt(same_net, "user9", 1).await,
            Err(Refusal::Wait(_))
        ));
        let other_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.attempt(other_net, "user9", 1).await.is_ok());
        // A mapped IPv4 address is that address.
        let l = Limiter::Local(Throttle::new(1, 100, Duration::from_secs(60)));
        l.attempt("9.9.9.9".parse().unwrap(), "a", 0)
            .await
            .unwrap()
            .failed()
            .await;
        assert!(l
            .attempt("::ffff:9.9.9.9".parse().unwrap(), "b", 1)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn shared_limits_hold_across_limiters_and_concurrent_attempts() {
        let server = crate::test_redis::Server::start();
        let redis = Redis::open(&server.config("limiter:")).unwrap();
        // Two instances' limiters over one Redis.
        let a = Limiter::shared(redis.clone(), 100, 3, Duration::from_secs(60));
        let b = Limiter::shared(redis, 100, 3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        a.attempt(ip, "alice", 0).await.unwrap().failed().await;
        b.attempt(ip, "alice", 1).await.unwrap().failed().await;
        // Two in flight on different instances fill the last place between them.
        let held = a.attempt(ip, "alice", 2).await.unwrap();
        match b.attempt(ip, "alice", 2).await {
            Err(Refusal::Wait(w)) => assert_eq!(w, Duration::from_secs(1)),
            other => panic!(
                "a pending attempt elsewhere was not counted: {:?}",
                other.is_ok()
            ),
        }
        held.failed().await;
        match b.attempt(ip, "alice", 10).await {
            Err(Refusal::Wait(w)) => assert_eq!(w, Duration::from_millis(59_990)),
            other => panic!("three failures did not block: {:?}", other.is_ok()),
        }
        // The window ends; a success clears the count.
        a.attempt(ip, "alice", 60_000)
            .await
            .unwrap()
            .succeeded()
            .await;
        // An attempt dropped unjudged is released (in the background).
        drop(a.attempt(ip, "bob", 60_001).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
        for t in 0..2 {
            b.attempt(ip, "bob", 60_002 + t)
                .await
                .unwrap()
                .failed()
                .await;
        }
        assert!(
            b.attempt(ip, "bob", 60_010).await.is_ok(),
            "the dropped attempt was not released"
        );
    }
}
