//! The request log: one line per request, written when its response body has
//! been sent (or abandoned), so the line carries the real byte count.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::body::Watch;

/// What the log line of one request says. It is written on drop.
pub struct AccessLog {
    method: Method,
    /// The path without its query string: queries may hold secrets
    /// (and, for cookieless clients, the session ID).
    path: String,
    status: StatusCode,
    started: Instant,
    upstream: Option<Duration>,
    bytes: u64,
    complete: bool,
}

impl AccessLog {
    /// Starts the record of a request that arrived at `started`.
    pub fn new(method: Method, path: &str, started: Instant) -> Self {
        AccessLog {
            method,
            path: path.to_owned(),
            status: StatusCode::OK,
            started,
            upstream: None,
            bytes: 0,
            complete: false,
        }
    }

    /// Records the status sent and how long the upstream took to answer.
    pub fn answered(&mut self, status: StatusCode, upstream: Option<Duration>) {
        self.status = status;
        self.upstream = upstream;
    }
}

impl Watch for AccessLog {
    fn data(&mut self, len: usize) {
        self.bytes += len as u64;
    }

    fn finished(&mut self) {
        self.complete = true;
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // Milliseconds with microsecond precision.
        let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
        tracing::info!(
            target: "cloakroom::access",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            duration_ms = ms(self.started.elapsed()),
            upstream_ms = self.upstream.map(ms),
            bytes = self.bytes,
            complete = self.complete,
            "request"
        );
    }
}
