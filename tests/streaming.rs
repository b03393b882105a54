//! Bodies stream through the proxy in both directions: the far side sees the
//! first bytes before the near side has sent the rest, so nothing in between
//! can be holding the whole body.

mod support;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tokio::sync::oneshot;

const BIG: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn an_upload_streams_to_the_upstream() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    // The client sends one chunk, then holds the rest back until the upstream
    // has seen bytes. A proxy that buffered the body would deadlock here.
    let (release, gate) = oneshot::channel();
    let req = Request::post(proxy.url("/upload"))
        .body(streaming_upload(BIG, Some(gate)))
        .unwrap();
    let client = http1();
    let response = tokio::spawn(async move { send(&client, req).await });
    within(upstream.upload_started()).await;
    release.send(()).unwrap();

    let (status, _, body) = within(response).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let expected_sum: u64 = (0..BIG).map(|i| pattern(i) as u64).sum();
    assert_eq!(body, format!("{BIG} {expected_sum}"));
}

#[tokio::test]
async fn a_download_streams_to_the_client() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;

    let resp = within(
        http1().request(
            Request::get(proxy.url(&format!("/download?bytes={BIG}")))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], BIG.to_string());

    // The upstream sends the rest only after the client has the first chunk.
    let mut body = resp.into_body();
    let mut received = 0u64;
    let mut released = false;
    while let Some(frame) = within(body.frame()).await {
        let frame = frame.expect("body broke");
        if let Some(data) = frame.data_ref() {
            for (i, b) in data.iter().enumerate() {
                assert_eq!(
                    *b,
                    pattern(received + i as u64),
                    "byte {}",
                    received + i as u64
                );
            }
            received += data.len() as u64;
            if !released {
                released = true;
                upstream.release_download();
            }
        }
    }
    assert_eq!(received, BIG);
}
