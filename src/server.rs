//! Listeners: accept connections up to a limit, serve each (HTTP/1 with the activator's own
//! server, [`http1`]; HTTP/2 with prior knowledge, "h2c", and upgrades with hyper-util's auto
//! builder), watch each for idleness ([`watchdog`]), and shut down gracefully.
//!
//! [`serve`] takes an already bound listener so tests can bind `127.0.0.1:0`, and a shutdown
//! future; when it completes the listener closes, every connection is asked to shut down
//! gracefully (idle HTTP/1 connections close, HTTP/2 ones get GOAWAY), and [`serve`] returns once
//! every connection has finished its requests.
//!
//! At most `max_connections` connections are open at once: beyond that the listener stops
//! accepting, and new connections wait in the kernel's backlog. Each listener has its own limit,
//! so a flood on the proxy port leaves the admin port answering.

mod gated;
pub(crate) mod http1;
pub(crate) mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::activity::{Activity, CountedBody, CountedFuture, CountedIo};
use crate::body::{BoxBody, RequestBody};
use crate::http1::HeadError;
use crate::http1::relayed::Relayed;
use crate::workers;
use gated::Gated;
use http1::Served;
use watchdog::{Timeouts, Verdict, Watchdog};

/// hyper's default HTTP/1 read buffer bound (8 KiB + 100 × 4 KiB); Envoy's per-connection
/// buffer limit is 1 MiB.
const HYPER_READ_BUFFER: usize = 8192 + 4096 * 100;

/// How long a connection asked to shut down (idle, or the activator draining) may take before it
/// is dropped, when it has no request to finish.
const RETIRE_GRACE: Duration = Duration::from_secs(1);

/// What one listener allows its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Idleness limits.
    pub(crate) timeouts: Timeouts,
    /// Connections open at once.
    pub(crate) max_connections: usize,
    /// Request head bytes read at most (the proxy answers 431 for less already).
    pub(crate) max_header_buffer: usize,
}

/// Answers the requests of one client connection, whichever server read them; a listener makes
/// one per connection.
pub(crate) trait Respond: Send + Sync + 'static {
    /// The answer to `request`.
    fn respond(&self, request: Request<RequestBody>) -> impl Future<Output = Answered> + Send + '_;

    /// The answer to a request head that could not be taken (`400`, `431`).
    fn refuse(&self, error: &HeadError) -> Response<BoxBody>;
}

/// A response, and when it is a replica's, the replica's fields as they came ([`Relayed`]),
/// which go out before those in the response's own map (what the activator adds).
#[derive(Debug)]
pub(crate) struct Answered {
    pub(crate) response: Response<BoxBody>,
    pub(crate) relayed: Option<Relayed>,
}

impl Answered {
    /// The response with every field that goes on in its map, for hyper to write.
    fn into_response(self) -> Response<BoxBody> {
        let Answered {
            mut response,
            relayed,
        } = self;
        if let Some(relayed) = relayed {
            let status = response.status();
            relayed.append_to(response.headers_mut(), status);
        }
        response
    }
}

impl From<Response<BoxBody>> for Answered {
    fn from(response: Response<BoxBody>) -> Answered {
        Answered {
            response,
            relayed: None,
        }
    }
}

/// Serves connections from `listener` with what `make(remote, activity)` gives, until
/// `shutdown` completes and the open connections have drained.
pub(crate) async fn serve<R: Respond>(
    listener: TcpListener,
    limits: Limits,
    make: impl Fn(SocketAddr, &Arc<Activity>) -> R,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    serve_sharing(listener, limits, slots, make, shutdown).await;
}

/// Like [`serve`], on worker threads ([`workers`]), one per listening socket; the workers share
/// the connection limit. Returns once every worker has drained.
pub(crate) async fn serve_on_workers<R, M>(
    listeners: Vec<std::net::TcpListener>,
    limits: Limits,
    make: M,
    shutdown: impl Future<Output = ()>,
) where
    R: Respond,
    M: Fn(SocketAddr, &Arc<Activity>) -> R + Clone + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let started = workers::start(listeners, move |listener| {
        let (slots, make, mut stopping) = (Arc::clone(&slots), make.clone(), stopping.clone());
        async move {
            let stop = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            serve_sharing(listener, limits, slots, make, stop).await;
        }
    });
    let done = match started {
        Ok(done) => done,
        Err(error) => {
            tracing::error!(%error, "cannot start the proxy's worker threads");
            return;
        }
    };
    shutdown.await;
    let _ = stop.send(true);
    for worker in done {
        let _ = worker.await;
    }
}

/// Serves `listener` until `shutdown`, each connection taking one of `slots` for its life.
async fn serve_sharing<R: Respond>(
    listener: TcpListener,
    limits: Limits,
    slots: Arc<Semaphore>,
    make: impl Fn(SocketAddr, &Arc<Activity>) -> R,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog times request heads from their first byte; hyper's own timer would also
        // run while a keep-alive connection waits for its next request.
        .header_read_timeout(None)
        // hyper's read buffer also carries bodies: below its default (~400 KiB), a large
        // upload takes more reads and wake-ups (a 1 MiB POST cost 1.4x the CPU with 128 KiB).
        .max_buf_size(limits.max_header_buffer.max(HYPER_READ_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1000)
        .max_header_list_size(u32::try_from(limits.max_header_buffer).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    // This listener's own connections, to know when they have all ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let open = Arc::new(Semaphore::new(all as usize));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // Accepted first, then given a slot: a worker waiting for a connection holds none, so
        // the limit is shared by the connections actually open. Beyond it, each listener holds
        // one accepted connection unserved until a slot frees, and the rest wait in the
        // kernel's backlog.
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        // Never fails: the shared slots admit no more connections than this holds.
        let Ok(mine) = Arc::clone(&open).try_acquire_owned() else {
            continue;
        };
        let activity = Arc::new(Activity::default());
        let respond = make(remote, &activity);
        let builder = Arc::clone(&builder);
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _slots = (slot, mine);
            serve_connection(
                &builder, stream, remote, respond, activity, limits, stopping,
            )
            .await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all back means all connections ended.
    let _ = open.acquire_many(all).await;
}

/// Serves one connection until it ends, is found idle, or is drained: with the activator's own
/// HTTP/1 server, then with hyper if that hands the connection over.
async fn serve_connection<R: Respond>(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    remote: SocketAddr,
    respond: R,
    activity: Arc<Activity>,
    limits: Limits,
    stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut io = CountedIo::new(stream, Arc::clone(&activity));
    let mut watch = Watch::new(limits.timeouts, remote, &activity, stopping);
    let served = {
        let serving = http1::serve(&mut io, &respond, &activity, limits.max_header_buffer);
        tokio::pin!(serving);
        // An HTTP/1 connection between requests simply closes; one with a request open closes
        // once it is answered.
        let retire = |_: Pin<&mut _>| {
            activity.retire();
            activity.snapshot().open == 0
        };
        match watch.over(serving, retire).await {
            Some(served) => served,
            None => return,
        }
    };
    let Served::Handoff(read) = served else {
        return;
    };
    let service = HyperService {
        respond: Arc::new(respond),
        activity: Arc::clone(&activity),
    };
    let io = TokioIo::new(Prefixed { read, io });
    {
        let connection = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        let retire = |connection: Pin<&mut _>| {
            auto::UpgradeableConnection::graceful_shutdown(connection);
            false
        };
        if let Some(Err(error)) = watch.over(connection, retire).await {
            tracing::debug!(%remote, %error, "connection ended with an error");
        }
        // Dropped here, before waiting for tunnels: one closed by the watchdog before its 101
        // was written hands its socket to no tunnel, and that tunnel's wait for it must fail
        // rather than wait on a connection nobody polls any more.
    }
    // An upgraded connection's socket lives on in its tunnel: the connection (its slot, and
    // the drain) lasts as long.
    activity.tunnels_closed().await;
}

/// A connection's watchdog at work, and whether it was asked to shut down.
struct Watch<'a> {
    watchdog: Watchdog,
    timeouts: Timeouts,
    remote: SocketAddr,
    activity: &'a Arc<Activity>,
    stopping: watch::Receiver<bool>,
    next_look: Instant,
    /// Once asked to shut down: the time by which an idle connection must be gone.
    retiring: Option<Instant>,
}

impl<'a> Watch<'a> {
    fn new(
        timeouts: Timeouts,
        remote: SocketAddr,
        activity: &'a Arc<Activity>,
        stopping: watch::Receiver<bool>,
    ) -> Watch<'a> {
        Watch {
            watchdog: Watchdog::new(timeouts, Instant::now()),
            timeouts,
            remote,
            activity,
            stopping,
            next_look: Instant::now() + timeouts.tick(None),
            retiring: None,
        }
    }

    /// Runs `serving` to its end, unless the watchdog or a shutdown closes it first (`None`).
    /// `retire` asks it to shut down gracefully and says whether it may be dropped at once.
    async fn over<F: Future>(
        &mut self,
        mut serving: Pin<&mut F>,
        mut retire: impl FnMut(Pin<&mut F>) -> bool,
    ) -> Option<F::Output> {
        loop {
            // The connection first; the watchdog's timer and the shutdown signal are polled only
            // when one of them woke the task, not on each of the connection's wake-ups.
            let (next_look, retiring, stopping) =
                (self.next_look, self.retiring.is_some(), &mut self.stopping);
            let signal = tokio::select! {
                biased;
                result = serving.as_mut() => return Some(result),
                // Boxed: made once per look (seconds apart), it would otherwise enlarge every
                // connection's task, whose size decides its allocation's size class.
                signal = Box::pin(Gated::new(async move {
                    tokio::select! {
                        () = tokio::time::sleep_until(next_look) => Signal::Look,
                        changed = stopping.changed(), if !retiring => {
                            Signal::Stop(changed.is_err() || *stopping.borrow())
                        }
                    }
                })) => signal,
            };
            match signal {
                Signal::Look => {
                    let now = Instant::now();
                    let snapshot = self.activity.snapshot();
                    self.next_look = now + self.timeouts.tick(snapshot.stream_idle);
                    if let Some(deadline) = self.retiring
                        && now >= deadline
                        && snapshot.open == 0
                    {
                        return None;
                    }
                    match self.watchdog.check(now, snapshot) {
                        Verdict::Wait => {}
                        Verdict::Close(why) => {
                            tracing::debug!(remote = %self.remote, why, "closing an idle connection");
                            return None;
                        }
                        Verdict::StreamIdle => {
                            tracing::debug!(remote = %self.remote, "closing a connection whose response stalled");
                            self.activity.mark_stalled();
                            return None;
                        }
                        Verdict::Retire if self.retiring.is_none() => {
                            if retire(serving.as_mut()) {
                                return None;
                            }
                            self.retiring = Some(now + RETIRE_GRACE);
                        }
                        Verdict::Retire => {}
                    }
                }
                Signal::Stop(false) => {}
                Signal::Stop(true) => {
                    if retire(serving.as_mut()) {
                        return None;
                    }
                    self.retiring = Some(Instant::now() + RETIRE_GRACE);
                }
            }
        }
    }
}

/// What woke a connection's watch.
enum Signal {
    /// Time for the watchdog to look.
    Look,
    /// The shutdown signal changed: whether it now says stop (or its sender is gone).
    Stop(bool),
}

/// A [`Respond`] as hyper's service, counting each request on the connection's activity.
struct HyperService<R> {
    respond: Arc<R>,
    activity: Arc<Activity>,
}

type Answering = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

impl<R: Respond> hyper::service::Service<Request<Incoming>> for HyperService<R> {
    type Response = Response<CountedBody<BoxBody>>;
    type Error = Infallible;
    type Future = CountedFuture<Answering>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let respond = Arc::clone(&self.respond);
        crate::activity::counted(
            &self.activity,
            Box::pin(async move {
                Ok(respond
                    .respond(request.map(RequestBody::Hyper))
                    .await
                    .into_response())
            }),
        )
    }
}

/// A connection whose first bytes were already read: they are read again first.
struct Prefixed<I> {
    read: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
