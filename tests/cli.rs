//! The `cloakroom` binary, started the way a user starts it.

mod support;

use std::process::{Command, Stdio};

use http::StatusCode;
use support::*;

fn cloakroom() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    cmd.env_remove("CLOAKROOM_CONFIG")
        .env_remove("CLOAKROOM_LISTEN")
        .env_remove("CLOAKROOM_UPSTREAM_URL")
        .env_remove("RUST_LOG");
    cmd
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_names_the_key_of_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[upstream]\nurl = \"ftp://x\"\n",
            "upstream.url: scheme must be http or https, got ftp",
        ),
        (
            "[upstream]\nurl = \"http://x\"\ntimeout = \"later\"\n",
            "upstream.timeout: invalid duration",
        ),
        (
            "[upstream]\nurl = \"http://x\"\n[server]\nmax_connection = 5\n",
            "server.max_connection: unknown key",
        ),
        (
            "listen = 8000\n[upstream]\nurl = \"http://x\"\n",
            "listen: invalid type",
        ),
        ("", "upstream.url: missing"),
    ];
    for (text, expected) in cases {
        let path = write_config(&dir, text);
        let out = cloakroom()
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
    }

    let users = dir.path().join("users.toml");
    std::fs::write(&users, "alice = \"not-a-hash\"\n").unwrap();
    let path = write_config(
        &dir,
        &format!(
            "[upstream]\nurl = \"http://x\"\n[auth]\nusers_file = {:?}\n",
            users.to_str().unwrap()
        ),
    );
    let out = cloakroom()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.users_file:") && stderr.contains("user \"alice\": not a PHC string"),
        "{stderr}"
    );

    // Key files that `run` would refuse are refused by `check` too (and
    // `check` creates none).
    let secret = dir.path().join("bad.key");
    std::fs::write(&secret, "short!\n").unwrap();
    let signing = dir.path().join("assertion.key");
    std::fs::write(&signing, "garbage\n").unwrap();
    for (keys, expected) in [
        (
            format!("[session]\nsecret_file = {:?}\n", secret.to_str().unwrap()),
            "session.secret_file:",
        ),
        (
            format!(
                "[identity]\nassertion_header = \"X-A\"\nassertion_key_file = {:?}\n",
                signing.to_str().unwrap()
            ),
            "identity.assertion_key_file:",
        ),
    ] {
        let path = write_config(&dir, &format!("[upstream]\nurl = \"http://x\"\n{keys}"));
        let out = cloakroom()
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{keys}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{keys}: {stderr}");
    }

    let out = cloakroom()
        .args(["check", "--config", "/nonexistent/proxy.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/proxy.toml"));
}

#[test]
fn check_prints_the_effective_config_with_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[upstream]\nurl = \"http://127.0.0.1:8080\"\n");
    let out = cloakroom()
        .arg("check")
        .env("CLOAKROOM_CONFIG", &path)
        .env("CLOAKROOM_UPSTREAM_URL", "http://10.1.2.3:9000/app")
        .env("CLOAKROOM_LISTEN", "127.0.0.1:9999")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("listen = \"127.0.0.1:9999\""), "{stdout}");
    assert!(
        stdout.contains("url = \"http://10.1.2.3:9000/app\""),
        "{stdout}"
    );
    assert!(stdout.contains("header_timeout = \"10s\""), "{stdout}");
}

#[test]
fn the_shipped_proxy_toml_is_valid() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let out = cloakroom()
        .args(["check", "--config", shipped])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn run_logs_each_request_and_exits_cleanly_on_sigterm() {
    run_and_stop("").await;
}

#[tokio::test]
async fn run_with_a_runtime_per_core_exits_cleanly_on_sigterm() {
    run_and_stop("[server]\nwork_stealing = false\n").await;
}

/// `server.threads` is how many threads serve: the work-stealing runtime's
/// workers (as the runtime itself counts them), or the runtimes per core
/// (threads of their own, counted in /proc).
#[tokio::test]
async fn server_threads_sets_how_many_threads_serve() {
    for (mode, threads) in [("true", 1), ("true", 3), ("false", 1), ("false", 3)] {
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = run_config(
            &dir,
            &upstream,
            &format!("[server]\nwork_stealing = {mode}\nthreads = {threads}\n"),
        );
        let mut child = Running(run(&path));
        let mut lines = lines_of(child.0.stderr.take().unwrap());
        let line = line_after(&mut lines, "listening on http://").await;
        let addr = line.split('"').next().unwrap().to_owned();
        assert!(
            line.contains(&format!("\"threads\":{threads},")),
            "work_stealing = {mode}, threads = {threads}: {line}"
        );
        let (status, _, _) = get(&format!("http://{addr}/")).await;
        assert_eq!(status, StatusCode::OK);
        let cores = std::fs::read_dir(format!("/proc/{}/task", child.0.id()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("cloakroom-core"))
            .count();
        let expected = if mode == "false" { threads } else { 0 };
        assert_eq!(
            cores, expected,
            "work_stealing = {mode}, threads = {threads}"
        );
    }
}

/// A config for `cloakroom run` in front of `upstream`, on a port of its
/// choosing, logging JSON, its key and sessions in `dir`; then `extra`.
fn run_config(dir: &tempfile::TempDir, upstream: &Upstream, extra: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[log]\nformat = \"json\"\n\
             [session]\nsecret_file = {:?}\ndir = {:?}\n{extra}",
            upstream.addr,
            dir.path().join("key").to_str().unwrap(),
            dir.path().join("sessions").to_str().unwrap(),
        ),
    )
}

/// `cloakroom run` with the config at `path`, its log on a pipe.
fn run(path: &std::path::Path) -> std::process::Child {
    cloakroom()
        .args(["run", "--config"])
        .arg(path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A child process killed when dropped, also when a test fails first
/// (else it would outlive the test and hold its output open).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run_and_stop(extra: &str) {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = run_config(&dir, &upstream, extra);
    let mut child = run(&path);
    let mut lines = lines_of(child.stderr.take().unwrap());

    // The startup line names the bound address.
    let addr = line_after(&mut lines, "listening on http://").await;
    let addr = addr.split('"').next().unwrap().to_owned();

    let url = format!("http://{addr}/slow?ms=700&secret=hunter2");
    let in_flight = tokio::spawn(async move { get(&url).await });
    upstream.arrived(1).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    let (status, _, _) = within(in_flight).await.unwrap();
    assert_eq!(status, StatusCode::OK, "the in-flight request was cut off");
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));

    let mut access = Vec::new();
    while let Ok(line) = lines.try_recv() {
        if line.contains("cloakroom::access") {
            access.push(line);
        }
    }
    assert_eq!(access.len(), 1, "{access:?}");
    let line = &access[0];
    for part in [
        "\"method\":\"GET\"",
        "\"path\":\"/slow\"",
        "\"status\":200",
        "\"bytes\":11",
        "\"upstream_ms\":",
        "\"duration_ms\":",
        "\"complete\":true",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    assert!(
        !line.contains("hunter2"),
        "the query string was logged: {line}"
    );
}

#[test]
fn hash_password_prints_a_hash_that_verifies() {
    use std::io::Write;
    let mut child = cloakroom()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let users = cloakroom::auth::password::Users::parse(&format!("alice = \"{phc}\"")).unwrap();
    assert!(users.check("alice", "correct horse", &mut Vec::new()));
    assert!(!users.check("alice", "correct horse\n", &mut Vec::new()));
    assert!(!users.check("alice", "wrong", &mut Vec::new()));

    let empty = cloakroom()
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(1));
}

#[tokio::test]
async fn demo_shows_a_login_and_tells_the_app_who_signed_in() {
    let mut child = cloakroom()
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = lines_of(child.stdout.take().unwrap());
    let base = line_after(&mut lines, "open ").await;
    let base = base.trim_end_matches('/').to_owned();

    let mut b = Browser::at(&base);
    let (home, _) = b.visit("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("href=\"/account\""));
    // The visit counter lives in a session variable, and survives the login.
    b.get("/visits").await;
    let twice = b.get("/visits").await;
    assert!(
        twice.body.contains("<strong>2</strong> times"),
        "{}",
        twice.body
    );
    let protected = b.get("/account").await;
    assert_eq!(protected.status, StatusCode::FOUND);
    let form = b.get(protected.location().unwrap()).await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = form.input("csrf").unwrap();
    let done = b
        .post_form(
            "/.cloakroom/login",
            &[
                ("csrf", &csrf),
                ("username", "demo"),
                ("password", "demo"),
                ("return_to", "/account"),
            ],
        )
        .await;
    assert_eq!(done.location(), Some("/account"));
    let account = b.get("/account").await;
    assert!(
        account.body.contains("X-Forwarded-User: demo"),
        "{}",
        account.body
    );
    assert!(
        account.body.contains("Verified against")
            && account.body.contains("&quot;sub&quot;:&quot;demo&quot;"),
        "{}",
        account.body
    );
    let third = b.get("/visits").await;
    assert!(
        third.body.contains("<strong>3</strong> times"),
        "{}",
        third.body
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), Some(0));
}
