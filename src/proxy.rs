//! [`handle`]: the life of one request, top to bottom.
//!
//! `handle` is the outer shell: it starts the request's log record, runs the
//! pipeline, turns any [`ProxyError`] into its short response, and attaches
//! the log record to the response body so the line is written once the last
//! byte has gone out. [`pipeline`] is the straight line of named steps; later
//! capabilities (sessions, login, access rules, link rewriting) are steps
//! added to it, each one either passing the request on or answering early.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::body::{self, ProxyBody, Watched};
use crate::error::ProxyError;
use crate::upstream::Peer;
use crate::App;

/// What a response body carries until it is finished: its log record.
pub type LoggedBody = Watched<ProxyBody, AccessLog>;

/// Answers one request. Never fails: every error becomes a response.
pub async fn handle(app: Arc<App>, peer: Peer, req: Request<Incoming>) -> Response<LoggedBody> {
    let started = Instant::now();
    let mut log = AccessLog::new(req.method().clone(), req.uri().path(), started);

    let (resp, upstream_time) = match pipeline(&app, peer, req).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(error = %error.chain(), status = error.status().as_u16(), "request failed");
            (error_response(&error), None)
        }
    };

    log.answered(resp.status(), upstream_time);
    resp.map(|b| Watched::new(b, log))
}

/// The steps, in order. Each returns early with an error or a local answer.
async fn pipeline(
    app: &App,
    peer: Peer,
    mut req: Request<Incoming>,
) -> Result<(Response<ProxyBody>, Option<std::time::Duration>), ProxyError> {
    // 1. Reject what a reverse proxy must not forward.
    check_forwardable(&req)?;

    // 2. Find the session: a live ID this proxy signed, or a new one.
    let current = app.sessions.resolve(req.headers()).await?;

    // 3. Forward: the session cookie is the proxy's alone; the rest of the
    //    request is rewritten for the upstream (hop-by-hop headers stripped,
    //    X-Forwarded-* set) and bodies stream both ways.
    app.sessions.strip_cookie(req.headers_mut());
    let sent = Instant::now();
    let mut resp = app.upstream.forward(req, peer).await?;
    let upstream_time = sent.elapsed();

    // 4. Answer: a newly issued ID goes out beside the upstream's own cookies.
    if let Some(cookie) = app.sessions.set_cookie(&current) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }

    Ok((resp, Some(upstream_time)))
}

/// A reverse proxy forwards requests for paths; it opens no tunnels.
fn check_forwardable(req: &Request<Incoming>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::ConnectNotAllowed);
    }
    Ok(())
}

/// The short plain-text response for an error.
pub fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(error.body()));
    *resp.status_mut() = error.status();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
