//! Test support, by role: [`upstream`] (a real application that records
//! what it saw), [`proxy`] (the real proxy on an ephemeral port),
//! [`clients`] (HTTP/1.1, HTTP/2, raw bytes, child output, the browsing
//! client) and [`chromium`] (a real browser).

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod chromium;
mod clients;
mod proxy;
mod upstream;

pub use self::clients::*;
pub use self::proxy::*;
pub use self::upstream::*;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;

/// Fails the test instead of hanging it when something never happens.
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("the test timed out after 30 s")
}
