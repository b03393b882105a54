//! Login, logout, access rules and the identity header, end to end.

mod support;

use std::sync::OnceLock;

use http::{Request, StatusCode};
use support::*;

/// alice's password hash, made once per test binary (argon2 is slow on purpose).
fn users_toml() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS.get_or_init(|| {
        let alice = cloakroom::auth::password::hash("wonderland").unwrap();
        let bob = cloakroom::auth::password::hash("builder").unwrap();
        format!("alice = \"{alice}\"\nbob = \"{bob}\"\n")
    })
}

struct Site {
    upstream: Upstream,
    proxy: Proxy,
    _users: tempfile::TempDir,
}

/// Everything under `/` protected except `/public`; `auth` adds more keys.
async fn site(auth: &str, more: &str) -> Site {
    let users = tempfile::tempdir().unwrap();
    let file = users.path().join("users.toml");
    std::fs::write(&file, users_toml()).unwrap();
    let upstream = Upstream::start().await;
    let public = if auth.contains("public =") {
        ""
    } else {
        "public = [\"/public\"]\n"
    };
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[auth]\nusers_file = {:?}\nprotect = [\"/\"]\n{public}app_name = \"Ledger\"\n{auth}\n{more}",
            file.to_str().unwrap()
        ),
    )
    .await;
    Site {
        upstream,
        proxy,
        _users: users,
    }
}

/// Opens the login page, then posts the form with these credentials.
async fn log_in(b: &mut Browser, user: &str, password: &str, return_to: &str) -> Page {
    let form = b
        .get(&format!(
            "/.cloakroom/login?return_to={}",
            url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = form.input("csrf").expect("no CSRF token in the form");
    let return_to = form.input("return_to").unwrap();
    b.post_form(
        "/.cloakroom/login",
        &[
            ("csrf", &csrf),
            ("username", user),
            ("password", password),
            ("return_to", &return_to),
        ],
    )
    .await
}

#[tokio::test]
async fn a_protected_page_leads_to_login_and_the_upstream_learns_the_user() {
    let s = site("", "").await;
    let mut b = Browser::new(&s.proxy);

    let first = b.get("/ledger/2024?view=full").await;
    assert_eq!(first.status, StatusCode::FOUND);
    assert_eq!(
        first.location(),
        Some("/.cloakroom/login?return_to=%2Fledger%2F2024%3Fview%3Dfull")
    );
    assert!(
        s.upstream.seen().is_empty(),
        "the upstream was reached without a login"
    );

    let form = b.get(first.location().unwrap()).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("to Ledger"));
    assert_eq!(form.input("return_to").unwrap(), "/ledger/2024?view=full");
    let anonymous = b.session().unwrap().to_owned();

    let csrf = form.input("csrf").unwrap();
    let done = b
        .post_form(
            "/.cloakroom/login",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "wonderland"),
                ("return_to", "/ledger/2024?view=full"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), Some("/ledger/2024?view=full"));
    let logged_in = b.session().unwrap().to_owned();
    assert_ne!(
        logged_in, anonymous,
        "the session ID did not change at login"
    );
    let cookie = done.headers["set-cookie"].to_str().unwrap();
    assert!(
        !cookie.contains("Max-Age"),
        "not remembered, yet persistent: {cookie}"
    );

    let page = b.get("/ledger/2024?view=full").await;
    assert_eq!(page.status, StatusCode::OK);
    let seen = s.upstream.only();
    assert_eq!(seen.target, "/ledger/2024?view=full");
    assert_eq!(seen.header("x-forwarded-user").unwrap(), "alice");
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_refused_alike() {
    let s = site("", "").await;
    for (user, password) in [
        ("alice", "wrong"),
        ("mallory", "wonderland"),
        ("", ""),
        ("alice", ""),
    ] {
        let mut b = Browser::new(&s.proxy);
        let page = log_in(&mut b, user, password, "/").await;
        assert_eq!(page.status, StatusCode::OK, "{user}/{password}");
        assert!(page.body.contains("Wrong username or password."));
        assert!(page.location().is_none());
        let after = b.get("/books").await;
        assert_eq!(after.status, StatusCode::FOUND, "{user} got in");
    }
    assert!(s.upstream.seen().is_empty());
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_user_and_per_address() {
    let s = site("max_failures_per_user = 3\nmax_failures_per_ip = 6", "").await;
    let mut b = Browser::new(&s.proxy);
    for _ in 0..3 {
        assert_eq!(
            log_in(&mut b, "alice", "guess", "/").await.status,
            StatusCode::OK
        );
    }
    // Now even the right password is refused for alice, for a while.
    let blocked = log_in(&mut b, "alice", "wonderland", "/").await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = blocked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 15 * 60, "{retry}");
    assert!(blocked.body.contains("Too many failed attempts"));
    assert_eq!(b.get("/x").await.status, StatusCode::FOUND);

    // bob is not blocked, until this address has failed too often.
    for _ in 0..3 {
        log_in(&mut b, "bob", "guess", "/").await;
    }
    let page = log_in(&mut b, "carol", "anything", "/").await;
    assert_eq!(
        page.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the address was not throttled"
    );
}

#[tokio::test]
async fn login_and_logout_without_a_valid_csrf_token_are_forbidden() {
    let s = site("", "").await;
    let mut b = Browser::new(&s.proxy);
    let form = b.get("/.cloakroom/login").await;
    let token = form.input("csrf").unwrap();

    // Tokens are bound to the session, or (before there is one) to the
    // client: another browser's token is worth nothing here.
    let mut other = Browser::new(&s.proxy);
    other.user_agent = Some("another browser".into());
    let other_token = other.get("/.cloakroom/login").await.input("csrf").unwrap();
    for csrf in [None, Some(""), Some("forged"), Some(other_token.as_str())] {
        let mut fields = vec![("username", "alice"), ("password", "wonderland")];
        if let Some(c) = csrf {
            fields.push(("csrf", c));
        }
        let page = b.post_form("/.cloakroom/login", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "csrf {csrf:?}");
    }
    // Right token, but no cookie came back: this client refuses cookies,
    // so the login puts it in URL mode (ticket in the redirect, no cookie).
    let mut cookieless = Browser::new(&s.proxy);
    let page = cookieless
        .post_form(
            "/.cloakroom/login",
            &[
                ("csrf", &token),
                ("username", "alice"),
                ("password", "wonderland"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.headers.get("set-cookie").is_none());
    assert!(
        page.location().unwrap().contains("CLOAKROOMSID="),
        "{:?}",
        page.location()
    );
    // ...and from another client, the same form token is refused.
    let mut elsewhere = Browser::new(&s.proxy);
    elsewhere.user_agent = Some("another browser".into());
    let page = elsewhere
        .post_form(
            "/.cloakroom/login",
            &[
                ("csrf", &token),
                ("username", "alice"),
                ("password", "wonderland"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    assert_eq!(
        log_in(&mut b, "alice", "wonderland", "/").await.status,
        StatusCode::SEE_OTHER
    );
    let page = b.post_form("/.cloakroom/logout", &[("csrf", "nope")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        b.get("/still-in").await.status,
        StatusCode::OK,
        "a forged logout logged out"
    );
}

#[tokio::test]
async fn ids_change_at_login_and_logout_and_old_ones_are_worthless() {
    let s = site("", "").await;
    let mut b = Browser::new(&s.proxy);
    b.get("/.cloakroom/login").await;
    let before = b.session().unwrap().to_owned();
    log_in(&mut b, "alice", "wonderland", "/").await;
    let during = b.session().unwrap().to_owned();
    assert_ne!(before, during);

    // Replaying the pre-login ID (as a fixation attacker would) gets nothing.
    let mut attacker = Browser::new(&s.proxy);
    attacker
        .cookies
        .insert("CLOAKROOMSID".into(), before.clone());
    assert_eq!(attacker.get("/books").await.status, StatusCode::FOUND);
    assert_ne!(
        attacker.session(),
        Some(before.as_str()),
        "the planted ID was kept"
    );

    let confirm = b.get("/.cloakroom/logout").await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("alice"));
    let csrf = confirm.input("csrf").unwrap();
    let out = b.post_form("/.cloakroom/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), Some("/"));
    assert!(out.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(b.session(), None, "the cookie was not expired");

    // The logged-in cookie, replayed after logout, is worth nothing.
    let mut replay = Browser::new(&s.proxy);
    replay.cookies.insert("CLOAKROOMSID".into(), during);
    assert_eq!(replay.get("/books").await.status, StatusCode::FOUND);
    let upstream_users: Vec<_> = s
        .upstream
        .seen()
        .iter()
        .flat_map(|r| r.all("x-forwarded-user"))
        .collect();
    assert!(upstream_users.is_empty(), "{upstream_users:?}");
}

#[tokio::test]
async fn return_to_never_leaves_the_site() {
    let s = site("", "").await;
    for target in [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "HTTPS://EVIL.EXAMPLE",
        "javascript:alert(1)",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "%2F%2Fevil.example",
        "/ok\r\nSet-Cookie: x=1",
        "/%0d%0aSet-Cookie:x=1",
        "evil.example",
    ] {
        let mut b = Browser::new(&s.proxy);
        let page = log_in(&mut b, "alice", "wonderland", target).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert_eq!(page.location(), Some("/"), "{target:?}");
    }
    let mut b = Browser::new(&s.proxy);
    let page = log_in(&mut b, "alice", "wonderland", "/reports?year=2024#q3").await;
    assert_eq!(page.location(), Some("/reports?year=2024#q3"));
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let s = site("", "").await;
    let spoof = |path: &str| {
        Request::get(format!("http://{}{path}", s.proxy.addr))
            .header("X-Forwarded-User", "admin")
            .header("x_forwarded_user", "admin")
            .header("X-FORWARDED-USER", "root")
            .header("X_Forwarded-User", "admin")
            .header("X-Cloakroom-Login", "admin")
            .body(empty())
            .unwrap()
    };
    let (status, _, _) = send(&http1(), spoof("/public/page")).await;
    assert_eq!(status, StatusCode::OK);
    let seen = s.upstream.only();
    for name in ["x-forwarded-user", "x_forwarded_user", "x-cloakroom-login"] {
        assert!(seen.header(name).is_none(), "{name} reached the upstream");
    }

    // Logged in: exactly one value, the proxy's.
    let mut b = Browser::new(&s.proxy);
    log_in(&mut b, "alice", "wonderland", "/").await;
    let mut req = spoof("/public/again");
    let cookie = format!("CLOAKROOMSID={}", b.session().unwrap());
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    send(&http1(), req).await;
    let seen = s.upstream.seen().pop().unwrap();
    assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
    assert!(seen.header("x_forwarded_user").is_none());
}

#[tokio::test]
async fn path_tricks_do_not_slip_past_the_rules() {
    let s = site("", "").await;
    let ask = |path: &str| {
        Request::get(format!("http://{}{path}", s.proxy.addr))
            .header("accept", "application/json")
            .body(empty())
            .unwrap()
    };
    // Ambiguous: refused before any rule is judged.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public%2f..%2fadmin",
        "/public/..;/admin",
        "/public/..;jsessionid=x/admin",
        "/public\\..\\admin",
        "/public/%5c..%5cadmin",
        "/public/%252e%252e/admin",
        "/public/./page",
        "/public/..%20/admin",
        "/public/...",
    ] {
        let (status, _, body) = send(&http1(), ask(path)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(String::from_utf8_lossy(&body).starts_with("400"), "{path}");
    }
    // Unambiguous, and protected however the upstream reads them.
    for path in [
        "/publicity",
        "//admin",
        "//public/../admin",
        "/%61dmin",
        "/PUBLIC/page",
        "/Public/page",
        "/public;x=1/page",
        "/public./page",
        "/public%20/page",
    ] {
        let (status, _, _) = send(&http1(), ask(path)).await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST,
            "{path} slipped past: {status}"
        );
    }
    // The same over HTTP/2 and in absolute form.
    let (status, _, _) = send(&http2(), ask("/public/%2e%2e/admin")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let raw_answer = raw(
        s.proxy.addr,
        b"GET http://app.example/public/../admin HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw_answer.starts_with("HTTP/1.1 400"), "{raw_answer}");
    // Any spelling of the proxy's own prefix stays with the proxy.
    for path in [
        "/%2ecloakroom/login",
        "/.CLOAKROOM/login",
        "/.cloakroom;x/login",
    ] {
        let (status, _, _) = send(&http1(), ask(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    assert!(s.upstream.seen().is_empty(), "{:?}", s.upstream.seen());

    // What is public is forwarded exactly as judged, `//` collapsed.
    let (status, _, _) = get(&s.proxy.url("//public//page")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.upstream.only().target, "/public/page");
}

#[tokio::test]
async fn rules_protect_case_insensitively_and_only_inside_the_upstream_prefix() {
    let users = tempfile::tempdir().unwrap();
    let file = users.path().join("users.toml");
    std::fs::write(&file, users_toml()).unwrap();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start_url(
        &format!("http://{}/app/", upstream.addr),
        "",
        &format!(
            "[auth]\nusers_file = {:?}\nprotect = [\"/admin\"]\n",
            file.to_str().unwrap()
        ),
    )
    .await;
    for path in ["/admin", "/ADMIN/x", "/Admin;a=b", "/adm%49n/", "/admin."] {
        let req = Request::get(proxy.url(path)).body(empty()).unwrap();
        let (status, _, _) = send(&http1(), req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // Nothing climbs out of the upstream's prefix.
    for path in ["/../secret", "/%2e%2e/secret", "/x/..%2f..%2fsecret"] {
        let req = Request::get(proxy.url(path)).body(empty()).unwrap();
        let (status, _, _) = send(&http1(), req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert!(upstream.seen().is_empty());
    get(&proxy.url("/open")).await;
    assert_eq!(upstream.only().target, "/app/open");
}

#[tokio::test]
async fn non_browser_clients_get_401_not_a_redirect() {
    let s = site("", "").await;
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut req = Request::get(s.proxy.url("/api/me"));
        if let Some(a) = accept {
            req = req
                .header("accept", a)
                .header("x-requested-with", "XMLHttpRequest");
        }
        let (status, headers, body) = send(&http1(), req.body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{accept:?}");
        assert!(headers.get("location").is_none());
        assert!(headers.contains_key("www-authenticate"));
        assert!(
            headers.get("set-cookie").is_none(),
            "a 401 started a session: {accept:?}"
        );
        assert!(String::from_utf8_lossy(&body).starts_with("401"));
    }
}

#[tokio::test]
async fn remember_me_gives_a_persistent_cookie() {
    let s = site("", "[session]\nremember_me = \"30d\"").await;
    let mut b = Browser::new(&s.proxy);
    let form = b.get("/.cloakroom/login").await;
    let csrf = form.input("csrf").unwrap();
    let page = b
        .post_form(
            "/.cloakroom/login",
            &[
                ("csrf", &csrf),
                ("username", "bob"),
                ("password", "builder"),
                ("remember", "1"),
            ],
        )
        .await;
    let cookie = page.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains(&format!("Max-Age={}", 30 * 86400)),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr}: {cookie}");
    }
    // It lives past the idle limit (30 m) without requests.
    s.proxy
        .app
        .sessions
        .clock()
        .skip(std::time::Duration::from_secs(2 * 86400));
    assert_eq!(b.get("/ledger").await.status, StatusCode::OK);
    s.proxy
        .app
        .sessions
        .clock()
        .skip(std::time::Duration::from_secs(29 * 86400));
    assert_eq!(b.get("/ledger").await.status, StatusCode::FOUND);
}

#[tokio::test]
async fn the_upstream_can_drive_the_session_only_when_allowed() {
    let s = site(
        "public = [\"/respond-with\"]",
        "[identity]\nupstream_control = true",
    )
    .await;
    let mut b = Browser::new(&s.proxy);
    b.visit("/respond-with?h=X-Seen:0").await;
    let before = b.session().unwrap().to_owned();
    let page = b.get("/respond-with?h=X-Cloakroom-Login:carol").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers.get("x-cloakroom-login").is_none(),
        "the control header reached the client"
    );
    let carol = b.session().unwrap().to_owned();
    assert_ne!(carol, before);
    b.get("/respond-with?h=X-Seen:1").await;
    assert_eq!(
        s.upstream
            .seen()
            .pop()
            .unwrap()
            .header("x-forwarded-user")
            .unwrap(),
        "carol"
    );

    let page = b.get("/respond-with?h=X-Cloakroom-Logout:1").await;
    assert!(page.headers.get("x-cloakroom-logout").is_none());
    assert_eq!(b.session(), None, "the cookie was not expired");
    let mut replay = Browser::new(&s.proxy);
    replay.cookies.insert("CLOAKROOMSID".into(), carol);
    assert_eq!(replay.get("/ledger").await.status, StatusCode::FOUND);
}

#[tokio::test]
async fn upstream_session_headers_are_ignored_and_stripped_by_default() {
    let s = site("public = [\"/respond-with\"]", "").await;
    let mut b = Browser::new(&s.proxy);
    let (page, _) = b.visit("/respond-with?h=X-Cloakroom-Login:alice").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers.get("x-cloakroom-login").is_none());
    assert_eq!(
        b.get("/ledger").await.status,
        StatusCode::FOUND,
        "the upstream logged someone in"
    );
}

#[tokio::test]
async fn reserved_paths_are_answered_locally() {
    let s = site("", "").await;
    let (status, _, _) = get(&s.proxy.url("/.cloakroom/nothing-here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let req = Request::delete(s.proxy.url("/.cloakroom/login"))
        .body(empty())
        .unwrap();
    let (status, headers, _) = send(&http1(), req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers.contains_key("allow"));
    let (status, headers, body) = get(&s.proxy.url("/.cloakroom/login")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert!(String::from_utf8_lossy(&body)
        .contains("<form method=\"post\" action=\"/.cloakroom/login\">"));
    assert!(s.upstream.seen().is_empty());
}

/// A shared cache in front of the proxy (a CDN that keeps `.pdf`s whatever
/// the cookies) must never hand a page made for a logged-in user to the
/// next visitor, who would get it without logging in: every answer to a
/// logged-in session is `private`, whatever the application said.
#[tokio::test]
async fn answers_for_a_logged_in_user_are_kept_out_of_shared_caches() {
    let s = site("", "[session]\ncookieless = false").await;
    let cacheable = "h=Cache-Control%3Apublic%2C%20max-age%3D600%2C%20s-maxage%3D3600";

    // Anonymous, on a public path: the application's caching is its own.
    let mut b = Browser::new(&s.proxy);
    let page = b.get(&format!("/public/respond-with?{cacheable}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers["cache-control"],
        "public, max-age=600, s-maxage=3600"
    );

    let page = log_in(&mut b, "alice", "wonderland", "/books").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    // A protected page, with the application's directives and without.
    let page = b
        .get(&format!("/report.pdf/respond-with?{cacheable}"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        s.upstream
            .seen()
            .last()
            .unwrap()
            .header("x-forwarded-user")
            .as_deref(),
        Some("alice")
    );
    assert_eq!(page.headers["cache-control"], "private, max-age=600");
    let page = b.get("/books").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["cache-control"], "private");
    // A public path too: the application was told who asked.
    let page = b.get(&format!("/public/respond-with?{cacheable}")).await;
    assert_eq!(page.headers["cache-control"], "private, max-age=600");
    // An application that keeps it unstored itself still gets private first.
    let page = b.get("/respond-with?h=Cache-Control%3Ano-store").await;
    assert_eq!(page.headers["cache-control"], "private, no-store");
    // Fields a CDN or an nginx cache would obey instead of Cache-Control go.
    let page = b
        .get("/respond-with?h=CDN-Cache-Control%3Amax-age%3D600&h=X-Accel-Expires%3A600")
        .await;
    assert_eq!(page.headers["cache-control"], "private");
    assert!(!page.headers.contains_key("cdn-cache-control"));
    assert!(!page.headers.contains_key("x-accel-expires"));
}
