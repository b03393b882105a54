//! Tags that bind something to the client a request came from: the URL
//! *ticket* (`ID.TAG`) that carries a session ID in URL mode, and client
//! tokens, which name no session (the login form's token for a visitor
//! without one, the probe's marker). All are keyed hashes under the
//! session keys, compared in constant time.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use http::header::{HeaderMap, HeaderValue};

use super::id::SessionId;
use super::{Sessions, CLOCK_SKEW_MS};

/// Label of the tag that binds a URL ticket to its client.
const URL_BINDING: &[u8] = b"url-binding";
/// Label prefix of the tokens that name no session, only a client.
const CLIENT_TOKEN: &[u8] = b"client-token:";

/// The client a request came from, as far as URL tickets and anonymous
/// form tokens are bound to it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The peer address.
    pub ip: IpAddr,
    /// The `User-Agent` header's bytes (empty when absent).
    pub user_agent: &'a [u8],
}

impl<'a> Client<'a> {
    /// The client of a request from `ip` with these headers.
    pub fn of(ip: IpAddr, headers: &'a HeaderMap) -> Client<'a> {
        let user_agent = headers
            .get(http::header::USER_AGENT)
            .map_or(&b""[..], HeaderValue::as_bytes);
        Client { ip, user_agent }
    }
}

impl Sessions {
    /// The ID part of a URL ticket, when the ticket was made for `client`
    /// (compared in constant time).
    pub(super) fn ticket_id<'t>(&self, ticket: &'t str, client: Client<'_>) -> Option<&'t str> {
        use subtle::ConstantTimeEq;
        let Some((id, tag)) = ticket.split_once('.') else {
            self.forged.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let expected = self.binding_tag(id, client);
        let bound =
            expected.len() == tag.len() && bool::from(expected.as_bytes().ct_eq(tag.as_bytes()));
        if !bound {
            let total = self.misbound.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(
                total,
                "a URL ticket was presented by a client it was not made for"
            );
            return None;
        }
        Some(id)
    }

    fn binding_tag(&self, id: &str, client: Client<'_>) -> String {
        use base64::Engine;
        let ip = match (self.bind_address, client.ip) {
            (false, _) => Vec::new(),
            (true, IpAddr::V4(v4)) => v4.octets().to_vec(),
            (true, IpAddr::V6(v6)) => v6.octets().to_vec(),
        };
        let tag = self
            .keys
            .derive(URL_BINDING, &[id.as_bytes(), &ip, client.user_agent]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..12])
    }

    /// The text that carries `id` in the URLs of `client`: `ID.TAG`.
    pub fn ticket(&self, id: &SessionId, client: Client<'_>) -> String {
        format!("{}.{}", id.as_str(), self.binding_tag(id.as_str(), client))
    }

    /// A token for `purpose` that names no session, bound to `client` and
    /// valid for one idle period: the login form's CSRF token for a visitor
    /// without a session (so the page leaks none), the probe's marker.
    pub fn client_token(&self, purpose: &[u8], client: Client<'_>) -> String {
        let issued = self.clock.now_ms() / 1000;
        format!("a{issued}.{}", self.client_tag(purpose, issued, client))
    }

    /// Whether `token` is a [`Sessions::client_token`] for `purpose` and
    /// `client` that has not expired (compared in constant time).
    pub fn client_token_matches(&self, purpose: &[u8], token: &str, client: Client<'_>) -> bool {
        use subtle::ConstantTimeEq;
        let Some((issued, tag)) = token.strip_prefix('a').and_then(|t| t.split_once('.')) else {
            return false;
        };
        let Ok(issued_secs) = issued.parse::<u64>() else {
            return false;
        };
        let now = self.clock.now_ms();
        let issued_ms = issued_secs.saturating_mul(1000);
        let idle = u64::try_from(self.lifetimes.idle.as_millis()).unwrap_or(u64::MAX);
        let live =
            issued_ms <= now.saturating_add(CLOCK_SKEW_MS) && now < issued_ms.saturating_add(idle);
        let expected = self.client_tag(purpose, issued_secs, client);
        live && expected.len() == tag.len() && bool::from(expected.as_bytes().ct_eq(tag.as_bytes()))
    }

    fn client_tag(&self, purpose: &[u8], issued_secs: u64, client: Client<'_>) -> String {
        use base64::Engine;
        let ip = client.ip.to_string();
        let tag = self.keys.derive(
            &[CLIENT_TOKEN, purpose].concat(),
            &[&issued_secs.to_be_bytes(), ip.as_bytes(), client.user_agent],
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..16])
    }

    /// How many URL tickets were presented by a client they were not made for.
    pub fn misbound(&self) -> u64 {
        self.misbound.load(Ordering::Relaxed)
    }
}
