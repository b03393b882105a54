//! [`ProxyError`]: everything that can end a request early, mapped to the
//! status the client sees and one log line.
//!
//! The mapping is an exhaustive `match` (no `_` arm), so a new variant cannot
//! be added without deciding its status; a unit test pins every mapping.

use http::StatusCode;

/// Boxed error type carried by bodies and upstream failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the proxy answered a request itself instead of relaying the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request cannot be forwarded as it stands (e.g. a bad target).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `CONNECT` asks for a tunnel; a reverse proxy does not open one.
    #[error("CONNECT is not supported by a reverse proxy")]
    ConnectNotAllowed,
    /// No TCP connection to the upstream could be made.
    #[error("upstream unreachable: {0}")]
    UpstreamConnect(#[source] BoxError),
    /// The upstream did not send response headers within `upstream.timeout`.
    #[error("upstream timed out after {0:?}")]
    UpstreamTimeout(std::time::Duration),
    /// The upstream connection failed after it was made (reset, bad response).
    #[error("upstream failed: {0}")]
    UpstreamFailed(#[source] BoxError),
    /// The session store could not answer.
    #[error(transparent)]
    Store(#[from] crate::session::store::StoreError),
}

impl ProxyError {
    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamFailed(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the session store could not answer (its outage is logged by
    /// the store, once).
    pub fn is_store_unavailable(&self) -> bool {
        matches!(
            self,
            ProxyError::Store(crate::session::store::StoreError::Unavailable(_))
        )
    }

    /// The error and all its sources, for the log: "upstream unreachable:
    /// client error (Connect): tcp connect error: Connection refused".
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause = cause.to_string();
            if !text.ends_with(&cause) {
                text.push_str(": ");
                text.push_str(&cause);
            }
            source = cause_of(source);
        }
        text
    }

    /// The short plain-text body the client gets. It never echoes details of
    /// the upstream (addresses, error texts) to the client; those go to the log.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::ConnectNotAllowed => "CONNECT is not supported\n",
            ProxyError::UpstreamConnect(_) => "502 Bad Gateway: the application is unreachable\n",
            ProxyError::UpstreamTimeout(_) => {
                "504 Gateway Timeout: the application did not answer in time\n"
            }
            ProxyError::UpstreamFailed(_) => "502 Bad Gateway: the application failed to answer\n",
            ProxyError::Store(_) => "503 Service Unavailable: sessions are unavailable\n",
        }
    }
}

fn cause_of<'a>(
    error: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    error.and_then(std::error::Error::source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_status() {
        let io = || -> BoxError { Box::new(std::io::Error::other("x")) };
        let cases = [
            (ProxyError::BadRequest("bad\n"), 400),
            (ProxyError::ConnectNotAllowed, 405),
            (ProxyError::UpstreamConnect(io()), 502),
            (
                ProxyError::UpstreamTimeout(std::time::Duration::from_secs(1)),
                504,
            ),
            (ProxyError::UpstreamFailed(io()), 502),
            (
                ProxyError::Store(crate::session::store::StoreError::unavailable(
                    std::io::Error::other("x"),
                )),
                503,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert!(error.body().ends_with('\n'));
        }
    }
}
