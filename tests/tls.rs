//! TLS on the public listener: the handshake, h2 via ALPN, the Secure
//! cookie, and clients that speak plain HTTP to the TLS port or stall.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Tls {
    upstream: Upstream,
    proxy: Proxy,
    cert: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

async fn tls_proxy() -> Tls {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[server]\nheader_timeout = \"1s\"\n[tls]\ncert = {:?}\nkey = {:?}",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
    )
    .await;
    Tls {
        upstream,
        proxy,
        cert: certified.cert.der().clone(),
        _dir: dir,
    }
}

fn connector(t: &Tls, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(t.cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn https_with_a_secure_cookie_and_h2_by_alpn() {
    let t = tls_proxy().await;
    let mut b = Browser::at(&format!("https://localhost:{}", t.proxy.addr.port()));
    b.use_tls(connector(&t, &[b"http/1.1"]));
    let login = b.get("/.cloakroom/login").await;
    assert_eq!(login.status, StatusCode::OK);
    let cookie = login.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
    b.accept = "*/*".into();
    assert_eq!(b.get("/x").await.status, StatusCode::OK);
    let seen = t.upstream.seen().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));

    // ALPN offers h2 and the proxy takes it.
    let tcp = tokio::net::TcpStream::connect(t.proxy.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector(&t, &[b"h2", b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("https://localhost:{}/h2", t.proxy.addr.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    resp.into_body().collect().await.unwrap();
    assert_eq!(t.upstream.seen().pop().unwrap().target, "/h2");
}

#[tokio::test]
async fn plain_http_and_stalled_handshakes_cost_a_bounded_time_and_disturb_no_one() {
    let t = tls_proxy().await;
    // Plain HTTP to the TLS port: the connection ends, nothing goes upstream.
    let mut plain = tokio::net::TcpStream::connect(t.proxy.addr).await.unwrap();
    plain
        .write_all(b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
        .await
        .expect("plain HTTP held the connection open")
        .unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("200"),
        "answered in clear"
    );

    // A client that connects and says nothing is closed after the header
    // timeout (1 s here); meanwhile others are served.
    let started = Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(t.proxy.addr).await.unwrap();
    let mut b = Browser::at(&format!("https://localhost:{}", t.proxy.addr.port()));
    b.use_tls(connector(&t, &[b"http/1.1"]));
    b.accept = "*/*".into();
    assert_eq!(b.get("/during").await.status, StatusCode::OK);
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("a stalled handshake was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let targets: Vec<String> = t.upstream.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(targets, ["/during"]);
}

/// An https upstream with a certificate for `localhost`; records the SNI
/// each connection asked for.
async fn https_upstream() -> (
    u16,
    CertificateDer<'static>,
    std::path::PathBuf,
    Arc<std::sync::Mutex<Vec<String>>>,
    tempfile::TempDir,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = names.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                seen.lock().unwrap().push(sni);
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"over tls")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, certified.cert.der().clone(), ca, names, dir)
}

#[tokio::test]
async fn an_https_upstream_is_verified_with_its_ca_and_gets_the_right_sni() {
    let (port, _cert, ca, names, _dir) = https_upstream().await;
    let url = format!("https://localhost:{port}");
    let trusted =
        Proxy::start_url(&url, &format!("ca_file = {:?}", ca.to_str().unwrap()), "").await;
    let (status, _, body) = get(&trusted.url("/any")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"over tls");
    assert_eq!(names.lock().unwrap().as_slice(), ["localhost"]);

    // The system's roots do not know the test CA: refused, never sent unchecked.
    let untrusted = Proxy::start_url(&url, "", "[admin]\nlisten = \"127.0.0.1:0\"").await;
    let (status, _, _) = get(&untrusted.url("/any")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // And /readyz says so: an upstream whose certificate does not verify
    // is as good as down.
    let admin = untrusted.admin.unwrap();
    let (status, _, body) = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    let trusted = Proxy::start_url(
        &url,
        &format!("ca_file = {:?}", ca.to_str().unwrap()),
        "[admin]\nlisten = \"127.0.0.1:0\"",
    )
    .await;
    let (status, _, _) = get(&format!("http://{}/readyz", trusted.admin.unwrap())).await;
    assert_eq!(status, StatusCode::OK);
}
