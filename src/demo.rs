//! `cloakroom demo`: a small built-in "legacy app" on a loopback port and
//! cloakroom in front of it, for a first look. The app has no login and no
//! sessions of its own: it shows what cloakroom tells it in
//! `X-Forwarded-User`, verifies the signed assertion against the proxy's
//! JWKS, and counts visits in a session variable (`X-Cloakroom-Session`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::auth::password;
use crate::login::page::escape;
use crate::{server, App, Config};

/// The assertion's audience in the demo.
const DEMO_AUDIENCE: &str = "cloakroom-demo";

/// The demo user's name and password.
pub const DEMO_USER: (&str, &str) = ("demo", "demo");

/// Runs the demo until `shutdown` resolves: the app on an ephemeral port,
/// the proxy on `listen`.
pub async fn run(
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let app_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start the demo app: {e}"))?;
    let app_addr = app_listener
        .local_addr()
        .map_err(|e| format!("cannot start the demo app: {e}"))?;
    let keys = DemoKeys::default();
    tokio::spawn(serve_legacy_app(app_listener, keys.clone()));

    let state = StateDir::create()?;
    let config = Config::parse(&config_text(listen, app_addr, &state.0)?)
        .map_err(|e| format!("demo configuration: {e}"))?;
    let app = App::build(config)
        .await
        .map_err(|e| format!("demo configuration: {e}"))?;
    // The JWKS the proxy serves at /.cloakroom/jwks.json, handed over in
    // process (a real application would fetch it).
    if let Some(assertion) = &app.settings().assertion {
        if let Ok(set) = serde_json::from_slice(&assertion.jwks()) {
            let _ = keys.0.set(set);
        }
    }
    let listener = server::Listeners::bind(listen, &app.settings().config.server)
        .map_err(|e| format!("listen: cannot bind {listen}: {e} (try --listen 127.0.0.1:0)"))?;
    let addr = listener.local_addr().unwrap_or(listen);
    tracing::info!("cloakroom listening on http://{addr}");
    println!(
        "\ncloakroom demo: open http://{addr}/\n  sign in as user {:?} with password {:?}\n  \
         the demo app (no login of its own) runs on http://{app_addr}/\n  stop with Ctrl-C\n",
        DEMO_USER.0, DEMO_USER.1
    );
    let served = server::run(listener, app.clone(), shutdown).await;
    app.shutdown();
    served.map_err(|e| format!("server failed: {e}"))
}

/// The demo's configuration: the embedded defaults, a memory store, and the
/// demo user in a users file under a private temporary directory.
fn config_text(listen: SocketAddr, app: SocketAddr, dir: &Path) -> Result<String, String> {
    let users = dir.join("users.toml");
    let hash = password::hash(DEMO_USER.1)?;
    write_private(&users, format!("{} = \"{hash}\"\n", DEMO_USER.0).as_bytes())?;
    Ok(format!(
        "listen = \"{listen}\"\n\
         [upstream]\nurl = \"http://{app}\"\n\
         [session]\nstore = \"memory\"\nsecret_file = {key:?}\napp_values = true\n\
         [auth]\nusers_file = {users:?}\nprotect = [\"/account\", \"/guestbook\"]\napp_name = \"the demo app\"\n\
         [identity]\nassertion_header = \"X-Cloakroom-Assertion\"\nassertion_key_file = {signing:?}\nassertion_audience = \"{DEMO_AUDIENCE}\"\n",
        key = dir.join("cloakroom.key").to_string_lossy(),
        signing = dir.join("assertion.key").to_string_lossy(),
        users = users.to_string_lossy(),
    ))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A private temporary directory, removed when the demo ends.
struct StateDir(PathBuf);

impl StateDir {
    fn create() -> Result<StateDir, String> {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| e.to_string())?;
        let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("cloakroom-demo-{name}"));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(StateDir(dir))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- the legacy app ---------------------------------------------------------

type Guestbook = Arc<Mutex<Vec<(String, String)>>>;

/// The proxy's published assertion keys, once known (empty: the app shows
/// the assertion unverified).
#[derive(Clone, Default)]
pub struct DemoKeys(Arc<std::sync::OnceLock<jsonwebtoken::jwk::JwkSet>>);

/// Serves the demo app on `listener` forever.
pub async fn serve_legacy_app(listener: TcpListener, keys: DemoKeys) {
    let book: Guestbook = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (book, keys) = (book.clone(), keys.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| legacy_page(book.clone(), keys.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn legacy_page(
    book: Guestbook,
    keys: DemoKeys,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let user = req
        .headers()
        .get("x-forwarded-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let who = match &user {
        Some(u) => format!(
            "Signed in as <strong>{}</strong> · <a href=\"/.cloakroom/logout\">Sign out</a>",
            escape(u)
        ),
        None => "Not signed in · <a href=\"/.cloakroom/login\">Sign in</a>".to_owned(),
    };
    let path = req.uri().path().to_owned();
    let resp = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/") => page(
            "Home",
            &who,
            "<p>This is a legacy app with no login of its own. cloakroom stands in front of it, \
             keeps the sessions, runs the login, and tells the app who you are in a header.</p>\n\
             <ul>\n<li><a href=\"/about\">About</a> (public)</li>\n\
             <li><a href=\"/account\">Who am I?</a> (needs a login; the signed assertion, verified)</li>\n\
             <li><a href=\"/visits\">Visit counter</a> (public; counted in a session variable)</li>\n\
             <li><a href=\"/guestbook\">Guestbook</a> (needs a login; a POST form)</li>\n</ul>\n\
             <form method=\"get\" action=\"/search\"><label>Search <input name=\"q\"></label> \
             <button>Go</button></form>\n",
        ),
        (Method::GET, "/about") => page(
            "About",
            &who,
            "<p>Public page. <a href=\"/\">Back home</a>.</p>",
        ),
        (Method::GET, "/search") => {
            let q = req
                .uri()
                .query()
                .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "q"))
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            page(
                "Search",
                &who,
                &format!(
                    "<p>You searched for <q>{}</q>. Nothing found, it is a demo.</p><p><a href=\"/\">Home</a></p>",
                    escape(&q)
                ),
            )
        }
        (Method::GET, "/visits") => {
            let visits = session_value(&req, "visits")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let mut resp = page(
                "Visit counter",
                &who,
                &format!(
                    "<p>You have opened this page <strong>{visits}</strong> time{} in this session.</p>\n\
                     <p>The app keeps no state: it read <code>visits</code> from the \
                     <code>X-Cloakroom-Session</code> request header and answered with \
                     <code>X-Cloakroom-Session-Set: visits={visits}</code>. Sign in, and the count \
                     carries over; sign out, and it is gone.</p>\n<p><a href=\"/visits\">Again</a> · \
                     <a href=\"/\">Home</a></p>",
                    if visits == 1 { "" } else { "s" }
                ),
            );
            if let Ok(value) = HeaderValue::from_str(&format!("visits={visits}")) {
                resp.headers_mut().insert("x-cloakroom-session-set", value);
            }
            resp
        }
        (Method::GET, "/account") => {
            let assertion = describe_assertion(&req, &keys);
            let mut rows = String::new();
            for (name, value) in req.headers() {
                rows.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td></tr>\n",
                    escape(name.as_str()),
                    escape(&String::from_utf8_lossy(value.as_bytes()))
                ));
            }
            page(
                "Who am I?",
                &who,
                &format!(
                    "<p>The app received <code>X-Forwarded-User: {}</code>.</p>\n\
                     <h2>The signed assertion</h2>\n<p>{assertion}</p>\n\
                     <h2>Every header the app received</h2>\n<table>{rows}</table>\n<p><a href=\"/\">Home</a></p>",
                    escape(user.as_deref().unwrap_or("(none)"))
                ),
            )
        }
        (Method::GET, "/guestbook") => {
            let entries: String = book
                .lock()
                .map(|b| {
                    b.iter()
                        .map(|(u, m)| {
                            format!("<li><strong>{}</strong>: {}</li>\n", escape(u), escape(m))
                        })
                        .collect()
                })
                .unwrap_or_default();
            page(
                "Guestbook",
                &who,
                &format!(
                    "<ul>{entries}</ul>\n<form method=\"post\" action=\"/guestbook\">\
                     <label>Message <input name=\"message\" required></label> <button>Sign</button></form>\n\
                     <p><a href=\"/\">Home</a></p>"
                ),
            )
        }
        (Method::POST, "/guestbook") => {
            let body = Limited::new(req.into_body(), 8192)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let message = url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == "message")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if let (Ok(mut b), false) = (book.lock(), message.is_empty()) {
                b.push((user.unwrap_or_else(|| "anonymous".into()), message));
            }
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::SEE_OTHER;
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/guestbook"));
            return Ok(resp);
        }
        _ => {
            let mut resp = page(
                "Not found",
                &who,
                "<p>No such page. <a href=\"/\">Home</a></p>",
            );
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
    };
    Ok(resp)
}

/// One of the session's values, from `X-Cloakroom-Session`.
fn session_value(req: &Request<Incoming>, name: &str) -> Option<String> {
    let header = req.headers().get("x-cloakroom-session")?;
    url::form_urlencoded::parse(header.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// What an application that verifies the assertion learns from it: the
/// JWT checked against the proxy's JWKS (signature, expiry, audience).
fn describe_assertion(req: &Request<Incoming>, keys: &DemoKeys) -> String {
    use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
    let Some(token) = req
        .headers()
        .get("x-cloakroom-assertion")
        .and_then(|v| v.to_str().ok())
    else {
        return "No <code>X-Cloakroom-Assertion</code> arrived.".to_owned();
    };
    let Some(set) = keys.0.get() else {
        return "An assertion arrived, but the app has no keys to check it with.".to_owned();
    };
    let verified = decode_header(token).ok().and_then(|h| {
        let jwk = set.find(h.kid.as_deref()?)?;
        let key = DecodingKey::from_jwk(jwk).ok()?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[DEMO_AUDIENCE]);
        decode::<serde_json::Value>(token, &key, &validation).ok()
    });
    match verified {
        Some(data) => format!(
            "Verified against <code>/.cloakroom/jwks.json</code> (ES256, key <code>{}</code>): \
             <code>{}</code>",
            escape(data.header.kid.as_deref().unwrap_or("?")),
            escape(&data.claims.to_string())
        ),
        None => "An assertion arrived but did not verify.".to_owned(),
    }
}

fn page(title: &str, who: &str, body: &str) -> Response<Full<Bytes>> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · demo app</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}\
         header{{display:flex;justify-content:space-between;border-bottom:1px solid #ccc;margin-bottom:1rem}}\
         td{{padding:.1rem .5rem;border-bottom:1px solid #eee;font-family:monospace}}</style></head>\
         <body><header><span>Demo legacy app</span><span>{who}</span></header><h1>{title}</h1>{body}</body></html>\n"
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
