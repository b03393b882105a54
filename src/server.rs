//! The accept loop: connection cap, HTTP/1.1 and HTTP/2 on every connection,
//! client timeouts, and graceful shutdown; one loop for the runtime, or one
//! per core on a runtime of its own (`server.work_stealing = false`).
//!
//! [`run`] takes [`Listeners`] that are already bound, so tests bind
//! `127.0.0.1:0` and learn the port before the proxy starts.
//!
//! Timeouts on the client side, and what they guard against:
//! - `server.header_timeout`: a request head must arrive whole within it
//!   (slowloris). hyper starts this clock whenever an HTTP/1.1 connection
//!   waits for a request head, so it also bounds the pause between two
//!   requests on a kept-alive HTTP/1.1 connection. A new connection that has
//!   sent no complete request within it (whatever protocol) is closed too.
//! - `server.idle_timeout`: a connection with no request in flight for this
//!   long is closed gracefully (HTTP/2 gets a GOAWAY).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::body::{Watch, Watched};
use crate::config::ServerConfig;
use crate::proxy;
use crate::upstream::{Peer, TunnelSlot};
use crate::App;

/// Upper bound on `server.max_connections`, so that draining can wait for
/// all permits at once.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// The listening socket: one, whose connections any worker of the runtime
/// serves; or, with `server.work_stealing = false`, one per core, bound to
/// the same address with `SO_REUSEPORT` (the kernel spreads new connections
/// over them), each served by a thread of its own with a single-threaded
/// runtime.
pub struct Listeners {
    sockets: Vec<std::net::TcpListener>,
    per_core: bool,
}

impl Listeners {
    /// Binds `addr` as `cfg` says. Must be called within a Tokio runtime.
    pub fn bind(addr: SocketAddr, cfg: &ServerConfig) -> std::io::Result<Listeners> {
        if cfg.work_stealing {
            let socket = socket_for(addr)?;
            socket.bind(addr)?;
            let listener = socket.listen(BACKLOG)?.into_std()?;
            return Ok(Listeners {
                sockets: vec![listener],
                per_core: false,
            });
        }
        if addr.port() != 0 {
            // Another process's sockets on this port with SO_REUSEPORT (a
            // second instance in this mode, started by mistake) would be
            // joined without a word and get a share of the connections. A
            // plain bind first fails on them as it does without this mode.
            socket_for(addr)?.bind(addr)?;
        }
        let threads = cfg.threads;
        let mut sockets: Vec<std::net::TcpListener> = Vec::with_capacity(threads);
        for _ in 0..threads {
            // The first one settles the port (`:0` picks one); the others join it.
            let at = match sockets.first() {
                Some(first) => first.local_addr()?,
                None => addr,
            };
            let socket = socket_for(at)?;
            #[cfg(unix)]
            socket.set_reuseport(true)?;
            socket.bind(at)?;
            sockets.push(socket.listen(BACKLOG)?.into_std()?);
        }
        Ok(Listeners {
            sockets,
            per_core: true,
        })
    }

    /// How many threads serve the connections: the runtime's workers, or
    /// the runtimes per core (one per socket). Must be called within the
    /// Tokio runtime that will serve them.
    pub fn threads(&self) -> usize {
        if self.per_core {
            self.sockets.len()
        } else {
            tokio::runtime::Handle::current().metrics().num_workers()
        }
    }

    /// The address bound (the port chosen, for `:0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.sockets.first() {
            Some(socket) => socket.local_addr(),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// The kernel's queue of connections not yet accepted, per socket.
const BACKLOG: u32 = 1024;

fn socket_for(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart may bind while old
    // connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// Serves `listeners` until `shutdown` resolves, then stops accepting, lets
/// open connections finish their requests for up to
/// `server.shutdown_timeout`, and returns. `server.max_connections` counts
/// the connections of all listeners together.
pub async fn run(
    listeners: Listeners,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let cfg = app.settings().config.server.clone();
    let max = cfg.max_connections.min(MAX_CONNECTIONS_LIMIT);
    let (stop_tx, stop_rx) = watch::channel(());
    // Dropped when the drain is over: what is still open (tunnels) closes.
    let (close_tx, close_rx) = watch::channel(());
    let accepting = Accepting {
        app,
        http: Arc::new(http_builder(&cfg)),
        slots: Arc::new(Semaphore::new(max)),
        stop: stop_rx,
        close: close_rx,
    };
    let slots = accepting.slots.clone();

    let mut threads = Vec::new();
    if listeners.per_core {
        for (n, socket) in listeners.sockets.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let accepting = accepting.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cloakroom-core{n}"))
                .spawn(move || serve_on_own_runtime(n, runtime, socket, accepting))?;
            threads.push(thread);
        }
        shutdown.await;
    } else if let Some(socket) = listeners.sockets.into_iter().next() {
        let listener = TcpListener::from_std(socket)?;
        accepting.clone().accept_loop(listener, shutdown).await;
    }

    // Stop accepting (the per-core loops see the stop), then drain.
    drop(stop_tx);
    let open = max - slots.available_permits();
    tracing::info!(
        open,
        "shutting down: no longer accepting, draining connections"
    );
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    match tokio::time::timeout(cfg.shutdown_timeout, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            open = max - slots.available_permits(),
            "drain limit reached; closing the remaining connections"
        ),
    }
    drop(close_tx);
    drop(accepting);
    // Each per-core thread ends its runtime once the drain is over; what is
    // left on it is dropped with it.
    if !threads.is_empty() {
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
    Ok(())
}

/// A per-core thread: its single-threaded runtime accepts on `socket` and
/// serves those connections, until the drain is over.
fn serve_on_own_runtime(
    core: usize,
    runtime: tokio::runtime::Runtime,
    socket: std::net::TcpListener,
    accepting: Accepting,
) {
    crate::pool::serve_core(core);
    runtime.block_on(async move {
        let mut stop = accepting.stop.clone();
        let mut close = accepting.close.clone();
        match TcpListener::from_std(socket) {
            Ok(listener) => {
                accepting
                    .accept_loop(listener, async move {
                        let _ = stop.changed().await;
                    })
                    .await
            }
            Err(e) => tracing::error!(error = %e, "a per-core listener failed; it is closed"),
        }
        // The connections accepted here run on this runtime: keep it
        // until the drain is over.
        let _ = close.changed().await;
    });
}

/// What every accept loop shares: the connection cap, and the signals to
/// stop accepting and to close what is left.
#[derive(Clone)]
struct Accepting {
    app: Arc<App>,
    http: Arc<auto::Builder<TokioExecutor>>,
    slots: Arc<Semaphore>,
    stop: watch::Receiver<()>,
    close: watch::Receiver<()>,
}

impl Accepting {
    /// Accepts until `stopped` resolves; each connection runs in a task of
    /// its own on the current runtime. The listener closes on return.
    async fn accept_loop(self, listener: TcpListener, stopped: impl Future<Output = ()>) {
        let mut backoff = Duration::from_millis(10);
        tokio::pin!(stopped);
        loop {
            // Wait for a free slot before accepting: at the cap, new
            // connections wait in the kernel's backlog instead of costing
            // memory and descriptors here. The slot itself is taken after
            // the accept: with a listener per core, a loop holding one while
            // its socket is quiet would keep it from the others. So another
            // core may take the last free slot first; this connection (at
            // most one a core) then waits for the next.
            tokio::select! {
                () = &mut stopped => break,
                free = self.slots.acquire() => match free {
                    Ok(free) => drop(free),
                    Err(_) => break,
                },
            }
            let (stream, addr) = tokio::select! {
                () = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Usually EMFILE/ENFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed; backing off {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let slot = match self.slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(TryAcquireError::Closed) => break,
                Err(TryAcquireError::NoPermits) => tokio::select! {
                    () = &mut stopped => break,
                    slot = self.slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                },
            };
            backoff = Duration::from_millis(10);
            let conn = Connection {
                app: self.app.clone(),
                http: self.http.clone(),
                peer: Peer {
                    addr,
                    tls: false,
                    via: None,
                },
                stop: self.stop.clone(),
                close: self.close.clone(),
                slot: Arc::new(slot),
            };
            match self.app.settings().tls.clone() {
                None => {
                    tokio::spawn(conn.serve(stream));
                }
                Some(acceptor) => {
                    tokio::spawn(conn.serve_tls(acceptor, stream));
                }
            }
        }
    }
}

fn http_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No `header_read_timeout`: hyper's arms a boxed timer for every
    // request head. `server.header_timeout` is the connection's own (see
    // `Activity::quiet`), one timer per idle period.
    builder
        .http1()
        .max_buf_size(cfg.max_header_bytes)
        .max_headers(cfg.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

/// One accepted client connection and what it needs to be served.
struct Connection {
    app: Arc<App>,
    http: Arc<auto::Builder<TokioExecutor>>,
    peer: Peer,
    stop: watch::Receiver<()>,
    /// Closes when the drain is over (tunnels end then).
    close: watch::Receiver<()>,
    /// Held until the connection and any tunnel it became are closed;
    /// counts against the cap.
    slot: Arc<OwnedSemaphorePermit>,
}

impl Connection {
    /// The TLS handshake first, within `server.header_timeout`, in this
    /// connection's task and slot.
    async fn serve_tls(mut self, acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let limit = self.app.settings().config.server.header_timeout;
        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                self.peer.tls = true;
                self.serve_io(tls).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer.addr, error = %e, "TLS handshake failed")
            }
            Err(_) => tracing::debug!(peer = %self.peer.addr, "TLS handshake timed out"),
        }
    }

    async fn serve(self, stream: TcpStream) {
        // Small responses and WebSocket frames should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        self.serve_io(stream).await;
    }

    async fn serve_io<I>(mut self, stream: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::default();
        let service = {
            let (app, peer, activity) = (self.app.clone(), self.peer, activity.clone());
            let tunnel = TunnelSlot {
                slot: self.slot.clone(),
                close: self.close.clone(),
            };
            service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let busy = activity.begin(req.version() == hyper::Version::HTTP_2);
                // A tunnel outlives its connection's HTTP: it keeps the
                // connection's place under the cap until it closes.
                if req.headers().contains_key(hyper::header::UPGRADE) {
                    req.extensions_mut().insert(tunnel.clone());
                }
                let app = app.clone();
                async move {
                    // Boxed: the pipeline is a large future, and hyper moves
                    // the one it is given; a pointer moves for free.
                    let resp = Box::pin(proxy::handle(app, peer, req)).await;
                    // From here the response is being sent: send_timeout
                    // applies (not while the request is still arriving or
                    // the upstream is thinking: upstream.timeout covers that).
                    busy.responding();
                    Ok::<_, Infallible>(resp.map(|body| Watched::new(body, busy)))
                }
            })
        };
        let conn = self.http.serve_connection_with_upgrades(
            TokioIo::new(Writes {
                inner: stream,
                activity: activity.shared.clone(),
            }),
            service,
        );
        tokio::pin!(conn);

        let cfg = self.app.settings().config.server.clone();
        let first_wait = cfg.header_timeout.min(cfg.idle_timeout);
        let mut closing = false;
        // An idle connection asked to close gets this long to do so: an
        // HTTP/2 client that never acknowledges the GOAWAY's PING would
        // otherwise keep its place under the cap for good.
        let grace = cfg.header_timeout.max(Duration::from_secs(1));
        let mut cut_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %self.peer.addr, error = %e, "connection ended with an error");
                    }
                    break;
                }
                quiet = activity.quiet(first_wait, cfg.idle_timeout, cfg.header_timeout), if !closing => {
                    if quiet == Quiet::SlowHead {
                        tracing::debug!(peer = %self.peer.addr, "request head not whole within server.header_timeout; connection cut");
                        break;
                    }
                    tracing::debug!(peer = %self.peer.addr, "closing idle connection");
                    closing = true;
                    cut_at = Some(tokio::time::Instant::now() + grace);
                    conn.as_mut().graceful_shutdown();
                }
                () = sleep_until_some(cut_at) => {
                    tracing::debug!(peer = %self.peer.addr, "idle connection did not close in time; cut");
                    break;
                }
                () = activity.stalled(cfg.send_timeout) => {
                    tracing::info!(peer = %self.peer.addr, "response made no progress within server.send_timeout (the client is not reading); connection cut");
                    break;
                }
                _ = self.stop.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                // The drain is over: whatever is left is cut.
                _ = self.close.changed() => break,
            }
        }
    }
}

/// How many times `server.send_timeout` one HTTP/2 stream may go without
/// being asked for more while the connection moves (a stream the client
/// paces with small windows is asked at least once per chunk it receives).
const STREAM_STALL: u32 = 5;

/// The client side of a connection, noting when a write took bytes and
/// when a request head starts to arrive.
struct Writes<I> {
    inner: I,
    activity: Arc<ActivityShared>,
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Writes<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> Writes<I> {
    fn wrote(&self, result: &std::task::Poll<std::io::Result<usize>>) {
        if matches!(result, std::task::Poll::Ready(Ok(n)) if *n > 0) {
            let ms = self.activity.elapsed_ms();
            self.activity.last_write.store(ms, Ordering::Release);
        }
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Writes<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sleeps until `at`, or for ever when there is no `at`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How many requests of one connection are in flight, and a way to wait
/// until there have been none for a while.
///
/// Requests only touch two atomics; the waiting side checks them when its
/// timer fires and re-arms it to the new deadline. So a busy connection
/// costs no wake-up and no timer per request, only one timer per idle
/// period.
#[derive(Clone)]
struct Activity {
    shared: Arc<ActivityShared>,
}

struct ActivityShared {
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended; `u64::MAX`
    /// until a request has started.
    last_end: AtomicU64,
    /// Milliseconds after `opened` of the last sign of life of a request:
    /// its start or end, or a response body asked for more.
    last_progress: AtomicU64,
    /// The first request in flight's own last sign of life (ms after
    /// `opened`; `u64::MAX` until its response starts, and while free). An
    /// HTTP/1 connection never has another, so a request costs no
    /// allocation and no lock here.
    first: AtomicU64,
    first_taken: AtomicBool,
    /// Each further request in flight's own (HTTP/2 carries many: one
    /// stream left without a window while others move is a stall too).
    requests: std::sync::Mutex<Vec<Arc<AtomicU64>>>,
    /// Milliseconds after `opened` of the last write to the client that
    /// took bytes.
    last_write: AtomicU64,
    /// Milliseconds after `opened` of the first byte read while no request
    /// was in flight (a request head arriving); `u64::MAX` when none.
    head_since: AtomicU64,
    /// A request came as HTTP/2: reads between requests are frames, not
    /// request heads.
    http2: AtomicBool,
    opened: tokio::time::Instant,
}

/// Why a connection with nothing in flight is let go.
#[derive(Debug, PartialEq)]
enum Quiet {
    /// No request for its time: closed gracefully.
    Idle,
    /// An HTTP/1 request head was not whole within its time: cut.
    SlowHead,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            shared: Arc::new(ActivityShared {
                in_flight: AtomicUsize::new(0),
                last_end: AtomicU64::new(u64::MAX),
                last_progress: AtomicU64::new(0),
                first: AtomicU64::new(u64::MAX),
                first_taken: AtomicBool::new(false),
                requests: std::sync::Mutex::new(Vec::new()),
                last_write: AtomicU64::new(0),
                head_since: AtomicU64::new(u64::MAX),
                http2: AtomicBool::new(false),
                opened: tokio::time::Instant::now(),
            }),
        }
    }
}

impl Activity {
    /// Marks a request as started; it ends when the returned guard drops
    /// (the guard rides on the response body, so streaming counts as busy).
    fn begin(&self, http2: bool) -> Busy {
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        // Its head is whole.
        self.shared.head_since.store(u64::MAX, Ordering::Release);
        if http2 {
            self.shared.http2.store(true, Ordering::Release);
        }
        // A started request also counts as activity for the idle clock.
        self.shared.mark_end();
        self.shared.mark_progress();
        // u64::MAX until the response starts (see `Busy::responding`).
        let first = self.shared.first_taken.compare_exchange(
            false,
            true,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        let own = if first.is_ok() {
            Own::First
        } else {
            let own = Arc::new(AtomicU64::new(u64::MAX));
            if let Ok(mut requests) = self.shared.requests.lock() {
                requests.push(own.clone());
            }
            Own::Listed(own)
        };
        Busy {
            shared: self.shared.clone(),
            own,
        }
    }

    /// Resolves once a response being sent has made no progress: for
    /// `limit`, its body was not asked for more and nothing at all was
    /// written to the client (a client that does not read, or an upstream
    /// that sends nothing); or, on HTTP/2, for [`STREAM_STALL`] times
    /// `limit` one stream's body was not asked for more while others moved
    /// (a stream the client gives no window). A request still arriving, or
    /// waiting for the upstream's answer, is never stalled.
    async fn stalled(&self, limit: Duration) {
        let shared = &self.shared;
        let mut deadline = tokio::time::Instant::now() + limit;
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = tokio::time::Instant::now();
            // The response that has gone longest without being asked for more.
            let first = shared.first.load(Ordering::Acquire);
            let listed = shared
                .requests
                .lock()
                .ok()
                .and_then(|r| r.iter().map(|p| p.load(Ordering::Acquire)).min());
            let oldest = Some(first.min(listed.unwrap_or(u64::MAX))).filter(|&ms| ms != u64::MAX);
            let Some(oldest) = oldest else {
                deadline = now + limit;
                continue;
            };
            let at = |ms: u64| shared.opened + Duration::from_millis(ms);
            let written = shared.last_write.load(Ordering::Acquire);
            let quiet_since = at(oldest.max(written));
            if now >= quiet_since + limit || now >= at(oldest) + limit * STREAM_STALL {
                return;
            }
            deadline = (quiet_since + limit).min(at(oldest) + limit * STREAM_STALL);
        }
    }

    /// Resolves once nothing has been in flight for `first` (before the
    /// first request starts) or `then` (after it): [`Quiet::Idle`]; or once
    /// an HTTP/1 request head has been arriving for `head` without being
    /// whole (a slowloris, the first request's or a later one's):
    /// [`Quiet::SlowHead`]. While a head may start, the timer fires at least
    /// every `head`, so a slow one is seen when its time is up.
    async fn quiet(&self, first: Duration, then: Duration, head: Duration) -> Quiet {
        let shared = &self.shared;
        let at = |ms: u64| shared.opened + Duration::from_millis(ms);
        let mut deadline = shared.opened + first;
        loop {
            tokio::time::sleep_until(deadline).await;
            let now = tokio::time::Instant::now();
            let heads = !shared.http2.load(Ordering::Acquire);
            let check_by = if heads { then.min(head) } else { then };
            if shared.in_flight.load(Ordering::Acquire) > 0 {
                deadline = now + check_by;
                continue;
            }
            let head_due = match shared.head_since.load(Ordering::Acquire) {
                u64::MAX => None,
                _ if !heads => None,
                since => Some(at(since) + head),
            };
            if head_due.is_some_and(|due| now >= due) {
                return Quiet::SlowHead;
            }
            let idle_due = match shared.last_end.load(Ordering::Acquire) {
                u64::MAX => shared.opened + first,
                ended => at(ended) + then,
            };
            if now >= idle_due {
                return Quiet::Idle;
            }
            deadline = idle_due.min(head_due.unwrap_or(now + check_by));
        }
    }
}

impl ActivityShared {
    /// Bytes came from the client: with nothing in flight, the first ones
    /// start a request head's clock.
    fn read(&self) {
        if self.head_since.load(Ordering::Acquire) == u64::MAX
            && self.in_flight.load(Ordering::Acquire) == 0
        {
            self.head_since.store(self.elapsed_ms(), Ordering::Release);
        }
    }

    fn mark_end(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_end.store(ms, Ordering::Release);
    }

    fn mark_progress(&self) {
        self.last_progress
            .store(self.elapsed_ms(), Ordering::Release);
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }
}

/// A request in flight; dropping it ends the request.
struct Busy {
    shared: Arc<ActivityShared>,
    /// Where this request's own last sign of life is kept (ms after the
    /// connection opened).
    own: Own,
}

enum Own {
    /// The connection's `first` slot.
    First,
    /// One of its further `requests`.
    Listed(Arc<AtomicU64>),
}

impl Busy {
    fn own(&self) -> &AtomicU64 {
        match &self.own {
            Own::First => &self.shared.first,
            Own::Listed(own) => own,
        }
    }

    /// The response head is ready: from now on it is being sent.
    fn responding(&self) {
        self.own()
            .store(self.shared.elapsed_ms(), Ordering::Release);
    }
}

impl Watch for Busy {
    // Progress is data handed on, not being asked: hyper also polls a body
    // when the connection's task wakes for other reasons (timers), and a
    // poll that finds nothing from a silent upstream is no progress.
    fn data(&mut self, _len: usize) {
        let ms = self.shared.elapsed_ms();
        self.own().store(ms, Ordering::Release);
        self.shared.last_progress.store(ms, Ordering::Release);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.shared.mark_end();
        self.shared.mark_progress();
        match &self.own {
            Own::First => {
                // Free again, and showing no response, before it is taken.
                self.shared.first.store(u64::MAX, Ordering::Release);
                self.shared.first_taken.store(false, Ordering::Release);
            }
            Own::Listed(own) => {
                if let Ok(mut requests) = self.shared.requests.lock() {
                    if let Some(at) = requests.iter().position(|r| Arc::ptr_eq(r, own)) {
                        requests.swap_remove(at);
                    }
                }
            }
        }
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `watch` once it has had the chance to see the current time.
    async fn idle_now<T>(watch: &mut std::pin::Pin<&mut impl Future<Output = T>>) -> bool {
        ready_now(watch).await.is_some()
    }

    async fn ready_now<T>(watch: &mut std::pin::Pin<&mut impl Future<Output = T>>) -> Option<T> {
        tokio::time::timeout(Duration::ZERO, watch.as_mut())
            .await
            .ok()
    }

    /// A long enough head timeout not to matter.
    const NO_HEAD: Duration = Duration::from_secs(3600);

    /// `quiet` with the defaults: 10 s for the first request and for a
    /// head, 60 s between requests.
    fn quiet_by_default(activity: &Activity) -> impl Future<Output = Quiet> + '_ {
        let (ten, sixty) = (Duration::from_secs(10), Duration::from_secs(60));
        activity.quiet(ten, sixty, ten)
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_not_idle_and_a_quiet_one_is() {
        let activity = Activity::default();
        let (first, then) = (Duration::from_secs(1), Duration::from_secs(10));
        let idle = activity.quiet(first, then, NO_HEAD);
        tokio::pin!(idle);

        let busy = activity.begin(false);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            !idle_now(&mut idle).await,
            "idle while a request was in flight"
        );
        drop(busy);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!idle_now(&mut idle).await, "idle before `then` passed");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(idle_now(&mut idle).await, "not idle after `then`");
    }

    /// What the client side's writes would note.
    fn wrote(activity: &Activity) {
        let ms = activity.shared.elapsed_ms();
        activity.shared.last_write.store(ms, Ordering::Release);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_nobody_reads_is_stalled_and_a_read_one_is_not() {
        let activity = Activity::default();
        let limit = Duration::from_secs(5);
        let stalled = activity.stalled(limit);
        tokio::pin!(stalled);

        // Nothing in flight: never stalled, however long.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!idle_now(&mut stalled).await);

        let mut busy = activity.begin(false);
        busy.responding();
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(3)).await;
            busy.data(1);
            assert!(!idle_now(&mut stalled).await, "stalled while being read");
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(idle_now(&mut stalled).await, "not stalled after the limit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_still_arriving_or_waiting_for_the_upstream_is_never_stalled() {
        let activity = Activity::default();
        let stalled = activity.stalled(Duration::from_secs(5));
        tokio::pin!(stalled);
        assert!(!idle_now(&mut stalled).await);
        let _uploading = activity.begin(false);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(
            !idle_now(&mut stalled).await,
            "an upload was taken for a stall"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_stream_never_asked_for_more_while_others_move_is_a_stall() {
        let activity = Activity::default();
        let limit = Duration::from_secs(5);
        let stalled = activity.stalled(limit);
        tokio::pin!(stalled);
        assert!(!idle_now(&mut stalled).await);
        let mut moving = activity.begin(false);
        moving.responding();
        let stuck = activity.begin(false);
        stuck.responding();
        // Bytes flow (the other stream): a slow, window-paced stream is
        // given STREAM_STALL times the limit...
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(2)).await;
            moving.data(1);
            wrote(&activity);
            assert!(!idle_now(&mut stalled).await, "cut while bytes flowed");
        }
        // ...then it counts as stalled even so.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(2)).await;
            moving.data(1);
            wrote(&activity);
        }
        assert!(
            idle_now(&mut stalled).await,
            "a stream without progress for 26 s was not noticed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_asks_is_idle_after_first() {
        let activity = Activity::default();
        let idle = activity.quiet(Duration::from_secs(1), Duration::from_secs(10), NO_HEAD);
        tokio::pin!(idle);
        assert!(!idle_now(&mut idle).await);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(idle_now(&mut idle).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_head_not_whole_in_time_is_a_slow_head_the_first_or_a_later_one() {
        let activity = Activity::default();
        let quiet = quiet_by_default(&activity);
        tokio::pin!(quiet);

        // The first request's head, whole in time.
        tokio::time::advance(Duration::from_secs(4)).await;
        activity.shared.read();
        tokio::time::advance(Duration::from_secs(5)).await;
        let busy = activity.begin(false);
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(busy);
        // A kept-alive connection waits for its next request for `then`,
        // not `head`...
        tokio::time::advance(Duration::from_secs(25)).await;
        assert_eq!(ready_now(&mut quiet).await, None, "cut while idle");
        // ...but a head that starts arriving must be whole within `head`.
        activity.shared.read();
        tokio::time::advance(Duration::from_secs(9)).await;
        activity.shared.read();
        assert_eq!(ready_now(&mut quiet).await, None, "cut before `head`");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(ready_now(&mut quiet).await, Some(Quiet::SlowHead));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_while_a_request_is_in_flight_or_on_http2_are_no_head() {
        let activity = Activity::default();
        let quiet = quiet_by_default(&activity);
        tokio::pin!(quiet);
        let busy = activity.begin(false);
        // A request body trickling in is not a head.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(5)).await;
            activity.shared.read();
        }
        drop(busy);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(ready_now(&mut quiet).await, None, "a body taken for a head");

        // HTTP/2 frames between requests are no head either: only idle counts.
        let activity = Activity::default();
        let quiet = quiet_by_default(&activity);
        tokio::pin!(quiet);
        drop(activity.begin(true));
        activity.shared.read();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            ready_now(&mut quiet).await,
            None,
            "HTTP/2 frames taken for a head"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(ready_now(&mut quiet).await, Some(Quiet::Idle));
    }
}
