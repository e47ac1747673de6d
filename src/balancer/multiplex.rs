//! HTTP/2 connections to one replica, each shared by many streams: a request takes a stream slot
//! on a connection with room, and another connection is opened only when every open one has as
//! many streams as the replica allows (its `SETTINGS_MAX_CONCURRENT_STREAMS`), which hyper's own
//! client does not do (it queues streams behind the limit). New connections are paced by the
//! replica's window of unproven connections, as HTTP/1.1 ones are.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::pacing::{Pacing, Probation};
use super::upstream::{ConnectError, UpstreamBody, dial};

/// Streams a connection is assumed to allow until the replica's SETTINGS say otherwise (RFC 9113
/// recommends allowing at least 100).
const INITIAL_MAX_STREAMS: usize = 100;

/// The HTTP/2 connections to one replica.
#[derive(Default)]
pub(crate) struct Multiplex {
    // Held only to scan and push, never across an await.
    connections: Mutex<Vec<Shared>>,
    pacing: Arc<Pacing>,
}

struct Shared {
    send: SendRequest<UpstreamBody>,
    streams: Arc<AtomicUsize>,
    /// The replica's SETTINGS_MAX_CONCURRENT_STREAMS, as the connection's driver last saw it.
    max_streams: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Multiplex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multiplex")
            .field("connections", &self.connections().len())
            .finish()
    }
}

/// One stream's place on a connection; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    streams: Arc<AtomicUsize>,
    pacing: Arc<Pacing>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
        self.pacing.announce();
    }
}

/// A stream on an HTTP/2 connection, ready to carry one request.
#[derive(Debug)]
pub(crate) struct Stream {
    /// The connection's sender (a cheap clone of the shared one).
    pub(crate) send: SendRequest<UpstreamBody>,
    /// The stream's place on it.
    pub(crate) slot: StreamSlot,
    /// For a new connection, its place in the replica's window of unproven connections.
    pub(crate) probation: Option<Probation>,
}

impl Multiplex {
    fn connections(&self) -> std::sync::MutexGuard<'_, Vec<Shared>> {
        // The vector is consistent between any two statements; a panic elsewhere leaves it usable.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place on an open connection with room, if there is one.
    fn take_slot(&self) -> Option<(SendRequest<UpstreamBody>, StreamSlot)> {
        let mut connections = self.connections();
        connections.retain(|c| !c.send.is_closed());
        connections.iter().find_map(|c| {
            let max = c.max_streams.load(Ordering::Acquire).max(1);
            c.streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .ok()
                .map(|_| {
                    (
                        c.send.clone(),
                        StreamSlot {
                            streams: Arc::clone(&c.streams),
                            pacing: Arc::clone(&self.pacing),
                        },
                    )
                })
        })
    }

    /// A stream to `addr`: on an open connection with room, else on a new one once the window of
    /// unproven connections has room, waiting for either at most `wait_at_most`.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        wait_at_most: Duration,
    ) -> Result<Stream, ConnectError> {
        let started = Instant::now();
        let _waiting = self.pacing.waiting();
        loop {
            let changed = self.pacing.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some((send, slot)) = self.take_slot() {
                return Ok(Stream {
                    send,
                    slot,
                    probation: None,
                });
            }
            if let Some(mut probation) = self.pacing.try_open() {
                let (send, max_streams, socket) = match connect(addr, connect_timeout).await {
                    Ok(connected) => connected,
                    Err(error) => {
                        probation.failed();
                        return Err(error);
                    }
                };
                if let Some(socket) = socket {
                    probation.watch(socket);
                }
                let streams = Arc::new(AtomicUsize::new(1));
                self.connections().push(Shared {
                    send: send.clone(),
                    streams: Arc::clone(&streams),
                    max_streams,
                });
                // Others waiting may fit on the new connection too.
                self.pacing.changed().notify_waiters();
                return Ok(Stream {
                    send,
                    slot: StreamSlot {
                        streams,
                        pacing: Arc::clone(&self.pacing),
                    },
                    probation: Some(probation),
                });
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
        }
    }
}

/// Opens an HTTP/2 connection to `addr` with prior knowledge and drives it on its own task; also
/// returns where the driver publishes the replica's stream limit, and the socket for the
/// probation (see [`dial`]).
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(SendRequest<UpstreamBody>, Arc<AtomicUsize>, Option<OwnedFd>), ConnectError> {
    let (stream, socket) = dial(addr, timeout).await?;
    let (send, driver) = Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_max_send_streams(INITIAL_MAX_STREAMS)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    let max_streams = Arc::new(AtomicUsize::new(INITIAL_MAX_STREAMS));
    let published = Arc::clone(&max_streams);
    let mut driver = Box::pin(driver);
    tokio::spawn(std::future::poll_fn(move |cx| {
        let polled = driver.as_mut().poll(cx);
        // SETTINGS frames are read while the connection is driven: publish what they said.
        published.store(driver.current_max_send_streams(), Ordering::Release);
        if let std::task::Poll::Ready(Err(error)) = &polled {
            tracing::debug!(%addr, %error, "replica HTTP/2 connection ended with an error");
        }
        polled.map(|_| ())
    }));
    Ok((send, max_streams, socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;

    /// An h2c server allowing `streams` concurrent streams per connection, answering each request
    /// once `release` gives a permit; counts its connections.
    async fn server(streams: u32, release: Arc<Semaphore>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let release = Arc::clone(&release);
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                        let release = Arc::clone(&release);
                        async move {
                            release.acquire().await.unwrap().forget();
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(streams)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, connections)
    }

    #[tokio::test]
    async fn streams_share_a_connection_until_the_replicas_limit_then_another_opens() {
        let release = Arc::new(Semaphore::new(0));
        let (addr, connections) = server(2, Arc::clone(&release)).await;
        let multiplex = Arc::new(Multiplex::default());
        let mut calls = Vec::new();
        for _ in 0..5 {
            let stream = multiplex
                .get(addr, Duration::from_secs(2), Duration::from_secs(5))
                .await
                .expect("a stream");
            let mut send = stream.send.clone();
            let request = Request::get(format!("http://{addr}/"))
                .body(UpstreamBody::empty())
                .unwrap();
            calls.push(tokio::spawn(async move {
                let response = send.send_request(request).await;
                drop(stream);
                response.map(|r| r.status())
            }));
            // Let the connection read the replica's SETTINGS before the next stream is placed.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        release.add_permits(5);
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), 200);
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            3,
            "five streams at two per connection need three connections"
        );
    }
}
