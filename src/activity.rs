//! What happens on one connection, counted without a clock or a lock: bytes read and written (by
//! call), requests started, requests open, responses streaming. The listener's per-connection
//! watchdog reads the counters to tell an idle connection from a slow one; a tunnel watches its
//! two sockets the same way.
//!
//! [`CountedIo`] counts a socket's reads and writes; [`counted`] wraps a response's future so
//! its request counts as open from its head until its response body is done. The proxy leaves
//! two notes here: how long a response of the route it serves may stall
//! ([`Activity::set_stream_idle`]), and it reads whether the watchdog closed the connection for a
//! stall ([`Activity::stalled`]), to count it against the route.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The HTTP/2 connection preface's first bytes (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Counters of one connection. Each is touched by the connection's own task (uncontended) and
/// read by its watchdog.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    reads: AtomicU64,
    writes: AtomicU64,
    started: AtomicU64,
    ended: AtomicU64,
    streaming: AtomicU64,
    streams_ended: AtomicU64,
    h2: AtomicBool,
    /// The stream idle timeout of the route last served here, in milliseconds; 0 = none given.
    stream_idle_ms: AtomicU64,
    stalled: AtomicBool,
    /// The connection is to close once its open requests are answered.
    retiring: AtomicBool,
    /// Tunnels open on the connection's socket after a protocol upgrade.
    tunnels: AtomicU64,
    /// Woken when the last tunnel closes.
    tunnels_closed: Notify,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Snapshot {
    /// Reads that returned data.
    pub(crate) reads: u64,
    /// Writes that took data.
    pub(crate) writes: u64,
    /// Requests whose head arrived.
    pub(crate) started: u64,
    /// Requests not finished (head arrived, response body not done).
    pub(crate) open: u64,
    /// Responses whose head was sent and whose body is not done.
    pub(crate) streaming: u64,
    /// The connection speaks HTTP/2.
    pub(crate) h2: bool,
    /// The stream idle timeout the proxy noted for this connection, if any.
    pub(crate) stream_idle: Option<std::time::Duration>,
}

impl Activity {
    /// The counters now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        // Ended before started: a request ending between the two loads is never seen as a
        // negative count.
        let ended = self.ended.load(Ordering::Relaxed);
        let streams_ended = self.streams_ended.load(Ordering::Relaxed);
        let started = self.started.load(Ordering::Relaxed);
        let streaming = self.streaming.load(Ordering::Relaxed);
        Snapshot {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            started,
            open: started.saturating_sub(ended),
            streaming: streaming.saturating_sub(streams_ended),
            h2: self.h2.load(Ordering::Relaxed),
            stream_idle: self.stream_idle(),
        }
    }

    /// Notes how long a response on this connection may go without traffic (the route's
    /// `stream_idle_timeout`).
    pub(crate) fn set_stream_idle(&self, timeout: std::time::Duration) {
        let millis = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.stream_idle_ms.store(millis, Ordering::Relaxed);
    }

    /// The stream idle timeout last noted, if any.
    pub(crate) fn stream_idle(&self) -> Option<std::time::Duration> {
        match self.stream_idle_ms.load(Ordering::Relaxed) {
            0 => None,
            millis => Some(std::time::Duration::from_millis(millis)),
        }
    }

    /// Marks the connection as closed because a response stalled.
    pub(crate) fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    /// Whether the connection was closed because a response stalled.
    pub(crate) fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Asks the connection to close once its open requests are answered.
    pub(crate) fn retire(&self) {
        self.retiring.store(true, Ordering::Relaxed);
    }

    /// Whether the connection is to close once its open requests are answered.
    pub(crate) fn retiring(&self) -> bool {
        self.retiring.load(Ordering::Relaxed)
    }

    /// Counts a response as streaming until the returned guard drops.
    pub(crate) fn stream(self: &Arc<Self>) -> Streaming {
        self.streaming.fetch_add(1, Ordering::Relaxed);
        Streaming {
            activity: Arc::clone(self),
        }
    }

    /// Counts a tunnel open on the connection's socket until the returned guard drops. The
    /// connection's task waits for it ([`Activity::tunnels_closed`]) and keeps its connection
    /// slot meanwhile, so an open tunnel counts toward `max_connections` and a drain waits for
    /// it, as for any request in flight.
    pub(crate) fn tunnel(self: &Arc<Self>) -> OpenTunnel {
        self.tunnels.fetch_add(1, Ordering::AcqRel);
        OpenTunnel {
            activity: Arc::clone(self),
        }
    }

    /// Completes once no tunnel is open on the connection.
    pub(crate) async fn tunnels_closed(&self) {
        loop {
            let closed = self.tunnels_closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read: a tunnel closing in between still wakes it.
            closed.as_mut().enable();
            if self.tunnels.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Counts a request open until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> OpenRequest {
        self.started.fetch_add(1, Ordering::Relaxed);
        OpenRequest {
            activity: Arc::clone(self),
        }
    }
}

/// A request counted open; dropping it ends it.
#[derive(Debug)]
pub(crate) struct OpenRequest {
    activity: Arc<Activity>,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.activity.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// A tunnel counted open on its connection; dropping it closes it.
#[derive(Debug)]
pub(crate) struct OpenTunnel {
    activity: Arc<Activity>,
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        if self.activity.tunnels.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.activity.tunnels_closed.notify_waiters();
        }
    }
}

/// A response counted as streaming; dropping it ends that.
#[derive(Debug)]
pub(crate) struct Streaming {
    activity: Arc<Activity>,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.activity.streams_ended.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// A socket whose reads and writes are counted.
    #[derive(Debug)]
    pub(crate) struct CountedIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
        first: bool,
    }
}

impl<T> CountedIo<T> {
    /// Counts `inner`'s traffic into `activity`.
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> CountedIo<T> {
        CountedIo {
            inner,
            activity,
            first: true,
        }
    }
}

impl<T: AsyncRead> AsyncRead for CountedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        let filled = &buf.filled()[before..];
        if !filled.is_empty() {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
            if std::mem::take(this.first)
                && filled.starts_with(&H2_PREFACE[..filled.len().min(H2_PREFACE.len())])
            {
                this.activity.h2.store(true, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for CountedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.activity.writes.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.activity.writes.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// `inner`, the future of a request's response, with the request counted open on `activity`
/// until the response body is done (also when the client goes away first).
pub(crate) fn counted<F>(activity: &Arc<Activity>, inner: F) -> CountedFuture<F> {
    CountedFuture {
        open: Some(activity.begin()),
        inner,
    }
}

pin_project! {
    /// The service's future, keeping its request open (also when the client goes away first).
    pub(crate) struct CountedFuture<F> {
        #[pin]
        inner: F,
        open: Option<OpenRequest>,
    }
}

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let open = this.open.take();
        let streaming = open.as_ref().map(|open| {
            open.activity.streaming.fetch_add(1, Ordering::Relaxed);
            Streaming {
                activity: Arc::clone(&open.activity),
            }
        });
        Poll::Ready(Ok(response.map(|inner| CountedBody {
            inner,
            _open: open,
            _streaming: streaming,
        })))
    }
}

pin_project! {
    /// A response body that keeps its request open until it is done.
    pub(crate) struct CountedBody<B> {
        #[pin]
        inner: B,
        _open: Option<OpenRequest>,
        _streaming: Option<Streaming>,
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_and_writes_are_counted_and_the_h2_preface_recognised() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut server = CountedIo::new(server, Arc::clone(&activity));
        let mut client = client;
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        assert!(n > 0);
        server.write_all(b"x").await.unwrap();
        let snapshot = activity.snapshot();
        assert_eq!((snapshot.reads, snapshot.writes, snapshot.h2), (1, 1, true));
    }

    #[test]
    fn a_request_is_open_until_its_guard_drops() {
        let activity = Arc::new(Activity::default());
        let open = activity.begin();
        assert_eq!(activity.snapshot().open, 1);
        drop(open);
        let snapshot = activity.snapshot();
        assert_eq!((snapshot.started, snapshot.open), (1, 0));
    }
}
