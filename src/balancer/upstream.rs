//! The upstream side of an endpoint: the HTTP/1.1 connections to one replica, the idle ones kept
//! for reuse, how fast new ones are opened ([`Pacing`]), and the body type requests are sent with.
//!
//! Each [`Endpoint`](super::Endpoint) owns one [`Pool`], so a request that has leased an endpoint
//! finds that replica's idle connections without a shared map, a hash, or a task per request.
//! The most recently used connection is taken first; one idle for [`IDLE_TIMEOUT`] is closed, and
//! at most [`MAX_IDLE`] are kept. A connection goes back to the pool only after its request body
//! was sent whole and its response body was read to its end (the proxy's forwarding decides), so
//! a connection still busy is never handed to the next request; and a pooled connection must be
//! ready within the connect timeout, so no wait on one is unbounded. Dropping the pool (the
//! endpoint left the ready set and its last lease ended) closes every idle connection.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::client::conn::http2::SendRequest as SendRequest2;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::multiplex::{Multiplex, StreamSlot};
use super::pacing::{Pacing, Probation};
use super::stall::{Exchange, StallTimer, Stalled};
use crate::body::BoxError;
use crate::spec::UpstreamProtocol;
use crate::workers;

/// Idle connections kept per replica at most.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A connection to a replica, ready to send one request.
#[derive(Debug)]
pub(crate) struct Connection {
    send: SendRequest<UpstreamBody>,
    /// The worker thread that opened it, whose runtime drives it.
    home: usize,
}

/// A connection for one request: a kept one, or a new one on probation until it answers.
#[derive(Debug)]
pub(crate) struct Checkout {
    /// The connection (HTTP/1.1), or a stream on one (HTTP/2).
    pub(crate) sender: Sender,
    /// For a new connection, its slot in the replica's window of unproven connections.
    pub(crate) probation: Option<Probation>,
}

/// What carries one request to a replica.
#[derive(Debug)]
pub(crate) enum Sender {
    /// An HTTP/1.1 connection of its own, back to the pool when the exchange ends whole.
    Http1(Connection),
    /// A stream on a shared HTTP/2 connection; its place frees when this drops.
    Http2 {
        /// The shared connection's sender.
        send: SendRequest2<UpstreamBody>,
        /// Held for the stream's life.
        _slot: StreamSlot,
    },
}

impl Sender {
    /// Sends `request`; if the connection turns out closed before taking it, it comes back
    /// unsent in the error.
    pub(crate) async fn try_send(
        &mut self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>> {
        match self {
            Sender::Http1(connection) => connection.send.try_send_request(request).await,
            Sender::Http2 { send, .. } => send.try_send_request(request).await,
        }
    }
}

/// The connections of one replica, whichever protocol its route speaks.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    http1: Pool,
    h2: Multiplex,
}

impl Connections {
    /// A connection (or stream) to `addr` in `protocol` for one request; see [`Pool::get`] and
    /// [`Multiplex::get`].
    pub(crate) async fn get(
        &self,
        protocol: UpstreamProtocol,
        addr: SocketAddr,
        connect_timeout: Duration,
        wait_at_most: Duration,
    ) -> Result<Checkout, ConnectError> {
        match protocol {
            UpstreamProtocol::Http1 => self.http1.get(addr, connect_timeout, wait_at_most).await,
            UpstreamProtocol::H2c => {
                let stream = self.h2.get(addr, connect_timeout, wait_at_most).await?;
                Ok(Checkout {
                    sender: Sender::Http2 {
                        send: stream.send,
                        _slot: stream.slot,
                    },
                    probation: stream.probation,
                })
            }
        }
    }

    /// Takes `sender` back after an exchange that ended whole: an HTTP/1.1 connection is kept
    /// for another request; an HTTP/2 stream just frees its place.
    pub(crate) fn put(&self, sender: Sender) {
        if let Sender::Http1(connection) = sender {
            self.http1.put(connection);
        }
    }
}

/// The idle HTTP/1.1 connections to one replica.
pub(crate) struct Pool {
    /// A list per worker thread ([`workers`]): a connection is driven on the thread that opened
    /// it, so it goes back to that thread's list, and a request looks in its own thread's list
    /// first (no wake-up crosses threads); another thread's idle connection still beats opening
    /// a new one. Each list is oldest first (connections are pushed as they become idle), and
    /// locked only to push or pop, never across an await.
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// Signalled when a connection comes back or a slot for a new one frees.
    pacing: Arc<Pacing>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            idle: (0..workers::count()).map(|_| Mutex::default()).collect(),
            pacing: Arc::default(),
        }
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize = (0..self.idle.len()).map(|i| self.idle(i).len()).sum();
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

impl Pool {
    fn idle(&self, list: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The vector is consistent between any two statements; a panic elsewhere leaves it usable.
        self.idle[list % self.idle.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection that can take a request within `ready_within`: the most recently used
    /// of this thread's, else of another thread's.
    async fn checkout(&self, ready_within: Duration) -> Option<Connection> {
        let here = workers::index();
        for offset in 0..self.idle.len() {
            if let Some(connection) = self.checkout_from(here + offset, ready_within).await {
                return Some(connection);
            }
        }
        None
    }

    async fn checkout_from(&self, list: usize, ready_within: Duration) -> Option<Connection> {
        loop {
            let idle = self.idle(list).pop()?;
            if idle.since.elapsed() >= IDLE_TIMEOUT {
                // Everything older sits below it: close them all.
                self.idle(list).clear();
                return None;
            }
            let mut connection = idle.connection;
            // A connection whose last exchange ended is ready at once; one the replica closed
            // meanwhile fails here and is dropped, and so is one that is somehow still busy.
            if let Ok(Ok(())) = tokio::time::timeout(ready_within, connection.send.ready()).await {
                return Some(connection);
            }
        }
    }

    /// A connection to `addr` for one request: an idle one, else a new one once the replica's
    /// window of unproven connections has room, or one another request returns meanwhile,
    /// whichever comes first. Waits for room at most `wait_at_most`.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        wait_at_most: Duration,
    ) -> Result<Checkout, ConnectError> {
        let reused = |connection| Checkout {
            sender: Sender::Http1(connection),
            probation: None,
        };
        let started = Instant::now();
        let probation = loop {
            if let Some(connection) = self.checkout(connect_timeout).await {
                return Ok(reused(connection));
            }
            let changed = self.pacing.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(probation) = self.pacing.try_open() {
                break probation;
            }
            if tokio::time::timeout_at(started + wait_at_most, changed)
                .await
                .is_err()
            {
                return Err(ConnectError::Busy {
                    addr,
                    waited: started.elapsed(),
                });
            }
        };
        // Boxed: connecting is the rare path, and inline its state would enlarge every request's
        // future, held ones included.
        let mut connecting = Box::pin(connect(addr, connect_timeout));
        let mut probation = probation;
        loop {
            let changed = self.pacing.changed().notified();
            tokio::select! {
                made = &mut connecting => return match made {
                    Ok((connection, socket)) => {
                        if let Some(socket) = socket {
                            probation.watch(socket);
                        }
                        Ok(Checkout {
                            sender: Sender::Http1(connection),
                            probation: Some(probation),
                        })
                    }
                    Err(error) => {
                        probation.failed();
                        Err(error)
                    }
                },
                () = changed => {
                    // A request whose connect is stuck (a SYN retransmission takes a second)
                    // takes a connection another request returns first.
                    if let Some(connection) = self.checkout(connect_timeout).await {
                        return Ok(reused(connection));
                    }
                }
            }
        }
    }

    /// Keeps `connection` for a later request (its request was sent whole and its response
    /// ended), which proves the replica keeps connections: the window widens.
    pub(crate) fn put(&self, connection: Connection) {
        if connection.send.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle(connection.home);
        let stale = idle.partition_point(|i| now.duration_since(i.since) >= IDLE_TIMEOUT);
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: now,
            });
            drop(idle);
            self.pacing.widen();
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
    /// No connection could be had within the wait: the replica's connections were all busy.
    #[error("no connection to {addr} within {waited:?}: all busy")]
    Busy {
        /// The replica.
        addr: SocketAddr,
        /// How long the request waited.
        waited: Duration,
    },
    /// The HTTP/1.1 or HTTP/2 handshake failed.
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

/// A TCP connection to a replica, for either protocol: with `TCP_NODELAY` (small writes such as
/// request heads go out at once, as the activator's clients expect), and a duplicate of its
/// socket for a new connection's probation to watch, if one could be made.
pub(crate) async fn dial(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(TcpStream, Option<OwnedFd>), ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ConnectError::Tcp { addr, source }),
        Err(_) => return Err(ConnectError::Timeout { addr, timeout }),
    };
    let _ = stream.set_nodelay(true);
    let socket = stream.as_fd().try_clone_to_owned().ok();
    Ok((stream, socket))
}

/// Opens a new HTTP/1.1 connection to `addr` (upgrades allowed) and drives it on its own task;
/// returns it with its socket for the probation (see [`dial`]).
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(Connection, Option<OwnedFd>), ConnectError> {
    let (stream, socket) = dial(addr, timeout).await?;
    let (send, driver) = Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = driver.with_upgrades().await {
            tracing::debug!(%addr, %error, "replica connection ended with an error");
        }
    });
    Ok((
        Connection {
            send,
            home: workers::index(),
        },
        socket,
    ))
}

/// A request body on its way to a replica: the client's, or none (a replayed request). It notes
/// in the exchange when bytes move and when it was sent whole, and fails once nothing moved
/// either way for the route's stream idle timeout.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Option<Incoming>,
    exchange: Option<Arc<Exchange>>,
    stall: Option<StallTimer>,
}

impl UpstreamBody {
    /// The client's body, streamed, as part of `exchange`.
    pub(crate) fn new(
        body: Incoming,
        exchange: Arc<Exchange>,
        stream_idle: Duration,
    ) -> UpstreamBody {
        if body.is_end_stream() {
            // hyper sends nothing of a body that is already at its end.
            exchange.mark_sent_whole();
        }
        UpstreamBody {
            inner: Some(body),
            exchange: Some(exchange),
            stall: Some(StallTimer::new(stream_idle)),
        }
    }

    /// No body.
    pub(crate) fn empty() -> UpstreamBody {
        UpstreamBody {
            inner: None,
            exchange: None,
            stall: None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(exchange) = &this.exchange {
                    exchange.moved();
                    // hyper stops polling a body of known length once it has all of it, so the
                    // end is seen here rather than as a `None` that never comes.
                    if inner.is_end_stream() {
                        exchange.mark_sent_whole();
                    }
                }
                if let Some(stall) = &mut this.stall {
                    stall.progressed();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => {
                if let Some(exchange) = &this.exchange {
                    exchange.mark_sent_whole();
                }
                Poll::Ready(None)
            }
            Poll::Pending => match &mut this.stall {
                Some(stall) => match stall.poll_stalled(cx, this.exchange.as_deref()) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Stalled(stall.timeout()).into()))),
                    Poll::Pending => Poll::Pending,
                },
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}
