//! The cookie probe: find out whether a new visitor takes cookies before
//! ever putting an ID into a URL.
//!
//! A navigation GET with no usable ID (no valid cookie, no valid URL ID) gets
//! the cookie and a redirect to the same URL plus a marker that holds no ID.
//! When the marked URL comes back *with* the cookie, the client takes
//! cookies: it is sent to the clean URL and never sees an ID in an address.
//! When it comes back *without*, the client refuses cookies: it is sent to
//! the URL with `?CLOAKROOMSID=…` and served in URL mode from then on.
//!
//! Loops are impossible: the marker turns the second answer into a final
//! one, and a client that also drops query strings (so never shows the
//! marker) is probed at most [`MAX_PROBES`] times per [`WINDOW_MS`], then
//! served as it is.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use dashmap::DashMap;
use http::{Method, Request, Response, StatusCode};

use crate::answer;
use crate::body::ProxyBody;
use crate::rewrite::link::{self, Ticket};
use crate::session::{Client, SessionState, Sessions};

/// The query parameter that marks a probe's return. It holds no ID.
pub const MARKER: &str = "cloakroom-probe";
/// Probes per client (address and user agent) within [`WINDOW_MS`].
pub const MAX_PROBES: u32 = 3;
/// The window of the loop guard.
pub const WINDOW_MS: u64 = 60_000;
/// Most clients tracked; past it, new clients are probed without being
/// tracked: a flood of distinct clients cannot switch probing off for
/// everyone (the guard fails closed, towards probing).
const MAX_TRACKED: usize = 100_000;
/// Purpose label of the probe marker's client token.
const PROBE_TOKEN: &[u8] = b"probe";

/// Recent probes per client, so that no client is probed in a loop: in
/// this process, or (with the Redis store) counted in Redis, so that a
/// client bounced between instances is not probed N times as often.
#[derive(Default)]
pub struct Probes {
    recent: DashMap<u64, (u64, u32)>,
    shared: Option<crate::redis::Redis>,
}

impl Probes {
    /// Probes counted in `redis` (key `probe:<keyed hash of the client>`).
    pub fn shared(redis: crate::redis::Redis) -> Probes {
        Probes {
            recent: DashMap::new(),
            shared: Some(redis),
        }
    }

    /// Counts a probe for this client; `false` when it has had enough. A
    /// Redis that cannot be asked lets the probe happen (the guard fails
    /// towards probing, as it does when full).
    async fn allow_for(&self, sessions: &Sessions, client: Client<'_>, now: u64) -> bool {
        let Some(redis) = &self.shared else {
            return self.allow(client.ip, client.user_agent, now);
        };
        let ip = client.ip.to_string();
        let tag = sessions.keyed_hash(b"probe guard", &[ip.as_bytes(), client.user_agent]);
        let key = redis.key(&format!(
            "probe:{}",
            crate::session::store::SessionKey::from_nonce(tag).hex()
        ));
        redis
            .admit_in_window(&key, now, WINDOW_MS, MAX_PROBES, None)
            .await
            .unwrap_or(true)
    }

    /// Counts a probe for this client; `false` when it has had enough.
    fn allow(&self, ip: IpAddr, user_agent: &[u8], now: u64) -> bool {
        let mut hasher = DefaultHasher::new();
        (ip, user_agent).hash(&mut hasher);
        let key = hasher.finish();
        if let Some(mut entry) = self.recent.get_mut(&key) {
            let (started, count) = *entry;
            if now >= started + WINDOW_MS {
                *entry = (now, 1);
                return true;
            }
            entry.1 = count.saturating_add(1);
            return count < MAX_PROBES;
        }
        if self.recent.len() >= MAX_TRACKED {
            return true;
        }
        self.recent.insert(key, (now, 1));
        true
    }

    /// Forgets clients whose window has passed.
    pub fn purge(&self, now: u64) {
        self.recent
            .retain(|_, (started, _)| now < *started + WINDOW_MS);
    }
}

/// What a request's URL says about URL mode and probing.
pub struct UrlState {
    /// The probe marker is present.
    pub marker: bool,
    /// A session parameter is present (valid or not).
    pub param: bool,
}

impl UrlState {
    /// Reads `query` for the marker and the session parameter `name`.
    pub fn of(query: Option<&str>, name: &str) -> UrlState {
        let query = query.unwrap_or("");
        UrlState {
            marker: link::param(query, MARKER).is_some(),
            param: link::param(query, name).is_some(),
        }
    }

    /// Whether the URL needs cleaning before it goes upstream.
    pub fn dirty(&self) -> bool {
        self.marker || self.param
    }
}

/// A navigation: a GET for a page (`Accept` includes `text/html`).
pub fn is_navigation<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET && crate::login::wants_html(req)
}

/// The probe's answer to a navigation, if it needs one; `None` lets the
/// request go on. `protected` paths are left to the login redirect, which
/// carries the cookie too (one redirect, not two).
///
/// The marker's value is a token bound to the client that was probed
/// ([`Sessions::client_token`]): a link that carries a marker made for
/// someone else (to push a cookie-keeping visitor into URL mode) counts as
/// no marker, and that visitor is simply probed.
pub async fn answer<B>(
    probes: &Probes,
    sessions: &Sessions,
    req: &Request<B>,
    current: &mut SessionState,
    ip: IpAddr,
    now: u64,
    protected: bool,
) -> Option<Response<ProxyBody>> {
    let name = sessions.name();
    let client = Client::of(ip, req.headers());
    let url = UrlState::of(req.uri().query(), name);
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let clean = || link::strip_param(&link::strip_param(target, MARKER), name);
    if !current.fresh && !current.in_url {
        // A valid cookie: a probe that came back, or a URL-mode client that
        // took the cookie at last. Either way, on to the clean URL.
        return url
            .dirty()
            .then(|| answer::redirect(StatusCode::FOUND, &clean()));
    }
    let with_ticket = || {
        let ticket = Ticket {
            name: name.to_owned(),
            id: sessions.ticket(&current.id, client),
        };
        link::with_ticket(&clean(), &ticket)
    };
    if current.in_url {
        return url
            .marker
            .then(|| answer::redirect(StatusCode::FOUND, &with_ticket()));
    }
    // A new ID: no usable cookie, no usable URL ID.
    let marker = link::param(req.uri().query().unwrap_or(""), MARKER);
    if marker.is_some_and(|m| sessions.client_token_matches(PROBE_TOKEN, m, client)) {
        // The probe came back without the cookie: URL mode, and no cookie
        // of this ID is ever set.
        let resp = answer::redirect(StatusCode::FOUND, &with_ticket());
        current.enter_url_mode();
        return Some(resp);
    }
    if protected {
        return None;
    }
    if !probes.allow_for(sessions, client, now).await {
        return None;
    }
    let probe = link::with_ticket(
        &clean(),
        &Ticket {
            name: MARKER.to_owned(),
            id: sessions.client_token(PROBE_TOKEN, client),
        },
    );
    Some(answer::redirect(StatusCode::FOUND, &probe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_loop_guard_keeps_probing() {
        // Filled with distinct clients (say, by an attacker varying its
        // User-Agent), the guard must not switch probing off for everyone.
        let p = Probes::default();
        for key in 0..MAX_TRACKED as u64 {
            p.recent.insert(key, (0, 1));
        }
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_PROBES + 2 {
            assert!(p.allow(ip, b"a new visitor", 1), "probing was switched off");
        }
        assert_eq!(p.recent.len(), MAX_TRACKED, "the guard grew past its cap");
    }

    #[test]
    fn the_loop_guard_stops_after_a_few_probes() {
        let p = Probes::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_PROBES {
            assert!(p.allow(ip, b"ua", 0));
        }
        assert!(!p.allow(ip, b"ua", 1));
        assert!(p.allow(ip, b"other ua", 1));
        assert!(p.allow(ip, b"ua", WINDOW_MS), "the window passed");
        p.purge(WINDOW_MS * 3);
        assert!(p.recent.is_empty());
    }
}
