//! Reload on SIGHUP, on the real binary: a user removed from the users file
//! is logged out at once, a broken configuration keeps the running one,
//! a key that needs a restart is named, and a download in flight completes.

#![recursion_limit = "256"]

mod support;

use std::process::{Command, Stdio};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;

fn hup(pid: u32) {
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

#[tokio::test]
async fn sighup_reloads_users_keeps_a_good_config_and_drops_no_connection() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let alice = cloakroom::auth::password::hash("wonderland").unwrap();
    let bob = cloakroom::auth::password::hash("builder").unwrap();
    std::fs::write(&users, format!("alice = \"{alice}\"\nbob = \"{bob}\"\n")).unwrap();
    let config = |extra: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[session]\nstore = \"memory\"\n\
             secret_file = {:?}\n[auth]\nusers_file = {:?}\nprotect = [\"/private\"]\n{extra}\n[log]\nformat = \"json\"\n",
            upstream.addr,
            dir.path().join("cloakroom.key").to_str().unwrap(),
            users.to_str().unwrap(),
        )
    };
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config("")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut lines = lines_of(child.0.stderr.take().unwrap());
    let addr = line_after(&mut lines, "listening on http://").await;
    let base = format!("http://{}", addr.split('"').next().unwrap());

    let log_in = |user: &'static str, password: &'static str| {
        let base = base.clone();
        async move {
            let mut b = Browser::at(&base);
            let done = b.log_in(user, password, &[]).await;
            assert_eq!(done.status, StatusCode::SEE_OTHER, "{user}");
            b
        }
    };
    let mut as_alice = log_in("alice", "wonderland").await;
    let mut as_bob = log_in("bob", "builder").await;
    assert_eq!(as_bob.get("/private").await.status, StatusCode::OK);

    // A long download is in flight through every reload below.
    let url = format!("{base}/download?bytes=1000000");
    let download = tokio::spawn(async move {
        let resp = http1()
            .request(Request::get(url).body(empty()).unwrap())
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap().to_bytes().len()
    });
    upstream.arrived(upstream.seen().len()).await;

    // A broken configuration: the running one stays, the log names the key.
    std::fs::write(&path, config("max_failures_per_ip = \"many\"\n")).unwrap();
    hup(child.0.id());
    let refused = line_after(&mut lines, "reload refused").await;
    assert!(refused.contains("auth.max_failures_per_ip"), "{refused}");
    assert_eq!(as_bob.get("/private").await.status, StatusCode::OK);

    // bob is removed, and a key that needs a restart changes.
    std::fs::write(&users, format!("alice = \"{alice}\"\n")).unwrap();
    std::fs::write(
        &path,
        config("")
            .replace(
                "store = \"memory\"",
                "store = \"memory\"\nidle_timeout = \"10m\"",
            )
            .replace("[\"/private\"]", "[\"/private\", \"/secret\"]"),
    )
    .unwrap();
    hup(child.0.id());
    let warned = line_after(&mut lines, "takes effect only after a restart").await;
    assert!(warned.contains("session.idle_timeout"), "{warned}");
    line_after(&mut lines, "configuration reloaded").await;
    assert_eq!(
        as_bob.get("/private").await.status,
        StatusCode::FOUND,
        "a removed user stayed logged in"
    );
    assert_eq!(as_alice.get("/private").await.status, StatusCode::OK);
    // The access rules were reloaded too.
    let secret = Browser::at(&base).get("/secret").await;
    assert!(
        secret.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/.cloakroom/login"),
        "a path protected by the reload was served without a login: {:?}",
        secret.headers
    );
    let again = as_bob.log_in("bob", "builder", &[]).await;
    assert_eq!(again.status, StatusCode::OK, "a removed user logged in");

    // The log names sessions by a keyed hash, never by their ID.
    let mut again = log_in("alice", "wonderland").await;
    let id = again.session().unwrap().to_owned();
    assert_eq!(again.get("/private").await.status, StatusCode::OK);
    let logged_in = line_after(&mut lines, "\"login\"").await;
    assert!(logged_in.contains("\"session\":"), "{logged_in}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut rest = vec![logged_in];
    while let Ok(line) = lines.try_recv() {
        rest.push(line);
    }
    for line in &rest {
        assert!(!line.contains(&id[..20]), "a session ID in the log: {line}");
    }

    upstream.release_download();
    let got = within(download).await.unwrap();
    assert_eq!(got, 1_000_000, "the download was cut by a reload");
}

/// The child process, killed however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same reload in this process: every reloadable key serves the next
/// request, and a key that needs a restart keeps its running value.
#[tokio::test]
async fn reloaded_settings_serve_the_next_request_and_restart_keys_wait() {
    let first = Upstream::start().await;
    let second = Upstream::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let key = scratch.path().join("cloakroom.key");
    let config = |upstream: &Upstream, extra: &str| {
        format!(
            "[upstream]\nurl = \"http://{}\"\n[session]\nstore = \"memory\"\nsecret_file = {:?}\n\
             [identity]\nupstream_control = true\n{extra}",
            upstream.addr,
            key.to_str().unwrap()
        )
    };
    let proxy = Proxy::start_config(&config(&first, ""), scratch).await;
    let base = proxy.url("");

    // The upstream logs the browser in; the identity header names the user.
    let mut browser = Browser::at(&base);
    browser.visit("/").await;
    let page = browser.get("/respond-with?h=X-Cloakroom-Login:carol").await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.headers);
    browser.get("/page").await;
    let before = first.seen().last().unwrap().clone();
    assert_eq!(before.header("x-forwarded-user").as_deref(), Some("carol"));
    assert!(browser.session().is_some(), "no CLOAKROOMSID cookie");

    let reload = config(
        &second,
        "header = \"X-Remote-Person\"\n[auth]\nprotect = [\"/members\"]\n\
         [server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[session]\nname = \"other\"\n",
    )
    // [session] twice is not TOML: fold the second into the first.
    .replacen("\n[session]\nname = \"other\"\n", "\n", 1)
    .replacen("[session]\n", "[session]\nname = \"other\"\n", 1);
    proxy
        .app
        .reload(cloakroom::Config::parse(&reload))
        .await
        .expect("the new configuration loads");

    // The new upstream, the new identity header, the same session.
    browser.get("/page").await;
    let after = second.seen().last().unwrap().clone();
    assert_eq!(after.header("x-remote-person").as_deref(), Some("carol"));
    assert_eq!(after.header("x-forwarded-user"), None);
    // The new rules.
    let members = Browser::at(&base).get("/members").await;
    assert!(
        members.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/.cloakroom/login"),
        "{:?}",
        members.headers
    );
    // A trusted balancer's X-Forwarded-For is now believed.
    let resp = http1()
        .request(
            Request::get(proxy.url("/from"))
                .header("x-forwarded-for", "203.0.113.9")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = second.seen().last().unwrap().clone();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    // session.name needs a restart: the cookie keeps its running name
    // (the browser above was still recognised by its CLOAKROOMSID).
    assert_eq!(proxy.app.settings().config.session.name, "CLOAKROOMSID");
}

/// A login whose password check is still queued when a reload removes the
/// user must not leave a session behind.
#[tokio::test]
async fn a_login_in_progress_when_its_user_is_removed_is_undone() {
    let upstream = Upstream::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let users = scratch.path().join("users.toml");
    let alice = cloakroom::auth::password::hash("wonderland").unwrap();
    let bob = cloakroom::auth::password::hash("builder").unwrap();
    std::fs::write(&users, format!("alice = \"{alice}\"\nbob = \"{bob}\"\n")).unwrap();
    let text = format!(
        "[upstream]\nurl = \"http://{}\"\n[session]\nstore = \"memory\"\ncookieless = false\n\
         secret_file = {:?}\n[auth]\nusers_file = {:?}\nprotect = [\"/private\"]\n",
        upstream.addr,
        scratch.path().join("cloakroom.key").to_str().unwrap(),
        users.to_str().unwrap()
    );
    let proxy = Proxy::start_config(&text, tempfile::tempdir().unwrap()).await;
    let base = proxy.url("");

    // Sixteen wrong passwords fill the password checker's queue...
    let mut queue = Vec::new();
    for n in 0..16 {
        let base = base.clone();
        queue.push(tokio::spawn(async move {
            let mut b = Browser::at(&base);
            b.log_in(&format!("nobody{n}"), "wrong", &[]).await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // ...bob's login waits behind them, and bob is removed meanwhile.
    let login = {
        let base = base.clone();
        tokio::spawn(async move {
            let mut b = Browser::at(&base);
            let done = b.log_in("bob", "builder", &[]).await;
            (b, done)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    std::fs::write(&users, format!("alice = \"{alice}\"\n")).unwrap();
    proxy
        .app
        .reload(cloakroom::Config::parse(&text))
        .await
        .expect("reload");

    let (mut b, done) = within(login).await.unwrap();
    for q in queue {
        within(q).await.unwrap();
    }
    if done.status == StatusCode::SEE_OTHER {
        // The check passed against the users it started with: the session
        // it made must be dead.
        let page = b.get("/private").await;
        assert_ne!(
            page.status,
            StatusCode::OK,
            "a removed user's login survived the reload"
        );
    }
    let bobs = proxy.app.sessions.of_user("bob").await.unwrap();
    assert!(bobs.is_empty(), "bob still has {} session(s)", bobs.len());
}
