//! A real browser: Debian's headless Chromium, driven over the DevTools
//! protocol, logs in through cloakroom and browses the demo app — once with
//! cookies blocked (it must stay logged in, in URL mode) and once with
//! cookies allowed (the ID must never appear in its address bar).
//!
//! `bash tests/run.sh` installs Chromium; without it this test fails.

mod support;

use support::chromium::Chromium;
use support::*;
use tokio::net::TcpListener;

/// The demo app behind a proxy that protects /account and /guestbook.
async fn demo_site() -> (Proxy, tempfile::TempDir) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(cloakroom::demo::serve_legacy_app(
        listener,
        cloakroom::demo::DemoKeys::default(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let hash = cloakroom::auth::password::hash("wonderland").unwrap();
    std::fs::write(&users, format!("alice = \"{hash}\"\n")).unwrap();
    let proxy = Proxy::start_url(
        &format!("http://{app}"),
        "",
        &format!(
            "[auth]\nusers_file = {:?}\nprotect = [\"/account\", \"/guestbook\"]",
            users.to_str().unwrap()
        ),
    )
    .await;
    (proxy, dir)
}

/// Login, then links, a GET form and a POST form, all through the proxy.
async fn journey(chrome: &mut Chromium, proxy: &Proxy) {
    let base = format!("http://{}", proxy.addr);
    chrome.navigate(&format!("{base}/account")).await;
    chrome.wait_for("/.cloakroom/login").await;
    chrome
        .act(
            "document.getElementById('username').value = 'alice';\
             document.getElementById('password').value = 'wonderland';\
             document.querySelector('form').submit()",
        )
        .await;
    chrome.wait_for("/account").await;
    let text = chrome.text().await;
    assert!(
        text.contains("X-Forwarded-User: alice"),
        "not logged in after login: {text}"
    );

    // A link home, a GET form, a link to a protected page, a POST form.
    chrome
        .act("Array.from(document.links).find(a => a.textContent == 'Home').click()")
        .await;
    chrome.wait_for("/").await;
    chrome
        .act("document.querySelector('input[name=q]').value = 'tea'; document.querySelector('form').submit()")
        .await;
    chrome.wait_for("/search").await;
    let text = chrome.text().await;
    assert!(
        text.contains("Signed in as alice") && text.contains("tea"),
        "{text}"
    );
    chrome
        .act("Array.from(document.links).find(a => a.textContent == 'Home').click()")
        .await;
    chrome.wait_for("/").await;
    chrome
        .act("Array.from(document.links).find(a => a.textContent == 'Guestbook').click()")
        .await;
    chrome.wait_for("/guestbook").await;
    chrome
        .act("document.querySelector('input[name=message]').value = 'hello from chromium'; document.querySelector('form').submit()")
        .await;
    chrome.wait_for("/guestbook").await;
    let text = chrome.text().await;
    assert!(
        text.contains("alice: hello from chromium"),
        "the POST form lost the session: {text}"
    );
    assert!(text.contains("Signed in as alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_cookies_blocked_stays_logged_in() {
    let (proxy, _dir) = demo_site().await;
    let mut chrome = Chromium::start(true).await;
    journey(&mut chrome, &proxy).await;
    let last = chrome.seen_urls.last().unwrap().clone();
    assert!(last.contains("CLOAKROOMSID="), "not in URL mode: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_cookies_allowed_never_shows_the_id() {
    let (proxy, _dir) = demo_site().await;
    let mut chrome = Chromium::start(false).await;
    journey(&mut chrome, &proxy).await;
    for url in &chrome.seen_urls {
        assert!(
            !url.contains("CLOAKROOMSID"),
            "the ID reached the address bar: {url}"
        );
        assert!(
            !url.contains("cloakroom-probe"),
            "the probe marker stayed: {url}"
        );
    }
}
