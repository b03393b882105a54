//! `cloakroom load`, run as a user runs it, briefly, against the real proxy
//! in front of a real upstream: its counts must add up against what the
//! upstream saw.

mod support;

use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use support::*;

fn users_file(dir: &tempfile::TempDir) -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    let hash = HASH.get_or_init(|| cloakroom::auth::password::hash("wonderland").unwrap());
    let path = dir.path().join("users.toml");
    std::fs::write(&path, format!("alice = \"{hash}\"\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `cloakroom load ARGS --json` off the test's runtime; returns the
/// exit code, the report (if any) and stderr.
async fn load(args: &[String]) -> (i32, Option<Value>, String) {
    let args = args.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .arg("load")
            .args(&args)
            .arg("--json")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = serde_json::from_slice(&out.stdout).ok();
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

async fn protected_site() -> (Upstream, Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[auth]\nusers_file = {:?}\nprotect = [\"/\"]\n[session]\nstore = \"memory\"",
            users_file(&dir)
        ),
    )
    .await;
    (upstream, proxy, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_users_add_up_against_what_the_upstream_saw() {
    let (upstream, proxy, _dir) = protected_site().await;
    let target = proxy.url("/books?page=1");
    let (code, report, stderr) = load(&strings(&[
        "--target",
        &target,
        "--users",
        "12",
        "--requests",
        "240",
        "--login",
        "alice:wonderland",
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let r = report.unwrap();
    // Twelve users log in as one name, more than its throttle admits at
    // once (5): the generator paces its logins, none fails.
    assert_eq!(r["requests"], 240);
    assert_eq!(r["ok"], 240, "{r}");
    assert_eq!(r["logins"], 12);
    assert_eq!(r["sessions"], 12);
    assert_eq!(r["lost_sessions"], 0);
    assert!(r["errors"].as_object().unwrap().is_empty(), "{r}");
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(r["latency_ms"]["max"].as_f64().unwrap() >= r["latency_ms"]["p99"].as_f64().unwrap());
    assert!(r["login_latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // The upstream saw exactly the run's requests, each from a logged-in
    // user, spread over twelve distinct users.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 240);
    for s in &seen {
        assert_eq!(s.target, "/books?page=1");
        assert_eq!(s.header("x-forwarded-user").as_deref(), Some("alice"));
    }
    let agents: std::collections::BTreeSet<String> =
        seen.iter().filter_map(|s| s.header("user-agent")).collect();
    assert_eq!(agents.len(), 12, "{agents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookieless_users_carry_tickets_the_upstream_never_sees() {
    let (upstream, proxy, _dir) = protected_site().await;
    let target = proxy.url("/html/page");
    let (code, report, stderr) = load(&strings(&[
        "--target",
        &target,
        "--users",
        "4",
        "--requests",
        "60",
        "--login",
        "alice:wonderland",
        "--cookieless",
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let r = report.unwrap();
    assert_eq!(r["ok"], 60, "{r}");
    assert_eq!(r["sessions"], 4);
    assert_eq!(r["lost_sessions"], 0);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 60);
    for s in &seen {
        assert_eq!(s.target, "/html/page", "the ticket reached the upstream");
        assert_eq!(s.header("x-forwarded-user").as_deref(), Some("alice"));
        for cookie in s.all("cookie") {
            assert!(!cookie.contains("CLOAKROOMSID"), "{cookie}");
        }
        for (name, value) in &s.headers {
            assert!(
                !String::from_utf8_lossy(value.as_bytes()).contains("CLOAKROOMSID"),
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_sends_rate_times_duration() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[session]\nstore = \"memory\"").await;
    let target = proxy.url("/plain");
    let (code, report, stderr) = load(&strings(&[
        "--target",
        &target,
        "--users",
        "4",
        "--rate",
        "200",
        "--duration",
        "2s",
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let r = report.unwrap();
    assert_eq!(r["mode"], "open");
    // Request i is due at i/200 s; those due before 2 s are sent: 400.
    assert_eq!(r["requests"], 400, "{r}");
    assert_eq!(r["ok"], 400);
    // Setup visits (the probe) reach the upstream once per user too.
    assert_eq!(upstream.seen().len(), 400 + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_upstream_is_reported_by_kind_and_the_run_ends() {
    // A port nothing listens on, behind the proxy.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start_url(&format!("http://{dead}"), "", "").await;
    let target = proxy.url("/anything");
    let (code, report, stderr) = load(&strings(&[
        "--target",
        &target,
        "--users",
        "3",
        "--requests",
        "30",
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let r = report.unwrap();
    assert_eq!(r["requests"], 30);
    assert_eq!(r["ok"], 0);
    assert_eq!(r["errors"]["status_5xx"], 30, "{r}");

    // And with nothing listening at the target itself: connect errors.
    let nobody = format!("http://{dead}/");
    let (code, report, stderr) = load(&strings(&["--target", &nobody, "--requests", "5"])).await;
    assert_eq!(
        code, 2,
        "a target that cannot be reached at all stops the run"
    );
    assert!(report.is_none());
    assert!(stderr.contains("connect"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_the_run() {
    let (_upstream, proxy, _dir) = protected_site().await;
    let target = proxy.url("/");
    let missing = "/nonexistent/paths.txt".to_owned();
    for (args, says) in [
        (strings(&["--target", "not a url"]), "--target"),
        (strings(&["--target", "ftp://example.com/"]), "--target"),
        (
            strings(&["--target", &target, "--paths", &missing]),
            "--paths",
        ),
        (
            strings(&["--target", &target, "--login", "alice"]),
            "--login",
        ),
        (
            strings(&["--target", &target, "--login", "alice:wrong"]),
            "wrong username or password",
        ),
        (strings(&["--target", &target, "--rate", "0"]), "--rate"),
        (
            strings(&["--target", &target, "--duration", "soon"]),
            "--duration",
        ),
    ] {
        let (code, report, stderr) = load(&args).await;
        assert_ne!(code, 0, "{args:?}");
        assert!(report.is_none(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// An HTTPS site with a certificate made for this test: the generator
/// trusts it only when told to (`--ca-file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_are_verified() {
    use std::sync::Arc;

    use http_body_util::Full;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        bytes::Bytes::from_static(b"secure hello"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let target = format!("https://localhost:{port}/");
    let ca = ca.to_str().unwrap().to_owned();
    let (code, report, stderr) = load(&strings(&[
        "--target",
        &target,
        "--users",
        "2",
        "--requests",
        "20",
        "--ca-file",
        &ca,
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report.unwrap()["ok"], 20);
    // Without the CA the certificate is unknown: refused before the run.
    let (code, _, stderr) = load(&strings(&["--target", &target, "--requests", "5"])).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("connect"), "{stderr}");
}

/// Sessions that end during the run (here: a one-second absolute lifetime)
/// show as lost sessions, not as successes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_end_mid_run_are_counted_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[auth]\nusers_file = {:?}\nprotect = [\"/\"]\n\
             [session]\nstore = \"memory\"\nabsolute_timeout = \"1s\"\nidle_timeout = \"1s\"",
            users_file(&dir)
        ),
    )
    .await;
    let target = proxy.url("/books");
    let (code, report, stderr) = load(&strings(&[
        "--target",
        &target,
        "--users",
        "2",
        "--rate",
        "50",
        "--duration",
        "3s",
        "--login",
        "alice:wonderland",
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let r = report.unwrap();
    let lost = r["lost_sessions"].as_u64().unwrap();
    assert!(lost > 0, "{r}");
    assert_eq!(r["errors"]["lost_session"].as_u64().unwrap(), lost);
    assert_eq!(
        r["ok"].as_u64().unwrap() + lost,
        r["requests"].as_u64().unwrap(),
        "{r}"
    );
    // What reached the upstream is exactly what was not lost.
    assert_eq!(upstream.seen().len() as u64, r["ok"].as_u64().unwrap());
}
