//! Listeners: accept connections up to a limit, serve each with hyper-util's auto builder (HTTP/1.1
//! with upgrades, and HTTP/2 with prior knowledge, "h2c"), watch each for idleness
//! ([`watchdog`]), and shut down gracefully.
//!
//! [`serve`] takes an already bound listener so tests can bind `127.0.0.1:0`, and a shutdown
//! future; when it completes the listener closes, every connection is asked to shut down
//! gracefully (idle HTTP/1 connections close, HTTP/2 ones get GOAWAY), and [`serve`] returns once
//! every connection has finished its requests.
//!
//! At most `max_connections` connections are open at once: beyond that the listener stops
//! accepting, and new connections wait in the kernel's backlog. Each listener has its own limit,
//! so a flood on the proxy port leaves the admin port answering.

pub(crate) mod watchdog;

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::activity::{Activity, Counted, CountedIo};
use crate::workers;
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
    /// Request header bytes hyper buffers at most (the proxy answers 431 for less already).
    pub(crate) max_header_buffer: usize,
}

/// Serves connections from `listener` with the service `make(remote, activity)` gives, until
/// `shutdown` completes and the open connections have drained.
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    limits: Limits,
    make: impl Fn(SocketAddr, &Arc<Activity>) -> S,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    serve_sharing(listener, limits, slots, make, shutdown).await;
}

/// Like [`serve`], on worker threads ([`workers`]), one per listening socket; the workers share
/// the connection limit. Returns once every worker has drained.
pub(crate) async fn serve_on_workers<S, B, M>(
    listeners: Vec<std::net::TcpListener>,
    limits: Limits,
    make: M,
    shutdown: impl Future<Output = ()>,
) where
    M: Fn(SocketAddr, &Arc<Activity>) -> S + Clone + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
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
async fn serve_sharing<S, B>(
    listener: TcpListener,
    limits: Limits,
    slots: Arc<Semaphore>,
    make: impl Fn(SocketAddr, &Arc<Activity>) -> S,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
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
        let service = make(remote, &activity);
        let builder = Arc::clone(&builder);
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _slots = (slot, mine);
            serve_connection(
                &builder,
                stream,
                remote,
                service,
                activity,
                limits.timeouts,
                stopping,
            )
            .await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all back means all connections ended.
    let _ = open.acquire_many(all).await;
}

/// Serves one connection until it ends, is found idle, or is drained.
async fn serve_connection<S, B>(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    remote: SocketAddr,
    service: S,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    mut stopping: watch::Receiver<bool>,
) where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(CountedIo::new(stream, Arc::clone(&activity)));
    let service = TowerToHyperService::new(Counted::new(service, Arc::clone(&activity)));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut watchdog = Watchdog::new(timeouts, Instant::now());
    let mut next_look = Instant::now() + timeouts.tick(None);
    // Once asked to shut down: the time by which an idle connection must be gone.
    let mut retiring: Option<Instant> = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%remote, %error, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(next_look) => {
                let now = Instant::now();
                let snapshot = activity.snapshot();
                next_look = now + timeouts.tick(snapshot.stream_idle);
                if let Some(deadline) = retiring
                    && now >= deadline
                    && snapshot.open == 0
                {
                    return;
                }
                match watchdog.check(now, snapshot) {
                    Verdict::Wait => {}
                    Verdict::Close(why) => {
                        tracing::debug!(%remote, why, "closing an idle connection");
                        return;
                    }
                    Verdict::StreamIdle => {
                        tracing::debug!(%remote, "closing a connection whose response stalled");
                        activity.mark_stalled();
                        return;
                    }
                    Verdict::Retire if retiring.is_none() => {
                        connection.as_mut().graceful_shutdown();
                        retiring = Some(now + RETIRE_GRACE);
                    }
                    Verdict::Retire => {}
                }
            }
            changed = stopping.changed(), if retiring.is_none() => {
                if changed.is_err() || *stopping.borrow() {
                    connection.as_mut().graceful_shutdown();
                    retiring = Some(Instant::now() + RETIRE_GRACE);
                }
            }
        }
    }
}
