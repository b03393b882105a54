//! Session variables for the application (`session.app_values`): the
//! upstream sets and removes values with response headers and reads them in
//! `X-Cloakroom-Session` on every later request; clients can neither send
//! nor see these headers.

mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use http::{Request, StatusCode};
use support::*;

fn users_toml() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS.get_or_init(|| {
        let alice = cloakroom::auth::password::hash("wonderland").unwrap();
        format!("alice = \"{alice}\"\n")
    })
}

/// `/respond-with` answering with these headers (names and raw values).
fn respond_with(headers: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in headers {
        query.append_pair("h", &format!("{name}:{value}"));
    }
    format!("/respond-with?{}", query.finish())
}

/// The values the upstream saw on its latest request.
fn values_seen(upstream: &Upstream) -> BTreeMap<String, String> {
    let last = upstream
        .seen()
        .last()
        .cloned()
        .expect("no request upstream");
    match last.header("x-cloakroom-session") {
        Some(v) => url::form_urlencoded::parse(v.as_bytes())
            .into_owned()
            .collect(),
        None => BTreeMap::new(),
    }
}

/// `count` requests at once with `cookie`, each answered with
/// `X-Cloakroom-Session-Set: {prefix}N=1`.
async fn set_at_once(proxy: &Proxy, cookie: &str, prefix: &str, count: usize) {
    let mut sets = Vec::new();
    for n in 0..count {
        let url = proxy.url(&respond_with(&[(
            "X-Cloakroom-Session-Set",
            &format!("{prefix}{n}=1"),
        )]));
        let req = Request::get(url)
            .header("cookie", cookie)
            .body(empty())
            .unwrap();
        sets.push(tokio::spawn(async move { send(&http1(), req).await }));
    }
    for set in sets {
        within(set).await.unwrap();
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Site {
    upstream: Upstream,
    proxy: Proxy,
    _users: tempfile::TempDir,
}

async fn site(session: &str) -> Site {
    let users = tempfile::tempdir().unwrap();
    let file = users.path().join("users.toml");
    std::fs::write(&file, users_toml()).unwrap();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[session]\n{session}\n[auth]\nusers_file = {:?}\nprotect = [\"/private\"]\n",
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

fn assert_no_control_headers(page: &Page) {
    for name in [
        "x-cloakroom-session",
        "x-cloakroom-session-set",
        "x-cloakroom-session-unset",
    ] {
        assert!(
            page.headers.get(name).is_none(),
            "{name} reached the client: {:?}",
            page.headers
        );
    }
}

#[tokio::test]
async fn values_are_set_changed_and_unset_by_the_application() {
    let s = site("app_values = true\ncookieless = false").await;
    let mut b = Browser::new(&s.proxy);

    b.get("/start").await;
    assert_eq!(values_seen(&s.upstream), BTreeMap::new());

    let page = b
        .get(&respond_with(&[(
            "X-Cloakroom-Session-Set",
            "cart=3&note=hi%20there&odd=a%26b%3Dc+d&word=%C3%A9t%C3%A9%20%E2%9C%93",
        )]))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, "as you wish");
    assert_no_control_headers(&page);

    let next = b.get("/next").await;
    assert_no_control_headers(&next);
    assert_eq!(
        values_seen(&s.upstream),
        map(&[
            ("cart", "3"),
            ("note", "hi there"),
            ("odd", "a&b=c d"),
            ("word", "été ✓")
        ])
    );

    // Several header lines: removals first, then sets.
    b.get(&respond_with(&[
        ("X-Cloakroom-Session-Set", "cart=4"),
        ("X-Cloakroom-Session-Unset", "note, odd"),
        ("X-Cloakroom-Session-Set", "theme=dark"),
    ]))
    .await;
    b.get("/again").await;
    assert_eq!(
        values_seen(&s.upstream),
        map(&[("cart", "4"), ("theme", "dark"), ("word", "été ✓")])
    );

    b.get(&respond_with(&[(
        "X-Cloakroom-Session-Unset",
        "cart,theme,word",
    )]))
    .await;
    b.get("/empty").await;
    let last = s.upstream.seen().last().cloned().unwrap();
    assert_eq!(
        last.header("x-cloakroom-session"),
        None,
        "an empty session still sent the header"
    );
}

#[tokio::test]
async fn a_change_over_a_limit_or_with_a_bad_name_is_refused_and_the_page_still_served() {
    let s = site("app_values = true\ncookieless = false").await;
    let mut b = Browser::new(&s.proxy);
    b.get("/start").await;
    b.get(&respond_with(&[("X-Cloakroom-Session-Set", "keep=me")]))
        .await;

    let too_many: Vec<String> = (0..64).map(|i| format!("v{i}=1")).collect();
    let too_big = format!("big={}", "x".repeat(8 * 1024));
    for refused in [
        too_many.join("&"),
        too_big,
        "fine=1&bad.name=2".to_owned(),
        format!("{}=1", "n".repeat(65)),
        "x=%FF".to_owned(),
    ] {
        let page = b
            .get(&respond_with(&[("X-Cloakroom-Session-Set", &refused)]))
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.body, "as you wish");
        assert_no_control_headers(&page);
        b.get("/check").await;
        assert_eq!(
            values_seen(&s.upstream),
            map(&[("keep", "me")]),
            "a refused change touched the values: {}",
            &refused[..refused.len().min(40)]
        );
    }
    // Exactly at the limit is fine: 63 more make 64.
    b.get(&respond_with(&[(
        "X-Cloakroom-Session-Set",
        &too_many[..63].join("&"),
    )]))
    .await;
    b.get("/check").await;
    assert_eq!(values_seen(&s.upstream).len(), 64);
}

#[tokio::test]
async fn values_survive_the_login_and_die_at_logout() {
    let s = site("app_values = true\ncookieless = false").await;
    let mut b = Browser::new(&s.proxy);
    b.get("/start").await;
    b.get(&respond_with(&[("X-Cloakroom-Session-Set", "cart=2")]))
        .await;
    let before = b.session().unwrap().to_owned();

    let done = b.log_in("alice", "wonderland", &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_ne!(
        b.session().unwrap(),
        before,
        "the ID did not change at login"
    );
    b.get("/private").await;
    assert_eq!(values_seen(&s.upstream), map(&[("cart", "2")]));
    let seen = s.upstream.seen().last().cloned().unwrap();
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("alice"));

    let form = b.get("/.cloakroom/logout").await;
    let csrf = form.input("csrf").unwrap();
    b.post_form("/.cloakroom/logout", &[("csrf", &csrf)]).await;
    b.get("/after").await;
    assert_eq!(values_seen(&s.upstream), BTreeMap::new());
}

#[tokio::test]
async fn clients_can_never_send_the_values_headers() {
    let s = site("app_values = true\ncookieless = false").await;
    let mut b = Browser::new(&s.proxy);
    b.get("/start").await;
    b.get(&respond_with(&[("X-Cloakroom-Session-Set", "role=user")]))
        .await;
    let cookie = format!("CLOAKROOMSID={}", b.session().unwrap());

    let resp = http1()
        .request(
            Request::get(s.proxy.url("/forged"))
                .header("cookie", &cookie)
                .header("X-Cloakroom-Session", "role=admin")
                .header("x_cloakroom_session", "role=admin")
                .header("X.Cloakroom.Session", "role=admin")
                .header("X-Cloakroom-Session-Set", "role=admin")
                .header("x_cloakroom_session_unset", "role")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = s.upstream.seen().last().cloned().unwrap();
    assert_eq!(
        seen.all("x-cloakroom-session"),
        ["role=user"],
        "a client-sent copy arrived"
    );
    for (name, _) in seen.headers.iter() {
        let folded = name.as_str().replace(['_', '.'], "-");
        assert!(
            folded == "x-cloakroom-session" || !folded.starts_with("x-cloakroom-session"),
            "{name} arrived"
        );
    }
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(n, _)| n.as_str().replace(['_', '.'], "-") == "x-cloakroom-session")
            .count(),
        1
    );
    // And a client-sent Set changed nothing.
    b.get("/check").await;
    assert_eq!(values_seen(&s.upstream), map(&[("role", "user")]));
}

#[tokio::test]
async fn with_app_values_off_nothing_is_kept_and_nothing_leaks() {
    let s = site("cookieless = false").await;
    let mut b = Browser::new(&s.proxy);
    b.get("/start").await;
    let page = b
        .get(&respond_with(&[("X-Cloakroom-Session-Set", "cart=1")]))
        .await;
    assert_no_control_headers(&page);
    b.get("/check").await;
    assert_eq!(values_seen(&s.upstream), BTreeMap::new());
}

#[tokio::test]
async fn values_work_in_url_mode() {
    let s = site("app_values = true").await;
    let mut b = Browser::new(&s.proxy);
    b.refuse_cookies = true;
    let (_, landed) = b.visit("/start").await;
    let ticket = cloakroom::client::ticket_in(&landed).expect("no ticket: not in URL mode");
    b.url_param = Some(("CLOAKROOMSID".into(), ticket));

    let page = b
        .get(&respond_with(&[("X-Cloakroom-Session-Set", "cart=7")]))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_no_control_headers(&page);
    b.get("/next").await;
    assert_eq!(values_seen(&s.upstream), map(&[("cart", "7")]));
}

#[tokio::test]
async fn a_request_in_flight_does_not_undo_a_concurrent_change() {
    let s = site("app_values = true\ncookieless = false").await;
    let mut b = Browser::new(&s.proxy);
    b.get("/start").await;
    b.get(&respond_with(&[(
        "X-Cloakroom-Session-Set",
        "elevated=1&cart=3",
    )]))
    .await;
    let cookie = format!("CLOAKROOMSID={}", b.session().unwrap());

    // A slow request starts with elevated=1 loaded, and is due to write
    // "last seen" when it ends.
    s.proxy
        .app
        .sessions
        .clock()
        .skip(std::time::Duration::from_secs(61));
    let slow = {
        let (url, cookie) = (s.proxy.url("/slow?ms=800"), cookie.clone());
        tokio::spawn(async move {
            let req = Request::get(url)
                .header("cookie", cookie)
                .body(empty())
                .unwrap();
            send(&http1(), req).await
        })
    };
    s.upstream.arrived(3).await;
    // Meanwhile the application clears the flag.
    b.get(&respond_with(&[("X-Cloakroom-Session-Unset", "elevated")]))
        .await;
    let (status, _, _) = within(slow).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    b.get("/check").await;
    assert_eq!(
        values_seen(&s.upstream),
        map(&[("cart", "3")]),
        "the slow request brought a removed value back"
    );

    // Concurrent sets of different names all stay.
    set_at_once(&s.proxy, &cookie, "n", 20).await;
    b.get("/check").await;
    assert_eq!(
        values_seen(&s.upstream).len(),
        21,
        "{:?}",
        values_seen(&s.upstream)
    );
}

#[tokio::test]
async fn parallel_first_values_of_a_new_session_all_stay() {
    let s = site("app_values = true\ncookieless = false").await;
    // A new session that holds nothing yet (the login page hands it out).
    let mut b = Browser::new(&s.proxy);
    b.get("/.cloakroom/login").await;
    let cookie = format!("CLOAKROOMSID={}", b.session().unwrap());
    set_at_once(&s.proxy, &cookie, "first", 10).await;
    b.get("/check").await;
    assert_eq!(
        values_seen(&s.upstream).len(),
        10,
        "{:?}",
        values_seen(&s.upstream)
    );

    // And those ten requests cost the address's budget of new anonymous
    // records (30 a minute) one record, not ten: 29 more sessions fit.
    for n in 0..29 {
        let mut other = Browser::new(&s.proxy);
        other.get("/.cloakroom/login").await;
        other
            .get(&respond_with(&[("X-Cloakroom-Session-Set", "kept=1")]))
            .await;
        other.get("/check").await;
        assert_eq!(
            values_seen(&s.upstream),
            map(&[("kept", "1")]),
            "session {n} was refused its value"
        );
    }
}
