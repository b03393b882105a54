//! Tags that bind something to the client a request came from: the URL
//! *ticket* (`ID.TAG`) that carries a session ID in URL mode, and client
//! tokens, which name no session (the login form's token for a visitor
//! without one, the probe's marker). All are keyed hashes under the
//! session keys, compared in constant time.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use http::header::{HeaderMap, HeaderValue};

use super::id::SessionId;
use super::{same_secret, Sessions};

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

    /// The address as 16 bytes (IPv4 mapped into IPv6), for keyed tags.
    fn address(&self) -> [u8; 16] {
        match self.ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }
}

impl Sessions {
    /// The ID part of a URL ticket, when the ticket was made for `client`
    /// (compared in constant time).
    pub(super) fn ticket_id<'t>(&self, ticket: &'t str, client: Client<'_>) -> Option<&'t str> {
        let Some((id, tag)) = ticket.split_once('.') else {
            self.forged.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if !same_secret(&self.binding_tag(id, client), tag) {
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
        let address = client.address();
        let address: &[u8] = if self.bind_address { &address } else { &[] };
        let tag = self
            .keys
            .derive(URL_BINDING, &[id.as_bytes(), address, client.user_agent]);
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
        let Some((issued, tag)) = token.strip_prefix('a').and_then(|t| t.split_once('.')) else {
            return false;
        };
        let Ok(issued_secs) = issued.parse::<u64>() else {
            return false;
        };
        self.within_one_idle_period(issued_secs, self.clock.now_ms())
            && same_secret(&self.client_tag(purpose, issued_secs, client), tag)
    }

    fn client_tag(&self, purpose: &[u8], issued_secs: u64, client: Client<'_>) -> String {
        use base64::Engine;
        let tag = self.keys.derive(
            &[CLIENT_TOKEN, purpose].concat(),
            &[
                &issued_secs.to_be_bytes(),
                &client.address(),
                client.user_agent,
            ],
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag[..16])
    }

    /// How many URL tickets were presented by a client they were not made for.
    pub fn misbound(&self) -> u64 {
        self.misbound.load(Ordering::Relaxed)
    }
}
