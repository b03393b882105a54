//! [`handle`]: the life of one request, top to bottom.
//!
//! `handle` is the outer shell: it starts the request's log record, runs the
//! pipeline, turns any [`ProxyError`] into its short response, and attaches
//! the log record to the response body so the line is written once the last
//! byte has gone out. [`pipeline`] is the straight line of named steps —
//! reject, find the session, probe, reserved paths, access rules, forward,
//! commit the session, finish — each one either passing the request on or answering early; a
//! new capability is a new step here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::answer;
use crate::app_values;
use crate::body::{ProxyBody, Watched};
use crate::cache;
use crate::error::ProxyError;
use crate::hop;
use crate::identity::{self, UpstreamCommand};
use crate::login;
use crate::pages;
use crate::probe;
use crate::rewrite::{self, link, link::Origin, link::Ticket};
use crate::session::jar::Jar;
use crate::session::store::SessionKey;
use crate::session::{Client, Current, SessionState};
use crate::upstream::{Peer, TunnelEnds};
use crate::{App, Settings};

/// What a response body carries until it is finished: its log record.
pub type LoggedBody = Watched<ProxyBody, AccessLog>;

/// Answers one request. Never fails: every error becomes a response.
pub async fn handle(app: Arc<App>, peer: Peer, req: Request<Incoming>) -> Response<LoggedBody> {
    let started = Instant::now();
    let mut log = AccessLog::new(req.method().clone(), req.uri().path(), started);

    let (resp, upstream_time) = match pipeline(&app, peer, req).await {
        Ok(answer) => answer,
        Err(error) => {
            if error.is_store_unavailable() {
                // The store's breaker logs the outage once, not once a request.
                tracing::debug!(error = %error.chain(), "request failed: session store unavailable");
            } else {
                tracing::warn!(error = %error.chain(), status = error.status().as_u16(), "request failed");
            }
            (error_response(&error), None)
        }
    };

    log.answered(resp.status(), upstream_time);
    app.metrics
        .answered(resp.status().as_u16(), started.elapsed(), upstream_time);
    resp.map(|b| Watched::new(b, log))
}

/// The steps, in order. Each returns early with an error or a local answer;
/// every answer, local or relayed, then passes through [`finish`].
async fn pipeline(
    app: &App,
    peer: Peer,
    mut req: Request<Incoming>,
) -> Result<(Response<ProxyBody>, Option<Duration>), ProxyError> {
    // 1. Reject what a reverse proxy must not forward, and settle the path:
    //    an ambiguous one is refused, and the canonical one is both what the
    //    rules judge and what the upstream receives.
    check_forwardable(&req)?;
    settle_path(&mut req)?;
    // The settings in force when the request started serve it to its end.
    let settings = app.settings();
    // Behind a trusted balancer, the client is who the balancer says; the
    //    address, scheme and host used from here on are the client's.
    let peer = settings.trusted.client(peer, req.headers_mut());

    // 2. Find the session: a live ID this proxy signed, from the cookie or,
    //    for a client that refuses cookies, the URL; else a new one. A store
    //    that cannot answer fails the request (503): a session that cannot
    //    be checked is never taken as logged in. The login page alone is
    //    still shown, with a stand-in session whose cookie is not sent.
    let client = Client::of(peer.addr.ip(), req.headers());
    let mut state = match app
        .sessions
        .resolve(req.headers(), req.uri().query(), client)
        .await
    {
        Ok(state) => state,
        Err(error) if login::shown_without_store(&req) => {
            tracing::warn!(%error, "session store unavailable; the login page is shown without a session");
            app.sessions.stand_in()
        }
        Err(error) => return Err(error.into()),
    };
    state.set_client(peer.addr.ip());
    let page = Page::of(
        &req,
        peer,
        settings.config.session.secure,
        app.sessions.name(),
    );

    let (resp, upstream_time) = respond(app, &settings, peer, &mut state, req).await?;

    // 8. Commit: whatever the steps changed is written once, before the
    //    answer (and a new cookie) leaves.
    app.sessions.commit(&mut state).await?;
    recheck_password_login(app, &mut state).await?;
    Ok((finish(app, &state, &page, resp), upstream_time))
}

/// A password login checked against the users the request started with
/// is written by now; if a reload removed the user meanwhile, its
/// "everyone out" may have run before this session existed. The users in
/// force are read after the commit: either the reload's revocation saw the
/// new session, or this check sees the new users and ends it.
async fn recheck_password_login(app: &App, state: &mut SessionState) -> Result<(), ProxyError> {
    let Some(user) = state.take_password_login() else {
        return Ok(());
    };
    let still_there = app
        .settings()
        .users
        .as_ref()
        .is_some_and(|users| users.contains(&user));
    if !still_there {
        let revoked = app.sessions.revoke_user(&user).await?;
        tracing::info!(
            user,
            revoked,
            "login finished after the user was removed: logged out again"
        );
    }
    Ok(())
}

/// How often an open tunnel asks whether its session still holds.
const TUNNEL_RECHECK: Duration = Duration::from_secs(2);
/// Failed checks in a row (the store not answering) that close a tunnel.
const TUNNEL_UNCHECKED: u32 = 3;

/// Resolves when the session at `key` is no longer logged in as `user`
/// (ended through the sessions API, a logout, a removal from the users
/// file, expiry), or could not be checked three times in a row.
fn tunnel_ends(app: &App, key: SessionKey, user: &str) -> TunnelEnds {
    let sessions = app.sessions.clone();
    let user = user.to_owned();
    TunnelEnds(Box::pin(async move {
        let mut unchecked = 0;
        loop {
            tokio::time::sleep(TUNNEL_RECHECK).await;
            match sessions.still_logged_in(&key, &user).await {
                Ok(true) => unchecked = 0,
                Ok(false) => return,
                Err(_) => {
                    unchecked += 1;
                    if unchecked >= TUNNEL_UNCHECKED {
                        return;
                    }
                }
            }
        }
    }))
}

/// Steps 3 to 7: probe, reserved paths, access rules, forwarding.
async fn respond(
    app: &App,
    settings: &Settings,
    peer: Peer,
    state: &mut SessionState,
    mut req: Request<Incoming>,
) -> Result<(Response<ProxyBody>, Option<Duration>), ProxyError> {
    let path = req.uri().path();
    let reserved = login::is_reserved(path);
    let protected = !reserved && state.user().is_none() && settings.rules.requires_login(path);

    // 3. Cookie probe: a navigation without a usable ID learns whether the
    //    client takes cookies before any ID goes into a URL; URL mode starts
    //    or ends here.
    if app.sessions.cookieless() && !reserved && probe::is_navigation(&req) {
        let now = app.sessions.clock().now_ms();
        let answer = probe::answer(
            &app.probes,
            &app.sessions,
            &req,
            state,
            peer.addr.ip(),
            now,
            protected,
        )
        .await;
        if let Some(resp) = answer {
            state.want_cookie();
            return Ok((resp, None));
        }
    }

    // 4. Reserved paths: the proxy's own pages never reach the upstream.
    if reserved {
        return Ok((pages::answer(app, settings, peer, state, req).await?, None));
    }

    // 5. Access rules: a protected path needs a logged-in session.
    if protected {
        // A browser sent to the login page starts its session here; a 401
        // for an API client starts nothing.
        if login::wants_html(&req) {
            state.want_cookie();
        }
        return Ok((login::challenge(&req, app.sessions.name()), None));
    }

    // 6. Forward: the session cookie, the URL ID and the probe marker are
    //    the proxy's alone, and so is the identity header; the rest of the
    //    request is rewritten for the upstream and bodies stream both ways.
    // Hop-by-hop headers go first, so that none the proxy sets below can
    // be nominated away by `Connection`.
    let upgrade = hop::requested_upgrade(req.headers());
    hop::strip(req.headers_mut());
    clean_target(&mut req, app.sessions.name())?;
    app.sessions.strip_cookie(req.headers_mut());
    scrub_id(req.headers_mut(), app.sessions.name(), state);
    settings.identity.apply(req.headers_mut(), state.user());
    tell_upstream(app, settings, state, req.headers_mut());
    // In URL mode the client keeps no cookies: the application's own come
    // from the session's jar.
    let url_mode_path = state.in_url.then(|| req.uri().path().to_owned());
    let jar_sent = url_mode_path
        .as_ref()
        .is_some_and(|path| send_kept_cookies(app, state, path, req.headers_mut()));
    // The application is told this session's values or its kept cookies:
    // its answer may show them (see the end of this step).
    let told = jar_sent || req.headers().contains_key(&app_values::VALUES_HEADER);
    let sent = Instant::now();
    // A tunnel opened by a logged-in session lives only as long as it does.
    let ends = match (&upgrade, state.user()) {
        (Some(_), Some(user)) => Some(tunnel_ends(app, state.id.key(), user)),
        _ => None,
    };
    let mut resp = settings.upstream.forward(req, peer, upgrade, ends).await?;
    let upstream_time = sent.elapsed();

    // 7. In URL mode, the application's Set-Cookies go into the jar. The
    //    upstream may drive the session (when allowed); its control headers
    //    never reach the client.
    if let Some(path) = &url_mode_path {
        if resp.headers().contains_key(header::SET_COOKIE) {
            keep_upstream_cookies(app, peer, state, path, resp.headers_mut()).await;
        }
    }
    match identity::take_upstream_command(resp.headers_mut()) {
        Some(command) if settings.config.identity.upstream_control => {
            upstream_drives(app, state, command);
        }
        Some(_) => {
            tracing::debug!("ignored an upstream session header (identity.upstream_control is off)")
        }
        None => {}
    }
    // After a login above, so that values set with it land in the new session.
    let values_set = keep_app_values(app, settings, peer, state, resp.headers_mut()).await;
    // An answer made with this session's data, or that set it, must not be
    // handed by a shared cache to anyone else. A logged-in session's
    // answers, local ones too, are marked in `finish`.
    if (told || values_set) && state.user().is_none() {
        cache::keep_private(resp.headers_mut());
    }
    Ok((resp, Some(upstream_time)))
}

/// 9. Answer: the session the request leaves behind gets its cookie (or,
///    after a logout, its cookie expired); in URL mode, links and
///    redirects carry its ticket.
fn finish(
    app: &App,
    state: &SessionState,
    page: &Page,
    mut resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    if state.ended() {
        resp.headers_mut()
            .append(header::SET_COOKIE, app.sessions.expire_cookie());
        cache::keep_private(resp.headers_mut());
        return resp;
    }
    let after: &Current = state;
    if page.from_url_mode && !after.in_url {
        rewrite::guard_referrer(resp.headers_mut());
    }
    if app.sessions.cookieless() {
        let status = resp.status();
        rewrite::temper_redirect_policy(status, resp.headers_mut());
    }
    let cookie = (!state.is_stand_in() && state.cookie_needed())
        .then(|| app.sessions.set_cookie(after, page.tls))
        .flatten();
    // An answer that carries a new session, or that was made for a
    // logged-in user (the application was told who, and the path may be
    // protected), must not be handed by a shared cache in front of the
    // proxy to anyone else: an anonymous visitor would get it without
    // logging in.
    let private = cookie.is_some() || after.user().is_some();
    if let Some(cookie) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if private {
        cache::keep_private(resp.headers_mut());
    }
    if after.in_url {
        app.metrics.url_mode_page();
        let client = Client {
            ip: page.ip,
            user_agent: page
                .user_agent
                .as_ref()
                .map_or(&b""[..], HeaderValue::as_bytes),
        };
        let ticket = Ticket {
            name: app.sessions.name().to_owned(),
            id: app.sessions.ticket(&after.id, client),
        };
        resp = rewrite::for_url_mode(resp, page.origin().as_ref(), &ticket, page.head);
    }
    resp
}

/// What the finishing step needs to know of the request.
struct Page {
    /// The request target as sent (cheap to keep: its parts are shared bytes).
    uri: Uri,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    ip: std::net::IpAddr,
    /// The request's `Referer` is a page seen in URL mode (it holds the
    /// session parameter): a subresource of such a page.
    from_url_mode: bool,
    tls: bool,
    head: bool,
}

impl Page {
    /// `secure`: the client is known to use https even if this hop is
    /// plain (`session.secure`, behind a TLS-terminating balancer), so
    /// absolute links written in URL mode must say https.
    fn of<B>(req: &Request<B>, peer: Peer, secure: bool, name: &str) -> Page {
        Page {
            uri: req.uri().clone(),
            host: req.headers().get(header::HOST).cloned(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            ip: peer.addr.ip(),
            from_url_mode: req.headers().get(header::REFERER).is_some_and(|r| {
                r.as_bytes()
                    .windows(name.len() + 1)
                    .any(|w| w.ends_with(b"=") && &w[..name.len()] == name.as_bytes())
            }),
            tls: peer.tls || secure,
            head: req.method() == Method::HEAD,
        }
    }

    /// The page as the client addressed it, for same-origin checks (only
    /// URL mode needs it, so it is built only then).
    fn origin(&self) -> Option<Origin> {
        let host = match self.uri.authority() {
            Some(a) => a.as_str(),
            None => self.host.as_ref()?.to_str().ok()?,
        };
        let scheme = if self.tls { "https" } else { "http" };
        let target = self.uri.path_and_query().map_or("/", |pq| pq.as_str());
        Origin::new(scheme, host, target)
    }
}

/// Removes the session parameter and the probe marker from the request
/// target; every other byte of it stays as the client sent it.
fn clean_target<B>(req: &mut Request<B>, name: &str) -> Result<(), ProxyError> {
    let url = probe::UrlState::of(req.uri().query(), name);
    if !url.dirty() {
        return Ok(());
    }
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let cleaned = link::strip_param(&link::strip_param(target, probe::MARKER), name);
    set_target(req, cleaned)
}

/// Replaces the request's path and query, keeping scheme and authority.
fn set_target<B>(req: &mut Request<B>, target: String) -> Result<(), ProxyError> {
    const BAD: ProxyError = ProxyError::BadRequest("bad request target\n");
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| BAD)?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| BAD)?;
    Ok(())
}

/// Keeps the session ID out of every header the upstream receives. A page
/// seen in URL mode sends its address, ID and all, as `Referer`: the
/// parameter is cut from it. In URL mode, any other header that still holds
/// the ID (a client echoing its address elsewhere) is dropped.
fn scrub_id(headers: &mut http::HeaderMap, name: &str, current: &Current) {
    let id = current.id.as_str().as_bytes();
    let holds = |v: &HeaderValue, needle: &[u8]| contains(v.as_bytes(), needle);
    if let Some(referer) = headers.get(header::REFERER) {
        if holds(referer, name.as_bytes()) || holds(referer, id) {
            // Browsers send no fragment in Referer; the query is cut as usual.
            let cleaned = referer
                .to_str()
                .ok()
                .map(|r| link::strip_param(r, name))
                .and_then(|c| HeaderValue::from_str(&c).ok())
                .filter(|c| !holds(c, name.as_bytes()) && !holds(c, id));
            match cleaned {
                Some(value) => headers.insert(header::REFERER, value),
                None => headers.remove(header::REFERER),
            };
        }
    }
    if current.in_url && !current.fresh {
        let doomed: Vec<header::HeaderName> = headers
            .iter()
            .filter(|(_, v)| holds(v, id))
            .map(|(n, _)| n.clone())
            .collect();
        for name in doomed {
            headers.remove(&name);
        }
    }
}

/// Whether `needle` occurs in `haystack` (header values are short).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Adds the cookies the application set earlier (kept in the jar) to a
/// URL-mode request; whether there were any.
fn send_kept_cookies(
    app: &App,
    current: &Current,
    path: &str,
    headers: &mut http::HeaderMap,
) -> bool {
    let Some(session) = &current.session else {
        return false;
    };
    let now = app.sessions.clock().now_ms();
    let Some(kept) = Jar::of(session).header_for(path, now) else {
        return false;
    };
    let value = match headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) {
        Some(own) => format!("{own}; {kept}"),
        None => kept,
    };
    match HeaderValue::from_str(&value) {
        Ok(value) => {
            headers.insert(header::COOKIE, value);
            true
        }
        Err(_) => false,
    }
}

/// Moves the application's `Set-Cookie`s from a URL-mode response into the
/// session's jar (the client would drop them); the session is saved at commit.
async fn keep_upstream_cookies(
    app: &App,
    peer: Peer,
    state: &mut SessionState,
    path: &str,
    headers: &mut http::HeaderMap,
) {
    let now = app.sessions.clock().now_ms();
    if state.session.is_none()
        && !app
            .sessions
            .may_create_anonymous(peer.addr.ip(), &state.id.key())
            .await
    {
        tracing::info!(ip = %peer.addr.ip(), "URL-mode cookies not kept: this address made too many new sessions");
        headers.remove(header::SET_COOKIE);
        return;
    }
    let session = state.record_mut(now);
    let mut jar = Jar::of(session);
    for set in headers.get_all(header::SET_COOKIE) {
        if let Ok(text) = set.to_str() {
            jar.absorb(text, path, now);
        }
    }
    headers.remove(header::SET_COOKIE);
    jar.store(session);
}

/// What the proxy itself tells the application, beside the identity header
/// (whose client-sent copies, and these headers', are gone by now): the
/// signed assertion of a logged-in session, and the session's values.
fn tell_upstream(app: &App, settings: &Settings, state: &SessionState, headers: &mut HeaderMap) {
    if let (Some(assertion), Some(user)) = (&settings.assertion, state.user()) {
        let key = state.id.key();
        let now = app.sessions.clock().now_ms() / 1000;
        if let Some(token) = assertion.token(key, user, now, || app.sessions.key_hash(&key)) {
            headers.insert(assertion.header().clone(), token);
        }
    }
    if settings.config.session.app_values {
        if let Some(value) = state
            .session
            .as_ref()
            .and_then(|s| app_values::header_value(&s.app))
        {
            headers.insert(app_values::VALUES_HEADER.clone(), value);
        }
    }
}

/// Takes the application's `X-Cloakroom-Session-Set`/`-Unset` off the
/// response (a client never sees them, nor a copy of what the proxy sent)
/// and, with `session.app_values`, applies them to the session (written at
/// commit). A change that breaks a rule is refused whole and logged; the
/// response goes on either way. Whether the values changed.
async fn keep_app_values(
    app: &App,
    settings: &Settings,
    peer: Peer,
    state: &mut SessionState,
    headers: &mut HeaderMap,
) -> bool {
    headers.remove(&app_values::VALUES_HEADER);
    if let Some(assertion) = &settings.assertion {
        headers.remove(assertion.header());
    }
    let Some(change) = app_values::Change::take(headers) else {
        return false;
    };
    if !settings.config.session.app_values {
        tracing::debug!("ignored X-Cloakroom-Session-Set/-Unset (session.app_values is off)");
        return false;
    }
    let mut values = state
        .session
        .as_ref()
        .map(|s| s.app.clone())
        .unwrap_or_default();
    match change.and_then(|c| c.apply(&mut values)) {
        Ok(false) => false,
        Ok(true) => {
            if state.session.is_none()
                && !app
                    .sessions
                    .may_create_anonymous(peer.addr.ip(), &state.id.key())
                    .await
            {
                tracing::info!(ip = %peer.addr.ip(), "session values not kept: this address made too many new sessions");
                return false;
            }
            let now = app.sessions.clock().now_ms();
            state.record_mut(now).app = values;
            true
        }
        Err(refused) => {
            let session = app.sessions.key_hash(&state.id.key());
            tracing::warn!(%refused, session, "session values from the application refused; the earlier values stay");
            false
        }
    }
}

/// Carries out an upstream's `X-Cloakroom-Login`/`-Logout` (written at commit).
fn upstream_drives(app: &App, state: &mut SessionState, command: UpstreamCommand) {
    match command {
        UpstreamCommand::Login(user) => {
            app.sessions.login(state, &user, false);
            let session = app.sessions.key_hash(&state.id.key());
            tracing::info!(user, session, "login by the upstream");
        }
        UpstreamCommand::Logout => {
            tracing::info!(user = state.user(), "logout by the upstream");
            app.sessions.logout(state);
        }
    }
}

/// Replaces the path by its canonical form, or refuses it (see [`crate::target`]).
fn settle_path<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let canonical = match crate::target::canonical(req.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
        Ok(std::borrow::Cow::Owned(path)) => path,
        Err(refused) => return Err(ProxyError::BadRequest(refused.message())),
    };
    let target = match req.uri().query() {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical,
    };
    set_target(req, target)
}

/// A reverse proxy forwards requests for paths; it opens no tunnels. And
/// the host it forwards (or compares links to) is one host: RFC 9112 §3.2
/// asks for a 400 when `Host` is missing from an HTTP/1.1 request, appears
/// more than once, or is not a valid `host[:port]`. The authority of an
/// absolute-form target or of HTTP/2's `:authority` (which take the place
/// of `Host`) is held to the same rule: no user info, a real port.
fn check_forwardable(req: &Request<Incoming>) -> Result<(), ProxyError> {
    const BAD_HOST: ProxyError = ProxyError::BadRequest("bad Host header\n");
    if req.method() == Method::CONNECT {
        return Err(ProxyError::ConnectNotAllowed);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() || host.is_some_and(|h| !valid_host(h.as_bytes())) {
        return Err(BAD_HOST);
    }
    let authority = req.uri().authority();
    if authority.is_some_and(|a| !valid_host(a.as_str().as_bytes())) {
        return Err(BAD_HOST);
    }
    // An absolute-form target does not excuse the header (RFC 9112 §3.2);
    // HTTP/2 has `:authority` instead.
    if host.is_none() && req.version() == http::Version::HTTP_11 {
        return Err(ProxyError::BadRequest(
            "an HTTP/1.1 request needs a Host header\n",
        ));
    }
    Ok(())
}

/// `host[:port]` as RFC 3986 allows it in an authority, without user info,
/// and with a port, when there is one, of 1 to 65535 written plainly.
fn valid_host(value: &[u8]) -> bool {
    let parsed = http::uri::Authority::try_from(value);
    let Ok(authority) = parsed else {
        return false;
    };
    if value.contains(&b'@')
        || authority.as_str().len() != value.len()
        || authority.host().is_empty()
    {
        return false;
    }
    // The port is what follows the last `:` outside an IPv6 literal.
    let after_host = match value.iter().rposition(|&b| b == b']') {
        Some(end) => &value[end + 1..],
        None => value,
    };
    match after_host.iter().position(|&b| b == b':') {
        None => true,
        Some(at) => {
            let port = &after_host[at + 1..];
            !port.is_empty()
                && port.len() <= 5
                && port[0] != b'0'
                && port.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(port)
                    .ok()
                    .and_then(|p| p.parse::<u16>().ok())
                    .is_some()
        }
    }
}

/// The short plain-text response for an error.
pub fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    answer::text(error.status(), error.body())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_host_header_is_one_host_and_port() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "xn--bcher-kva.example",
        ] {
            assert!(super::valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "evil.com/path",
            "a@b",
            "@b",
            "a:80@evil.example",
            "a b",
            "x?y",
            "x#y",
            "a:b:c",
            "a.example:99999",
            "a.example:0080",
            "a.example:",
            "a.example:0",
            "[::1]:",
        ] {
            assert!(!super::valid_host(bad.as_bytes()), "{bad}");
        }
    }
}
