//! [`SessionState`]: one request's session, changed by the steps that
//! handle it (login, logout, the upstream's control headers, URL mode's
//! cookie jar) and written once, by [`super::Sessions::commit`], before the
//! answer leaves. A network store gets one round trip per request at most,
//! and the finishing step reads what the session became from here, not
//! from the response.

use std::ops::Deref;

use super::data::Session;
use super::id::SessionId;
use super::Current;

/// The visitor's session for one request, and what must be written.
#[derive(Debug)]
pub struct SessionState {
    pub(super) current: Current,
    /// An ID to end at commit: the one a login replaced, or the one a
    /// logout ends.
    pub(super) revoke: Option<SessionId>,
    /// The record was loaded from the store (a save updates it); else a
    /// save creates it.
    pub(super) loaded: bool,
    /// The record changed: save it.
    pub(super) dirty: bool,
    /// The stored "last seen" is older than the touch interval: save it.
    pub(super) touch: bool,
    /// Logged out: the cookie is expired and nothing is saved.
    pub(super) ended: bool,
    /// The client's address, recorded in a record this request creates.
    pub(super) client_ip: Option<std::net::IpAddr>,
    /// A stand-in while the store cannot be asked: never sent as a cookie,
    /// so the client keeps the one it has.
    pub(super) stand_in: bool,
    /// The user a password login of this request logged in, checked again
    /// after the commit (a reload may have removed them meanwhile).
    password_login: Option<String>,
    /// The record as loaded, kept when this request first changed it: the
    /// commit writes only what the request changed onto the latest record
    /// (a concurrent request's change is not undone).
    pub(super) original: Option<Session>,
    /// A new session's cookie is to be sent although nothing is stored
    /// (the probe, the proxy's own pages, a login challenge).
    cookie_wanted: bool,
}

impl SessionState {
    pub(super) fn new(current: Current, touch: bool) -> SessionState {
        SessionState {
            loaded: current.session.is_some(),
            current,
            revoke: None,
            dirty: false,
            touch,
            ended: false,
            client_ip: None,
            stand_in: false,
            password_login: None,
            original: None,
            cookie_wanted: false,
        }
    }

    /// Sends a new session's cookie with this answer even if nothing is
    /// stored for it: the probe must see it come back, and the login form
    /// and a login challenge start the session the login will continue.
    pub fn want_cookie(&mut self) {
        self.cookie_wanted = true;
    }

    /// Whether a new session's cookie goes out with this answer: only when
    /// something is stored for it or it was asked for. An anonymous
    /// stylesheet, image or API call gets no `Set-Cookie` (and so stays
    /// cacheable by a shared cache).
    pub fn cookie_needed(&self) -> bool {
        self.current.session.is_some() || self.cookie_wanted
    }

    /// Notes that this request logged `user` in with a password.
    pub fn note_password_login(&mut self, user: &str) {
        self.password_login = Some(user.to_owned());
    }

    /// The user a password login of this request logged in, once.
    pub fn take_password_login(&mut self) -> Option<String> {
        self.password_login.take()
    }

    /// The client's address, for a record this request creates.
    pub fn set_client(&mut self, ip: std::net::IpAddr) {
        self.client_ip = Some(ip);
    }

    /// Whether this is a stand-in for a session the store could not
    /// answer for (see [`super::Sessions::stand_in`]).
    pub fn is_stand_in(&self) -> bool {
        self.stand_in
    }

    /// Whether the session was ended by this request (logout).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// From this answer on, the session travels in URLs (the probe found
    /// that the client refuses cookies, or a login form came without one).
    pub fn enter_url_mode(&mut self) {
        self.current.in_url = true;
    }

    /// The session's record, to change (it is saved at commit). A session
    /// that had nothing stored gets an empty record created at `now`.
    pub fn record_mut(&mut self, now: u64) -> &mut Session {
        self.dirty = true;
        if self.loaded && self.original.is_none() {
            self.original = self.current.session.clone();
        }
        self.current
            .session
            .get_or_insert_with(|| Session::new(now))
    }
}

impl Deref for SessionState {
    type Target = Current;

    fn deref(&self) -> &Current {
        &self.current
    }
}
