//! The outside review's attacks, replayed end to end: each test sends what
//! an attacker sends and asserts what the upstream actually received and
//! what the client actually got. One test per class of the review.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use cloakroom::client::ticket_in;
use http::{Request, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "CLOAKROOMSID";

fn users_toml() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS.get_or_init(|| {
        let alice = cloakroom::auth::password::hash("wonderland").unwrap();
        let mallory = cloakroom::auth::password::hash("evil").unwrap();
        format!("alice = \"{alice}\"\nmallory = \"{mallory}\"\n")
    })
}

struct Site {
    upstream: Upstream,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

/// Everything protected but `/static`; `more` adds config.
async fn site(more: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    std::fs::write(&file, users_toml()).unwrap();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[auth]\nusers_file = {:?}\nprotect = [\"/\"]\npublic = [\"/static\"]\n{more}",
            file.to_str().unwrap()
        ),
    )
    .await;
    Site {
        upstream,
        proxy,
        _dir: dir,
    }
}

/// Logs `b` in through the form; returns the answer to the POST.
async fn log_in(b: &mut Browser, user: &str, password: &str) -> Page {
    b.log_in(user, password, &[]).await
}

// ---- 1. what the rules judge is what the upstream receives ------------------

#[tokio::test]
async fn a_dot_segment_path_never_reaches_a_protected_route() {
    let s = site("").await;
    for target in [
        "/admin/../static/x",
        "/admin/%2e%2e/static/x",
        "/admin/..;/static/x",
        "/static/..%2fadmin",
        "/static/%2e%2e/admin",
    ] {
        for client in [http1(), http2()] {
            let req = Request::get(s.proxy.url(target)).body(empty()).unwrap();
            let (status, _, _) = send(&client, req).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{target}");
        }
    }
    assert!(s.upstream.seen().is_empty(), "{:?}", s.upstream.seen());
    // The public path itself still works, and arrives as judged.
    let (status, _, _) = get(&s.proxy.url("/static/app.css")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.upstream.only().target, "/static/app.css");
}

// ---- 2. redirects the proxy writes stay on the site -------------------------

#[tokio::test]
async fn probe_and_login_redirects_never_leave_the_site() {
    let s = site("").await;
    // A target that begins with `//` would be another host in a Location.
    let mut b = Browser::new(&s.proxy);
    for target in [
        "//evil.example/x",
        "///evil.example/x",
        "//evil.example/x?CLOAKROOMSID=1",
    ] {
        for path in [target.to_owned(), format!("/static{target}")] {
            let page = b.get(&path).await;
            let location = page.location().unwrap_or("/");
            assert!(
                location.starts_with('/') && !location.starts_with("//"),
                "{path} → {location}"
            );
        }
    }
    for return_to in [
        "/.//evil.example/",
        "/./evil.example",
        "//evil.example",
        "/%2F/evil.example",
        "/\t/evil.example",
    ] {
        let mut b = Browser::new(&s.proxy);
        let form = b
            .get(&format!(
                "/.cloakroom/login?return_to={}",
                url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
            ))
            .await;
        let csrf = form.input("csrf").unwrap();
        let done = b
            .post_form(
                "/.cloakroom/login",
                &[
                    ("csrf", &csrf),
                    ("username", "alice"),
                    ("password", "wonderland"),
                    ("return_to", return_to),
                ],
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER);
        assert_eq!(done.location(), Some("/"), "{return_to:?}");
    }
}

// ---- 4. fixation through the URL ---------------------------------------------

#[tokio::test]
async fn a_link_with_the_attackers_session_logs_nobody_in() {
    let s = site("").await;
    // Mallory refuses cookies and logs in: her session lives in URL mode.
    let mut mallory = Browser::new(&s.proxy);
    mallory.refuse_cookies = true;
    mallory.user_agent = Some("mallory's browser".into());
    let done = log_in(&mut mallory, "mallory", "evil").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let ticket = ticket_in(done.location().unwrap()).expect("no ticket after login");
    let link = format!("/books?{NAME}={ticket}");
    assert_eq!(mallory.get(&link).await.status, StatusCode::OK);

    // Alice opens Mallory's link, with cookies allowed and with them blocked.
    for refuse in [false, true] {
        let mut alice = Browser::new(&s.proxy);
        alice.user_agent = Some("alice's browser".into());
        alice.refuse_cookies = refuse;
        let page = alice.get(&link).await;
        assert_eq!(page.status, StatusCode::FOUND, "refuse={refuse}");
        assert!(
            page.location().unwrap().starts_with("/.cloakroom/login"),
            "alice was put into mallory's session"
        );
        for cookie in page.headers.get_all("set-cookie") {
            let cookie = cookie.to_str().unwrap();
            let id = ticket.split('.').next().unwrap();
            assert!(!cookie.contains(id), "the URL ID became a cookie: {cookie}");
        }
    }
    let users: Vec<Option<String>> = s
        .upstream
        .seen()
        .iter()
        .map(|seen| seen.header("x-forwarded-user"))
        .collect();
    assert_eq!(
        users,
        [Some("mallory".to_owned())],
        "who reached the upstream"
    );
}

#[tokio::test]
async fn the_id_never_reaches_the_upstream_in_a_referer() {
    let s = site("").await;
    let mut c = Browser::new(&s.proxy);
    c.refuse_cookies = true;
    let done = log_in(&mut c, "alice", "wonderland").await;
    let location = done.location().unwrap().to_owned();
    let ticket = ticket_in(&location).unwrap();
    let id = ticket.split('.').next().unwrap().to_owned();
    let req = Request::get(s.proxy.url(&format!("/next?{NAME}={ticket}")))
        .header(
            "referer",
            format!("http://{}/prev?a=1&{NAME}={ticket}", s.proxy.addr),
        )
        .header("x-echo-of-my-address", format!("/prev?{NAME}={ticket}"))
        .body(empty())
        .unwrap();
    let (status, _, _) = send(&http1(), req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = s.upstream.only();
    assert_eq!(seen.target, "/next");
    assert_eq!(
        seen.header("referer").as_deref(),
        Some(format!("http://{}/prev?a=1", s.proxy.addr).as_str())
    );
    for (name, value) in &seen.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(&id),
            "the ID reached the upstream in {name}"
        );
    }
}

// ---- 5. the ID in the page ---------------------------------------------------

#[tokio::test]
async fn pages_served_to_a_cookie_client_never_hold_its_id() {
    let s = site("").await;
    let mut b = Browser::new(&s.proxy);
    let form = b.get("/.cloakroom/login").await;
    let before = b.session().unwrap().to_owned();
    assert!(!form.body.contains(&before), "the login page holds the ID");
    log_in(&mut b, "alice", "wonderland").await;
    let id = b.session().unwrap().to_owned();
    for page in ["/.cloakroom/login", "/.cloakroom/logout"] {
        let got = b.get(page).await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(!got.body.contains(&id), "{page} holds the ID");
        assert!(
            !got.body.contains(NAME),
            "{page} names the session parameter"
        );
    }
}

// ---- 6. races ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_are_counted_before_they_are_judged() {
    let s = site("max_failures_per_user = 5\nmax_failures_per_ip = 1000").await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let mut b = Browser::new(&s.proxy);
        let form = b.get("/.cloakroom/login").await;
        let csrf = form.input("csrf").unwrap();
        tasks.push(tokio::spawn(async move {
            b.post_form(
                "/.cloakroom/login",
                &[
                    ("csrf", &csrf),
                    ("username", "alice"),
                    ("password", "guess"),
                ],
            )
            .await
            .status
        }));
    }
    let mut judged = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => judged += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(judged, 5, "guesses evaluated against a limit of 5");
}

#[tokio::test]
async fn a_request_in_flight_during_logout_cannot_bring_the_session_back() {
    let s = site("").await;
    let mut c = Browser::new(&s.proxy);
    c.refuse_cookies = true;
    let done = log_in(&mut c, "alice", "wonderland").await;
    let ticket = ticket_in(done.location().unwrap()).unwrap();

    // A slow page that sets an application cookie (kept in the session's
    // jar in URL mode) is in flight...
    let slow = {
        let url = s
            .proxy
            .url(&format!("/slow?ms=800&cookie=1&{NAME}={ticket}"));
        tokio::spawn(async move { get(&url).await.0 })
    };
    s.upstream.arrived(1).await;
    // ...when the user logs out.
    let logout = c.get(&format!("/.cloakroom/logout?{NAME}={ticket}")).await;
    let csrf = logout.input("csrf").unwrap();
    let action = format!("/.cloakroom/logout?{NAME}={ticket}");
    let out = c.post_form(&action, &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(slow.await.unwrap(), StatusCode::OK);

    let req = Request::get(s.proxy.url(&format!("/books?{NAME}={ticket}")))
        .body(empty())
        .unwrap();
    let (status, _, _) = send(&http1(), req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session came back");
}

// ---- 7. headers --------------------------------------------------------------

#[tokio::test]
async fn headers_the_proxy_sets_cannot_be_nominated_away_or_forged() {
    let s = site("").await;
    let mut b = Browser::new(&s.proxy);
    log_in(&mut b, "alice", "wonderland").await;
    let cookie = format!("{NAME}={}", b.session().unwrap());
    let req = Request::get(s.proxy.url("/books"))
        .header("cookie", cookie.as_str())
        .header(
            "connection",
            "X-Forwarded-User, X-Forwarded-For, x-forwarded-host",
        )
        .header("forwarded", "for=10.9.9.9;proto=https")
        .header("x-real-ip", "10.9.9.9")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-prefix", "/admin")
        .header("x-original-url", "/admin")
        .header("x_original_url", "/admin")
        .header("x-rewrite-url", "/admin")
        .header("x-forwarded-for", "10.9.9.9")
        // Found by a later outside review: these reached the upstream.
        .header("client-ip", "10.9.9.9")
        .header("client_ip", "10.9.9.9")
        .header("x-originating-ip", "10.9.9.9")
        .header("remote-addr", "10.9.9.9")
        .header("x-envoy-external-address", "10.9.9.9")
        .header("cf-visitor", "{\"scheme\":\"https\"}")
        .header("x-forwarded-protocol", "https")
        .header("x-envoy-original-path", "/admin")
        .header("x-forwarded-client-cert", "Hash=1;Subject=\"CN=admin\"")
        .header("x-ssl-client-cert", "-----BEGIN CERTIFICATE-----")
        .header("ssl-client-verify", "SUCCESS")
        .header("x-arr-clientcert", "MIIB")
        .body(empty())
        .unwrap();
    send(&http1(), req).await;
    let seen = s.upstream.only();
    assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert!(seen.header("x-forwarded-host").is_some());
    for forged in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-original-url",
        "x_original_url",
        "x-rewrite-url",
        "client-ip",
        "client_ip",
        "x-originating-ip",
        "remote-addr",
        "x-envoy-external-address",
        "cf-visitor",
        "x-forwarded-protocol",
        "x-envoy-original-path",
        "x-forwarded-client-cert",
        "x-ssl-client-cert",
        "ssl-client-verify",
        "x-arr-clientcert",
    ] {
        assert!(
            seen.header(forged).is_none(),
            "{forged} reached the upstream"
        );
    }
}

#[tokio::test]
async fn connection_cannot_nominate_the_host_and_other_sso_headers_are_stripped() {
    let s = site("").await;
    let req = Request::get(s.proxy.url("/static/x"))
        .header("host", "app.example")
        .header("connection", "Host, Content-Type")
        .header("x.forwarded.user", "admin")
        .header("X-Forwarded-User.", "admin")
        .header("remote-user", "admin")
        .header("x_remote_user", "admin")
        .header("x-auth-request-user", "admin")
        .body(empty())
        .unwrap();
    send(&http1(), req).await;
    let seen = s.upstream.only();
    assert_eq!(seen.header("host").as_deref(), Some("app.example"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.example")
    );
    for (name, _) in &seen.headers {
        let folded: String = name
            .as_str()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        assert!(
            ![
                "x-forwarded-user",
                "x-forwarded-user-",
                "remote-user",
                "x-remote-user",
                "x-auth-request-user"
            ]
            .contains(&folded.as_str()),
            "{name} reached the upstream"
        );
    }
}

#[tokio::test]
async fn entering_url_mode_sets_no_cookie_of_the_id() {
    let s = site("").await;
    let mut c = Browser::new(&s.proxy);
    c.refuse_cookies = true;
    let probe = c.get("/static/page").await;
    assert!(
        probe.headers.get("set-cookie").is_some(),
        "the probe sets its cookie"
    );
    let back = c.get(probe.location().unwrap()).await;
    let ticket = ticket_in(back.location().unwrap()).expect("not in URL mode");
    let id = ticket.split('.').next().unwrap();
    for cookie in back.headers.get_all("set-cookie") {
        assert!(
            !cookie.to_str().unwrap().contains(id),
            "the ID in the URL was also set as a cookie"
        );
    }
}

#[tokio::test]
async fn only_websocket_upgrades_are_tunnelled() {
    let s = site("").await;
    let req = Request::get(s.proxy.url("/static/x"))
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAAQAAP__")
        .body(empty())
        .unwrap();
    let (status, _, _) = send(&http1(), req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = s.upstream.only();
    for hop in ["upgrade", "connection", "http2-settings"] {
        assert!(seen.header(hop).is_none(), "{hop} was forwarded");
    }
}

// ---- 8. what an anonymous client can make the proxy spend --------------------

#[tokio::test]
async fn a_login_body_that_trickles_in_is_cut_off() {
    let s = site("[server]\nheader_timeout = \"1s\"").await;
    let mut b = Browser::new(&s.proxy);
    b.get("/.cloakroom/login").await;
    let cookie = format!("{NAME}={}", b.session().unwrap());
    let mut conn = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    let head = format!(
        "POST /.cloakroom/login HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=al"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was held past the deadline");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// A proxy with the file store in a directory of the test's own.
async fn file_store_proxy() -> (Upstream, Proxy, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().join("sessions");
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[session]\nstore = \"file\"\ndir = {:?}",
            sessions.to_str().unwrap()
        ),
    )
    .await;
    (upstream, proxy, dir, sessions)
}

#[tokio::test]
async fn anonymous_logouts_write_nothing_to_the_file_store() {
    let (_upstream, proxy, _dir, sessions) = file_store_proxy().await;
    for _ in 0..20 {
        // A new ID, its CSRF token (the login page's second visit shows the
        // session's own), then a logout of a session that holds nothing.
        let mut b = Browser::new(&proxy);
        b.get("/.cloakroom/login").await;
        let page = b.get("/.cloakroom/login").await;
        let csrf = page.input("csrf").unwrap();
        let out = b.post_form("/.cloakroom/logout", &[("csrf", &csrf)]).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER);
    }
    let files = std::fs::read_dir(&sessions).unwrap().count();
    assert_eq!(files, 0, "anonymous logouts wrote session files");
}

#[tokio::test]
async fn anonymous_url_mode_jars_are_budgeted_per_address() {
    let (_upstream, proxy, _dir, sessions) = file_store_proxy().await;
    // Each round: a new cookie-refusing visitor, probed into URL mode, on a
    // page that sets an application cookie.
    for round in 0..40 {
        let mut c = Browser::new(&proxy);
        c.refuse_cookies = true;
        // Distinct agents, so the probe's loop guard stays out of the way.
        c.user_agent = Some(format!("visitor {round}"));
        let probe = c.get("/html/page").await;
        let back = c.get(probe.location().unwrap()).await;
        let location = back.location().unwrap().to_owned();
        let page = c.get(&format!("{location}&set=app%3D1")).await;
        assert_eq!(page.status, StatusCode::OK);
    }
    let files = std::fs::read_dir(&sessions).unwrap().count();
    assert_eq!(files, cloakroom::session::budget::PER_ADDRESS as usize);
}

#[tokio::test]
async fn url_mode_withholds_bodies_it_cannot_make_safe() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let mut c = Browser::new(&proxy);
    c.refuse_cookies = true;
    let probe = c.get("/html/page").await;
    let back = c.get(probe.location().unwrap()).await;
    let ticket = ticket_in(back.location().unwrap()).unwrap();
    // No Content-Type (a browser sniffs), two of them (it picks one), XML:
    // the body is withheld.
    for headers in [
        "",
        "h=content-type:text/plain&h=content-type:text/html&",
        "h=content-type:text/xml&",
    ] {
        let page = c
            .get(&format!("/respond-with?{headers}{NAME}={ticket}"))
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            !page.body.contains("as you wish"),
            "{headers}: the body passed"
        );
        assert!(page.body.contains("cannot be shown"), "{}", page.body);
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
    }
    // A format no browser renders as markup passes untouched.
    let plain = c
        .get(&format!(
            "/respond-with?h=content-type:text/plain&{NAME}={ticket}"
        ))
        .await;
    assert_eq!(plain.body, "as you wish");
    // Redirects that would send full addresses elsewhere are tempered,
    // whoever asks (a cached one may later serve a URL-mode page).
    let req = Request::get(proxy.url(
        "/respond-with?status=302&h=referrer-policy:unsafe-url&h=location:http://evil.example/",
    ))
    .body(empty())
    .unwrap();
    let (status, headers, _) = send(&http1(), req).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers["referrer-policy"],
        "strict-origin-when-cross-origin"
    );
}
