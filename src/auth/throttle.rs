//! Login throttling: after too many failures in a window, per client IP and
//! per username, further attempts are refused until the window has passed.
//!
//! Counting per username stops a slow guess at one account from many
//! addresses; counting per IP stops one address from trying many accounts.
//! The price, as everywhere, is that someone can lock a username out for a
//! window by failing on purpose.

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;

/// Most usernames with failures tracked at once.
const MAX_TRACKED_USERS: usize = 100_000;

/// Failure counters in fixed windows.
pub struct Throttle {
    per_ip: DashMap<IpAddr, Window>,
    per_user: DashMap<String, Window>,
    max_per_ip: u32,
    max_per_user: u32,
    window_ms: u64,
}

#[derive(Clone, Copy)]
struct Window {
    started: u64,
    failures: u32,
}

impl Throttle {
    /// Allows `max_per_ip` and `max_per_user` failures per `window`.
    pub fn new(max_per_ip: u32, max_per_user: u32, window: Duration) -> Throttle {
        Throttle {
            per_ip: DashMap::new(),
            per_user: DashMap::new(),
            max_per_ip,
            max_per_user,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// `Some(wait)` when an attempt from `ip` for `user` must be refused now.
    pub fn blocked(&self, ip: IpAddr, user: &str, now: u64) -> Option<Duration> {
        let wait = |w: Option<Window>, max: u32| {
            let w = w?;
            let ends = w.started.saturating_add(self.window_ms);
            (w.failures >= max && now < ends).then(|| Duration::from_millis(ends - now))
        };
        let by_ip = wait(self.per_ip.get(&ip).map(|w| *w), self.max_per_ip);
        let by_user = wait(self.per_user.get(user).map(|w| *w), self.max_per_user);
        by_ip.max(by_user)
    }

    /// Records a failed attempt.
    pub fn failed(&self, ip: IpAddr, user: &str, now: u64) {
        let bump = |w: &mut Window| {
            if now >= w.started.saturating_add(self.window_ms) {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        };
        let fresh = Window {
            started: now,
            failures: 0,
        };
        bump(&mut self.per_ip.entry(ip).or_insert(fresh));
        // Usernames are chosen by clients: past a cap, new names are not
        // tracked (their addresses still are), so the map cannot be grown
        // without bound within one window.
        if let Some(mut w) = self.per_user.get_mut(user) {
            bump(&mut w);
        } else if self.per_user.len() < MAX_TRACKED_USERS {
            bump(&mut self.per_user.entry(user.to_owned()).or_insert(fresh));
        }
    }

    /// Records a success: the username's count starts over.
    pub fn succeeded(&self, user: &str) {
        self.per_user.remove(user);
    }

    /// Forgets windows that have ended (called with the session purge).
    pub fn purge(&self, now: u64) {
        let live = |w: &mut Window| now < w.started.saturating_add(self.window_ms);
        self.per_ip.retain(|_, w| live(w));
        self.per_user.retain(|_, w| live(w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let t = Throttle::new(10, 3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..3 {
            assert!(t.blocked(ip, "alice", i).is_none());
            t.failed(ip, "alice", i);
        }
        assert_eq!(
            t.blocked(ip, "alice", 10),
            Some(Duration::from_millis(59_990))
        );
        assert!(
            t.blocked(ip, "bob", 10).is_none(),
            "another user is not blocked"
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(
            t.blocked(other, "alice", 10).is_some(),
            "the user is blocked from anywhere"
        );
        assert!(t.blocked(ip, "alice", 60_000).is_none(), "the window ended");
        t.purge(60_000);
        assert!(t.per_user.is_empty() && t.per_ip.is_empty());
    }

    #[test]
    fn one_address_trying_many_users_is_blocked() {
        let t = Throttle::new(5, 3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..5 {
            t.failed(ip, &format!("user{i}"), 0);
        }
        assert!(t.blocked(ip, "someone-new", 1).is_some());
    }

    #[test]
    fn success_resets_the_user() {
        let t = Throttle::new(100, 2, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        t.failed(ip, "alice", 0);
        t.succeeded("alice");
        t.failed(ip, "alice", 1);
        assert!(t.blocked(ip, "alice", 2).is_none());
    }
}
