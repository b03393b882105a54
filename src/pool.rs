//! The upstream connection pool: idle HTTP/1.1 connections to the
//! application, each one driven by whoever is waiting on it.
//!
//! hyper-util's pooled client runs every connection in a task of its own and
//! hands each request over through channels, which costs several task
//! wake-ups per request, often across threads. Here a [`Link`] (hyper's
//! `client::conn::http1` sender and its connection) is polled by the
//! request's own task while the response head is awaited, then by whoever
//! reads the response body ([`Relayed`]). A link whose response was read to
//! its end goes back to the [`Pool`], unless its request had a body; one
//! abandoned mid-message is closed. A pooled link is checked for unread
//! bytes and for the upstream's close before it carries a request.
//!
//! Why a request body costs its connection: an application may answer
//! without reading the body (Python's `http.server` does, for an early
//! 401), or before all of it arrived. What is left of the body on the
//! connection is then read as the *next* request, and its answer, chosen
//! by whoever sent the body, would go to the next client. Only a closed
//! connection is sure not to carry it over.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, TrySendError};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A connection to the upstream: plain TCP or TLS.
pub type Io = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;

/// A request body on its way upstream: the client's, or none.
pub struct Outgoing {
    /// `None`: no body (a request sent again; see [`Outgoing::empty`]).
    body: Option<Incoming>,
}

impl Outgoing {
    pub fn new(body: Incoming) -> Outgoing {
        Outgoing { body: Some(body) }
    }

    /// No body at all.
    pub fn empty() -> Outgoing {
        Outgoing { body: None }
    }
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(body) = &mut self.body else {
            return Poll::Ready(None);
        };
        Pin::new(body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The waker a link is polled with. hyper wakes it from within the link's
/// own poll whenever it hands a response head or a body chunk over, or
/// wants the next chunk; passed on, each such wake would make tokio
/// reschedule the very task being polled, and wake another worker thread
/// for it (a futex and an eventfd write per request). So wakes that come
/// during the owner's poll are only noted, and [`Link::drive`] polls again
/// at once instead; wakes from outside (the socket became ready) go to the
/// task.
///
/// Whether the owner is polling is one atomic state that a wake moves
/// from `POLLING` to `MISSED` and the owner swaps back to `IDLE`: a wake
/// from another thread as a poll ends is either seen by the owner or
/// passed to the task. (Two flags, read and then written, lost such a
/// wake now and then: a request then waited for the connection's next
/// timer, seconds, under load.)
struct Relay {
    task: futures_util::task::AtomicWaker,
    state: AtomicU8,
}

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const MISSED: u8 = 2;

impl std::task::Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, MISSED, Ordering::AcqRel, Ordering::Acquire)
        {
            // Noted: the owner polls again.
            Ok(_) | Err(MISSED) => {}
            Err(_) => self.task.wake(),
        }
    }
}

/// One HTTP/1.1 connection to the upstream, not yet or no longer running in
/// a task of its own: it makes progress only while it is polled.
pub struct Link {
    sender: http1::SendRequest<Outgoing>,
    /// None once the connection has closed or failed. It is dropped then:
    /// a request still queued on it comes back to its sender unsent.
    /// Boxed: hyper's connection state is about 1.5 KB, and a link moves
    /// several times a request (out of the pool, into the response body,
    /// back); one allocation a connection keeps those moves small.
    conn: Option<Box<http1::Connection<Io, Outgoing>>>,
    /// The request in flight has (or had) a body: the link is not reused.
    carried_body: bool,
    /// The pool shelf of the runtime that opened it (see [`Pool`]).
    home: usize,
    relay: Arc<Relay>,
    /// `relay` as a waker.
    waker: Waker,
}

impl Link {
    /// The HTTP/1.1 client side of a fresh connection.
    pub async fn open(io: Io) -> hyper::Result<Link> {
        let (sender, conn) = http1::handshake(io).await?;
        let relay = Arc::new(Relay {
            task: futures_util::task::AtomicWaker::new(),
            state: AtomicU8::new(IDLE),
        });
        Ok(Link {
            sender,
            conn: Some(Box::new(conn)),
            carried_body: false,
            home: SHELF.with(|shelf| shelf.get()),
            waker: Waker::from(relay.clone()),
            relay,
        })
    }

    /// Runs `step` (which polls the connection and what waits on it) with
    /// the link's own waker, again while it was woken during the step (up
    /// to four times; then the task is woken to come back).
    fn drive<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut step: impl FnMut(&mut Link, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.relay.task.register(cx.waker());
        let waker = self.waker.clone();
        let mut inner = Context::from_waker(&waker);
        for _ in 0..4 {
            self.relay.state.store(POLLING, Ordering::SeqCst);
            let out = step(self, &mut inner);
            let missed = self.relay.state.swap(IDLE, Ordering::AcqRel) == MISSED;
            if out.is_ready() || !missed {
                return out;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads and writes what is due on the connection; drops it once it
    /// has ended.
    fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn {
            if Pin::new(&mut **conn).poll(cx).is_ready() {
                self.conn = None;
            }
        }
    }

    fn closed(&self) -> bool {
        self.conn.is_none()
    }

    /// Whether a new request can go out on this link now: the connection is
    /// open and between messages. Polling it first notices an upstream that
    /// closed the idle connection.
    fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.settle(cx);
        !self.closed() && self.sender.is_ready()
    }

    /// Polls the connection once (through [`Link::drive`]): it reads or
    /// writes what is due and notices its end.
    fn settle(&mut self, cx: &mut Context<'_>) {
        let _ = self.drive(cx, |link, cx| {
            link.poll_conn(cx);
            Poll::Ready(())
        });
    }

    /// Sends `req` and drives the connection until the response head is in.
    /// A request that never left (the connection had closed) comes back in
    /// the error, to be sent on another link.
    pub async fn send(
        &mut self,
        req: Request<Outgoing>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Outgoing>>> {
        self.carried_body = !req.body().is_end_stream();
        let mut response = pin!(self.sender.try_send_request(req));
        poll_fn(|cx| {
            self.drive(cx, |link, cx| {
                // The connection first: it writes the request and reads the
                // head that the response future then finds ready.
                link.poll_conn(cx);
                response.as_mut().poll(cx)
            })
        })
        .await
    }

    /// Hands the connection to a task of its own, with protocol upgrades
    /// (a WebSocket tunnel outlives the response that opened it).
    pub fn spawn_with_upgrades(self) -> http1::SendRequest<Outgoing> {
        if let Some(conn) = self.conn {
            tokio::spawn(async move {
                if let Err(e) = (*conn).with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
        }
        self.sender
    }
}

/// Idle links to one upstream, newest last, on one shelf per runtime that
/// serves connections (with `server.work_stealing = false`, one per core;
/// else one). A link is registered with the runtime that opened it, whose
/// thread alone turns its socket's events into wake-ups: used from another
/// core, it would cost a wake-up across threads per event, and wait
/// whenever its own core is busy (an outside review measured 30 times the
/// latency beside a core rewriting a large page). So a request takes only
/// from its own runtime's shelf, and opens a new link when that is empty,
/// as nginx's workers keep their own keep-alive connections.
pub struct Pool {
    shelves: Box<[Mutex<VecDeque<Idle>>]>,
    /// Idle links on all shelves together.
    count: AtomicUsize,
    max_idle: usize,
    idle_timeout: Duration,
    /// A task closes links idle for longer than `idle_timeout`.
    reaping: AtomicBool,
}

struct Idle {
    link: Link,
    since: Instant,
}

thread_local! {
    /// The shelf of the runtime this thread runs (0: the shared runtime).
    static SHELF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as the one running per-core runtime `core`:
/// the links it opens go back to a shelf of their own.
pub fn serve_core(core: usize) {
    SHELF.with(|shelf| shelf.set(core + 1));
}

impl Pool {
    /// A pool keeping at most `max_idle` idle links, each for at most
    /// `idle_timeout`.
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Pool {
            shelves: (0..=cores).map(|_| Mutex::new(VecDeque::new())).collect(),
            count: AtomicUsize::new(0),
            max_idle,
            idle_timeout,
            reaping: AtomicBool::new(false),
        })
    }

    /// The shelf of the runtime running here.
    fn own_shelf(&self) -> usize {
        SHELF.with(|shelf| shelf.get()) % self.shelves.len()
    }

    fn shelf(&self, n: usize) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.shelves[n].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle link that is still open, if any.
    pub async fn checkout(&self) -> Option<Link> {
        loop {
            let mut link = self.take()?;
            if poll_fn(|cx| Poll::Ready(link.usable(cx))).await {
                return Some(link);
            }
        }
    }

    /// A fresh idle link from this runtime's shelf.
    fn take(&self) -> Option<Link> {
        let mut idle = self.shelf(self.own_shelf());
        while let Some(entry) = idle.pop_back() {
            self.count.fetch_sub(1, Ordering::Relaxed);
            if entry.since.elapsed() < self.idle_timeout {
                return Some(entry.link);
            }
            // Everything older is older still.
            self.count.fetch_sub(idle.len(), Ordering::Relaxed);
            idle.clear();
        }
        None
    }

    /// Keeps `link` for the next request, on its own runtime's shelf; when
    /// the pool is full, the oldest link on that shelf (or another) goes.
    fn put(self: &Arc<Pool>, link: Link) {
        if self.max_idle == 0 {
            return;
        }
        let home = link.home % self.shelves.len();
        if self.count.load(Ordering::Relaxed) >= self.max_idle {
            let shelves = (0..self.shelves.len()).filter(|&n| n != home);
            for n in std::iter::once(home).chain(shelves) {
                if self.shelf(n).pop_front().is_some() {
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        self.shelf(home).push_back(Idle {
            link,
            since: Instant::now(),
        });
        self.count.fetch_add(1, Ordering::Relaxed);
        if !self.reaping.swap(true, Ordering::Relaxed) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(reap(Arc::downgrade(self)));
            }
        }
    }

    /// Closes idle links older than the idle timeout.
    fn expire(&self) {
        let limit = self.idle_timeout;
        for n in 0..self.shelves.len() {
            let mut idle = self.shelf(n);
            let before = idle.len();
            idle.retain(|entry| entry.since.elapsed() < limit);
            self.count.fetch_sub(before - idle.len(), Ordering::Relaxed);
        }
    }

    /// How many links are idle now.
    pub fn idle(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// Runs while the pool exists: idle links are closed once they are too old
/// even when no request comes to notice.
async fn reap(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(pool) => (pool.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        match pool.upgrade() {
            Some(pool) => pool.expire(),
            None => return,
        }
    }
}

/// A response body from the upstream that drives its link as it is read
/// and returns the link to the pool once the body has reached its end.
pub struct Relayed {
    body: Incoming,
    link: Option<Link>,
    pool: Weak<Pool>,
}

impl Relayed {
    pub fn new(body: Incoming, link: Link, pool: &Arc<Pool>) -> Relayed {
        Relayed {
            body,
            link: Some(link),
            pool: Arc::downgrade(pool),
        }
    }

    /// The body is complete: let the connection finish the message, then
    /// pool it if it is ready for another. A link whose request had a body
    /// is closed (see the module's notes).
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut link) = self.link.take() else {
            return;
        };
        if link.carried_body {
            return;
        }
        link.settle(cx);
        if link.closed() || link.sender.is_closed() {
            return;
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.put(link);
        }
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.link {
            Some(link) => {
                let body = &mut this.body;
                link.drive(cx, |link, cx| {
                    let frame = Pin::new(&mut *body).poll_frame(cx);
                    if frame.is_ready() {
                        return frame;
                    }
                    // Reads the next bytes into the body.
                    link.poll_conn(cx);
                    Pin::new(&mut *body).poll_frame(cx)
                })
            }
            None => Pin::new(&mut this.body).poll_frame(cx),
        };
        match &frame {
            // Trailers end the message, and are not passed on (as nginx's
            // proxy_pass_trailers off): none of the response's rules (the
            // control headers taken off, the cache marking) would apply to
            // them.
            Poll::Ready(Some(Ok(f))) if f.is_trailers() => {
                this.release(cx);
                return Poll::Ready(None);
            }
            Poll::Ready(None) => this.release(cx),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(cx),
            // A broken body: the link is not reused.
            Poll::Ready(Some(Err(_))) => this.link = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // A body with nothing to read (HEAD, 204, 304, an empty body) may be
        // dropped unread; its link is still good. One dropped mid-message
        // is closed with it.
        if self.link.is_some() && self.body.is_end_stream() {
            self.release(&mut Context::from_waker(Waker::noop()));
        }
    }
}
