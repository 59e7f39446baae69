//! Accepting and keeping connections: HTTP/1.1 served by hyper with a header-read
//! timeout, an idle timeout and a connection limit.
//!
//! * Header timeout (hyper's): a request head must arrive within
//!   [`ServerConfig::header_timeout`] of the connection opening or of its previous
//!   response, so a client that sends nothing, or half a header line, is disconnected.
//! * Idle timeout: every connection's bytes in and out are noted; one on which nothing
//!   moved for [`ServerConfig::idle_timeout`] is closed unless one of its requests is
//!   waiting for the engine (handlers mark that time with [`ConnHandle::waiting`]).
//!   This catches request bodies that stop arriving and readers that stop reading.
//! * Connection limit: at [`Limits::max_connections`] open connections, a new one
//!   replaces the one idle longest (no request, or a request stalled on its client for
//!   over [`STALLED`]); when every connection is busy, accepting waits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

use crate::ServerConfig;

/// A request waiting this long on its client (no bytes moving) makes its connection a
/// candidate for replacement at the connection limit.
const STALLED: Duration = Duration::from_secs(1);

/// File descriptors kept free for everything but connections (the listener, the async
/// runtime, files the process opens).
const RESERVED_FDS: usize = 100;

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit and returns
/// the new soft limit. Every connection holds a file descriptor; the common default of
/// 1024 would cap the server far below [`ServerConfig::max_connections`].
#[cfg(unix)]
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Ok(limit.rlim_cur as u64)
}

/// Raising the open-file limit is only implemented on Unix.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> io::Result<u64> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "open-file limits are only raised on Unix",
    ))
}

/// The soft open-file limit, if known.
fn open_files_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return Some(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX));
        }
    }
    None
}

/// The connection settings of a server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// [`ServerConfig::max_connections`], lowered to what the open-file limit allows.
    pub max_connections: usize,
}

impl Limits {
    pub fn new(config: &ServerConfig) -> Self {
        let by_files = open_files_limit()
            .map(|files| files.saturating_sub(RESERVED_FDS).max(files / 2).max(1))
            .unwrap_or(usize::MAX);
        Self {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections.min(by_files).max(1),
        }
    }
}

/// What a connection's task, its I/O and its requests share.
pub(crate) struct Conn {
    id: u64,
    opened: Instant,
    /// Milliseconds after `opened` of the last byte read or written.
    last_io_ms: AtomicU64,
    /// Requests dispatched whose response body has not finished.
    in_flight: AtomicUsize,
    /// Requests waiting for the engine (not for the client).
    waiting: AtomicUsize,
    /// Notified to close the connection at once.
    close: Notify,
}

impl Conn {
    fn new(id: u64) -> Self {
        Self {
            id,
            opened: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            close: Notify::new(),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_ms.store(now, Ordering::Relaxed);
    }

    /// Time since the last byte moved.
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    fn waiting_for_engine(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// When the idle timeout could next expire.
    fn next_idle_check(&self, idle_timeout: Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        if self.waiting_for_engine() {
            now + idle_timeout
        } else {
            now + idle_timeout.saturating_sub(self.idle_for())
        }
    }

    fn idle_expired(&self, idle_timeout: Duration) -> bool {
        !self.waiting_for_engine() && self.idle_for() >= idle_timeout
    }

    /// How readily the connection gives way to a new one at the limit (smaller first):
    /// no request at all, then a request stalled on its client; longest idle first.
    fn eviction_rank(&self) -> Option<(u8, std::cmp::Reverse<Duration>)> {
        let idle = self.idle_for();
        if self.in_flight.load(Ordering::Acquire) == 0 {
            Some((0, std::cmp::Reverse(idle)))
        } else if !self.waiting_for_engine() && idle >= STALLED {
            Some((1, std::cmp::Reverse(idle)))
        } else {
            None
        }
    }
}

/// The open connections.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Notified when a connection ends or a request finishes (room may have appeared).
    changed: Notify,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self, conn: Arc<Conn>) {
        self.lock().insert(conn.id, conn);
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.changed.notify_one();
    }

    /// Closes the connection that gives way most readily; false when all are busy.
    fn evict_one(&self) -> bool {
        let mut conns = self.lock();
        let victim = conns
            .values()
            .filter_map(|conn| Some((conn.eviction_rank()?, conn.id)))
            .min()
            .map(|(_, id)| id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(conn) => {
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The connection a request arrived on, to mark the time it waits for the engine. A
/// router used without [`serve`] has none; marking then does nothing.
#[derive(Clone, Default)]
pub(crate) struct ConnHandle(Option<Arc<Conn>>);

impl ConnHandle {
    /// Marks the connection as waiting for the engine until the guard is dropped: the
    /// idle timeout does not run meanwhile.
    pub fn waiting(&self) -> Waiting {
        if let Some(conn) = &self.0 {
            conn.waiting.fetch_add(1, Ordering::AcqRel);
        }
        Waiting(self.0.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ConnHandle {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<ConnHandle>()
            .cloned()
            .unwrap_or_default())
    }
}

/// See [`ConnHandle::waiting`].
pub(crate) struct Waiting(Option<Arc<Conn>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(conn) = &self.0 {
            // The wait counts as activity: the idle timeout starts afresh.
            conn.touch();
            conn.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A request in flight on its connection, until its response body is dropped.
struct InFlight {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl InFlight {
    fn new(conn: Arc<Conn>, registry: Arc<Registry>) -> Self {
        conn.touch();
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self { conn, registry }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.registry.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that notes when bytes move.
struct TrackedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl TrackedIo {
    /// Polls one write on the socket and notes it when it moved bytes.
    fn noting_write(
        self: Pin<&mut Self>,
        write: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = write(Pin::new(&mut this.inner));
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.conn.touch();
        }
        polled
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.touch();
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.noting_write(|inner| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.noting_write(|inner| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accepts connections and serves `app` on them until `shutdown` completes; then stops
/// accepting, lets each connection finish the request it is answering, and returns
/// once all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let registry = Arc::new(Registry::default());
    // Connection tasks hold `alive`; `stop` tells them to finish.
    let (stop, stopped) = watch::channel(false);
    let (all_closed, alive) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    let mut next_id = 0u64;
    'accept: loop {
        // Room for one more connection: replace an idle one, or wait for one to end.
        while registry.len() >= limits.max_connections && !registry.evict_one() {
            tokio::select! {
                _ = &mut shutdown => break 'accept,
                _ = registry.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors: make room. Other errors concern only the
                    // connection that failed (it was reset before it was accepted).
                    if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        registry.evict_one();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        // Small SSE events go out at once.
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::new(next_id));
        next_id += 1;
        registry.insert(Arc::clone(&conn));
        let task = serve_connection(
            stream,
            conn,
            app.clone(),
            limits,
            stopped.clone(),
            Arc::clone(&registry),
        );
        let alive = alive.clone();
        tokio::spawn(async move {
            task.await;
            drop(alive);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(alive);
    all_closed.closed().await;
}

async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    registry: Arc<Registry>,
) {
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        conn: Arc::clone(&conn),
    });
    let service = {
        let conn = Arc::clone(&conn);
        let registry = Arc::clone(&registry);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = InFlight::new(Arc::clone(&conn), Arc::clone(&registry));
            let mut request = request.map(Body::new);
            request
                .extensions_mut()
                .insert(ConnHandle(Some(Arc::clone(&conn))));
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|inner| TrackedBody {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    loop {
        if !stopping && *stop.borrow_and_update() {
            stopping = true;
            connection.as_mut().graceful_shutdown();
        }
        let idle_check = conn.next_idle_check(limits.idle_timeout);
        tokio::select! {
            // Errors (a client that went away, a header timeout) concern this
            // connection only.
            _ = connection.as_mut() => break,
            _ = conn.close.notified() => break,
            changed = stop.changed(), if !stopping => {
                if changed.is_err() {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(idle_check) => {
                if conn.idle_expired(limits.idle_timeout) {
                    break;
                }
            }
        }
    }
    registry.remove(conn.id);
}
