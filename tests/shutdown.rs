//! Graceful shutdown: stop accepting, finish what is in flight, then return.

mod support;

use http::StatusCode;
use support::*;
use tokio::net::TcpStream;

#[tokio::test]
async fn an_in_flight_request_finishes_and_new_connections_are_refused() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(&upstream, "", "").await;
    finishes_in_flight_then_refuses(&mut proxy, &upstream, 1).await;
}

/// Shuts `proxy` down with a slow request in flight (the upstream's
/// next to arrive): it is answered, `run` returns, and `tries` new
/// connections are all refused.
async fn finishes_in_flight_then_refuses(proxy: &mut Proxy, upstream: &Upstream, tries: usize) {
    let url = proxy.url("/slow?ms=800");
    let before = upstream.seen().len();
    let in_flight = tokio::spawn(async move { get(&url).await });
    upstream.arrived(before + 1).await;

    let stopped = proxy.shutdown();
    let (status, _, body) = within(in_flight).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow answer");
    within(stopped).await.unwrap().unwrap();

    for _ in 0..tries {
        assert!(
            TcpStream::connect(proxy.addr).await.is_err(),
            "still accepting after shutdown"
        );
    }
}

#[tokio::test]
async fn draining_gives_up_at_the_drain_limit() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(&upstream, "", "[server]\nshutdown_timeout = \"300ms\"").await;

    let url = proxy.url("/slow?ms=20000");
    let _stuck = tokio::spawn(async move { get(&url).await });
    upstream.arrived(1).await;

    // `run` returns after the drain limit even though a request is still open.
    within(proxy.shutdown()).await.unwrap().unwrap();
}

/// The names of this process's threads that serve a core of their own.
fn core_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("cloakroom-core"))
        .count()
}

// The only test in this binary with `server.work_stealing = false`, so the
// threads counted are its own.
#[tokio::test]
async fn a_runtime_per_core_serves_every_connection_and_drains_on_shutdown() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(&upstream, "", "[server]\nwork_stealing = false").await;
    // Each request on a connection of its own: the kernel spreads them
    // over the cores' sockets, and every one is answered.
    let clients: Vec<_> = (0..24)
        .map(|i| {
            let url = proxy.url(&format!("/n{i}"));
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for client in clients {
        let (status, _, body) = within(client).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello from upstream");
    }
    let mut paths: Vec<_> = upstream.seen().into_iter().map(|s| s.target).collect();
    paths.sort();
    let mut expected: Vec<_> = (0..24).map(|i| format!("/n{i}")).collect();
    expected.sort();
    assert_eq!(paths, expected);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(core_threads(), cores, "one serving thread per core");

    // Shutdown: what is in flight finishes, nothing new is accepted, and
    // the per-core threads end.
    finishes_in_flight_then_refuses(&mut proxy, &upstream, cores * 2).await;
    assert_eq!(core_threads(), 0, "per-core threads outlived the shutdown");
}
