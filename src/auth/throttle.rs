//! Login throttling: after too many failures in a window, per client IP and
//! per username, further attempts are refused until the window has passed.
//!
//! Counting per username stops a slow guess at one account from many
//! addresses; counting per IP stops one address from trying many accounts.
//! The price, as everywhere, is that someone can lock a username out for a
//! window by failing on purpose.
//!
//! **Counted before evaluated.** [`Throttle::attempt`] checks the limit and
//! counts the attempt as *pending* in one atomic step, before the password
//! is checked; the outcome then turns it into a failure
//! ([`Attempt::failed`]) or drops it ([`Attempt::succeeded`]). Failures
//! and pending attempts together may not pass the limit, so 40 concurrent
//! guesses against a limit of 5 get 5 evaluations, not 40: the password
//! check's await cannot be raced. An attempt refused only because others
//! are still pending is told to retry in a second, not in a window.
//!
//! **Bounded.** Only names that could be a user (see
//! [`super::password::valid_user_name`], at most 256 bytes) are counted per
//! name, and at most [`MAX_TRACKED`] names and addresses each. Past that
//! cap a new name or address is refused outright (fails closed) until the
//! purge frees room: a flood of names cannot switch throttling off.

use std::net::IpAddr;
use std::time::Duration;

use dashmap::DashMap;

/// Most usernames (and, separately, addresses) with failures tracked at once.
pub const MAX_TRACKED: usize = 100_000;

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
    /// Attempts admitted and not yet judged.
    pending: u32,
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

    /// Starts an attempt from `ip` for `user` at `now`: `Err(wait)` when it
    /// must be refused, else a pending [`Attempt`] whose outcome the caller
    /// reports. An attempt dropped unjudged (the client went away during
    /// the password check) is simply released.
    pub fn attempt(&self, ip: IpAddr, user: &str, now: u64) -> Result<Attempt<'_>, Duration> {
        self.take(&self.per_ip, ip, self.max_per_ip, now)?;
        let counted_user = super::password::valid_user_name(user);
        if counted_user {
            if let Err(wait) = self.take(&self.per_user, user.to_owned(), self.max_per_user, now) {
                // Not evaluated, so not counted against the address either.
                self.give_back(&self.per_ip, &ip);
                return Err(wait);
            }
        }
        Ok(Attempt {
            throttle: self,
            ip,
            user: counted_user.then(|| user.to_owned()),
            judged: false,
        })
    }

    /// Checks and counts one attempt against one key, under its shard lock.
    fn take<K: std::hash::Hash + Eq + Clone>(
        &self,
        map: &DashMap<K, Window>,
        key: K,
        max: u32,
        now: u64,
    ) -> Result<(), Duration> {
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            return Err(Duration::from_millis(self.window_ms.min(60_000)));
        }
        let mut w = map.entry(key).or_insert(Window {
            started: now,
            failures: 0,
            pending: 0,
        });
        let ends = w.started.saturating_add(self.window_ms);
        if now >= ends {
            w.started = now;
            w.failures = 0;
        }
        if w.failures >= max {
            let ends = w.started.saturating_add(self.window_ms);
            return Err(Duration::from_millis(ends.saturating_sub(now).max(1)));
        }
        if w.failures.saturating_add(w.pending) >= max {
            return Err(Duration::from_secs(1));
        }
        w.pending += 1;
        Ok(())
    }

    fn give_back<K: std::hash::Hash + Eq>(&self, map: &DashMap<K, Window>, key: &K) {
        if let Some(mut w) = map.get_mut(key) {
            w.pending = w.pending.saturating_sub(1);
        }
    }

    fn fail<K: std::hash::Hash + Eq>(&self, map: &DashMap<K, Window>, key: &K) {
        if let Some(mut w) = map.get_mut(key) {
            w.pending = w.pending.saturating_sub(1);
            w.failures = w.failures.saturating_add(1);
        }
    }

    /// Forgets windows that have ended (called with the session purge).
    pub fn purge(&self, now: u64) {
        let live = |w: &mut Window| w.pending > 0 || now < w.started.saturating_add(self.window_ms);
        self.per_ip.retain(|_, w| live(w));
        self.per_user.retain(|_, w| live(w));
    }
}

/// An attempt admitted by [`Throttle::attempt`] and not yet judged.
#[must_use = "report the outcome with `failed` or `succeeded`"]
pub struct Attempt<'t> {
    throttle: &'t Throttle,
    ip: IpAddr,
    /// The username, when it is counted (it could be a user).
    user: Option<String>,
    judged: bool,
}

impl Attempt<'_> {
    /// The password was wrong: a failure of the address and the username.
    pub fn failed(mut self) {
        self.judged = true;
        self.throttle.fail(&self.throttle.per_ip, &self.ip);
        if let Some(user) = &self.user {
            self.throttle.fail(&self.throttle.per_user, user);
        }
    }

    /// The password was right: no failure, and the username's count starts
    /// over.
    pub fn succeeded(mut self) {
        self.judged = true;
        self.throttle.give_back(&self.throttle.per_ip, &self.ip);
        if let Some(user) = &self.user {
            self.throttle.per_user.remove(user);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.judged {
            self.throttle.give_back(&self.throttle.per_ip, &self.ip);
            if let Some(user) = &self.user {
                self.throttle.give_back(&self.throttle.per_user, user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: &str = "192.0.2.1";

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let t = Throttle::new(10, 3, Duration::from_secs(60));
        let ip: IpAddr = IP.parse().unwrap();
        for i in 0..3 {
            t.attempt(ip, "alice", i).unwrap().failed();
        }
        assert_eq!(
            t.attempt(ip, "alice", 10).err(),
            Some(Duration::from_millis(59_990))
        );
        assert!(
            t.attempt(ip, "bob", 10).is_ok(),
            "another user is not blocked"
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(
            t.attempt(other, "alice", 10).is_err(),
            "the user is blocked from anywhere"
        );
        t.attempt(ip, "alice", 60_000)
            .expect("the window ended")
            .failed();
        t.purge(120_000);
        assert!(t.per_user.is_empty() && t.per_ip.is_empty());
    }

    #[test]
    fn one_address_trying_many_users_is_blocked() {
        let t = Throttle::new(5, 3, Duration::from_secs(60));
        let ip: IpAddr = IP.parse().unwrap();
        for i in 0..5 {
            t.attempt(ip, &format!("user{i}"), 0).unwrap().failed();
        }
        assert!(t.attempt(ip, "someone-new", 1).is_err());
    }

    #[test]
    fn success_takes_its_count_back() {
        let t = Throttle::new(2, 2, Duration::from_secs(60));
        let ip: IpAddr = IP.parse().unwrap();
        t.attempt(ip, "alice", 0).unwrap().succeeded();
        t.attempt(ip, "alice", 1).unwrap().succeeded();
        t.attempt(ip, "alice", 2).unwrap().failed();
        assert!(t.attempt(ip, "alice", 3).is_ok(), "successes were counted");
        // An attempt dropped unjudged (the client left) is released.
        drop(t.attempt(ip, "alice", 4).unwrap());
        drop(t.attempt(ip, "alice", 4));
        t.attempt(ip, "alice", 5).unwrap().failed();
        assert!(
            t.attempt(ip, "alice", 6).is_err(),
            "two failures reach the limit"
        );
    }

    #[test]
    fn concurrent_attempts_are_counted_before_they_are_judged() {
        let t = std::sync::Arc::new(Throttle::new(100, 5, Duration::from_secs(60)));
        let barrier = std::sync::Barrier::new(40);
        let admitted: Vec<Attempt<'_>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..40)
                .map(|i| {
                    let (t, barrier) = (&t, &barrier);
                    scope.spawn(move || {
                        let ip: IpAddr = format!("192.0.2.{}", i % 8 + 1).parse().unwrap();
                        let attempt = t.attempt(ip, "alice", 0).ok();
                        // Hold every admitted attempt until all have tried.
                        barrier.wait();
                        attempt
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(admitted.len(), 5);
        // Refused only because five are pending: come back in a second.
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            t.attempt(ip, "alice", 0).err(),
            Some(Duration::from_secs(1))
        );
        for a in admitted {
            a.succeeded();
        }
        assert!(
            t.attempt(ip, "alice", 0).is_ok(),
            "pending attempts were not released"
        );
    }

    #[test]
    fn names_that_cannot_be_users_are_not_stored() {
        let t = Throttle::new(1000, 5, Duration::from_secs(60));
        let ip: IpAddr = IP.parse().unwrap();
        t.attempt(ip, &"x".repeat(100_000), 0).unwrap().failed();
        t.attempt(ip, "", 0).unwrap().failed();
        assert!(t.per_user.is_empty());
    }
}
