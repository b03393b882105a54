//! How many new session records anonymous clients may make the store write.
//!
//! A visitor who is not logged in gets a stored record only when something
//! must be kept for it (in URL mode: the application's cookies). Each new
//! record costs memory and, in the file store, a file; without a bound, a
//! client minting IDs in a loop could make the store write at will. So each
//! client address may create at most [`PER_ADDRESS`] such records in any
//! [`WINDOW_MS`] (a sliding window: the times of the last ones are kept, so
//! no window edge lets twice as many through), and at most [`MAX_TRACKED`]
//! addresses are counted at once. With the Redis store the same count is
//! kept in Redis, for every instance together. Past either limit the record is not created (fails closed): the
//! response still goes out, only without the state that would have been
//! kept.

use std::collections::VecDeque;
use std::net::IpAddr;

use dashmap::DashMap;

/// New anonymous records per address per window.
pub const PER_ADDRESS: u32 = 30;
/// The window, in milliseconds.
pub const WINDOW_MS: u64 = 60_000;
/// Most addresses counted at once.
pub const MAX_TRACKED: usize = 100_000;

/// Counters of new anonymous records per client address.
#[derive(Default)]
pub struct Budget {
    /// When each address's last records (at most [`PER_ADDRESS`]) were
    /// made, and for which session.
    spent: DashMap<IpAddr, VecDeque<(u64, [u8; 16])>>,
}

impl Budget {
    /// Spends one new record for `ip` at `now`, for the session `record`;
    /// `false` when none is left. The same session again within the window
    /// (parallel first requests of one new session) costs nothing more.
    pub fn spend(&self, ip: IpAddr, now: u64, record: [u8; 16]) -> bool {
        if !self.spent.contains_key(&ip) && self.spent.len() >= MAX_TRACKED {
            return false;
        }
        let mut times = self.spent.entry(ip).or_default();
        while times
            .front()
            .is_some_and(|&(t, _)| now >= t.saturating_add(WINDOW_MS))
        {
            times.pop_front();
        }
        if times.iter().any(|&(_, r)| r == record) {
            return true;
        }
        if times.len() >= PER_ADDRESS as usize {
            return false;
        }
        times.push_back((now, record));
        true
    }

    /// Forgets windows that have ended.
    pub fn purge(&self, now: u64) {
        self.spent.retain(|_, times| {
            times
                .back()
                .is_some_and(|&(t, _)| now < t.saturating_add(WINDOW_MS))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new session key each call.
    fn next() -> [u8; 16] {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        k
    }

    #[test]
    fn the_same_session_is_counted_once() {
        let b = Budget::default();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let one = next();
        for _ in 0..(PER_ADDRESS * 3) {
            assert!(b.spend(ip, 0, one));
        }
        for _ in 1..PER_ADDRESS {
            assert!(b.spend(ip, 0, next()));
        }
        assert!(
            !b.spend(ip, 0, next()),
            "the budget was not spent by distinct sessions"
        );
    }

    #[test]
    fn each_address_gets_a_bounded_number_per_window() {
        let b = Budget::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..PER_ADDRESS {
            assert!(b.spend(ip, 0, next()));
        }
        assert!(!b.spend(ip, 1, next()));
        assert!(b.spend("192.0.2.2".parse().unwrap(), 1, next()));
        assert!(b.spend(ip, WINDOW_MS, next()), "the window passed");
        b.purge(WINDOW_MS * 3);
        assert!(b.spent.is_empty());
    }

    #[test]
    fn no_window_edge_lets_twice_the_limit_through() {
        let b = Budget::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        // One early, then the rest just before a fixed window would end...
        assert!(b.spend(ip, 0, next()));
        for _ in 1..PER_ADDRESS {
            assert!(b.spend(ip, WINDOW_MS - 10, next()));
        }
        // ...then right after: only the early one's place has come free.
        assert!(b.spend(ip, WINDOW_MS, next()));
        assert!(!b.spend(ip, WINDOW_MS + 1, next()));
        assert!(
            b.spend(ip, 2 * WINDOW_MS - 10, next()),
            "a minute after the burst"
        );
    }
}
