//! Forms posted to the proxy's own pages: read under a size limit and a
//! deadline, and accepted only from this site with the right token.

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::{ANONYMOUS_LOGIN, CSRF};
use crate::answer;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::session::{Client, SessionState};
use crate::{App, Settings};

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A form posted to the proxy, checked: from this site, with a session and
/// that session's CSRF token.
pub(super) enum Posted {
    /// The form's fields.
    Form(Form),
    /// What to answer instead (403, 413, 400).
    Refused(Response<ProxyBody>),
}

/// Checks a form posted to the proxy: from this site, in time, with the
/// session's CSRF token, or, for a form that accepts `anonymous` clients
/// (login), with the client token the form was given to this client.
pub(super) async fn posted_form(
    settings: &Settings,
    app: &App,
    anonymous: Option<Client<'_>>,
    current: &mut SessionState,
    req: Request<Incoming>,
) -> Result<Posted, ProxyError> {
    if !same_origin_post(&req) {
        return Ok(Posted::Refused(csrf_failed()));
    }
    // A body that trickles in cannot hold a connection for ever.
    let deadline = settings.config.server.header_timeout;
    let form = match tokio::time::timeout(deadline, read_form(req)).await {
        Ok(Ok(form)) => form,
        Ok(Err(resp)) => return Ok(Posted::Refused(resp)),
        Err(_) => {
            return Ok(Posted::Refused(answer::text(
                StatusCode::REQUEST_TIMEOUT,
                "408 Request Timeout: the form did not arrive in time\n",
            )))
        }
    };
    let token = form.get("csrf").unwrap_or("");
    if !current.fresh && app.sessions.token_matches(CSRF, &current.id, token) {
        return Ok(Posted::Form(form));
    }
    // The login page gives a visitor without a session a client token (it
    // cannot know yet whether the cookie it sets will come back). Such a
    // token vouches only for a session that holds nothing.
    let client_token = anonymous.is_some_and(|client| {
        current.session.is_none()
            && app
                .sessions
                .client_token_matches(ANONYMOUS_LOGIN, token, client)
    });
    if !client_token {
        return Ok(Posted::Refused(csrf_failed()));
    }
    if !current.fresh {
        // The cookie came back: a cookie client.
        return Ok(Posted::Form(form));
    }
    if !app.sessions.cookieless() {
        return Ok(Posted::Refused(csrf_failed()));
    }
    // No cookie came back with the form: the client refuses cookies, and
    // the session the login makes is in URL mode.
    current.enter_url_mode();
    Ok(Posted::Form(form))
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

pub(super) fn csrf_failed() -> Response<ProxyBody> {
    answer::html(
        StatusCode::FORBIDDEN,
        "<!doctype html><meta charset=\"utf-8\"><title>Form expired</title>\
         <p>This form expired or did not come from this site. \
         <a href=\"/.cloakroom/login\">Open the sign-in page again</a>.</p>\n"
            .to_owned(),
    )
}

/// The decoded fields of a form body, first value of each name.
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
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
