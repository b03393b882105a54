//! Graceful shutdown: stop accepting, finish what is in flight, then return.

mod support;

use http::StatusCode;
use support::*;
use tokio::net::TcpStream;

#[tokio::test]
async fn an_in_flight_request_finishes_and_new_connections_are_refused() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(&upstream, "", "").await;

    let url = proxy.url("/slow?ms=800");
    let in_flight = tokio::spawn(async move { get(&url).await });
    upstream.arrived(1).await;

    let stopped = proxy.shutdown();
    let (status, _, body) = within(in_flight).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow answer");
    within(stopped).await.unwrap().unwrap();

    assert!(
        TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting after shutdown"
    );
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
