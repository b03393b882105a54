//! What a load run found: a readable table, or one JSON object whose field
//! names are the contract of `cloakroom load --json`.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Options;

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requests sent in the run (setup not included).
    pub requests: u64,
    /// Answered 2xx or 3xx (and not a lost session).
    pub ok: u64,
    /// Everything else, by kind: `connect`, `timeout`, `http`,
    /// `status_4xx`, `status_5xx`, `lost_session`.
    pub errors: BTreeMap<String, u64>,
    /// Requests per second over the run.
    pub rps: f64,
    /// Latency percentiles, in milliseconds.
    pub latency_ms: Latency,
    /// Users that held a session (a cookie or a ticket).
    pub sessions: u64,
    /// Users that logged in.
    pub logins: u64,
    /// Login latency (GET the form, POST it), in milliseconds.
    pub login_latency_ms: LoginLatency,
    /// Logged-in users sent to the login page or answered 401.
    pub lost_sessions: u64,
    /// How long the run took, in seconds.
    pub duration_s: f64,
    /// Virtual users.
    pub users: usize,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// The open loop's rate (requests per second), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// Request latency percentiles (ms).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest.
    pub max: f64,
}

/// Login latency percentiles (ms).
#[derive(Debug, Clone, Serialize)]
pub struct LoginLatency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

impl Report {
    /// Gathers a run's counts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        opts: &Options,
        elapsed: Duration,
        requests: u64,
        ok: u64,
        errors: BTreeMap<&'static str, u64>,
        lost_sessions: u64,
        latency_us: &Histogram<u64>,
        sessions: u64,
        logins: u64,
        login_us: &Histogram<u64>,
    ) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            requests,
            ok,
            errors: errors.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            rps: (requests as f64 / secs * 10.0).round() / 10.0,
            latency_ms: Latency {
                p50: ms(latency_us, 0.5),
                p90: ms(latency_us, 0.9),
                p99: ms(latency_us, 0.99),
                p999: ms(latency_us, 0.999),
                max: if latency_us.is_empty() {
                    0.0
                } else {
                    latency_us.max() as f64 / 1000.0
                },
            },
            sessions,
            logins,
            login_latency_ms: LoginLatency {
                p50: ms(login_us, 0.5),
                p99: ms(login_us, 0.99),
            },
            lost_sessions,
            duration_s: (secs * 1000.0).round() / 1000.0,
            users: opts.users,
            mode: if opts.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: opts.rate,
        }
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let l = &self.latency_ms;
        let mut out = String::new();
        let loop_kind = match self.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_owned(),
        };
        out.push_str(&format!(
            "{} users, {loop_kind}, {:.1} s\n\n",
            self.users, self.duration_s
        ));
        out.push_str(&format!("  requests      {:>12}\n", self.requests));
        out.push_str(&format!("  ok            {:>12}\n", self.ok));
        out.push_str(&format!("  req/s         {:>12.1}\n", self.rps));
        out.push_str(&format!(
            "  latency ms    p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            l.p50, l.p90, l.p99, l.p999, l.max
        ));
        out.push_str(&format!("  sessions      {:>12}\n", self.sessions));
        out.push_str(&format!("  logins        {:>12}", self.logins));
        if self.logins > 0 {
            out.push_str(&format!(
                "   (p50 {:.1} ms, p99 {:.1} ms)",
                self.login_latency_ms.p50, self.login_latency_ms.p99
            ));
        }
        out.push('\n');
        out.push_str(&format!("  lost sessions {:>12}\n", self.lost_sessions));
        if self.errors.is_empty() {
            out.push_str("  errors                   0\n");
        } else {
            for (kind, n) in &self.errors {
                out.push_str(&format!("  error {kind:<14} {n:>6}\n"));
            }
        }
        out
    }
}
