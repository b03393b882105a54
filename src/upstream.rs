//! [`Upstream::forward`]: sends a client's request to the application over a
//! pooled keep-alive HTTP/1.1 connection ([`crate::pool`]) and relays the
//! answer, tunnelling the bytes of a protocol upgrade (WebSocket) once both
//! sides agreed to it.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::body::{self, ProxyBody};
use crate::config::{ConfigError, UpstreamConfig};
use crate::error::ProxyError;
use crate::hop;
use crate::pool::{Link, Outgoing, Pool, Relayed};

pub use crate::forwarded::Peer;

/// The application behind the proxy and a connection pool to it.
pub struct Upstream {
    /// Idle keep-alive connections.
    pool: Arc<Pool>,
    /// Makes new connections: TCP, and TLS for `https://`.
    connector: HttpsConnector<HttpConnector>,
    /// The connector's target: the upstream's scheme and authority.
    origin: Uri,
    /// The upstream's authority as the `Host` it gets (unless
    /// `preserve_host`); made once, cloned by reference count.
    host: HeaderValue,
    /// The upstream URL's path without its trailing slash; prefixed to every path.
    prefix: String,
    timeout: Duration,
    preserve_host: bool,
}

/// The TLS client settings for `https://` upstreams.
fn upstream_tls(config: &UpstreamConfig) -> Result<rustls::ClientConfig, ConfigError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let error = |message: String| ConfigError::Key {
        key: "upstream.ca_file".into(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| error(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| error(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| error(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(error(format!(
                    "{}: no certificate in the file",
                    path.display()
                )));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system root rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Upstream {
    /// A pooled client for `config.url`.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, ConfigError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        // https:// upstreams: rustls (ring), the system's roots or
        // upstream.ca_file's, SNI from the URL's host.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(upstream_tls(config)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let url = &config.url;
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let bad_authority = || ConfigError::Key {
            key: "upstream.url".into(),
            message: format!("{authority:?} is not a valid host and port"),
        };
        let authority: Authority = authority.parse().map_err(|_| bad_authority())?;
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| bad_authority())?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| bad_authority())?;
        Ok(Upstream {
            pool: Pool::new(config.pool_max_idle, config.pool_idle_timeout),
            connector,
            origin,
            host,
            prefix: url.path().trim_end_matches('/').to_owned(),
            timeout: config.timeout,
            preserve_host: config.preserve_host,
        })
    }

    /// Whether a new connection to the upstream can be made within `wait`:
    /// TCP, and for `https://` the TLS handshake with the certificate
    /// checked (what every forwarded request depends on), but no request.
    pub async fn reachable(&self, wait: Duration) -> bool {
        matches!(tokio::time::timeout(wait, self.connect()).await, Ok(Ok(_)))
    }

    /// A new connection to the upstream (TCP, and TLS for `https://`),
    /// within `upstream.connect_timeout`.
    async fn connect(&self) -> Result<Link, ProxyError> {
        use tower_service::Service;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(ProxyError::UpstreamConnect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(ProxyError::UpstreamConnect)?;
        Link::open(io)
            .await
            .map_err(|e| ProxyError::UpstreamConnect(e.into()))
    }

    /// Sends `req` on an idle connection, or a new one, and returns the
    /// response head with the connection that carries its body.
    ///
    /// A pooled connection can close just as a request goes out on it (the
    /// upstream's keep-alive timeout, a restart). A request that never left
    /// is sent again on another connection; so is a bodiless `GET`, `HEAD`
    /// or `OPTIONS` that left but got no answer, on a new connection (as
    /// nginx does for idempotent requests). Anything else gets the error.
    async fn send(
        &self,
        mut req: Request<Outgoing>,
    ) -> Result<(Response<Incoming>, Link), ProxyError> {
        loop {
            let (mut link, pooled) = match self.pool.checkout().await {
                Some(link) => (link, true),
                // Boxed, here and below: a new connection's future (TCP,
                // TLS) is several KB, and it would otherwise size (and be
                // moved with) every request's future, pooled or not.
                None => (Box::pin(self.connect()).await?, false),
            };
            let again = pooled.then(|| replayable(&req)).flatten();
            match link.send(req).await {
                Ok(resp) => return Ok((resp, link)),
                Err(mut e) => match (e.take_message(), again) {
                    (Some(unsent), _) if pooled => req = unsent,
                    (_, Some(again)) => {
                        tracing::debug!(error = %e.error(), "pooled upstream connection failed; sending again");
                        let mut link = Box::pin(self.connect()).await?;
                        return match link.send(again).await {
                            Ok(resp) => Ok((resp, link)),
                            Err(e) => Err(ProxyError::UpstreamFailed(e.into_error().into())),
                        };
                    }
                    _ => return Err(ProxyError::UpstreamFailed(e.into_error().into())),
                },
            }
        }
    }

    /// Sends an upgrade request on a connection of its own, which runs in
    /// its own task so that the tunnel can take it over after a 101.
    async fn send_upgrade(&self, req: Request<Outgoing>) -> Result<Response<Incoming>, ProxyError> {
        let mut sender = self.connect().await?.spawn_with_upgrades();
        sender
            .send_request(req)
            .await
            .map_err(|e| ProxyError::UpstreamFailed(e.into()))
    }

    /// Sends `req` upstream and returns the upstream's response head with its
    /// body still streaming.
    ///
    /// Errors: no connection → [`ProxyError::UpstreamConnect`]; no response
    /// head within `upstream.timeout` → [`ProxyError::UpstreamTimeout`];
    /// anything else on the way → [`ProxyError::UpstreamFailed`].
    /// `upgrade` is the WebSocket upgrade the client asked for (read by
    /// [`hop::requested_upgrade`] before its hop-by-hop headers were stripped).
    /// `ends`, for an upgrade, resolves when the tunnel must close (its
    /// session ended).
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        upgrade: Option<HeaderValue>,
        ends: Option<TunnelEnds>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let slot = req.extensions_mut().remove::<TunnelSlot>();
        let outgoing = self.prepare(req, peer, upgrade)?.map(Outgoing::new);

        let mut resp = if client_side.is_some() {
            let upgrade = Box::pin(self.send_upgrade(outgoing));
            match tokio::time::timeout(self.timeout, upgrade).await {
                Err(_) => return Err(ProxyError::UpstreamTimeout(self.timeout)),
                Ok(result) => result?.map(body::boxed),
            }
        } else {
            match tokio::time::timeout(self.timeout, self.send(outgoing)).await {
                Err(_) => return Err(ProxyError::UpstreamTimeout(self.timeout)),
                Ok(result) => {
                    let (resp, link) = result?;
                    resp.map(|body| body::boxed(Relayed::new(body, link, &self.pool)))
                }
            }
        };

        // RFC 9110 §6.2: an intermediary answers in its own version (an
        // HTTP/1.0 upstream must not cost an HTTP/1.1 client its
        // keep-alive); hyper still answers an HTTP/1.0 client in 1.0.
        *resp.version_mut() = Version::HTTP_11;
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let protocol = resp.headers().get(header::UPGRADE).cloned();
        hop::strip(resp.headers_mut());
        if switched {
            // Relay the switch only when the client asked for it: a 101 the
            // client did not request would leave it speaking the wrong protocol.
            let (Some(client_side), Some(protocol)) = (client_side, protocol) else {
                return Err(ProxyError::UpstreamFailed(
                    "upstream switched protocols unasked".into(),
                ));
            };
            let upstream_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(client_side, upstream_side, slot, ends));
            hop::set_upgrade(resp.headers_mut(), protocol);
        }
        Ok(resp)
    }

    /// Rewrites the client's request into the one the upstream gets.
    fn prepare(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        upgrade: Option<HeaderValue>,
    ) -> Result<Request<Incoming>, ProxyError> {
        let (mut parts, body) = req.into_parts();

        // The authority the client addressed: the absolute-form target or
        // HTTP/2's :authority wins over Host (RFC 9112 §3.2.3).
        let client_host = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };

        parts.uri = self.target(&parts.uri)?;
        // The pool speaks HTTP/1.1 to the upstream whatever the client spoke.
        parts.version = Version::HTTP_11;

        // Hop-by-hop headers were stripped by the caller, before the
        // proxy's own were set (see `hop`).
        let headers = &mut parts.headers;
        // The proxy answers `Expect: 100-continue` itself (hyper sends the
        // 100 when the body is first read); the upstream sees a plain request.
        headers.remove(header::EXPECT);
        // A connection that carried a body is not reused (see `pool`); saying
        // so keeps an application that leaves the body unread from reading
        // the rest as a request of its own.
        if !hyper::body::Body::is_end_stream(&body) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        join_cookies(headers);
        crate::forwarded::set(headers, peer, client_host.as_ref());
        match (&client_host, self.preserve_host) {
            (Some(host), true) => headers.insert(header::HOST, host.clone()),
            _ => headers.insert(header::HOST, self.host.clone()),
        };
        if let Some(protocol) = upgrade {
            hop::set_upgrade(headers, protocol);
        }
        Ok(Request::from_parts(parts, body))
    }

    /// The request target on the upstream in origin form (RFC 9112 §3.2.1;
    /// the authority goes in `Host`): the upstream's path prefix, then the
    /// client's path and query exactly as sent.
    fn target(&self, client: &Uri) -> Result<Uri, ProxyError> {
        let pq = client
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/");
        if !pq.starts_with('/') {
            return Err(ProxyError::BadRequest(
                "the request target must be a path\n",
            ));
        }
        let path_and_query = if self.prefix.is_empty() {
            client
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        } else {
            PathAndQuery::try_from(format!("{}{pq}", self.prefix))
                .map_err(|_| ProxyError::BadRequest("bad request target\n"))?
        };
        Ok(Uri::from(path_and_query))
    }
}

/// A copy of `req` to send again if the connection it goes out on fails
/// before any answer: only for requests that are safe to repeat and carry
/// no body (which would be gone by then).
fn replayable(req: &Request<Outgoing>) -> Option<Request<Outgoing>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || !hyper::body::Body::is_end_stream(req.body())
    {
        return None;
    }
    let mut again = Request::new(Outgoing::empty());
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    Some(again)
}

/// HTTP/2 clients may split `Cookie` into several fields; an HTTP/1.1
/// upstream must get them as one, joined by "; " (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().count() < 2 {
        return;
    }
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// What a tunnel holds of the connection it came from (put on upgrade
/// requests by [`crate::server`]): its place under `server.max_connections`,
/// and the signal that the server has stopped draining and closes what is
/// left.
#[derive(Clone)]
pub struct TunnelSlot {
    /// Shared with the connection; the place is free once both are gone.
    pub slot: std::sync::Arc<tokio::sync::OwnedSemaphorePermit>,
    /// Changes (or closes) when remaining connections are to be closed.
    pub close: tokio::sync::watch::Receiver<()>,
}

/// Resolves when a tunnel must close although both sides are still there:
/// the session that opened it has ended (see [`crate::proxy`]).
pub struct TunnelEnds(pub std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);

/// Copies bytes both ways between the client and the upstream after a 101,
/// until either side closes, the session that opened it ends, or the server
/// closes what is left at shutdown.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    slot: Option<TunnelSlot>,
    ends: Option<TunnelEnds>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let closed = async move {
        match slot {
            Some(mut slot) => {
                let _ = slot.close.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    let ended = async move {
        match ends {
            Some(ends) => ends.0.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = copied => match result {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(error = %e, "upgraded connection ended"),
        },
        () = closed => tracing::debug!("upgraded connection closed at shutdown"),
        () = ended => tracing::info!("upgraded connection closed: its session ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cookie_fields_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }
}
