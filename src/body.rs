//! Body types: the one boxed body every response carries, small constructors
//! for bodies the proxy writes itself, and a wrapper that keeps a value alive
//! (a log record, a connection's activity mark) until the body is finished.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::error::BoxError;

/// The body of every response the proxy sends: relayed, rewritten or local.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A complete body from bytes the proxy already has.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with no bytes.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Boxes any body whose errors can be boxed (e.g. a relayed `Incoming`).
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// Sees each data frame go by and hears when the body ends or is dropped.
pub trait Watch: Send + Unpin + 'static {
    /// Called whenever the body is asked for more (its reader is reading).
    fn polled(&mut self) {}
    /// Called with the size of every data frame sent.
    fn data(&mut self, _len: usize) {}
    /// Called once when the body reached its end (not when it was abandoned).
    fn finished(&mut self) {}
}

impl Watch for () {}

impl<A: Watch, B: Watch> Watch for (A, B) {
    fn polled(&mut self) {
        self.0.polled();
        self.1.polled();
    }
    fn data(&mut self, len: usize) {
        self.0.data(len);
        self.1.data(len);
    }
    fn finished(&mut self) {
        self.0.finished();
        self.1.finished();
    }
}

/// A body that reports to a [`Watch`], which lives exactly as long as the body.
pub struct Watched<B, W> {
    inner: B,
    watch: W,
    finished: bool,
}

impl<B: Body, W: Watch> Watched<B, W> {
    /// Wraps `inner`, reporting to `watch`. A body that is already at its end
    /// (an empty or `HEAD` response) may never be polled, so it counts as
    /// finished now.
    pub fn new(inner: B, mut watch: W) -> Self {
        let finished = inner.is_end_stream();
        if finished {
            watch.finished();
        }
        Watched {
            inner,
            watch,
            finished,
        }
    }
}

impl<B, W> Body for Watched<B, W>
where
    B: Body<Data = Bytes> + Unpin,
    W: Watch,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        this.watch.polled();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.watch.data(data.len());
            }
        }
        // hyper stops polling a body that says it has ended (a sized body
        // after its last byte), so the end is noticed here, not only at None.
        let ended = matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream();
        if ended && !this.finished {
            this.finished = true;
            this.watch.finished();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
