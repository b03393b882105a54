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
use crate::identity::{self, UpstreamCommand};
use crate::login;
use crate::session::Current;
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

    // 3. Reserved paths: the proxy's own pages never reach the upstream.
    if login::is_reserved(req.uri().path()) {
        return Ok((login::answer(app, peer, &current, req).await?, None));
    }

    // 4. Access rules: a protected path needs a logged-in session.
    if current.user().is_none() && app.auth.rules.requires_login(req.uri().path()) {
        let mut resp = login::challenge(&req);
        if let Some(cookie) = app.sessions.set_cookie(&current) {
            resp.headers_mut().append(header::SET_COOKIE, cookie);
        }
        return Ok((resp, None));
    }

    // 5. Forward: the session cookie is the proxy's alone, the identity
    //    header is the proxy's word alone; the rest of the request is
    //    rewritten for the upstream and bodies stream both ways.
    app.sessions.strip_cookie(req.headers_mut());
    app.identity.apply(req.headers_mut(), current.user());
    let sent = Instant::now();
    let mut resp = app.upstream.forward(req, peer).await?;
    let upstream_time = sent.elapsed();

    // 6. Answer: the upstream may drive the session; a new ID goes out
    //    beside the upstream's own cookies.
    let command = identity::take_upstream_command(resp.headers_mut());
    let cookie = match command {
        Some(command) if app.config.identity.upstream_control => {
            upstream_drives(app, &current, command).await?
        }
        Some(_) => {
            tracing::debug!(
                "ignored an upstream session header (identity.upstream_control is off)"
            );
            app.sessions.set_cookie(&current)
        }
        None => app.sessions.set_cookie(&current),
    };
    if let Some(cookie) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }

    Ok((resp, Some(upstream_time)))
}

/// Carries out an upstream's `X-Cloakroom-Login`/`-Logout`; returns the
/// cookie the client must get.
async fn upstream_drives(
    app: &App,
    current: &Current,
    command: UpstreamCommand,
) -> Result<Option<HeaderValue>, ProxyError> {
    match command {
        UpstreamCommand::Login(user) => {
            let logged_in = app.sessions.login(current, &user, false).await?;
            tracing::info!(user, "login by the upstream");
            Ok(app.sessions.set_cookie(&logged_in))
        }
        UpstreamCommand::Logout => {
            app.sessions.destroy(&current.id).await?;
            tracing::info!(user = current.user(), "logout by the upstream");
            Ok(Some(app.sessions.expire_cookie()))
        }
    }
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
