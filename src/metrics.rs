//! [`Metrics`]: what the admin listener's `/metrics` shows, in the
//! Prometheus text format rendered by the Prometheus project's own client
//! crate (`prometheus-client`), one registry per app (no global state, so
//! two apps in one process count apart).
//!
//! Names (all prefixed `cloakroom_`): `http_requests_total{code}`,
//! `http_request_duration_seconds` (until the response head),
//! `upstream_duration_seconds`, `sessions_active` (records the store holds,
//! read at scrape), `session_events_total{event}` (`created`, `rotated`,
//! `expired`, `revoked`, `forged`), `logins_total{result}` (`success`,
//! `failure`, `throttled`), `url_mode_pages_total`, `store_errors_total`,
//! `store_operation_duration_seconds{op}` (`load`, `commit`),
//! `config_reloads_total{result}`, `config_last_reload_success`.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One label with a fixed set of values: nothing is allocated to count.
type Label = [(&'static str, &'static str); 1];
/// The status-code label.
type Code = [(&'static str, u16); 1];

/// The app's counters, gauges and histograms.
pub struct Metrics {
    registry: Registry,
    requests: Family<Code, Counter>,
    request_duration: Histogram,
    upstream_duration: Histogram,
    sessions_active: Gauge,
    session_events: Family<Label, Counter>,
    logins: Family<Label, Counter>,
    url_mode_pages: Counter,
    store_errors: Counter,
    store_duration: Family<Label, Histogram, fn() -> Histogram>,
    reloads: Family<Label, Counter>,
    last_reload_success: Gauge,
}

/// Something that happened to a session.
#[derive(Debug, Clone, Copy)]
pub enum SessionEvent {
    /// A record was created.
    Created,
    /// A login gave the session a new ID.
    Rotated,
    /// A presented session had expired.
    Expired,
    /// A session was ended (logout, operator, upstream).
    Revoked,
    /// A forged or malformed ID was presented.
    Forged,
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum LoginResult {
    /// Logged in.
    Success,
    /// Wrong name or password.
    Failure,
    /// Refused by throttling.
    Throttled,
}

/// 100 µs to ~52 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered under `cloakroom_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cloakroom");
        let m = Metrics {
            requests: Family::default(),
            request_duration: latency(),
            upstream_duration: latency(),
            sessions_active: Gauge::default(),
            session_events: Family::default(),
            logins: Family::default(),
            url_mode_pages: Counter::default(),
            store_errors: Counter::default(),
            store_duration: Family::new_with_constructor(latency),
            reloads: Family::default(),
            last_reload_success: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "Requests answered, by status code",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from the request to its response head",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time the upstream took to its response head",
            m.upstream_duration.clone(),
        );
        registry.register(
            "sessions_active",
            "Session records the store holds (live and tombstones), read at scrape",
            m.sessions_active.clone(),
        );
        registry.register(
            "session_events",
            "Session events, by kind",
            m.session_events.clone(),
        );
        registry.register("logins", "Login attempts, by result", m.logins.clone());
        registry.register(
            "url_mode_pages",
            "Responses rewritten for URL mode",
            m.url_mode_pages.clone(),
        );
        registry.register(
            "store_errors",
            "Session store calls that failed",
            m.store_errors.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Session store calls, by operation",
            m.store_duration.clone(),
        );
        registry.register(
            "config_reloads",
            "Reloads (SIGHUP), by result",
            m.reloads.clone(),
        );
        registry.register(
            "config_last_reload_success",
            "1 when the last reload (or the start) succeeded",
            m.last_reload_success.clone(),
        );
        m.last_reload_success.set(1);
        Metrics { registry, ..m }
    }

    /// A request answered with `status` after `took` (upstream: `upstream`).
    pub fn answered(&self, status: u16, took: Duration, upstream: Option<Duration>) {
        self.requests.get_or_create(&[("code", status)]).inc();
        self.request_duration.observe(took.as_secs_f64());
        if let Some(u) = upstream {
            self.upstream_duration.observe(u.as_secs_f64());
        }
    }

    /// Counts a session event.
    pub fn session(&self, event: SessionEvent) {
        let name = match event {
            SessionEvent::Created => "created",
            SessionEvent::Rotated => "rotated",
            SessionEvent::Expired => "expired",
            SessionEvent::Revoked => "revoked",
            SessionEvent::Forged => "forged",
        };
        self.session_events.get_or_create(&[("event", name)]).inc();
    }

    /// Counts a login attempt.
    pub fn login(&self, result: LoginResult) {
        let name = match result {
            LoginResult::Success => "success",
            LoginResult::Failure => "failure",
            LoginResult::Throttled => "throttled",
        };
        self.logins.get_or_create(&[("result", name)]).inc();
    }

    /// Counts a reload and its result.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&[("result", result)]).inc();
        self.last_reload_success.set(i64::from(ok));
    }

    /// Counts a response rewritten for URL mode.
    pub fn url_mode_page(&self) {
        self.url_mode_pages.inc();
    }

    /// Records one store call (`op`) that took `took`, and whether it failed.
    pub fn store_call(&self, op: &'static str, took: Duration, failed: bool) {
        self.store_duration
            .get_or_create(&[("op", op)])
            .observe(took.as_secs_f64());
        if failed {
            self.store_errors.inc();
        }
    }

    /// The exposition, with `sessions_active` set to `records` when known.
    pub fn render(&self, records: Option<usize>) -> String {
        if let Some(n) = records {
            self.sessions_active
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_carries_the_documented_names() {
        let m = Metrics::new();
        m.answered(
            200,
            Duration::from_millis(3),
            Some(Duration::from_millis(2)),
        );
        m.answered(200, Duration::from_millis(3), None);
        m.session(SessionEvent::Forged);
        m.login(LoginResult::Throttled);
        m.store_call("load", Duration::from_micros(300), true);
        let text = m.render(Some(7));
        for line in [
            "cloakroom_http_requests_total{code=\"200\"} 2",
            "cloakroom_session_events_total{event=\"forged\"} 1",
            "cloakroom_logins_total{result=\"throttled\"} 1",
            "cloakroom_store_errors_total 1",
            "cloakroom_sessions_active 7",
            "cloakroom_http_request_duration_seconds_count 2",
            "cloakroom_upstream_duration_seconds_count 1",
            "cloakroom_store_operation_duration_seconds_count{op=\"load\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
