//! [`Browser`]: an HTTP client that browses like a person — its own cookie
//! jar (or none, like a browser that blocks cookies), forms with their
//! hidden fields, redirects followed on request, a `User-Agent` of its own.
//! `cloakroom load` runs one per virtual user; the integration tests browse
//! the proxy with the same code.
//!
//! Each browser keeps one HTTP/1.1 connection per origin it talks to (as a
//! browser tab mostly does) and opens a new one when the old one closes:
//! no pool to lock on every request, so many browsers in one process cost
//! little more than their sockets. `https://` targets use rustls with the
//! `ring` provider and the Mozilla root store (webpki-roots).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use url::Url;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL cannot be requested (not http/https, no host).
    #[error("bad URL {0:?}")]
    BadUrl(String),
    /// No connection could be made (refused, unreachable, TLS handshake).
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// No complete response within the browser's timeout.
    #[error("timed out")]
    Timeout,
    /// The connection failed after it was made.
    #[error("http: {0}")]
    Http(#[source] hyper::Error),
}

/// A response as the browser saw it.
#[derive(Debug)]
pub struct Page {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl Page {
    /// The `Location` header, if any.
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The value of `<input name=NAME value=...>` in the page (`&amp;`
    /// decoded).
    pub fn input(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].replace("&amp;", "&"))
    }

    /// Every hidden input of the page's first form, as (name, value).
    pub fn hidden_inputs(&self) -> Vec<(String, String)> {
        let form = self.first_form().unwrap_or(&self.body);
        let mut out = Vec::new();
        let mut rest = form;
        while let Some(at) = rest.find("<input") {
            rest = &rest[at..];
            let end = rest.find('>').unwrap_or(rest.len());
            let tag = &rest[..end];
            if tag.contains("type=\"hidden\"") {
                if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
                    out.push((n, v));
                }
            }
            rest = &rest[end..];
        }
        out
    }

    /// The `action` of the page's first form (`&amp;` decoded).
    pub fn form_action(&self) -> Option<String> {
        let form = self.first_form()?;
        let end = form.find('>')?;
        attr(&form[..end], "action")
    }

    fn first_form(&self) -> Option<&str> {
        let start = self.body.find("<form")?;
        let end = self.body[start..]
            .find("</form>")
            .map_or(self.body.len(), |e| start + e);
        Some(&self.body[start..end])
    }
}

/// The session ticket (`CLOAKROOMSID=…`) in a URL's query, if any.
pub fn ticket_in(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "CLOAKROOMSID")
        .map(|(_, v)| v.into_owned())
}

/// The double-quoted attribute `name` of one tag's source text.
fn attr(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&amp;", "&"))
}

/// A response head and whole body, without turning the body into text
/// (what a load generator needs).
pub struct Raw {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// One browsing client (see the module docs).
pub struct Browser {
    /// The site relative paths are resolved against (`http://host:port`).
    pub base: Url,
    /// Cookies by name, as a browser keeps them (`Max-Age=0` deletes).
    pub cookies: BTreeMap<String, String>,
    /// Sent as `User-Agent` when set.
    pub user_agent: Option<String>,
    /// Drops every `Set-Cookie`, as a browser that blocks cookies does.
    pub refuse_cookies: bool,
    /// Sent as `Accept`.
    pub accept: String,
    /// A query parameter added to every request (`name`, `value`): the
    /// session ticket of a cookieless client in URL mode.
    pub url_param: Option<(String, String)>,
    /// How long one request may take, connecting included.
    pub timeout: Duration,
    connections: HashMap<String, SendRequest<Full<Bytes>>>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Browser {
    /// A browser for the site at `base` (`http://host:port`), with no
    /// cookies yet.
    pub fn at(base: &str) -> Result<Browser, FetchError> {
        let base = Url::parse(base).map_err(|_| FetchError::BadUrl(base.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(FetchError::BadUrl(base.to_string()));
        }
        Ok(Browser {
            base,
            cookies: BTreeMap::new(),
            user_agent: None,
            refuse_cookies: false,
            accept: "text/html,application/xhtml+xml".to_owned(),
            url_param: None,
            timeout: Duration::from_secs(30),
            connections: HashMap::new(),
            tls: None,
        })
    }

    /// Uses `connector` for `https://` (instead of one trusting the Mozilla
    /// roots only).
    pub fn use_tls(&mut self, connector: tokio_rustls::TlsConnector) {
        self.tls = Some(connector);
    }

    /// The session cookie (`CLOAKROOMSID`), if the browser holds one.
    pub fn session(&self) -> Option<&str> {
        self.cookies.get("CLOAKROOMSID").map(String::as_str)
    }

    /// `GET path` (a path on the site, or an absolute URL).
    pub async fn get(&mut self, path: &str) -> Result<Page, FetchError> {
        let raw = self.request(Method::GET, path, None).await?;
        Ok(page(raw))
    }

    /// Posts `fields` form-encoded to `path`.
    pub async fn post_form(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<Page, FetchError> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let raw = self.request(Method::POST, path, Some(body.into())).await?;
        Ok(page(raw))
    }

    /// Like a browser's address bar: follows redirects (up to 10) and
    /// returns the final page and the path it ended on.
    pub async fn visit(&mut self, path: &str) -> Result<(Page, String), FetchError> {
        let mut path = path.to_owned();
        for _ in 0..10 {
            let page = self.get(&path).await?;
            match page.location() {
                Some(next) if page.status.is_redirection() => {
                    let base = self.base.as_str().trim_end_matches('/');
                    path = next.strip_prefix(base).unwrap_or(next).to_owned();
                }
                _ => return Ok((page, path)),
            }
        }
        Ok((self.get(&path).await?, path))
    }

    /// Sends one request (cookies, `Accept`, `User-Agent` and the URL
    /// parameter added) and reads the whole response; keeps the cookies it
    /// sets unless [`Browser::refuse_cookies`].
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        form: Option<Bytes>,
    ) -> Result<Raw, FetchError> {
        // An absolute URL goes where it says; a path is sent to this site
        // exactly as written (no dot segments resolved, `//` kept), as a
        // request line, not a link.
        let (url, mut target) = if path.starts_with("http://") || path.starts_with("https://") {
            let url = Url::parse(path).map_err(|_| FetchError::BadUrl(path.to_owned()))?;
            let target = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            (url, target)
        } else if path.starts_with('/') {
            (self.base.clone(), path.to_owned())
        } else {
            return Err(FetchError::BadUrl(path.to_owned()));
        };
        if let Some((name, value)) = &self.url_param {
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let present =
                url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == name.as_str());
            if !present {
                let sep = if target.contains('?') { '&' } else { '?' };
                target = format!("{target}{sep}{name}={value}");
            }
        }
        let timeout = self.timeout;
        let work = self.exchange(method, &url, target, form);
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    async fn exchange(
        &mut self,
        method: Method,
        url: &Url,
        target: String,
        form: Option<Bytes>,
    ) -> Result<Raw, FetchError> {
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, host)
            .header(header::ACCEPT, self.accept.as_str());
        if let Some(ua) = &self.user_agent {
            builder = builder.header(header::USER_AGENT, ua.as_str());
        }
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            builder = builder.header(header::COOKIE, jar.join("; "));
        }
        let body = match form {
            Some(form) => {
                builder = builder.header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                Full::new(form)
            }
            None => Full::new(Bytes::new()),
        };
        let req = builder
            .body(body)
            .map_err(|_| FetchError::BadUrl(url.to_string()))?;

        // The connection is taken out for the exchange and put back only
        // when it went well: one that failed or was cut off (timeout) is
        // simply dropped.
        let key = origin_key(url);
        let mut sender = match self.connections.remove(&key) {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect(url).await?,
        };
        if sender.ready().await.is_err() {
            sender = self.connect(url).await?;
        }
        let resp = sender.send_request(req).await.map_err(FetchError::Http)?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(FetchError::Http)?.to_bytes();
        self.connections.insert(key, sender);
        if !self.refuse_cookies {
            self.keep_cookies(&parts.headers);
        }
        Ok(Raw {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for set in headers.get_all(header::SET_COOKIE) {
            let Ok(set) = set.to_str() else { continue };
            let Some((name, value)) = set.split(';').next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            let deleted = set
                .split(';')
                .skip(1)
                .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if deleted {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn connect(&mut self, url: &Url) -> Result<SendRequest<Full<Bytes>>, FetchError> {
        let host = url
            .host_str()
            .ok_or_else(|| FetchError::BadUrl(url.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchError::BadUrl(url.to_string()))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(FetchError::Connect)?;
        let _ = tcp.set_nodelay(true);
        if url.scheme() == "https" {
            let connector = match &self.tls {
                Some(c) => c.clone(),
                None => {
                    let c = tls_connector()?;
                    self.tls = Some(c.clone());
                    c
                }
            };
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| FetchError::BadUrl(url.to_string()))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(FetchError::Connect)?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, FetchError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(FetchError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, FetchError> {
    tls_connector_trusting(&[])
}

/// A TLS connector that trusts the Mozilla roots and also `extra` (e.g. a
/// private CA), with ring as the provider; give it to [`Browser::use_tls`].
pub fn tls_connector_trusting(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<tokio_rustls::TlsConnector, FetchError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| FetchError::Connect(std::io::Error::other(e)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Connect(std::io::Error::other(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn origin_key(url: &Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

fn page(raw: Raw) -> Page {
    Page {
        status: raw.status,
        headers: raw.headers,
        body: String::from_utf8_lossy(&raw.body).into_owned(),
    }
}
