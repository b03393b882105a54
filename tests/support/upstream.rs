//! A real HTTP/1.1 application on loopback that records what it saw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::{self, protocol::Role};

use super::*;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The target exactly as on the request line (origin form, unless the
    /// proxy sent another form).
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The single value of `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} appears {} times: {all:?}",
            all.len()
        );
        all.into_iter().next()
    }
}

impl Seen {
    fn of(parts: &http::request::Parts, body: Bytes) -> Seen {
        Seen {
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
        }
    }
}

impl UpstreamState {
    fn record(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    /// Reads the whole request, records it, and returns its head.
    async fn record_whole(&self, req: Request<Incoming>) -> http::request::Parts {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        self.record(Seen::of(&parts, body));
        parts
    }
}

#[derive(Default)]
struct UpstreamState {
    seen: Mutex<Vec<Seen>>,
    /// Connections accepted so far.
    connections: std::sync::atomic::AtomicUsize,
    /// `/upload` signals here when the first body bytes have arrived.
    upload_started: Notify,
    /// `/download` waits here after its first chunk.
    download_gate: Notify,
}

/// A real HTTP/1.1 application on loopback. Routes:
/// - `/slow?ms=N`: records the request, waits N ms, then answers;
/// - `/hop`: answers with hop-by-hop headers and the app's own cookie;
/// - `/upload`: streams the body, counting it (not recorded), answers
///   `<bytes> <checksum>`; signals once the first bytes arrive;
/// - `/download?bytes=N`: sends one 64 KiB chunk, waits for
///   [`Upstream::release_download`], then sends the rest;
/// - `/stream.html?bytes=N`: the same, as HTML made of [`LINK`]s;
/// - `/ws`: a WebSocket echo;
/// - `[/any/prefix]/respond-with?h=Name:Value&status=N`: records the request, answers
///   with that status and those headers;
/// - anything else: records the request and answers `hello from upstream`.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                state
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| route(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream { addr, state }
    }

    /// Everything recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many connections the proxy has opened to this upstream.
    pub fn connections(&self) -> usize {
        self.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The only request recorded so far.
    pub fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "expected exactly one request upstream: {seen:?}"
        );
        seen.into_iter().next().unwrap()
    }

    /// Waits until `n` requests have arrived (bounded by [`within`]).
    pub async fn arrived(&self, n: usize) {
        within(async {
            while self.seen().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    pub async fn upload_started(&self) {
        self.state.upload_started.notified().await
    }

    pub fn release_download(&self) {
        self.state.download_gate.notify_one();
    }
}

fn query_number(req: &Request<Incoming>, key: &str) -> u64 {
    query_number_of(req.uri(), key)
}

fn query_number_of(uri: &http::Uri, key: &str) -> u64 {
    uri.query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One link of `/stream.html`: 32 bytes.
pub const LINK: &str = "<p><a href=\"/next\">link</a></p>\n";

/// The pattern of byte `i` in generated bodies.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

async fn route(
    state: Arc<UpstreamState>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let resp = match path.as_str() {
        "/slow" => {
            // Recorded on arrival, so tests can wait until it is in flight.
            let ms = query_number(&req, "ms");
            let (parts, _) = req.into_parts();
            state.record(Seen::of(&parts, Bytes::new()));
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let mut resp = text(StatusCode::OK, "slow answer");
            // `?cookie=1`: the answer sets an application cookie.
            if query_number_of(&parts.uri, "cookie") == 1 {
                resp.headers_mut()
                    .append("set-cookie", "late=1; Path=/".parse().unwrap());
            }
            resp
        }
        "/hop" => {
            let mut resp = text(StatusCode::OK, "hop");
            let h = resp.headers_mut();
            h.insert("connection", "x-private-hop".parse().unwrap());
            h.insert("x-private-hop", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("proxy-authenticate", "Basic".parse().unwrap());
            h.append("set-cookie", "app=1; Path=/".parse().unwrap());
            h.append("set-cookie", "theme=dark".parse().unwrap());
            h.insert("x-kept", "yes".parse().unwrap());
            resp
        }
        "/upload" => {
            let mut body = req.into_body();
            let (mut total, mut sum) = (0u64, 0u64);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return Ok(text(StatusCode::BAD_REQUEST, "broken body"));
                };
                if let Some(data) = frame.data_ref() {
                    if total == 0 && !data.is_empty() {
                        state.upload_started.notify_one();
                    }
                    for (i, b) in data.iter().enumerate() {
                        if *b != pattern(total + i as u64) {
                            return Ok(text(StatusCode::BAD_REQUEST, "corrupt body"));
                        }
                        sum = sum.wrapping_add(*b as u64);
                    }
                    total += data.len() as u64;
                }
            }
            text(StatusCode::OK, &format!("{total} {sum}"))
        }
        "/download" | "/stream.html" => {
            let html = path == "/stream.html";
            let total = query_number(&req, "bytes");
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
            let state = state.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while sent < total {
                    let n = (total - sent).min(64 * 1024);
                    let chunk: Vec<u8> = if html {
                        // 64 KiB of links, each 32 bytes.
                        LINK.repeat((n as usize).div_ceil(LINK.len())).as_bytes()[..n as usize]
                            .to_vec()
                    } else {
                        (sent..sent + n).map(pattern).collect()
                    };
                    if tx.send(Ok(Frame::data(chunk.into()))).await.is_err() {
                        return;
                    }
                    if sent == 0 {
                        state.download_gate.notified().await;
                    }
                    sent += n;
                }
            });
            let stream = tokio_stream_from(rx);
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert("content-length", total.to_string().parse().unwrap());
            if html {
                resp.headers_mut()
                    .insert("content-type", "text/html".parse().unwrap());
            }
            resp
        }
        "/ws" => websocket_echo(&mut req),
        p if p.starts_with("/html/") => html_page(&state, req).await,
        p if p.ends_with("/respond-with") => {
            // `?h=Name:Value&h=…`: answer with these headers (and record).
            let pairs: Vec<(String, String)> =
                url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .filter(|(k, _)| k == "h")
                    .filter_map(|(_, v)| {
                        let (n, v) = v.split_once(':')?;
                        Some((n.to_owned(), v.to_owned()))
                    })
                    .collect();
            let status = match query_number(&req, "status") {
                0 => StatusCode::OK,
                n => StatusCode::from_u16(n as u16).unwrap_or(StatusCode::OK),
            };
            let (parts, _) = req.into_parts();
            state.record(Seen::of(&parts, Bytes::new()));
            let mut resp = text(status, "as you wish");
            for (n, v) in pairs {
                resp.headers_mut().append(
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            resp
        }
        _ => {
            state.record_whole(req).await;
            let mut resp = text(StatusCode::OK, "hello from upstream");
            resp.headers_mut()
                .insert("x-upstream", "yes".parse().unwrap());
            resp
        }
    };
    Ok(resp)
}

/// The HTML page served under `/html/`: links of every kind and two forms.
/// `?set=COOKIE` adds a `Set-Cookie`; `/html/gz` is gzip-encoded;
/// `/html/redirect` redirects to `/html/landed`, `/html/away` to another host.
pub const HTML_PAGE: &str = "<!doctype html><html><head><title>t</title></head><body>\n\
<a id=\"next\" href=\"/html/next?x=1&amp;y=2\">next</a>\n\
<a id=\"rel\" href=\"rel#frag\">rel</a>\n\
<a id=\"ext\" href=\"http://evil.example/steal\">ext</a>\n\
<a id=\"proto\" href=\"//evil.example/\">proto</a>\n\
<a id=\"mail\" href=\"mailto:a@b.example\">mail</a>\n\
<form id=\"search\" method=\"get\" action=\"/html/search\"><input name=\"q\" value=\"v\"></form>\n\
<form id=\"post\" method=\"post\" action=\"/html/post\"><input name=\"m\" value=\"hi\"></form>\n\
<script>var a = '<a href=\"/html/in-script\">';</script>\n\
</body></html>\n";

async fn html_page(state: &UpstreamState, req: Request<Incoming>) -> Response<TestBody> {
    let parts = state.record_whole(req).await;
    let path = parts.uri.path().to_owned();
    let set = parts.uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "set")
            .map(|(_, v)| v.into_owned())
    });
    let mut resp = match path.as_str() {
        "/html/redirect" | "/html/away" => {
            let mut r = text(StatusCode::FOUND, "");
            let to = if path == "/html/redirect" {
                "/html/landed"
            } else {
                "http://evil.example/x"
            };
            r.headers_mut().insert("location", to.parse().unwrap());
            r
        }
        "/html/gz" => {
            use async_compression::tokio::bufread::GzipEncoder;
            let mut gz = Vec::new();
            GzipEncoder::new(HTML_PAGE.as_bytes())
                .read_to_end(&mut gz)
                .await
                .unwrap();
            let mut r = Response::new(full(gz.clone()));
            r.headers_mut()
                .insert("content-encoding", "gzip".parse().unwrap());
            r.headers_mut()
                .insert("content-length", gz.len().to_string().parse().unwrap());
            r
        }
        _ => Response::new(full(HTML_PAGE)),
    };
    resp.headers_mut()
        .insert("content-type", "text/html; charset=utf-8".parse().unwrap());
    if let Some(cookie) = set {
        resp.headers_mut()
            .append("set-cookie", cookie.parse().unwrap());
    }
    resp
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + Sync {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<TestBody> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return text(StatusCode::BAD_REQUEST, "not a websocket request");
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    resp
}

pub fn text(status: StatusCode, body: &str) -> Response<TestBody> {
    let mut resp = Response::new(full(body.to_owned()));
    *resp.status_mut() = status;
    resp
}

pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// A body of `total` pattern bytes sent in 64 KiB chunks without a length
/// (chunked on HTTP/1.1). After the first chunk it waits for `gate`.
pub fn streaming_upload(total: u64, gate: Option<oneshot::Receiver<()>>) -> TestBody {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    tokio::spawn(async move {
        let mut gate = gate;
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(64 * 1024);
            let chunk: Vec<u8> = (sent..sent + n).map(pattern).collect();
            if tx.send(Ok(Frame::data(chunk.into()))).await.is_err() {
                return;
            }
            sent += n;
            if let Some(gate) = gate.take() {
                let _ = gate.await;
            }
        }
    });
    BodyExt::boxed(StreamBody::new(tokio_stream_from(rx)))
}
