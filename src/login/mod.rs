//! The login and logout pages (routed to by [`crate::pages`]), and the
//! answer to a request that needs a login.
//!
//! - `GET /.cloakroom/login`: the form, with a CSRF token bound to the session.
//! - `POST /.cloakroom/login`: CSRF check (403), throttling (429), password
//!   check, then a new session ID and a 303 to a same-origin `return_to`.
//! - `GET /.cloakroom/logout`: a one-button confirmation.
//! - `POST /.cloakroom/logout`: CSRF check, the session destroyed, the cookie
//!   expired, 303 to `/`.
//!
//! [`form`] reads and checks posted forms; [`return_to`] judges where a
//! login may send the browser; [`page`] renders the pages.

mod form;
pub mod page;
mod return_to;

use self::form::{posted_form, Posted};
pub use self::return_to::safe_return_to;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::answer;
use crate::auth::limiter::Refusal;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::metrics::LoginResult;
use crate::probe;
use crate::rewrite::link;
use crate::session::{Client, Current, SessionState};
use crate::upstream::Peer;
use crate::{App, Settings};

pub use crate::reserved::{is_reserved, LOGIN_PATH, LOGOUT_PATH, PREFIX};

/// Label under which CSRF tokens are derived from the session ID.
const CSRF: &[u8] = b"csrf";
/// Purpose of the login form token given to a visitor with no session.
const ANONYMOUS_LOGIN: &[u8] = b"login";

/// `GET /.cloakroom/login`: the form.
pub(crate) fn form_page(
    app: &App,
    settings: &Settings,
    peer: Peer,
    current: &SessionState,
    req: &Request<Incoming>,
) -> Response<ProxyBody> {
    let return_to = query_param(req.uri().query(), "return_to")
        .map(|r| safe_return_to(&r))
        .unwrap_or_else(|| "/".to_owned());
    let client = Client::of(peer.addr.ip(), req.headers());
    login_form(
        app,
        settings,
        client,
        current,
        &return_to,
        None,
        "",
        StatusCode::OK,
    )
}

/// `GET /.cloakroom/logout`: the confirmation.
pub(crate) fn logout_page(app: &App, current: &SessionState) -> Response<ProxyBody> {
    let csrf = app.sessions.token(CSRF, &current.id);
    let html = page::logout(&csrf, current.user(), &[]);
    answer::html(StatusCode::OK, html)
}

/// Whether `req` is for the login page, which is shown even when the
/// session store cannot be asked (with a new session; signing in then
/// waits for the store).
pub fn shown_without_store<B>(req: &Request<B>) -> bool {
    req.uri().path() == LOGIN_PATH && matches!(*req.method(), Method::GET | Method::HEAD)
}

/// The answer to a request that needs a login and has none: a browser
/// navigation is sent to the login page, anything else gets 401. The
/// session parameter `name` is not carried into `return_to`.
pub fn challenge(req: &Request<Incoming>, name: &str) -> Response<ProxyBody> {
    if !wants_html(req) {
        let mut resp = answer::text(StatusCode::UNAUTHORIZED, "401 Unauthorized: log in first\n");
        // RFC 9110 §15.5.2 asks for a challenge; this one names the form.
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Cookie realm=\"cloakroom\", form=\"/.cloakroom/login\""),
        );
        return resp;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let target = link::strip_param(&link::strip_param(target, probe::MARKER), name);
    let location = format!(
        "{LOGIN_PATH}?return_to={}",
        url::form_urlencoded::byte_serialize(safe_return_to(&target).as_bytes())
            .collect::<String>()
    );
    answer::redirect(StatusCode::FOUND, &location)
}

/// A browser asking for a page: `Accept` includes `text/html`.
pub fn wants_html<B>(req: &Request<B>) -> bool {
    req.headers().get_all(header::ACCEPT).iter().any(|v| {
        v.as_bytes()
            .windows(9)
            .any(|w| w.eq_ignore_ascii_case(b"text/html"))
    })
}

/// `POST /.cloakroom/login`.
pub(crate) async fn login(
    app: &App,
    settings: &Settings,
    peer: Peer,
    state: &mut SessionState,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let client_ip = peer.addr.ip();
    let user_agent = req.headers().get(header::USER_AGENT).cloned();
    let client = Client {
        ip: client_ip,
        user_agent: user_agent.as_ref().map_or(&b""[..], HeaderValue::as_bytes),
    };
    let form = match posted_form(settings, app, Some(client), state, req).await? {
        Posted::Form(form) => form,
        Posted::Refused(resp) => return Ok(resp),
    };
    let current: &Current = state;
    let return_to = safe_return_to(form.get("return_to").unwrap_or("/"));
    let username = form.get("username").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    let remember = form.get("remember").is_some_and(|v| !v.is_empty());
    let now = app.sessions.clock().now_ms();
    let throttle = &app.auth.throttle;

    // Counted before it is judged: concurrent guesses cannot race the limit.
    let attempt = match throttle.attempt(peer.addr.ip(), username, now).await {
        Ok(attempt) => attempt,
        Err(Refusal::Wait(wait)) => {
            app.metrics.login(LoginResult::Throttled);
            return Ok(throttled(
                app, settings, client, current, &return_to, username, wait,
            ));
        }
        // Shared counters out of reach: no password is checked (fail closed).
        Err(Refusal::Unavailable(error)) => return Err(error.into()),
    };

    let valid = !username.is_empty()
        && username.len() <= 256
        && password.len() <= 1024
        && app
            .auth
            .check_password(settings.users.as_ref(), username, password)
            .await;
    if !valid {
        attempt.failed().await;
        app.metrics.login(LoginResult::Failure);
        tracing::info!(user = username, ip = %peer.addr.ip(), "login failed");
        return Ok(login_form(
            app,
            settings,
            client,
            current,
            &return_to,
            Some("Wrong username or password."),
            username,
            StatusCode::OK,
        ));
    }

    attempt.succeeded().await;
    app.metrics.login(LoginResult::Success);
    app.sessions.login(state, username, remember);
    state.note_password_login(username);
    let session = app.sessions.key_hash(&state.id.key());
    tracing::info!(user = username, ip = %peer.addr.ip(), remember, session, "login");
    // The session is written at commit; the cookie (and, in URL mode, the
    // ticket in the redirect) follow from it when the answer is finished.
    Ok(answer::redirect(StatusCode::SEE_OTHER, &return_to))
}

/// The login form again, with 429 and `Retry-After`: too many failures (or
/// too many attempts still being checked) for this address or username.
fn throttled(
    app: &App,
    settings: &Settings,
    client: Client<'_>,
    current: &Current,
    return_to: &str,
    username: &str,
    wait: std::time::Duration,
) -> Response<ProxyBody> {
    let secs = wait.as_secs().max(1);
    tracing::warn!(user = username, ip = %client.ip, "login throttled");
    let message = if secs < 60 {
        format!(
            "Too many attempts at once. Try again in {secs} second{}.",
            if secs == 1 { "" } else { "s" }
        )
    } else {
        let minutes = secs.div_ceil(60);
        format!(
            "Too many failed attempts. Try again in {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        )
    };
    let mut resp = login_form(
        app,
        settings,
        client,
        current,
        return_to,
        Some(&message),
        username,
        StatusCode::TOO_MANY_REQUESTS,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// `POST /.cloakroom/logout`.
pub(crate) async fn logout(
    app: &App,
    settings: &Settings,
    state: &mut SessionState,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if let Posted::Refused(resp) = posted_form(settings, app, None, state, req).await? {
        return Ok(resp);
    }
    if let Some(user) = state.user() {
        let session = app.sessions.key_hash(&state.id.key());
        tracing::info!(user, session, "logout");
    }
    // A session that holds nothing has nothing to end, and writes nothing:
    // an anonymous client cannot make the store write at will.
    app.sessions.logout(state);
    Ok(answer::redirect(StatusCode::SEE_OTHER, "/"))
}

/// The login page. Its body never holds the session ID (a same-origin
/// script could read it, which `HttpOnly` forbids): a session's form
/// carries the session's CSRF token; a visitor without one gets a token
/// bound to the client instead. In URL mode the form's action carries the
/// ticket, like every form (see [`crate::rewrite`]).
#[allow(clippy::too_many_arguments)]
fn login_form(
    app: &App,
    settings: &Settings,
    client: Client<'_>,
    current: &Current,
    return_to: &str,
    error: Option<&str>,
    username: &str,
    status: StatusCode,
) -> Response<ProxyBody> {
    let csrf = if current.fresh {
        app.sessions.client_token(ANONYMOUS_LOGIN, client)
    } else {
        app.sessions.token(CSRF, &current.id)
    };
    let html = page::login(&page::LoginForm {
        app_name: &settings.config.auth.app_name,
        return_to,
        csrf: &csrf,
        error,
        username,
        signed_in_as: current.user(),
        hidden: &[],
    });
    answer::html(status, html)
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
