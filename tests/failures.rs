//! Bad upstreams, bad clients and floods get short, clear answers.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    // A port that was just free: nothing listens there.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let proxy = Proxy::start_url(&format!("http://{dead_addr}"), "", "").await;

    let (status, headers, body) = get(&proxy.url("/anything")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("502 Bad Gateway"), "{body}");
    assert!(
        !body.contains(&dead_addr.to_string()),
        "leaks the upstream address"
    );
}

#[tokio::test]
async fn an_upstream_that_closes_without_answering_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"this is not HTTP\r\n\r\n").await;
        }
    });
    let proxy = Proxy::start_url(&format!("http://{addr}"), "", "").await;
    let (status, _, body) = get(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).starts_with("502"));
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "timeout = \"700ms\"", "").await;

    let (status, _, body) = get(&proxy.url("/slow?ms=5000")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(String::from_utf8_lossy(&body).starts_with("504 Gateway Timeout"));

    // Within the limit, the answer is relayed.
    let (status, _, body) = get(&proxy.url("/slow?ms=0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow answer");
}

#[tokio::test]
async fn oversized_or_too_many_headers_are_a_431() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        "[server]\nmax_header_bytes = 16384\nmax_headers = 50",
    )
    .await;

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let answer = raw(proxy.addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..60 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(proxy.addr, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    // Just under the limits is fine.
    let mut fine = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..40 {
        fine.push_str(&format!("X-H{i}: v\r\n"));
    }
    fine.push_str("\r\n");
    let answer = raw(proxy.addr, fine.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.80}");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn a_malformed_request_is_a_400() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let answer = raw(proxy.addr, bad).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_headers_is_cut_off() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[server]\nheader_timeout = \"300ms\"").await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // A slowloris: the start of a request head, then a trickle that never ends it.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let out = within(trickle_until_closed(&mut stream)).await;
    assert!(upstream.seen().is_empty());
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 408"), "{out}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[server]\nheader_timeout = \"300ms\"").await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = within(stream.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "expected the proxy to close the silent connection");
}

/// Sends a header line every 100 ms until the proxy closes the
/// connection; what it answered meanwhile.
async fn trickle_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        if stream.write_all(b"X-A: b\r\n").await.is_err() {
            return out;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
}

/// A proxy with these `[server]` settings, and a connection to it that
/// has had its first request answered.
async fn kept_alive(server: &str) -> (Upstream, Proxy, TcpStream) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", &format!("[server]\n{server}")).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_answer(&mut stream).await;
    (upstream, proxy, stream)
}

/// Reads one whole answer from the upstream's test page off `stream`.
async fn read_answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = within(stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
        if got.ends_with(b"hello from upstream") {
            return got;
        }
    }
}

#[tokio::test]
async fn a_later_request_too_slow_to_send_its_headers_is_cut_off_too() {
    let (upstream, _proxy, mut stream) =
        kept_alive("header_timeout = \"300ms\"\nidle_timeout = \"60s\"").await;
    // The second request's head trickles in and never ends: cut after
    // header_timeout, long before idle_timeout.
    stream
        .write_all(b"GET /second HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let cut =
        tokio::time::timeout(Duration::from_secs(20), trickle_until_closed(&mut stream)).await;
    assert!(
        cut.is_ok(),
        "a trickling head was held for {:?}",
        started.elapsed()
    );
    assert_eq!(
        upstream.seen().len(),
        1,
        "the unfinished request was forwarded"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_may_pause_longer_than_header_timeout_before_its_next_request() {
    let (upstream, _proxy, mut stream) =
        kept_alive("header_timeout = \"300ms\"\nidle_timeout = \"20s\"").await;
    // The pause between requests is idle_timeout's, as nginx's keepalive_timeout.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stream
        .write_all(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let second = read_answer(&mut stream).await;
    assert!(
        second.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&second)
    );
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_timeout() {
    let (upstream, _proxy, mut stream) =
        kept_alive("idle_timeout = \"1s\"\nheader_timeout = \"20s\"").await;
    // The whole first answer is in; the next read sees the close.
    let mut buf = [0u8; 4096];
    let n = within(stream.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "expected the idle connection to be closed");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    beyond_the_cap("[server]\nmax_connections = 2").await;
}

/// With a listening socket per core, the cap counts the connections of all
/// of them, and a core whose socket is quiet holds no slot.
#[tokio::test]
async fn with_a_runtime_per_core_the_cap_counts_every_core() {
    beyond_the_cap("[server]\nmax_connections = 2\nwork_stealing = false").await;
}

/// With a listening socket per core and room for one connection, each new
/// connection is served whichever core's socket the kernel gives it to.
#[tokio::test]
async fn with_a_runtime_per_core_a_quiet_core_holds_no_slot() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        "[server]\nmax_connections = 1\nwork_stealing = false",
    )
    .await;
    for i in 0..8 {
        let (status, _, _) = within(get(&proxy.url(&format!("/one{i}")))).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(upstream.seen().len(), 8);
}

/// A port another process holds with SO_REUSEPORT (a second instance with a
/// runtime per core) is refused as in use, not joined.
#[tokio::test]
async fn with_a_runtime_per_core_a_port_in_use_is_refused() {
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.set_reuseport(true).unwrap();
    other.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let other = other.listen(16).unwrap();
    let at = other.local_addr().unwrap();
    for mode in ["false", "true"] {
        let config = cloakroom::Config::parse(&format!(
            "listen = \"{at}\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [server]\nwork_stealing = {mode}\n"
        ))
        .unwrap();
        let refused = cloakroom::server::Listeners::bind(at, &config.server);
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse),
            "work_stealing = {mode}: bound a port in use"
        );
    }
}

async fn beyond_the_cap(config: &str) {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", config).await;

    // Two clients hold both slots with requests in flight.
    let slow = |path: &'static str| {
        let url = proxy.url(path);
        tokio::spawn(async move { get(&url).await })
    };
    let first = slow("/slow?ms=3000");
    let second = slow("/slow?ms=3000");
    upstream.arrived(2).await;

    // A third is accepted by the kernel but not served while both are busy.
    let third_url = proxy.url("/third");
    let mut third = tokio::spawn(async move { get(&third_url).await });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
    assert!(early.is_err(), "served beyond the connection cap");
    assert_eq!(
        upstream.seen().len(),
        2,
        "the third request reached the upstream"
    );

    // Once a slot frees up, it is served.
    let (a, b) = (within(first).await.unwrap(), within(second).await.unwrap());
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    let (status, _, body) = within(third).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from upstream");
}

#[tokio::test]
async fn garbage_from_clients_never_takes_the_proxy_down() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[server]\nheader_timeout = \"500ms\"").await;

    // Random bytes, and plausible requests with random bytes where the
    // session, the path and the headers go.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut tasks = Vec::new();
    for round in 0..150 {
        let junk: Vec<u8> = (0..(next() % 300)).map(|_| next() as u8).collect();
        let text: String = junk.iter().map(|b| char::from(b'!' + b % 90)).collect();
        let request = match round % 3 {
            0 => junk,
            1 => format!(
                "GET /{text} HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            _ => {
                let mut r = b"GET /?CLOAKROOMSID=".to_vec();
                r.extend_from_slice(text.as_bytes());
                r.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nCookie: CLOAKROOMSID=");
                r.extend_from_slice(
                    &junk
                        .iter()
                        .map(|b| b.max(&0x20).to_owned())
                        .filter(|b| *b != 0x7f)
                        .collect::<Vec<u8>>(),
                );
                r.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
                r
            }
        };
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move { raw(addr, &request).await }));
    }
    for task in tasks {
        let answer = task.await.expect("a client task panicked");
        // Whatever came back is a well-formed status line, or nothing.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 "),
            "{answer:.60}"
        );
        assert!(
            !answer.starts_with("HTTP/1.1 5"),
            "a 5xx for client input: {answer:.80}"
        );
    }
    let (status, _, body) = get(&proxy.url("/still-alive")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from upstream");
}

#[tokio::test]
async fn http2_clients_that_never_answer_the_closing_ping_lose_their_place() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        "[server]\nmax_connections = 2\nheader_timeout = \"500ms\"",
    )
    .await;

    // Both places taken by HTTP/2 clients that send the preface and
    // SETTINGS, then never read or answer anything.
    let mut mute = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        mute.push(stream);
    }
    // They are cut after the header timeout and its grace; a real client is
    // then served (within() bounds the wait).
    let (status, _, _) = within(get(&proxy.url("/after"))).await;
    assert_eq!(status, StatusCode::OK);
    for mut stream in mute {
        let mut buf = [0u8; 1024];
        let ended = within(async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(ended);
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_its_response_is_cut_after_the_send_timeout() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        "[server]\nsend_timeout = \"1s\"\nmax_connections = 1",
    )
    .await;
    upstream.release_download();

    // Asks for 50 MB and never reads: the proxy's writes stop, and so does
    // hyper asking the body for more.
    let mut stalled = TcpStream::connect(proxy.addr).await.unwrap();
    stalled
        .write_all(b"GET /download?bytes=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // (The download route records nothing; give it time to start.)
    tokio::time::sleep(Duration::from_millis(500)).await;

    // It loses its place; the next client (waiting for the only place) is served.
    let (status, _, body) = within(get(&proxy.url("/after"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from upstream");
    // And what the stalled client finally reads ends short of 50 MB.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    within(async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(got < 50_000_000, "the whole body arrived: {got}");
}

#[tokio::test]
async fn the_send_timeout_spares_slow_uploads_and_slow_upstreams() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[server]\nsend_timeout = \"1s\"").await;

    // An upload that takes 2.5 s, arriving steadily.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let chunks = 25u64;
    let size = 1000u64;
    tcp.write_all(
        format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            chunks * size
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    for c in 0..chunks {
        let part: Vec<u8> = (c * size..(c + 1) * size).map(pattern).collect();
        tcp.write_all(&part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answer = String::new();
    within(tcp.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("{} ", chunks * size)), "{answer}");

    // An upstream that thinks for 2.5 s before answering.
    let (status, _, body) = within(get(&proxy.url("/slow?ms=2500"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow answer");
}

#[tokio::test]
async fn an_upstream_silent_after_its_headers_is_cut_after_the_send_timeout() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[server]\nsend_timeout = \"1s\"").await;
    // Other traffic meanwhile, on other connections.
    let busy_url = proxy.url("/elsewhere");
    let others = tokio::spawn(async move {
        for _ in 0..40 {
            get(&busy_url).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // The download sends its first 64 KiB, then nothing (never released).
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /download?bytes=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    within(async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    // Cut (within() bounds the wait: nothing else would end it).
    assert!(got > 0 && got < 1_000_000, "{got} bytes");
    others.abort();
}
