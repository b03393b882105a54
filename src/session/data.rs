//! What a session holds, how long it lives, and the clock it is measured by.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The server-side half of a session. Only its ID ever leaves the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// When it was created (Unix milliseconds).
    pub created: u64,
    /// When its last request was seen (Unix milliseconds).
    pub last_seen: u64,
    /// The logged-in user; `None` until login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A "remember me" login: lives `session.remember_me`, no idle limit.
    #[serde(default)]
    pub remember: bool,
    /// Small named values for other features (CSRF, upstream cookie jar, …).
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub values: Values,
    /// The application's own values (`session.app_values`, see
    /// [`crate::app_values`]), apart from the proxy's: no header reaches
    /// `values`.
    #[serde(default, skip_serializing_if = "Values::is_empty")]
    pub app: Values,
    /// The address of the client that began it (for operators); stored as
    /// text, kept in memory in 17 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<std::net::IpAddr>,
    /// The session travels in URLs (URL mode): its ID is honoured only in
    /// a ticket bound to its client, never in a cookie.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub url_mode: bool,
    /// Incremented by every merged update: a write made from an older
    /// revision is refused by the store and merged again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rev: u64,
    /// A destroyed session: kept only so that its ID is never honoured
    /// again while it could still pass as newly issued.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

impl Session {
    /// An empty session created at `now` (Unix milliseconds).
    pub fn new(now: u64) -> Session {
        Session {
            created: now,
            last_seen: now,
            user: None,
            remember: false,
            values: Values::default(),
            app: Values::default(),
            client: None,
            url_mode: false,
            rev: 0,
            revoked: false,
        }
    }

    /// When it expires (Unix milliseconds): idle limit since the last request
    /// or absolute limit since creation, whichever comes first. Remember-me
    /// sessions have only their absolute `remember_me` limit.
    pub fn expires_at(&self, lifetimes: &Lifetimes) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if self.remember {
            self.created.saturating_add(ms(lifetimes.remember_me))
        } else {
            let idle = self.last_seen.saturating_add(ms(lifetimes.idle));
            let absolute = self.created.saturating_add(ms(lifetimes.absolute));
            idle.min(absolute)
        }
    }

    /// The latest it could ever expire, however busy: its absolute limit.
    pub fn ends_by(&self, lifetimes: &Lifetimes) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let limit = if self.remember {
            lifetimes.remember_me
        } else {
            lifetimes.absolute
        };
        self.created.saturating_add(ms(limit))
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, lifetimes: &Lifetimes, now: u64) -> bool {
        now >= self.expires_at(lifetimes)
    }
}

/// Named values, read and changed as a `BTreeMap`. Most sessions have
/// none, so an empty set takes one pointer (8 bytes, not the map's 24) and
/// allocates nothing until something is put in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
#[allow(clippy::box_collection)] // the point: 8 bytes when empty, not 24
pub struct Values(Option<Box<BTreeMap<String, String>>>);

impl PartialEq for Values {
    fn eq(&self, other: &Values) -> bool {
        **self == **other
    }
}

impl Eq for Values {}

static NO_VALUES: BTreeMap<String, String> = BTreeMap::new();

impl Values {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|map| map.is_empty())
    }
}

impl std::ops::Deref for Values {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &BTreeMap<String, String> {
        self.0.as_deref().unwrap_or(&NO_VALUES)
    }
}

impl std::ops::DerefMut for Values {
    fn deref_mut(&mut self) -> &mut BTreeMap<String, String> {
        self.0.get_or_insert_default()
    }
}

impl From<BTreeMap<String, String>> for Values {
    fn from(map: BTreeMap<String, String>) -> Values {
        Values((!map.is_empty()).then(|| Box::new(map)))
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How long sessions live (`session.idle_timeout`, `absolute_timeout`, `remember_me`).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Since the last request.
    pub idle: Duration,
    /// Since creation.
    pub absolute: Duration,
    /// Since creation, for remember-me sessions.
    pub remember_me: Duration,
}

/// Wall-clock time as Unix milliseconds, advanced by tokio's monotonic clock.
///
/// Reading the wall clock once and then counting with `tokio::time::Instant`
/// makes session ages immune to wall-clock jumps, and lets tests drive
/// expiry with paused tokio time. [`Clock::skip`] moves it forward by hand
/// (tests of a whole running proxy, where tokio time cannot be paused).
#[derive(Debug)]
pub struct Clock {
    wall_at_start: u64,
    start: tokio::time::Instant,
    skipped: AtomicU64,
}

impl Clock {
    /// A clock reading the current wall-clock time.
    pub fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            wall_at_start: wall,
            start: tokio::time::Instant::now(),
            skipped: AtomicU64::new(0),
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_start
            .saturating_add(elapsed)
            .saturating_add(self.skipped.load(Ordering::Relaxed))
    }

    /// Now, in Unix seconds.
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Moves this clock forward by `by` (tests).
    pub fn skip(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.skipped.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Lifetimes = Lifetimes {
        idle: Duration::from_secs(30 * 60),
        absolute: Duration::from_secs(12 * 3600),
        remember_me: Duration::from_secs(180 * 86400),
    };

    #[test]
    fn idle_and_absolute_limits() {
        let mut s = Session::new(0);
        assert_eq!(s.expires_at(&L), 30 * 60 * 1000);
        s.last_seen = 12 * 3600 * 1000 - 1000;
        assert_eq!(s.expires_at(&L), 12 * 3600 * 1000, "absolute caps idle");
        s.remember = true;
        assert_eq!(s.expires_at(&L), 180 * 86400 * 1000);
        assert!(!s.expired(&L, 180 * 86400 * 1000 - 1));
        assert!(s.expired(&L, 180 * 86400 * 1000));
    }

    #[test]
    fn values_take_one_pointer_until_used_and_compare_by_content() {
        let mut s = Session::new(0);
        assert!(s.values.is_empty() && s.values.get("k").is_none());
        let empty_map: Values = serde_json::from_str("{}").unwrap();
        assert_eq!(empty_map, s.values, "an empty map equals no map");
        s.values.insert("k".into(), "v".into());
        assert_eq!(s.values["k"], "v");
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains(r#""values":{"k":"v"}"#), "{text}");
        assert!(
            !text.contains("\"app\""),
            "empty values are not written: {text}"
        );
        let back: Session = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        s.values.remove("k");
        assert!(s.values.is_empty());
        assert_eq!(s.values, Values::default());
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_paused_tokio_time() {
        let clock = Clock::new();
        let t0 = clock.now_ms();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now_ms() - t0, 90_000);
        clock.skip(Duration::from_secs(10));
        assert_eq!(clock.now_ms() - t0, 100_000);
    }
}
