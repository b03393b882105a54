//! The router of the proxy's own paths under `/.cloakroom/` on the public
//! listener: answered here, never forwarded. (The admin listener has its
//! own router, [`crate::admin`].)
//!
//! | path | methods | answered by |
//! |---|---|---|
//! | `/.cloakroom/login` | GET, HEAD, POST | [`crate::login`] |
//! | `/.cloakroom/logout` | GET, HEAD, POST | [`crate::login`] |
//! | `/.cloakroom/f/TICKET/PATH` | GET, HEAD, POST | [`form_target`] (URL mode's forms) |
//! | `/.cloakroom/jwks.json` | GET, HEAD | [`jwks`] (with `identity.assertion_header`) |
//!
//! Any other path under the prefix is 404; a known path with another
//! method is 405 with `Allow`.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::answer;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::login;
use crate::reserved::{FORM_PREFIX, JWKS_PATH, LOGIN_PATH, LOGOUT_PATH};
use crate::rewrite::link;
use crate::session::SessionState;
use crate::upstream::Peer;
use crate::{App, Settings};

/// Answers a request for a path under `/.cloakroom/`.
pub async fn answer(
    app: &App,
    settings: &Settings,
    peer: Peer,
    state: &mut SessionState,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // The login and logout pages are where a visitor's session starts (and
    // URL mode's form target carries one on); the JWKS is a public document
    // for machines and stays cacheable, and a 404 or 405 starts nothing.
    let path = req.uri().path();
    if [LOGIN_PATH, LOGOUT_PATH].contains(&path) || path.starts_with(FORM_PREFIX) {
        state.want_cookie();
    }
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = *req.method() == Method::POST;
    let path = req.uri().path();
    if path == LOGIN_PATH && read {
        return Ok(login::form_page(app, settings, peer, state, &req));
    }
    if path == LOGIN_PATH && post {
        return login::login(app, settings, peer, state, req).await;
    }
    if path == LOGOUT_PATH && read {
        return Ok(login::logout_page(app, state));
    }
    if path == LOGOUT_PATH && post {
        return login::logout(app, settings, state, req).await;
    }
    if path == JWKS_PATH && read {
        return Ok(jwks(settings));
    }
    if path == JWKS_PATH {
        return Ok(not_allowed("GET, HEAD"));
    }
    if path.starts_with(FORM_PREFIX) && (read || post) {
        return Ok(form_target(app, &req));
    }
    if [LOGIN_PATH, LOGOUT_PATH].contains(&path) || path.starts_with(FORM_PREFIX) {
        return Ok(not_allowed("GET, HEAD, POST"));
    }
    Ok(answer::text(StatusCode::NOT_FOUND, "404 Not Found\n"))
}

/// The assertion's public keys, for applications that verify it; 404
/// when the assertion is off. Verifiers may keep it five minutes.
fn jwks(settings: &Settings) -> Response<ProxyBody> {
    let Some(assertion) = &settings.assertion else {
        return answer::text(StatusCode::NOT_FOUND, "404 Not Found\n");
    };
    let mut resp = Response::new(crate::body::full(assertion.jwks()));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

fn not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut resp = answer::text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// `/.cloakroom/f/TICKET/PATH?QUERY`, where URL mode points forms (see
/// [`crate::rewrite::html`]): a form carries the ID in its action's *path*,
/// where neither the GET fields that replace the query nor a foreign
/// submitter's `formaction` can carry it away. The answer is a 307 (method
/// and body kept) to `/PATH?QUERY` with the ticket as usual.
fn form_target<B>(app: &App, req: &Request<B>) -> Response<ProxyBody> {
    let rest = &req.uri().path()[FORM_PREFIX.len()..];
    let (ticket, path) = rest.split_once('/').unwrap_or((rest, ""));
    let target = match req.uri().query() {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    let ticket = link::Ticket {
        name: app.sessions.name().to_owned(),
        id: ticket.to_owned(),
    };
    answer::redirect(
        StatusCode::TEMPORARY_REDIRECT,
        &link::with_ticket(&target, &ticket),
    )
}
