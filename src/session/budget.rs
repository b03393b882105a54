//! How many new session records anonymous clients may make the store write.
//!
//! A visitor who is not logged in gets a stored record only when something
//! must be kept for it (in URL mode: the application's cookies). Each new
//! record costs memory and, in the file store, a file; without a bound, a
//! client minting IDs in a loop could make the store write at will. So each
//! client address may create at most [`PER_ADDRESS`] such records per
//! [`WINDOW_MS`], and at most [`MAX_TRACKED`] addresses are counted at
//! once. Past either limit the record is not created (fails closed): the
//! response still goes out, only without the state that would have been
//! kept.

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
    spent: DashMap<IpAddr, (u64, u32)>,
}

impl Budget {
    /// Spends one new record for `ip` at `now`; `false` when none is left.
    pub fn spend(&self, ip: IpAddr, now: u64) -> bool {
        if !self.spent.contains_key(&ip) && self.spent.len() >= MAX_TRACKED {
            return false;
        }
        let mut entry = self.spent.entry(ip).or_insert((now, 0));
        if now >= entry.0.saturating_add(WINDOW_MS) {
            *entry = (now, 0);
        }
        if entry.1 >= PER_ADDRESS {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Forgets windows that have ended.
    pub fn purge(&self, now: u64) {
        self.spent
            .retain(|_, (started, _)| now < started.saturating_add(WINDOW_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_a_bounded_number_per_window() {
        let b = Budget::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..PER_ADDRESS {
            assert!(b.spend(ip, 0));
        }
        assert!(!b.spend(ip, 1));
        assert!(b.spend("192.0.2.2".parse().unwrap(), 1));
        assert!(b.spend(ip, WINDOW_MS), "the window passed");
        b.purge(WINDOW_MS * 3);
        assert!(b.spent.is_empty());
    }
}
