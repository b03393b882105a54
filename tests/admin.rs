//! The admin listener: health, readiness, and the sessions API (list a
//! user's sessions, end one, log a user out everywhere), on one instance
//! and on two sharing Redis.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use cloakroom::test_redis::Server;
use http::{Method, Request, StatusCode};
use support::*;

const TOKEN: &str = "an-admin-token-of-some-length";

fn users_toml() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS.get_or_init(|| {
        let alice = cloakroom::auth::password::hash("wonderland").unwrap();
        format!("alice = \"{alice}\"\n")
    })
}

struct Site {
    upstream: Upstream,
    dir: tempfile::TempDir,
}

impl Site {
    async fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.toml"), users_toml()).unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
        Site {
            upstream: Upstream::start().await,
            dir,
        }
    }

    /// An instance with the admin listener; `session` adds `[session]` keys.
    async fn instance(&self, session: &str, token: bool) -> Proxy {
        let path = |name: &str| self.dir.path().join(name).to_str().unwrap().to_owned();
        let token = if token {
            format!("token_file = {:?}\n", path("admin.token"))
        } else {
            String::new()
        };
        Proxy::start(
            &self.upstream,
            "",
            &format!(
                "[session]\nsecret_file = {:?}\n{session}\n\
                 [auth]\nusers_file = {:?}\nprotect = [\"/private\"]\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n{token}",
                path("cloakroom.key"),
                path("users.toml"),
            ),
        )
        .await
    }
}

async fn log_in(b: &mut Browser) {
    let done = b
        .log_in("alice", "wonderland", &[("return_to", "/private")])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
}

/// One admin request; `token` as the bearer.
async fn admin(
    proxy: &Proxy,
    method: Method,
    target: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(format!(
        "http://{}{target}",
        proxy.admin.expect("admin listener")
    ));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let (status, _, body) = send(&http1(), req.body(empty()).unwrap()).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn health_and_readiness_follow_the_upstream() {
    let site = Site::new().await;
    let proxy = site.instance("store = \"memory\"", true).await;
    assert_eq!(
        admin(&proxy, Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        admin(&proxy, Method::GET, "/readyz", None).await.0,
        StatusCode::OK
    );
    // The admin paths are not on the public listener.
    let (status, _, _) = get(&proxy.url("/healthz")).await;
    assert_ne!(
        site.upstream.seen().len(),
        0,
        "the public /healthz went upstream like any path"
    );
    assert_eq!(status, StatusCode::OK);

    // An upstream that is gone makes the instance unready, naming it.
    let dead = Proxy::start_url(
        "http://127.0.0.1:9",
        "",
        "[admin]\nlisten = \"127.0.0.1:0\"\n[session]\nstore = \"memory\"",
    )
    .await;
    let (status, body) = admin(&dead, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("upstream"), "{body}");
    assert_eq!(
        admin(&dead, Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn readiness_fails_while_redis_is_down() {
    let site = Site::new().await;
    let server = Server::start();
    let proxy = site
        .instance(
            &format!(
                "store = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"200ms\"",
                server.url()
            ),
            true,
        )
        .await;
    assert_eq!(
        admin(&proxy, Method::GET, "/readyz", None).await.0,
        StatusCode::OK
    );
    server.freeze();
    let (status, body) = admin(&proxy, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("store"), "{body}");
    server.thaw();
}

#[tokio::test]
async fn the_sessions_api_needs_the_token() {
    let site = Site::new().await;
    let proxy = site.instance("store = \"memory\"", true).await;
    let (status, _) = admin(&proxy, Method::GET, "/sessions?user=alice", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = admin(
        &proxy,
        Method::GET,
        "/sessions?user=alice",
        Some("not-the-token-at-all"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin(&proxy, Method::DELETE, "/sessions?user=alice", Some("x")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = admin(&proxy, Method::GET, "/sessions?user=alice", Some(TOKEN)).await;
    assert_eq!((status, body.trim()), (StatusCode::OK, "[]"));

    // Without a token file, /sessions is not served at all.
    let open = site.instance("store = \"memory\"", false).await;
    let (status, _) = admin(&open, Method::GET, "/sessions?user=alice", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_operator_lists_a_users_sessions_and_ends_one() {
    let site = Site::new().await;
    let proxy = site.instance("store = \"memory\"", true).await;
    let (mut first, mut second) = (Browser::new(&proxy), Browser::new(&proxy));
    log_in(&mut first).await;
    log_in(&mut second).await;

    let (status, body) = admin(&proxy, Method::GET, "/sessions?user=alice", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.len(), 2, "{body}");
    for s in &listed {
        assert_eq!(s["user"], "alice");
        assert_eq!(s["mode"], "cookie");
        assert_eq!(s["client"], "127.0.0.1");
        assert!(s["created"].as_str().unwrap().ends_with('Z'), "{s}");
        assert!(s["last_seen"].as_str().unwrap().contains('T'), "{s}");
    }
    // The listing never shows an ID.
    for b in [&first, &second] {
        assert!(!body.contains(b.session().unwrap()), "an ID in the listing");
    }

    // End the first listed session: exactly one of the two browsers is out.
    let hash = listed[0]["id"].as_str().unwrap();
    let (status, body) = admin(
        &proxy,
        Method::DELETE,
        &format!("/sessions/{hash}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!((status, body.trim()), (StatusCode::OK, r#"{"revoked":1}"#));
    let statuses = [
        first.get("/private").await.status,
        second.get("/private").await.status,
    ];
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::FOUND),
        "{statuses:?}"
    );
    let (status, _) = admin(
        &proxy,
        Method::DELETE,
        &format!("/sessions/{hash}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an ended session was found again"
    );
    let (status, _) = admin(
        &proxy,
        Method::DELETE,
        "/sessions/not-a-session",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin(&proxy, Method::GET, "/sessions", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn log_out_everywhere_ends_the_users_sessions_on_every_instance() {
    let site = Site::new().await;
    let server = Server::start();
    let redis = format!("store = \"redis\"\nredis_url = \"{}\"", server.url());
    let (a, b) = (
        site.instance(&redis, true).await,
        site.instance(&redis, true).await,
    );
    let mut on_a = Browser::new(&a);
    let mut on_b = Browser::new(&b);
    log_in(&mut on_a).await;
    log_in(&mut on_b).await;
    assert_eq!(on_a.get("/private").await.status, StatusCode::OK);
    assert_eq!(on_b.get("/private").await.status, StatusCode::OK);

    let (status, body) = admin(&a, Method::DELETE, "/sessions?user=alice", Some(TOKEN)).await;
    assert_eq!((status, body.trim()), (StatusCode::OK, r#"{"revoked":2}"#));
    // Refused on the next request, on both instances (pub/sub invalidation).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(on_a.get("/private").await.status, StatusCode::FOUND);
    assert_eq!(on_b.get("/private").await.status, StatusCode::FOUND);
    let (_, body) = admin(&b, Method::GET, "/sessions?user=alice", Some(TOKEN)).await;
    assert_eq!(body.trim(), "[]");
}

/// The value of one sample line (`name{labels}`) in an exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_as_requests_flow() {
    let site = Site::new().await;
    let proxy = site.instance("store = \"memory\"", true).await;
    let scrape = || async {
        let (status, body) = admin(&proxy, Method::GET, "/metrics", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        body
    };
    let before = scrape().await;
    for _ in 0..3 {
        get(&proxy.url("/public")).await;
    }
    let mut b = Browser::new(&proxy);
    b.log_in("alice", "nope", &[]).await;
    log_in(&mut b).await;
    let forged = Request::get(proxy.url("/"))
        .header("cookie", "CLOAKROOMSID=forged-and-wrong")
        .body(empty())
        .unwrap();
    send(&http1(), forged).await;
    let after = scrape().await;

    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert!(
        moved("cloakroom_http_requests_total{code=\"200\"}") >= 5.0,
        "{after}"
    );
    assert_eq!(
        moved("cloakroom_logins_total{result=\"failure\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("cloakroom_logins_total{result=\"success\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("cloakroom_session_events_total{event=\"rotated\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("cloakroom_session_events_total{event=\"created\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("cloakroom_session_events_total{event=\"forged\"}"),
        1.0,
        "{after}"
    );
    assert!(
        moved("cloakroom_http_request_duration_seconds_count") >= 7.0,
        "{after}"
    );
    assert!(
        moved("cloakroom_upstream_duration_seconds_count") >= 4.0,
        "{after}"
    );
    assert!(
        sample(&after, "cloakroom_sessions_active") >= 1.0,
        "{after}"
    );
    assert!(after.contains("# TYPE cloakroom_http_request_duration_seconds histogram"));

    // With a token file, the metrics need the token.
    assert_eq!(
        admin(&proxy, Method::GET, "/metrics", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn silent_connections_to_the_admin_port_are_closed_and_capped() {
    // Found by an outside review: admin connections never timed out and
    // were not capped, so they could use up the process's descriptors.
    let site = Site::new().await;
    let proxy = Proxy::start(
        &site.upstream,
        "",
        "[server]\nheader_timeout = \"1s\"\n[session]\nstore = \"memory\"\n[admin]\nlisten = \"127.0.0.1:0\"",
    )
    .await;
    let at = proxy.admin.unwrap();
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(tokio::net::TcpStream::connect(at).await.unwrap());
    }
    // Past the cap, a request waits for a slot, which the timeout frees.
    let started = std::time::Instant::now();
    assert_eq!(
        admin(&proxy, Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent[0].read(&mut buf))
        .await
        .expect("a silent admin connection was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}
