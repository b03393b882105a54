//! Sessions end to end: the cookie a visitor gets, what is honoured, what is
//! replaced, what the upstream sees, and what survives a restart.

mod support;

use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use support::*;

/// The session ID in our `Set-Cookie`, if the response carries one.
fn issued(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("CLOAKROOMSID="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn our_set_cookie(headers: &HeaderMap) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("CLOAKROOMSID="))
        .expect("no session cookie issued")
        .to_owned()
}

/// A new session ID, from a page that issues one (the login form).
async fn fresh_id(proxy: &Proxy) -> String {
    let (_, headers, _) = get(&proxy.url("/.cloakroom/login")).await;
    issued(&headers).expect("the login page issued no session")
}

async fn get_with_cookie(url: &str, cookie: &str) -> (StatusCode, HeaderMap, bytes::Bytes) {
    let req = Request::get(url)
        .header("cookie", cookie)
        .body(empty())
        .unwrap();
    send(&http1(), req).await
}

#[tokio::test]
async fn anonymous_requests_get_no_session_until_one_is_needed() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[session]\ncookieless = false").await;
    let cacheable = "/respond-with?h=Cache-Control%3Apublic%2C%20max-age%3D600";

    // A stylesheet, an API call, even a page: nothing to keep, no cookie,
    // and the application's caching stays its own.
    for accept in ["text/css", "application/json", "text/html"] {
        let req = Request::get(proxy.url(cacheable))
            .header("accept", accept)
            .body(empty())
            .unwrap();
        let (status, headers, _) = send(&http1(), req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(issued(&headers), None, "{accept}: a session was issued");
        assert_eq!(headers["cache-control"], "public, max-age=600", "{accept}");
    }
    // Nor does a 404 under /.cloakroom/.
    let (status, headers, _) = get(&proxy.url("/.cloakroom/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(issued(&headers), None);
    // The login page does need one.
    let (_, headers, _) = get(&proxy.url("/.cloakroom/login")).await;
    assert!(
        issued(&headers).is_some(),
        "the login page issued no session"
    );
}

#[tokio::test]
async fn a_new_session_cookie_goes_beside_the_apps_own() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        "[session]\napp_values = true\ncookieless = false",
    )
    .await;

    // Without a session to keep, the application's cookies alone.
    let (status, headers, _) = get(&proxy.url("/hop")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(issued(&headers), None);
    assert_eq!(headers.get_all("set-cookie").iter().count(), 2);

    // The application stores a value: now there is a session to keep.
    let (status, headers, _) = get(&proxy.url(
        "/respond-with?h=Set-Cookie%3Aapp%3D1%3B%20Path%3D%2F&h=Set-Cookie%3Atheme%3Ddark&h=X-Cloakroom-Session-Set%3Acart%3D1",
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let cookie = our_set_cookie(&headers);
    let id = issued(&headers).unwrap();
    assert_eq!(id.len(), 54, "{cookie}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    for absent in ["Max-Age", "Expires", "Secure", "Domain"] {
        assert!(!cookie.contains(absent), "{absent} present: {cookie}");
    }
    // The app's own cookies pass untouched, ours is added beside them.
    let all: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], "app=1; Path=/");
    assert_eq!(all[1], "theme=dark");

    // Two visitors never share an ID.
    assert_ne!(fresh_id(&proxy).await, id);
}

#[tokio::test]
async fn cookie_attributes_follow_the_config() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        "[session]\nname = \"sid\"\ncookie_path = \"/app\"\ncookie_domain = \"example.com\"\nsame_site = \"strict\"\nsecure = true\nstore = \"memory\"",
    )
    .await;
    let (_, headers, _) = get(&proxy.url("/.cloakroom/login")).await;
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("sid="), "{cookie}");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/app",
        "Domain=example.com",
        "Secure",
    ] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
}

#[tokio::test]
async fn a_returning_visitor_keeps_its_id_and_the_upstream_never_sees_it() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    let id = fresh_id(&proxy).await;
    let (_, headers, _) = get(&proxy.url("/")).await;
    assert_eq!(issued(&headers), None);

    let cookie = format!("a=1; CLOAKROOMSID={id}; b=\"two\"");
    let (_, headers, _) = get_with_cookie(&proxy.url("/"), &cookie).await;
    assert_eq!(issued(&headers), None, "a live session was re-issued");

    let (_, headers, _) = get_with_cookie(&proxy.url("/"), &format!("CLOAKROOMSID={id}")).await;
    assert_eq!(issued(&headers), None);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[0].header("cookie").is_none());
    assert_eq!(seen[1].header("cookie").unwrap(), "a=1; b=\"two\"");
    assert!(
        seen[2].header("cookie").is_none(),
        "an empty Cookie header was sent"
    );
    for s in &seen {
        for v in s.all("cookie") {
            assert!(
                !v.contains("CLOAKROOMSID"),
                "the upstream saw the session: {v}"
            );
        }
    }
}

#[tokio::test]
async fn forged_tampered_and_attacker_chosen_ids_are_replaced() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let real = fresh_id(&proxy).await;

    let mut tampered = real.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let other_key = {
        // A well-formed ID signed by another proxy's key.
        let other = Proxy::start(&upstream, "", "").await;
        fresh_id(&other).await
    };
    let bad = [
        "attacker-chosen-session-id".to_owned(),
        "A".repeat(54),
        tampered,
        other_key,
        format!("{real}x"),
        String::new(),
    ];
    let before = proxy.app.sessions.forged();
    for value in &bad {
        // The login page issues a session: a new one, never the one presented.
        let (status, headers, _) = get_with_cookie(
            &proxy.url("/.cloakroom/login"),
            &format!("CLOAKROOMSID={value}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let new = issued(&headers).unwrap_or_else(|| panic!("{value:?} was honoured"));
        assert_ne!(&new, value);
        assert_ne!(new, real);
    }
    assert_eq!(proxy.app.sessions.forged() - before, bad.len() as u64);

    // Non-UTF-8 bytes and odd spacing in the Cookie header are no error.
    let answer = raw(
        proxy.addr,
        b"GET /.cloakroom/login HTTP/1.1\r\nHost: x\r\nCookie: \xff\xfe=\x80;;  CLOAKROOMSID = \"\xc3\x28\" ; =\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("CLOAKROOMSID="), "no new session issued");
}

#[tokio::test]
async fn an_expired_session_is_replaced_and_stays_dead() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        "[session]\nstore = \"memory\"\nidle_timeout = \"30m\"\nabsolute_timeout = \"2h\"",
    )
    .await;
    let sessions = &proxy.app.sessions;
    let clock = sessions.clock();

    // An ID with nothing stored: one idle period from issue.
    let unused = fresh_id(&proxy).await;
    clock.skip(Duration::from_secs(31 * 60));
    let (_, h, _) = get_with_cookie(
        &proxy.url("/.cloakroom/login"),
        &format!("CLOAKROOMSID={unused}"),
    )
    .await;
    assert!(issued(&h).is_some_and(|new| new != unused));

    // A stored session: idle limit.
    let id = fresh_id(&proxy).await;
    let mut current = sessions
        .resolve(&cookie_header(&id), None, local_client())
        .await
        .unwrap();
    current.record_mut(sessions.clock().now_ms()).user = Some("alice".into());
    sessions.commit(&mut current).await.unwrap();
    for _ in 0..5 {
        clock.skip(Duration::from_secs(20 * 60));
        let (_, h, _) = get_with_cookie(&proxy.url("/"), &format!("CLOAKROOMSID={id}")).await;
        assert_eq!(issued(&h), None, "a busy session expired early");
    }
    // 100 minutes busy; the absolute limit (2 h) ends it within the next 20.
    clock.skip(Duration::from_secs(20 * 60));
    let (_, h, _) = get_with_cookie(
        &proxy.url("/.cloakroom/login"),
        &format!("CLOAKROOMSID={id}"),
    )
    .await;
    let replaced = issued(&h).expect("a session outlived its absolute limit");
    assert_ne!(replaced, id);
    // Replaying it later does not bring it (or its user) back.
    let again = sessions
        .resolve(&cookie_header(&id), None, local_client())
        .await
        .unwrap();
    assert!(again.fresh && again.session.is_none());
}

#[tokio::test]
async fn a_destroyed_session_is_worth_nothing() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let sessions = &proxy.app.sessions;

    let id = fresh_id(&proxy).await;
    let mut current = sessions
        .resolve(&cookie_header(&id), None, local_client())
        .await
        .unwrap();
    current.record_mut(sessions.clock().now_ms());
    sessions.commit(&mut current).await.unwrap();
    sessions.logout(&mut current);
    sessions.commit(&mut current).await.unwrap();

    let (_, h, _) = get_with_cookie(
        &proxy.url("/.cloakroom/login"),
        &format!("CLOAKROOMSID={id}"),
    )
    .await;
    assert!(
        issued(&h).is_some_and(|new| new != id),
        "a destroyed ID was honoured"
    );
}

#[tokio::test]
async fn a_file_store_session_survives_a_restart_and_a_corrupt_file_is_skipped() {
    let upstream = Upstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let corrupt = dir.join(format!("{}.json", "0f".repeat(16)));
    std::fs::write(&corrupt, b"{\"live\":{\"session\":{\"created\":1,").unwrap();
    let session_conf = format!(
        "[session]\nstore = \"file\"\ndir = {:?}\nsecret_file = {:?}",
        dir.to_str().unwrap(),
        state.path().join("cloakroom.key").to_str().unwrap()
    );

    let mut first = Proxy::start(&upstream, "", &session_conf).await;
    let (status, _, _) = get(&first.url("/")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a corrupt session file broke the proxy"
    );
    let id = fresh_id(&first).await;
    let sessions = &first.app.sessions;
    let mut current = sessions
        .resolve(&cookie_header(&id), None, local_client())
        .await
        .unwrap();
    let data = current.record_mut(sessions.clock().now_ms());
    data.user = Some("alice".into());
    data.values.insert("colour".into(), "teal".into());
    sessions.commit(&mut current).await.unwrap();
    within(first.shutdown()).await.unwrap().unwrap();

    let second = Proxy::start(&upstream, "", &session_conf).await;
    let (_, h, _) = get_with_cookie(&second.url("/"), &format!("CLOAKROOMSID={id}")).await;
    assert_eq!(issued(&h), None, "the session was lost across the restart");
    let back = second
        .app
        .sessions
        .resolve(&cookie_header(&id), None, local_client())
        .await
        .unwrap();
    let back = back
        .session
        .clone()
        .expect("stored data lost across the restart");
    assert_eq!(back.user.as_deref(), Some("alice"));
    assert_eq!(back.values["colour"], "teal");
    assert!(corrupt.exists());
}

#[tokio::test]
async fn a_flood_of_new_visitors_stores_nothing() {
    let upstream = Upstream::start().await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("sessions");
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[session]\nstore = \"file\"\ndir = {:?}",
            dir.to_str().unwrap()
        ),
    )
    .await;

    let client = http1();
    for n in 0..300 {
        // Every visitor is handed a session by the login page; none is stored.
        let path = if n % 2 == 0 { "/.cloakroom/login" } else { "/" };
        let (status, h, _) = send(
            &client,
            Request::get(proxy.url(path)).body(empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(issued(&h).is_some(), n % 2 == 0);
    }
    assert_eq!(proxy.app.sessions.stats().await.unwrap().records, 0);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "files written for empty sessions"
    );
}

#[tokio::test]
async fn many_concurrent_requests_share_one_session() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let id = fresh_id(&proxy).await;
    let sessions = &proxy.app.sessions;
    let mut current = sessions
        .resolve(&cookie_header(&id), None, local_client())
        .await
        .unwrap();
    current.record_mut(sessions.clock().now_ms());
    sessions.commit(&mut current).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = proxy.url(&format!("/c{i}"));
        let cookie = format!("n={i}; CLOAKROOMSID={id}");
        tasks.push(tokio::spawn(
            async move { get_with_cookie(&url, &cookie).await },
        ));
    }
    for task in tasks {
        let (status, h, _) = within(task).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(issued(&h), None, "a concurrent request lost the session");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 200);
    for s in &seen {
        let cookie = s.header("cookie").unwrap();
        let n = s.target.trim_start_matches("/c");
        assert_eq!(cookie, format!("n={n}"));
    }
}

fn cookie_header(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("cookie", format!("CLOAKROOMSID={id}").parse().unwrap());
    h
}

#[tokio::test]
async fn a_response_carrying_a_new_session_is_kept_out_of_shared_caches() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[session]\napp_values = true").await;
    let url = proxy.url("/respond-with?h=Cache-Control%3Apublic%2C%20max-age%3D600");

    // A response that starts a session (the application stored a value).
    let (_, headers, _) = get(&format!("{url}&h=X-Cloakroom-Session-Set%3Aseen%3D1")).await;
    let id = issued(&headers).expect("no session issued");
    assert_eq!(headers["cache-control"], "private, max-age=600");

    // Without a new cookie, a session the application is told nothing of
    // keeps the application's caching.
    let plain = Proxy::start(&upstream, "", "").await;
    let (_, headers, _) = get(&plain.url("/.cloakroom/login")).await;
    let anonymous = issued(&headers).expect("no session issued");
    let (_, headers, _) = get_with_cookie(
        &plain.url("/respond-with?h=Cache-Control%3Apublic%2C%20max-age%3D600"),
        &format!("CLOAKROOMSID={anonymous}"),
    )
    .await;
    assert_eq!(issued(&headers), None);
    assert_eq!(headers["cache-control"], "public, max-age=600");

    // But one whose values the application is sent may show them: private.
    let (_, headers, _) = get_with_cookie(&url, &format!("CLOAKROOMSID={id}")).await;
    assert_eq!(issued(&headers), None);
    assert!(upstream
        .seen()
        .last()
        .unwrap()
        .header("x-cloakroom-session")
        .is_some());
    assert_eq!(headers["cache-control"], "private, max-age=600");

    // So is an answer that sets the first values of a session whose ID the
    // client already holds (no new cookie goes with it).
    let (_, headers, _) = get(&proxy.url("/.cloakroom/login")).await;
    let held = issued(&headers).expect("no session issued");
    let (_, headers, _) = get_with_cookie(
        &format!("{url}&h=X-Cloakroom-Session-Set%3Acart%3D3"),
        &format!("CLOAKROOMSID={held}"),
    )
    .await;
    assert_eq!(issued(&headers), None, "a second cookie for a held ID");
    assert_eq!(headers["cache-control"], "private, max-age=600");
}

fn local_client() -> cloakroom::session::Client<'static> {
    cloakroom::session::Client {
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        user_agent: b"",
    }
}
