//! The upstream side of an endpoint: the HTTP/1.1 connections to one replica, the idle ones kept
//! for reuse, and the body type requests are sent with.
//!
//! Each [`Endpoint`](super::Endpoint) owns one [`Pool`], so a request that has leased an endpoint
//! finds that replica's idle connections without a shared map, a hash, or a task per request.
//! The most recently used connection is taken first; one idle for [`IDLE_TIMEOUT`] is closed, and
//! at most [`MAX_IDLE`] are kept. A connection goes back to the pool only after a response body
//! was read to its end (the proxy's forwarding decides), so a connection still busy draining a
//! body is never handed to the next request. Dropping the pool (the endpoint left the ready set
//! and its last lease ended) closes every idle connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Idle connections kept per replica at most.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A connection to a replica, ready to send one request.
pub(crate) type Connection = SendRequest<UpstreamBody>;

/// The idle connections to one replica.
#[derive(Default)]
pub(crate) struct Pool {
    // Oldest first (connections are pushed as they become idle); held only to push or pop, never
    // across an await.
    idle: Mutex<Vec<Idle>>,
    /// Signalled when a connection comes back, for requests still waiting on a new one.
    returned: Notify,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle().len())
            .finish()
    }
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The vector is consistent between any two statements; a panic elsewhere leaves it usable.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that can take a request now, if any.
    pub(crate) async fn checkout(&self) -> Option<Connection> {
        loop {
            let idle = self.idle().pop()?;
            if idle.since.elapsed() >= IDLE_TIMEOUT {
                // Everything older sits below it: close them all.
                self.idle().clear();
                return None;
            }
            let mut connection = idle.connection;
            // A connection whose last response ended is ready at once; one the replica closed
            // meanwhile fails here and is dropped.
            if connection.ready().await.is_ok() {
                return Some(connection);
            }
        }
    }

    /// A new connection to `addr`, or a connection another request returns while that one is
    /// still being made, whichever comes first: when a burst of requests all open connections
    /// at once and the replica's accept queue overflows, a request whose connect is stuck
    /// waiting for a SYN retransmission (a second) takes the first connection that frees up.
    pub(crate) async fn connect_or_reuse(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Connection, ConnectError> {
        // Boxed: connecting is the rare path, and inline its state would enlarge every request's
        // future, held ones included.
        let mut connecting = Box::pin(connect(addr, timeout));
        loop {
            tokio::select! {
                made = &mut connecting => return made,
                () = self.returned.notified() => {
                    if let Some(connection) = self.checkout().await {
                        return Ok(connection);
                    }
                }
            }
        }
    }

    /// Keeps `connection` for a later request (after its response body ended).
    pub(crate) fn put(&self, connection: Connection) {
        if connection.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        let stale = idle.partition_point(|i| now.duration_since(i.since) >= IDLE_TIMEOUT);
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: now,
            });
            drop(idle);
            self.returned.notify_one();
        }
    }
}

/// Why a new connection could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The TCP connect failed (refused, unreachable...).
    #[error("connect to {addr}: {source}")]
    Tcp {
        /// The replica.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connect did not complete in time.
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The replica.
        addr: SocketAddr,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The HTTP/1.1 handshake failed.
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        /// The replica.
        addr: SocketAddr,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
}

impl ConnectError {
    /// Whether the replica refused the connection (nothing listens yet, or any more).
    pub(crate) fn is_refused(&self) -> bool {
        matches!(self, ConnectError::Tcp { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// Opens a new HTTP/1.1 connection to `addr` (upgrades allowed) and drives it on its own task.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ConnectError::Tcp { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    // Small writes (request heads) go out at once, as the activator's clients expect.
    let _ = stream.set_nodelay(true);
    let (connection, driver) = Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = driver.with_upgrades().await {
            tracing::debug!(%addr, %error, "replica connection ended with an error");
        }
    });
    Ok(connection)
}

/// A request body on its way to a replica: the client's, or none (a replayed request).
#[derive(Debug)]
pub(crate) struct UpstreamBody(Option<Incoming>);

impl UpstreamBody {
    /// The client's body, streamed.
    pub(crate) fn new(body: Incoming) -> UpstreamBody {
        UpstreamBody(Some(body))
    }

    /// No body.
    pub(crate) fn empty() -> UpstreamBody {
        UpstreamBody(None)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.0.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}
