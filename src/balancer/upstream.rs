//! The upstream side of an endpoint: the connections to one replica, how fast new ones are
//! opened ([`Pacing`]), and the body requests are sent with.
//!
//! HTTP/1.1 connections are the activator's own ([`exchange`]): each carries one request at a
//! time, driven by the request's task, and waits in the replica's [`pool`] between requests.
//! HTTP/2 connections are hyper's, shared by many streams ([`super::multiplex`]).

pub(crate) mod exchange;
mod pool;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http2::SendRequest as SendRequest2;
use tokio::net::TcpStream;

use super::multiplex::{Multiplex, StreamSlot};
use super::pacing::Probation;
use super::stall::{ClientFault, Exchange, StallTimer, Stalled};
use crate::body::client::ClientBodyError;
use crate::body::{BoxError, RequestBody};
use crate::spec::UpstreamProtocol;
pub(crate) use exchange::Connection;
pub(crate) use pool::CLOSE_IDLE_EVERY;
use pool::Pool;

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
    Http1(Box<Connection>),
    /// A stream on a shared HTTP/2 connection; its place frees when this drops.
    Http2 {
        /// The shared connection's sender.
        send: SendRequest2<UpstreamBody>,
        /// Held for the stream's life.
        _slot: StreamSlot,
    },
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

    /// An idle HTTP/1.1 connection of this thread's, at once, if there is one: what most
    /// requests to a busy replica get, without [`Connections::get`]'s wait; `now` is a time
    /// the caller read already.
    pub(crate) fn try_get(&self, protocol: UpstreamProtocol, now: Instant) -> Option<Checkout> {
        match protocol {
            UpstreamProtocol::Http1 => self.http1.try_get(now),
            UpstreamProtocol::H2c => None,
        }
    }

    /// Closes HTTP/1.1 connections idle too long or closed by the replica ([`Pool::close_idle`]);
    /// returns how many idle ones are left.
    pub(crate) fn close_idle(&self) -> usize {
        self.http1.close_idle()
    }

    /// Keeps an HTTP/1.1 connection whose exchange ended whole `now` for another request.
    pub(crate) fn put(&self, connection: Box<Connection>, now: Instant) {
        self.http1.put(connection, now);
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
    /// Whether the replica refused the connection: nothing listens yet, or any more, or a
    /// listener that was closing reset or aborted the connection while it sat in its accept
    /// queue, before the connect was seen to complete. Nothing was sent on it either way, so any
    /// request may try again.
    pub(crate) fn is_refused(&self) -> bool {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        matches!(self, ConnectError::Tcp { source, .. }
            if matches!(source.kind(), ConnectionRefused | ConnectionReset | ConnectionAborted))
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

/// A request body on its way to a replica: the client's, or none (a replayed request). It notes
/// in the exchange when bytes move and when it was sent whole, and fails once nothing moved
/// either way for the route's stream idle timeout.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    inner: Option<RequestBody>,
    exchange: Option<Arc<Exchange>>,
    stall: Option<StallTimer>,
}

impl UpstreamBody {
    /// The client's body, streamed, as part of `exchange`.
    pub(crate) fn new(
        body: RequestBody,
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
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if let Some(exchange) = &this.exchange {
            exchange.set_awaiting_client(polled.is_pending());
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(exchange) = &this.exchange {
                    exchange.moved();
                    // hyper stops polling a body of known length once it has all of it, so the
                    // end is seen here rather than as a `None` that never comes.
                    if inner.is_end_stream() || frame.is_trailers() {
                        exchange.mark_sent_whole();
                    }
                }
                if let Some(stall) = &mut this.stall {
                    stall.progressed();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(exchange) = &this.exchange
                    && ClientBodyError::malformed_in(&*error)
                {
                    exchange.blame_client(ClientFault::Malformed);
                }
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                if let Some(exchange) = &this.exchange {
                    exchange.mark_sent_whole();
                }
                Poll::Ready(None)
            }
            Poll::Pending => match &mut this.stall {
                Some(stall) => match stall.poll_stalled(cx, this.exchange.as_deref()) {
                    // The client's body: nothing came from it, nor from the replica.
                    Poll::Ready(()) => {
                        if let Some(exchange) = &this.exchange {
                            exchange.blame_client(ClientFault::Stalled);
                        }
                        Poll::Ready(Some(Err(Stalled(stall.timeout()).into())))
                    }
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

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn a_connect_refused_reset_or_aborted_before_it_was_made_is_a_refusal_and_nothing_else_is() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let tcp = |kind| ConnectError::Tcp {
            addr,
            source: Error::from(kind),
        };
        // A replica that is not listening yet, or any more; and one whose closing listener reset
        // (or aborted) the connection in its accept queue, as a replica killed under load does.
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionAborted,
        ] {
            assert!(tcp(kind).is_refused(), "{kind:?}");
        }
        for kind in [
            ErrorKind::TimedOut,
            ErrorKind::PermissionDenied,
            ErrorKind::AddrNotAvailable,
            ErrorKind::HostUnreachable,
        ] {
            assert!(!tcp(kind).is_refused(), "{kind:?}");
        }
        let timeout = Duration::from_secs(2);
        assert!(!ConnectError::Timeout { addr, timeout }.is_refused());
        let waited = timeout;
        assert!(!ConnectError::Busy { addr, waited }.is_refused());
    }
}
