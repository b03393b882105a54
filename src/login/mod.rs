//! The proxy's own endpoints under `/.cloakroom/`, answered locally and never
//! forwarded, and the answer to a request that needs a login.
//!
//! - `GET /.cloakroom/login`: the form, with a CSRF token bound to the session.
//! - `POST /.cloakroom/login`: CSRF check (403), throttling (429), password
//!   check, then a new session ID and a 303 to a same-origin `return_to`.
//! - `GET /.cloakroom/logout`: a one-button confirmation.
//! - `POST /.cloakroom/logout`: CSRF check, the session destroyed, the cookie
//!   expired, 303 to `/`.

pub mod page;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::answer;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::probe;
use crate::rewrite::link;
use crate::session::{Current, SessionChange};
use crate::upstream::Peer;
use crate::App;

/// Paths under this prefix are the proxy's own.
pub const PREFIX: &str = "/.cloakroom/";
/// The login form.
pub const LOGIN_PATH: &str = "/.cloakroom/login";
/// The logout endpoint.
pub const LOGOUT_PATH: &str = "/.cloakroom/logout";

/// Label under which CSRF tokens are derived from the session ID.
const CSRF: &[u8] = b"csrf";
/// Largest login form body accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Whether `path` (canonical) is one of the proxy's own: its first segment
/// reads as `.cloakroom` in any case or spelling (`/%2ecloakroom/`,
/// `/.CLOAKROOM;x/`), so no spelling of a reserved path reaches the upstream.
pub fn is_reserved(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if !first.starts_with(['.', '%']) {
        return false;
    }
    crate::target::segment_readings(first.as_bytes())
        .iter()
        .any(|r| r.eq_ignore_ascii_case(b".cloakroom"))
}

/// Answers a request under `/.cloakroom/`.
pub async fn answer(
    app: &App,
    peer: Peer,
    current: &Current,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let path = req.uri().path();
    let method = req.method().clone();
    match (path, &method) {
        (LOGIN_PATH, &Method::GET | &Method::HEAD) => {
            let return_to = query_param(req.uri().query(), "return_to")
                .map(|r| safe_return_to(&r))
                .unwrap_or_else(|| "/".to_owned());
            Ok(login_form(
                app,
                current,
                &return_to,
                None,
                "",
                StatusCode::OK,
            ))
        }
        (LOGIN_PATH, &Method::POST) => login(app, peer, current, req).await,
        (LOGOUT_PATH, &Method::GET | &Method::HEAD) => {
            let csrf = app.sessions.token(CSRF, &current.id);
            let hidden = [(app.sessions.name(), current.id.as_str())];
            let hidden: &[(&str, &str)] = if app.sessions.cookieless() {
                &hidden
            } else {
                &[]
            };
            let html = page::logout(&csrf, current.user(), hidden);
            Ok(answer::html(StatusCode::OK, html))
        }
        (LOGOUT_PATH, &Method::POST) => logout(app, current, req).await,
        (LOGIN_PATH | LOGOUT_PATH, _) => {
            let mut resp = answer::text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            Ok(resp)
        }
        _ => Ok(answer::text(StatusCode::NOT_FOUND, "404 Not Found\n")),
    }
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

async fn login(
    app: &App,
    peer: Peer,
    current: &Current,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (form, current) = match posted_form(app, current, req).await? {
        Posted::Form(form, current) => (form, current),
        Posted::Refused(resp) => return Ok(resp),
    };
    let current = &current;
    let return_to = safe_return_to(form.get("return_to").unwrap_or("/"));
    let username = form.get("username").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    let remember = form.get("remember").is_some_and(|v| !v.is_empty());
    let now = app.sessions.clock().now_ms();
    let throttle = &app.auth.throttle;

    // Counted before it is judged: concurrent guesses cannot race the limit.
    if let Err(wait) = throttle.attempt(peer.addr.ip(), username, now) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(user = username, ip = %peer.addr.ip(), "login throttled");
        let minutes = secs.div_ceil(60);
        let message = format!(
            "Too many failed attempts. Try again in {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        );
        let mut resp = login_form(
            app,
            current,
            &return_to,
            Some(&message),
            username,
            StatusCode::TOO_MANY_REQUESTS,
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(resp);
    }

    let valid = !username.is_empty()
        && username.len() <= 256
        && password.len() <= 1024
        && app.auth.check_password(username, password).await;
    if !valid {
        tracing::info!(user = username, ip = %peer.addr.ip(), "login failed");
        return Ok(login_form(
            app,
            current,
            &return_to,
            Some("Wrong username or password."),
            username,
            StatusCode::OK,
        ));
    }

    throttle.succeeded(peer.addr.ip(), username);
    let logged_in = app.sessions.login(current, username, remember).await?;
    tracing::info!(user = username, ip = %peer.addr.ip(), remember, "login");
    // The cookie (and, in URL mode, the ID in the redirect) follow from the
    // new session when the answer is finished.
    let mut resp = answer::redirect(StatusCode::SEE_OTHER, &return_to);
    resp.extensions_mut()
        .insert(SessionChange::LoggedIn(logged_in));
    Ok(resp)
}

async fn logout(
    app: &App,
    current: &Current,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let current = match posted_form(app, current, req).await? {
        Posted::Form(_, current) => current,
        Posted::Refused(resp) => return Ok(resp),
    };
    app.sessions.destroy(&current.id).await?;
    if let Some(user) = current.user() {
        tracing::info!(user, "logout");
    }
    let mut resp = answer::redirect(StatusCode::SEE_OTHER, "/");
    resp.extensions_mut().insert(SessionChange::LoggedOut);
    Ok(resp)
}

/// A form posted to the proxy, checked: from this site, with a session and
/// that session's CSRF token.
enum Posted {
    /// The form's fields and the session it was posted from.
    Form(Form, Current),
    /// What to answer instead (403, 413, 400).
    Refused(Response<ProxyBody>),
}

async fn posted_form(
    app: &App,
    current: &Current,
    req: Request<Incoming>,
) -> Result<Posted, ProxyError> {
    if !same_origin_post(&req) {
        return Ok(Posted::Refused(csrf_failed()));
    }
    let form = match read_form(req).await {
        Ok(form) => form,
        Err(resp) => return Ok(Posted::Refused(resp)),
    };
    let current = form_session(app, current, &form).await?;
    // A fresh session cannot carry a valid token: the form was not ours,
    // or neither cookie nor hidden field came back.
    let token = form.get("csrf").unwrap_or("");
    if current.fresh || !app.sessions.token_matches(CSRF, &current.id, token) {
        return Ok(Posted::Refused(csrf_failed()));
    }
    Ok(Posted::Form(form, current))
}

/// The session a form was posted from: the cookie's or URL's if there was
/// one, else the one in the form's hidden field (clients without cookies).
async fn form_session(app: &App, current: &Current, form: &Form) -> Result<Current, ProxyError> {
    if !current.fresh {
        return Ok(current.clone());
    }
    let Some(presented) = form.get(app.sessions.name()) else {
        return Ok(current.clone());
    };
    Ok(app
        .sessions
        .resolve_presented(presented)
        .await?
        .unwrap_or_else(|| current.clone()))
}

/// A POST whose `Origin` (sent by every current browser) names another
/// site is refused: with the session in a hidden field, the CSRF token
/// alone would not stop a foreign page from posting a login form of its own.
fn same_origin_post(req: &Request<Incoming>) -> bool {
    if req
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return false;
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    let Some(host) = host else { return false };
    origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .is_some_and(|(_, o_host)| o_host.eq_ignore_ascii_case(&host))
}

fn login_form(
    app: &App,
    current: &Current,
    return_to: &str,
    error: Option<&str>,
    username: &str,
    status: StatusCode,
) -> Response<ProxyBody> {
    let csrf = app.sessions.token(CSRF, &current.id);
    // The session rides in a hidden field too, so a client that refuses
    // cookies can log in.
    let hidden = [(app.sessions.name(), current.id.as_str())];
    let html = page::login(&page::LoginForm {
        app_name: &app.config.auth.app_name,
        return_to,
        csrf: &csrf,
        error,
        username,
        signed_in_as: current.user(),
        hidden: if app.sessions.cookieless() {
            &hidden
        } else {
            &[]
        },
    });
    answer::html(status, html)
}

fn csrf_failed() -> Response<ProxyBody> {
    answer::html(
        StatusCode::FORBIDDEN,
        "<!doctype html><meta charset=\"utf-8\"><title>Form expired</title>\
         <p>This form expired or did not come from this site. \
         <a href=\"/.cloakroom/login\">Open the sign-in page again</a>.</p>\n"
            .to_owned(),
    )
}

/// The decoded fields of a form body, first value of each name.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn read_form(req: Request<Incoming>) -> Result<Form, Response<ProxyBody>> {
    let bytes: Bytes = match Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(answer::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Payload Too Large\n",
            ))
        }
        Err(_) => {
            return Err(answer::text(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: broken body\n",
            ))
        }
    };
    Ok(Form(
        url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    ))
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `target` if it is a path on this site, else `/`. Refuses anything a
/// browser could read as another origin: `//host`, `/\host`, schemes,
/// control characters, and the same hidden behind percent-escapes.
pub fn safe_return_to(target: &str) -> String {
    let decoded = percent_decode_all(target.as_bytes());
    let looks_remote = |t: &[u8]| {
        !t.starts_with(b"/")
            || t.starts_with(b"//")
            || t.starts_with(b"/\\")
            || t.iter().any(|b| b.is_ascii_control() || *b == b'\\')
    };
    // The path must also be canonical (no dot segments, no `//`), so what
    // the browser requests next is exactly what was judged here.
    let path = target.split(['?', '#']).next().unwrap_or("");
    let canonical = matches!(
        crate::target::canonical(path),
        Ok(std::borrow::Cow::Borrowed(_))
    );
    let ok = target.is_ascii()
        && !looks_remote(target.as_bytes())
        && !looks_remote(&decoded)
        && canonical
        && crate::answer::stays_on_site(target)
        && !is_reserved(path);
    if ok {
        target.to_owned()
    } else {
        "/".to_owned()
    }
}

/// Decodes percent-escapes repeatedly, until nothing changes (double
/// encoding hides `//` just as well as single).
fn percent_decode_all(bytes: &[u8]) -> Vec<u8> {
    let mut current = bytes.to_vec();
    for _ in 0..4 {
        let next = crate::target::percent_decode(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_accepts_only_same_origin_paths() {
        for good in ["/", "/books?page=2#top", "/a/b%20c", "/search?q=%2F%2F"] {
            assert_eq!(safe_return_to(good), good, "{good}");
        }
        for bad in [
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example/",
            "HTTP://EVIL.EXAMPLE",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/%2F%2Fevil.example",
            "/%5Cevil.example",
            "%2F%2Fevil.example",
            "/%252F%252Fevil.example",
            "/ok\r\nSet-Cookie: x=1",
            "/ok%0d%0aSet-Cookie:%20x=1",
            "/\tevil",
            "/caf\u{e9}",
            "/.cloakroom/logout",
            "/.CLOAKROOM/logout",
            "/%2ecloakroom/logout",
            "/.//evil.example/",
            "/./evil",
            "/a/../..//evil.example",
            "/%2e%2e//evil.example",
        ] {
            assert_eq!(safe_return_to(bad), "/", "{bad:?} was accepted");
        }
    }
}
