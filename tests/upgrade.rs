//! Protocol upgrades (WebSocket) pass through: 101, then bytes both ways.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_websocket_echoes_through_the_proxy() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, resp) = within(tokio_tungstenite::client_async(
        format!("ws://{}/ws", proxy.addr),
        tcp,
    ))
    .await
    .expect("handshake through the proxy");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["upgrade"], "websocket");

    for text in ["hello", "through", "the cloakroom"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = within(ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    let blob: Vec<u8> = (0..100_000u64).map(pattern).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let echoed = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed.into_data(), blob);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn an_upgrade_the_upstream_refuses_is_an_ordinary_response() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    // The upstream's catch-all route answers 200 and records the request.
    let answer = raw(
        proxy.addr,
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = upstream.only();
    assert_eq!(seen.header("upgrade").unwrap(), "websocket");
    assert_eq!(seen.header("connection").unwrap(), "upgrade");
}
