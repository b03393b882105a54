//! Protocol upgrades (WebSocket) pass through: 101, then bytes both ways.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
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

async fn open_websocket(
    proxy: &Proxy,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (ws, resp) = within(tokio_tungstenite::client_async(
        format!("ws://{}/ws", proxy.addr),
        tcp,
    ))
    .await
    .expect("handshake through the proxy");
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test]
async fn open_tunnels_count_against_the_connection_cap() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[server]\nmax_connections = 2").await;

    let first = open_websocket(&proxy).await;
    let mut second = open_websocket(&proxy).await;
    second.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        within(second.next()).await.unwrap().unwrap(),
        Message::text("still here")
    );

    // Both places are held by tunnels: a third client waits in the backlog.
    let url = proxy.url("/plain");
    let mut waiting = tokio::spawn(async move { get(&url).await });
    let served_early = tokio::time::timeout(Duration::from_millis(700), &mut waiting).await;
    assert!(
        served_early.is_err(),
        "a request was served while two tunnels held both places"
    );

    // A tunnel closing frees its place.
    drop(first);
    let (status, _, _) = within(waiting).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_after_the_drain_limit() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(&upstream, "", "[server]\nshutdown_timeout = \"500ms\"").await;

    let mut ws = open_websocket(&proxy).await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::text("before")
    );

    // The drain waits for the tunnel (it holds a place), then closes it.
    within(proxy.shutdown()).await.unwrap().unwrap();
    let after = within(ws.next()).await;
    assert!(
        !matches!(after, Some(Ok(Message::Text(_)))),
        "the tunnel still carried data after shutdown: {after:?}"
    );
    // Writing to the closed tunnel fails or the read sees its end.
    let _ = ws.send(Message::text("after")).await;
    let end = within(ws.next()).await;
    assert!(
        matches!(end, None | Some(Err(_))),
        "the tunnel is still open after shutdown: {end:?}"
    );
}

#[tokio::test]
async fn a_tunnel_closes_when_the_session_that_opened_it_ends() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(
        &upstream,
        "",
        "[session]\ncookieless = false\n[identity]\nupstream_control = true",
    )
    .await;
    let mut b = Browser::new(&proxy);
    b.get("/start").await;
    b.get("/respond-with?h=X-Cloakroom-Login:carol").await;
    b.get("/check").await;
    let seen = upstream.seen().last().cloned().unwrap();
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("carol"));
    let cookie = format!("CLOAKROOMSID={}", b.session().unwrap());

    let mut request = format!("ws://{}/ws", proxy.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, resp) = within(tokio_tungstenite::client_async(request, tcp))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::text("hello")
    );

    // Logged out everywhere (the sessions API's call): the tunnel closes.
    assert_eq!(proxy.app.sessions.revoke_user("carol").await.unwrap(), 1);
    let end = within(async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    let () = end;
}
