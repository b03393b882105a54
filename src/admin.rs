//! The admin listener (`[admin] listen`): its own port, never the public
//! one, with its own router.
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | `200` while the process serves |
//! | `GET /readyz` | `200` when the store and the upstream answer, else `503` naming which |
//! | `GET /metrics` | Prometheus exposition ([`crate::metrics`]); needs the token when there is one |
//! | `GET /sessions?user=NAME` | that user's live sessions, as JSON |
//! | `DELETE /sessions?user=NAME` | log that user out everywhere: `{"revoked": N}` |
//! | `DELETE /sessions/ID_HASH` | end one session; `404` when unknown |
//!
//! `/sessions` needs `Authorization: Bearer <token>` from `admin.token_file`
//! (`401` without, `403` with a wrong one, compared in constant time); with
//! no token file it is not served at all. Sessions are named by a short
//! keyed hash ([`crate::session::Sessions::key_hash`]), never by their ID.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::answer;
use crate::body::ProxyBody;
use crate::{App, Settings};

/// Connections the admin listener serves at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 32;
/// Longest an admin connection lives (requests here are short).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// Longest a readiness check waits for the store or the upstream.
const READY_WITHIN: Duration = Duration::from_secs(2);

/// Serves the admin listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let header_timeout = app.settings().config.server.header_timeout;
    loop {
        // A slot before accepting: connections past the cap wait in the
        // kernel's backlog and cost this process nothing.
        let slot = tokio::select! {
            () = &mut shutdown => return Ok(()),
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return Ok(()),
            },
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // A client that says nothing is gone after the header timeout.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&app, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            // However it behaves, a connection ends within its lifetime.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

/// Answers one admin request.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let settings = app.settings();
    match (method, path.as_str()) {
        (Method::GET | Method::HEAD, "/healthz") => answer::text(StatusCode::OK, "ok\n"),
        (Method::GET | Method::HEAD, "/readyz") => ready(app, &settings).await,
        (Method::GET | Method::HEAD, "/metrics") => {
            // With a token file, the metrics need the token too.
            if let Some(refused) = settings
                .admin_token
                .as_deref()
                .and_then(|t| refusal(&req, t))
            {
                return refused;
            }
            metrics(app).await
        }
        (_, "/healthz" | "/readyz" | "/metrics") => not_allowed("GET, HEAD"),
        (method, p) if p == "/sessions" || p.starts_with("/sessions/") => {
            let Some(token) = &settings.admin_token else {
                return not_found();
            };
            if let Some(refused) = refusal(&req, token) {
                return refused;
            }
            sessions(app, &method, p, req.uri().query()).await
        }
        _ => not_found(),
    }
}

async fn ready(app: &App, settings: &Settings) -> Response<ProxyBody> {
    let store = tokio::time::timeout(READY_WITHIN, app.sessions.store_ready()).await;
    if !matches!(store, Ok(Ok(()))) {
        return answer::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the session store does not answer\n",
        );
    }
    let wait = settings.config.upstream.connect_timeout.min(READY_WITHIN);
    if settings.upstream.reachable(wait).await {
        answer::text(StatusCode::OK, "ready\n")
    } else {
        answer::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the upstream does not answer (or its certificate does not verify)\n",
        )
    }
}

async fn metrics(app: &App) -> Response<ProxyBody> {
    let records = tokio::time::timeout(READY_WITHIN, app.sessions.stats())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|s| s.records);
    let mut resp = Response::new(crate::body::full(app.metrics.render(records)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// `Authorization: Bearer <token>`, compared in constant time: `None`
/// when it is right, else the answer (401 without one, 403 wrong).
fn refusal<B>(req: &Request<B>, token: &str) -> Option<Response<ProxyBody>> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(presented) = presented else {
        let mut resp = answer::text(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: a bearer token is needed\n",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"cloakroom admin\""),
        );
        return Some(resp);
    };
    let same = crate::session::same_secret(token, presented);
    (!same).then(|| answer::text(StatusCode::FORBIDDEN, "403 Forbidden: wrong token\n"))
}

async fn sessions(
    app: &App,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<ProxyBody> {
    let user = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "user")
            .map(|(_, v)| v.into_owned())
    });
    let outcome = match (method, path.strip_prefix("/sessions/"), user) {
        (&Method::GET, None, Some(user)) => list(app, &user).await,
        (&Method::DELETE, None, Some(user)) => app.sessions.revoke_user(&user).await.map(|n| {
            tracing::info!(user, revoked = n, "admin: user logged out everywhere");
            json(StatusCode::OK, &serde_json::json!({ "revoked": n }))
        }),
        (&Method::DELETE, Some(hash), _) if !hash.is_empty() => {
            app.sessions.revoke_hash(hash).await.map(|found| {
                if found {
                    tracing::info!(session = hash, "admin: session ended");
                    json(StatusCode::OK, &serde_json::json!({ "revoked": 1 }))
                } else {
                    not_found()
                }
            })
        }
        (&Method::GET | &Method::DELETE, None, None) => Ok(answer::text(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: say which user (?user=NAME)\n",
        )),
        (_, None, _) => Ok(not_allowed("GET, DELETE")),
        (_, Some(_), _) => Ok(not_allowed("DELETE")),
    };
    outcome.unwrap_or_else(|error| {
        tracing::warn!(%error, "admin: the session store did not answer");
        answer::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: the session store does not answer\n",
        )
    })
}

async fn list(
    app: &App,
    user: &str,
) -> Result<Response<ProxyBody>, crate::session::store::StoreError> {
    let live = app.sessions.of_user(user).await?;
    let listed: Vec<serde_json::Value> = live
        .iter()
        .map(|(key, s)| {
            serde_json::json!({
                "id": app.sessions.key_hash(key),
                "user": s.user,
                "created": rfc3339(s.created),
                "last_seen": rfc3339(s.last_seen),
                "mode": if s.url_mode { "url" } else { "cookie" },
                "client": s.client,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::Value::Array(listed)))
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(crate::body::full(format!("{value}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn not_found() -> Response<ProxyBody> {
    answer::text(StatusCode::NOT_FOUND, "404 Not Found\n")
}

fn not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut resp = answer::text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}
