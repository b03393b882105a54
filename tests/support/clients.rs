//! Clients: HTTP/1.1 and HTTP/2 senders, raw bytes, child-process output,
//! and the library's browsing client with test manners.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::*;

// ---- clients ----------------------------------------------------------------

/// An HTTP/1.1 client with its own connection pool.
pub fn http1() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn http2() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// Sends `req` and returns the status, headers and whole body.
pub async fn send(
    client: &Client<HttpConnector, TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    let resp = within(client.request(req)).await.expect("request failed");
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let body = within(body.collect())
        .await
        .expect("body failed")
        .to_bytes();
    (status, parts.headers, body)
}

pub async fn get(url: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(&http1(), Request::get(url).body(empty()).unwrap()).await
}

/// Writes `raw` to a fresh connection and reads until the server closes it.
pub async fn raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    // A reset after the answer still leaves the answer in `out`.
    let _ = within(stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The lines a child process writes to `stream`, as they come.
pub fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits for the first line containing `marker` and returns what follows it.
pub async fn line_after(lines: &mut mpsc::UnboundedReceiver<String>, marker: &str) -> String {
    within(async {
        loop {
            let line = lines.recv().await.expect("the process exited first");
            if let Some(rest) = line.split(marker).nth(1) {
                break rest.trim().to_owned();
            }
        }
    })
    .await
}

// ---- a browser-like client --------------------------------------------------

/// The library's browsing client ([`cloakroom::client::Browser`], the one
/// `cloakroom load` drives), with test manners: failures panic, and
/// `Browser::new(&proxy)` points it at a proxy.
pub struct Browser(pub cloakroom::client::Browser);

pub use cloakroom::client::Page;

impl std::ops::Deref for Browser {
    type Target = cloakroom::client::Browser;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Browser {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Browser {
    pub fn new(proxy: &Proxy) -> Browser {
        Browser::at(&format!("http://{}", proxy.addr))
    }

    /// A browser for the site at `base` (`http://host:port`).
    pub fn at(base: &str) -> Browser {
        Browser(cloakroom::client::Browser::at(base).expect("a valid base URL"))
    }

    pub async fn get(&mut self, path: &str) -> Page {
        within(self.0.get(path))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Follows redirects; returns the final page and the path it ended on.
    pub async fn visit(&mut self, path: &str) -> (Page, String) {
        within(self.0.visit(path))
            .await
            .unwrap_or_else(|e| panic!("visit {path}: {e}"))
    }

    /// Opens the login page and posts its form as `user` with `password`,
    /// plus `more` fields (e.g. `return_to`, `remember`); the answer.
    pub async fn log_in(&mut self, user: &str, password: &str, more: &[(&str, &str)]) -> Page {
        let form = self.get("/.cloakroom/login").await;
        assert_eq!(form.status, http::StatusCode::OK, "{}", form.body);
        let csrf = form.input("csrf").expect("no CSRF token in the login form");
        let mut fields = vec![
            ("csrf", csrf.as_str()),
            ("username", user),
            ("password", password),
        ];
        fields.extend_from_slice(more);
        self.post_form("/.cloakroom/login", &fields).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        within(self.0.post_form(path, fields))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}
