//! What the upstream sees of a client's request, and what the client sees of
//! the upstream's answer.

mod support;

use http::{Request, StatusCode, Version};
use support::*;

#[tokio::test]
async fn method_path_query_and_body_arrive_byte_for_byte() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    let target = "/a/b%20c/d;x=1/%C3%A9?q=%2F%2f&empty=&dup=1&dup=2&utf=%C3%A9&dots=/../";
    let body = b"\x00binary\xffbody\r\n".to_vec();
    let req = Request::put(proxy.url(target))
        .header("content-type", "application/octet-stream")
        .header("x-app-header", "kept")
        .body(full(body.clone()))
        .unwrap();
    let (status, headers, got) = send(&http1(), req).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, "hello from upstream");
    assert_eq!(headers["x-upstream"], "yes");
    let seen = upstream.only();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.target, target);
    assert_eq!(seen.body, body);
    assert_eq!(
        seen.header("content-length").unwrap(),
        body.len().to_string()
    );
    assert_eq!(seen.header("x-app-header").unwrap(), "kept");
    assert_eq!(seen.version, Version::HTTP_11);
    // Its connection is not reused after a body, and the application is told.
    assert_eq!(seen.header("connection").as_deref(), Some("close"));
}

#[tokio::test]
async fn the_upstream_url_path_is_a_prefix() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start_url(&format!("http://{}/legacy/", upstream.addr), "", "").await;

    get(&proxy.url("/page?x=1")).await;
    get(&proxy.url("/")).await;

    let targets: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/legacy/page?x=1", "/legacy/"]);
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_in_both_directions() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    let req = Request::get(proxy.url("/in"))
        .header("connection", "x-client-hop")
        .header("x-client-hop", "private")
        .header("keep-alive", "timeout=9")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic cHJveHk6cHc=")
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    send(&http1(), req).await;
    let seen = upstream.only();
    for name in [
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authorization",
    ] {
        assert!(seen.header(name).is_none(), "{name} reached the upstream");
    }
    assert_ne!(seen.header("connection").as_deref(), Some("x-client-hop"));
    assert_eq!(seen.header("x-end-to-end").unwrap(), "kept");

    let (_, headers, _) = get(&proxy.url("/hop")).await;
    for name in ["x-private-hop", "keep-alive", "proxy-authenticate"] {
        assert!(headers.get(name).is_none(), "{name} reached the client");
    }
    assert_eq!(headers["x-kept"], "yes");
    let cookies: Vec<_> = headers
        .get_all("set-cookie")
        .iter()
        .filter(|c| !c.as_bytes().starts_with(b"CLOAKROOMSID="))
        .collect();
    assert_eq!(cookies, ["app=1; Path=/", "theme=dark"]);
}

#[tokio::test]
async fn forwarded_headers_describe_the_client_and_host_is_kept() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    let req = Request::get(proxy.url("/"))
        .header("host", "app.example:8443")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.example")
        .body(empty())
        .unwrap();
    send(&http1(), req).await;
    let seen = upstream.only();
    // No balancer is trusted: the client's own chain is replaced.
    assert_eq!(seen.header("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(seen.header("x-forwarded-proto").unwrap(), "http");
    assert_eq!(seen.header("x-forwarded-host").unwrap(), "app.example:8443");
    assert_eq!(seen.header("host").unwrap(), "app.example:8443");
}

#[tokio::test]
async fn host_can_be_the_upstreams_own() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "preserve_host = false", "").await;

    let req = Request::get(proxy.url("/"))
        .header("host", "app.example")
        .body(empty())
        .unwrap();
    send(&http1(), req).await;
    let seen = upstream.only();
    assert_eq!(seen.header("host").unwrap(), upstream.addr.to_string());
    assert_eq!(seen.header("x-forwarded-host").unwrap(), "app.example");
}

#[tokio::test]
async fn chunked_and_content_length_bodies_both_pass() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    // No length: the client sends it chunked; the upstream gets it whole.
    let req = Request::post(proxy.url("/chunked"))
        .body(streaming_upload(200_000, None))
        .unwrap();
    send(&http1(), req).await;
    // A length: the upstream gets the same length.
    let req = Request::post(proxy.url("/sized"))
        .body(full(vec![7u8; 1234]))
        .unwrap();
    send(&http1(), req).await;

    let seen = upstream.seen();
    assert_eq!(seen[0].header("transfer-encoding").unwrap(), "chunked");
    assert_eq!(seen[0].body.len(), 200_000);
    assert!(seen[0]
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern(i as u64)));
    assert_eq!(seen[1].header("content-length").unwrap(), "1234");
    assert!(seen[1].header("transfer-encoding").is_none());
    assert_eq!(seen[1].body.len(), 1234);
}

#[tokio::test]
async fn chunked_request_over_raw_http1() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    let answer = raw(
        proxy.addr,
        b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.only().body, "hello, world");
}

#[tokio::test]
async fn http2_clients_are_served_and_spoken_for_in_http1() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let client = http2();

    let req = Request::post(proxy.url("/h2?x=1"))
        .header("cookie", "a=1")
        .header("x-app", "two")
        .body(full("from h2"))
        .unwrap();
    let (status, headers, body) = send(&client, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from upstream");
    assert_eq!(headers["x-upstream"], "yes");

    let seen = upstream.only();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.target, "/h2?x=1");
    assert_eq!(seen.body, "from h2");
    assert_eq!(seen.header("host").unwrap(), proxy.addr.to_string());
    assert_eq!(seen.header("cookie").unwrap(), "a=1");

    // The response to an HTTP/2 client carries no connection-specific headers.
    let resp = within(
        client.request(
            Request::get(proxy.url("/hop"))
                .version(Version::HTTP_2)
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("keep-alive").is_none());
}

#[tokio::test]
async fn connect_is_refused_and_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    let answer = raw(
        proxy.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_balancers() {
    let upstream = Upstream::start().await;
    let claims = |req: http::request::Builder| {
        req.header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "app.example")
    };
    // Trusted: the client is the right-most untrusted hop, its scheme and
    // host are the balancer's word, and the cookie is Secure.
    let behind = Proxy::start(
        &upstream,
        "",
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]",
    )
    .await;
    let req = claims(Request::get(behind.url("/x")))
        .body(empty())
        .unwrap();
    send(&http1(), req).await;
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.example")
    );
    let req = claims(Request::get(behind.url("/.cloakroom/login")))
        .body(empty())
        .unwrap();
    let (_, headers, _) = send(&http1(), req).await;
    assert!(
        headers["set-cookie"].to_str().unwrap().contains("Secure"),
        "{headers:?}"
    );

    // Not trusted (the default): all of it replaced by what the connection says.
    let direct = Proxy::start(&upstream, "", "").await;
    let req = claims(Request::get(direct.url("/x")))
        .body(empty())
        .unwrap();
    send(&http1(), req).await;
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_ne!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.example")
    );
    let req = claims(Request::get(direct.url("/.cloakroom/login")))
        .body(empty())
        .unwrap();
    let (_, headers, _) = send(&http1(), req).await;
    assert!(!headers["set-cookie"].to_str().unwrap().contains("Secure"));
}

#[tokio::test]
async fn a_host_header_that_is_not_one_host_is_refused_before_the_upstream() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    for head in [
        "Host: evil.com/path",
        "Host: user@evil.com",
        "Host: a.example\r\nHost: b.example",
        "Host: a.example, b.example",
    ] {
        let answer = raw(
            proxy.addr,
            format!("GET /page HTTP/1.1\r\n{head}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
    }
    // The authority of an absolute-form target stands for Host: same rule.
    for (target, host) in [
        ("http://a.example:80@evil.example/x", "a.example"),
        ("http://@b.example/x", "b.example"),
        ("http://u%40v@b.example/x", "b.example"),
        ("http://a.example:99999/x", "a.example"),
    ] {
        let answer = raw(
            proxy.addr,
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
    }
    for port in ["99999", "0080", ""] {
        let answer = raw(
            proxy.addr,
            format!("GET /p HTTP/1.1\r\nHost: a.example:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "port {port:?}: {answer}"
        );
    }
    // HTTP/1.1 without Host is refused, absolute-form or not; HTTP/1.0 may omit it.
    for target in ["/page", "http://evil.example/page"] {
        let answer = raw(
            proxy.addr,
            format!("GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    // HTTP/2's :authority too.
    let resp = http2()
        .request(
            Request::get(format!("http://u@{}/h2", proxy.addr))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    let answer = raw(proxy.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let answer = raw(
        proxy.addr,
        b"GET /page HTTP/1.1\r\nHost: app.example:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_http10_upstreams_answer_reaches_an_http11_client_in_http11_and_keeps_it_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An old application: answers in HTTP/1.0 and closes.
    let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = old.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = old.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let proxy = Proxy::start_url(&format!("http://{old_addr}"), "", "").await;

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for n in 0..2 {
        tcp.write_all(b"GET /legacy HTTP/1.1\r\nHost: app.example\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"\r\n\r\nok") {
            let read = within(tcp.read(&mut buf)).await.unwrap();
            assert!(read > 0, "request {n}: the connection was closed");
            got.extend_from_slice(&buf[..read]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "request {n}: {text}");
    }
}

#[tokio::test]
async fn one_upstream_connection_carries_answers_of_every_shape_in_turn_until_a_body() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let client = http1();

    let (status, _, body) = get(&proxy.url("/first")).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"hello from upstream"[..])
    );
    let head = Request::head(proxy.url("/head")).body(empty()).unwrap();
    assert_eq!(send(&client, head).await.0, StatusCode::OK);
    for status in [204, 304] {
        let (got, _, body) = get(&proxy.url(&format!("/respond-with?status={status}"))).await;
        assert_eq!(got.as_u16(), status);
        assert!(body.is_empty());
    }
    let post = Request::post(proxy.url("/posted"))
        .body(full(b"a body".to_vec()))
        .unwrap();
    assert_eq!(send(&client, post).await.2, "hello from upstream");
    assert_eq!(upstream.seen().len(), 5);
    assert_eq!(
        upstream.connections(),
        1,
        "each answer read to its end frees the connection"
    );

    // That last request had a body: its connection is closed after the
    // answer, and the next request needs a new one.
    let (status, _, body) = get(&proxy.url("/last")).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"hello from upstream"[..])
    );
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn an_answer_abandoned_midway_closes_its_upstream_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    get(&proxy.url("/warm")).await;
    assert_eq!(upstream.connections(), 1);

    // The client reads the head and the first chunk of a large download,
    // then goes away.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /download?bytes=1000000 HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let read = within(tcp.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..read]).starts_with("HTTP/1.1 200"));
    drop(tcp);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    upstream.release_download();

    // The rest of that download must not reach the next request.
    own_answers(&proxy, "/after", b"hello from upstream").await;
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn an_upstream_that_closes_idle_or_says_close_costs_no_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An application that answers one request per connection, keeps it
    // open a little, then closes it without saying so.
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = app.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            });
        }
    });
    let proxy = Proxy::start_url(&format!("http://{app_addr}"), "", "").await;
    for n in 0..4 {
        let (status, _, body) = get(&proxy.url(&format!("/p/{n}"))).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, &b"ok"[..]),
            "request {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);

    // An answer that says `Connection: close` is not pooled either.
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    for n in 0..3 {
        let (status, _, _) = get(&proxy.url("/respond-with?h=connection:close")).await;
        assert_eq!(status, StatusCode::OK, "request {n}");
    }
    assert_eq!(upstream.connections(), 3);
}

/// Three requests under `prefix`, each answered 200 with `body` (its own
/// answer, nothing left over from another) and no `Set-Cookie`.
async fn own_answers(proxy: &Proxy, prefix: &str, body: &[u8]) {
    for n in 0..3 {
        let (status, headers, got) = get(&proxy.url(&format!("{prefix}/{n}"))).await;
        assert_eq!((status, &got[..]), (StatusCode::OK, body), "{prefix}/{n}");
        assert!(
            headers.get("set-cookie").is_none(),
            "{prefix}/{n}: {headers:?}"
        );
    }
}

/// One request read off a raw connection: its request line, or `None` at
/// the end of the stream. The body (by `Content-Length`) is read too.
async fn read_request(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + length);
    Some(head.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_request_body_the_application_left_unread_never_reaches_the_next_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An application that answers a POST before its body is in, then reads
    // the body and sends an answer nobody asked for.
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = app.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..at]).into_owned();
                    buf.drain(..at);
                    if head.starts_with("POST /nodrain") {
                        // Answers without reading the body, which is then
                        // read as the next request.
                        let _ = tcp
                            .write_all(
                                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 7\r\n\r\nnodrain",
                            )
                            .await;
                    } else if head.starts_with("GET /smuggled") {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nSet-Cookie: app=INJECTED\r\n\r\nINJECTED")
                            .await;
                    } else if head.starts_with("POST /early") {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
                            .await;
                        while buf.len() < 5 {
                            match tcp.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..5);
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nSet-Cookie: app=INJECTED\r\n\r\nINJECTED")
                            .await;
                    } else {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start_url(&format!("http://{app_addr}"), "", "").await;

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"POST /early HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"early") {
        let n = within(tcp.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    tcp.write_all(b"hello").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    own_answers(&proxy, "/victim", b"ok").await;

    // The body sent with the head, to a path whose answer does not wait
    // for it: the body is a request of the attacker's.
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: app.example\r\n\r\n";
    let post = Request::post(proxy.url("/nodrain"))
        .body(full(smuggled.to_vec()))
        .unwrap();
    let (status, _, body) = send(&http1(), post).await;
    assert_eq!((status.as_u16(), &body[..]), (401, &b"nodrain"[..]));
    own_answers(&proxy, "/next", b"ok").await;
}

#[tokio::test]
async fn a_pooled_connection_lost_under_a_request_sends_a_get_again_but_never_a_post() {
    use tokio::io::AsyncWriteExt;
    // An application that answers one request per connection and closes
    // the connection on reading the next, as one that hit its keep-alive
    // timeout just then.
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let arrived = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = arrived.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = app.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let Some(line) = read_request(&mut tcp, &mut buf).await else {
                    return;
                };
                log.lock().unwrap().push(line.clone());
                let body = line.split(' ').nth(1).unwrap_or("").to_owned();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
                if let Some(line) = read_request(&mut tcp, &mut buf).await {
                    log.lock().unwrap().push(line);
                }
            });
        }
    });
    let proxy = Proxy::start_url(&format!("http://{app_addr}"), "", "").await;
    let client = http1();

    assert_eq!(get(&proxy.url("/first")).await.2, "/first");
    // Goes out on the pooled connection, which the application drops.
    let (status, _, body) = get(&proxy.url("/again")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"/again"[..]));
    let post = Request::post(proxy.url("/order"))
        .body(full(b"one order".to_vec()))
        .unwrap();
    let (status, _, _) = send(&client, post).await;
    assert_eq!(
        status,
        StatusCode::BAD_GATEWAY,
        "a POST that may have been acted on is not sent twice"
    );
    assert_eq!(get(&proxy.url("/after")).await.2, "/after");

    let arrived = arrived.lock().unwrap().clone();
    let count = |target: &str| {
        arrived
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some(target))
            .count()
    };
    assert_eq!(count("/again"), 2, "{arrived:?}");
    assert_eq!(count("/order"), 1, "{arrived:?}");
    assert!(
        arrived
            .iter()
            .all(|l| l.split(' ').nth(1).is_some_and(|t| t.starts_with('/'))),
        "origin-form targets: {arrived:?}"
    );
}

#[tokio::test]
async fn pool_max_idle_zero_opens_a_connection_per_request() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "pool_max_idle = 0", "").await;
    own_answers(&proxy, "/each", b"hello from upstream").await;
    assert_eq!(upstream.connections(), 3);
}

/// With a runtime per core, each core keeps its own upstream connections:
/// one opened on a core serves only that core's requests (on another, its
/// events would wait for the core that opened it), and is reused there.
#[tokio::test]
async fn with_a_runtime_per_core_each_core_keeps_its_own_upstream_connections() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[server]\nwork_stealing = false").await;
    // Each client connection is new; the kernel spreads them over the cores.
    for i in 0..48 {
        let (status, _, body) = within(get(&proxy.url(&format!("/core{i}")))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello from upstream");
    }
    assert_eq!(upstream.seen().len(), 48);
    let cores = std::thread::available_parallelism().unwrap().get();
    let opened = upstream.connections();
    assert!(
        opened <= cores,
        "{opened} upstream connections for {cores} cores: not reused"
    );
    if cores > 1 {
        // 48 connections all on one core: about one run in 2^47.
        assert!(opened > 1, "one upstream connection served every core");
    }
}

/// Trailers from the application end its answer and are not passed on (as
/// nginx's `proxy_pass_trailers off`): the response's rules (control
/// headers taken off, cache marking) would not apply to them. The
/// connection still serves the next request.
#[tokio::test]
async fn the_applications_trailers_are_not_passed_on() {
    use tokio::io::AsyncWriteExt;
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = app.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request(&mut tcp, &mut buf).await.is_some() {
                    let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Cloakroom-Session-Set, Cache-Control\r\n\r\n\
                        5\r\nhello\r\n0\r\nX-Cloakroom-Session-Set: t=1\r\nCache-Control: public, s-maxage=60\r\nSet-Cookie: z=1\r\n\r\n";
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start_url(&format!("http://{app_addr}"), "", "").await;
    for client in [http2(), http1()] {
        for _ in 0..2 {
            let req = Request::get(proxy.url("/trailers"))
                .header("te", "trailers")
                .body(empty())
                .unwrap();
            let resp = within(client.request(req)).await.expect("request failed");
            assert_eq!(resp.status(), StatusCode::OK);
            let body = within(http_body_util::BodyExt::collect(resp.into_body()))
                .await
                .expect("body failed");
            assert_eq!(body.trailers(), None, "trailers passed on");
            assert_eq!(body.to_bytes(), "hello");
        }
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the connection was not reused after the trailers"
    );
}
