//! One HTTP/1.1 exchange with a replica, on a connection of the activator's own: the request
//! head and body are written and the response read by whichever task polls the exchange (the
//! request's own), with no connection task, no channel between the two and no wake-up crossing
//! tasks. A connection is a socket and its read buffer; heads and chunked bodies are the
//! [`crate::http1`] codec's.
//!
//! Both directions move in every poll, so a replica that answers while the request body is still
//! arriving (an early `413`, or a stream echoed as it comes) is served as it would be by two
//! tasks: the response's body, once returned, keeps sending what is left of the request's.
//! Nothing is buffered beyond one frame each way: a peer that stops reading stops the other.
//! A replica may also answer and close without reading the whole body (python's `http.server`
//! refusing a large upload): when writing fails after part of the request went out, the exchange
//! stops sending and still reads the answer already on its way, as nginx does, and gives the
//! write's error only if none comes, or if the answer is cut short.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, request, response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::http1::passthrough::Passthrough;
use crate::http1::relayed::Relayed;
use crate::http1::{self, ChunkedDecoder, Decoded, Framing, HeadError};

/// The first read buffer of a connection; reads that fill the buffer double the next one, up to
/// [`MAX_READ`].
const FIRST_READ: usize = 8 * 1024;
/// The largest single read (hyper reads at most about 400 KiB).
const MAX_READ: usize = 256 * 1024;
/// A response head larger than this is refused (hyper's client bound is ~400 KiB).
const MAX_RESPONSE_HEAD: usize = 64 * 1024 + 8 * 1024;

/// A connection to a replica that can carry one request at a time. Made and kept boxed
/// ([`Connection::new`]): it moves with every request, out of the pool, into the exchange and the
/// response body and back, and a pointer moves for less than its fields.
#[derive(Debug)]
pub(crate) struct Connection {
    io: TcpStream,
    read: BytesMut,
    /// How much the next read asks for.
    read_size: usize,
    /// The request head being written, kept for its capacity.
    write: Vec<u8>,
    /// The worker thread whose runtime watches the socket.
    pub(crate) home: usize,
    /// It served a response and was kept: the replica keeps connections.
    pub(crate) proven: bool,
}

/// How an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The replica closed the connection before its response was complete.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The replica's response cannot be read.
    #[error("invalid response: {0}")]
    Response(#[from] HeadError),
    /// The response's chunked body cannot be read.
    #[error("{0}")]
    Chunked(#[from] http1::chunked::ChunkError),
    /// The request body failed (the client went away, or stalled).
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
}

impl Connection {
    /// A connection over `io`, driven from the worker `home`.
    pub(crate) fn new(io: TcpStream, home: usize) -> Box<Connection> {
        Box::new(Connection {
            io,
            read: BytesMut::new(),
            read_size: FIRST_READ,
            write: Vec::new(),
            home,
            proven: false,
        })
    }

    /// Whether an idle connection can take a request: the replica has neither closed it nor
    /// sent anything unasked. Costs no system call unless the socket was reported readable.
    pub(crate) fn is_reusable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// The connection's own address, to tell connections apart.
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        self.io.local_addr().expect("a connected socket")
    }

    /// Lets go of a read buffer grown for a large response, before the connection waits idle
    /// (a thousand idle connections would otherwise keep up to [`MAX_READ`] each).
    pub(crate) fn settle(&mut self) {
        if self.read.is_empty() && self.read.capacity() > FIRST_READ {
            self.read = BytesMut::new();
        }
        if self.write.capacity() > FIRST_READ {
            self.write = Vec::new();
        }
    }

    /// Moves the connection to the calling thread's runtime, which then watches its socket.
    pub(crate) fn rehome(mut self: Box<Self>, home: usize) -> io::Result<Box<Connection>> {
        let io = self.io;
        self.io = TcpStream::from_std(io.into_std()?)?;
        self.home = home;
        Ok(self)
    }

    /// Reads more of the replica's bytes; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < self.read_size / 2 {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        // Through `AsyncRead`: a read shorter than asked for clears the socket's readiness, so
        // the next read waits for the replica instead of costing a system call that finds
        // nothing.
        let n = ready!(pin!(self.io.read_buf(&mut self.read)).poll(cx))?;
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// Starts a request: its head is written from `parts` (its fields and those that passed
    /// through) and the fields `added` (the body framed by `framing`), and `body` follows.
    pub(crate) fn send<'a, B>(
        mut self: Box<Self>,
        parts: &request::Parts,
        added: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
        framing: Framing,
        body: B,
    ) -> Exchange<B> {
        self.write.clear();
        http1::write_request_head(
            &parts.method,
            &parts.uri,
            &parts.headers,
            parts.extensions.get::<Passthrough>(),
            added,
            framing,
            &mut self.write,
        );
        Exchange {
            conn: self,
            head: parts.method == Method::HEAD,
            request: Outgoing {
                // Kept even when there is none to send, so that a request none of which went
                // out can be sent again elsewhere as it is.
                body: Some(body),
                chunked: framing == Framing::Chunked,
                written: 0,
                data: Bytes::new(),
                tail: b"",
                wrote_any: false,
                done_writing_body: framing.is_empty(),
                write_failed: None,
            },
        }
    }
}

/// What is left to send of a request.
#[derive(Debug)]
struct Outgoing<B> {
    /// The body, until it ended.
    body: Option<B>,
    chunked: bool,
    /// Bytes of the connection's write buffer already written.
    written: usize,
    /// A data frame being written after the write buffer.
    data: Bytes,
    /// Written after `data`: the CRLF ending a chunk.
    tail: &'static [u8],
    /// Some byte of the request reached the socket.
    wrote_any: bool,
    /// The body ended and its end was queued.
    done_writing_body: bool,
    /// The socket refused a write: nothing more is sent, and this is the exchange's error unless
    /// a response comes anyway.
    write_failed: Option<io::Error>,
}

/// One request on its way: the head and body going out, the response coming back.
#[derive(Debug)]
pub(crate) struct Exchange<B> {
    conn: Box<Connection>,
    /// The request was `HEAD`: its response has no body, whatever its fields say.
    head: bool,
    request: Outgoing<B>,
}

/// A response head as the exchange read it.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// Status and version.
    pub(crate) parts: response::Parts,
    /// The fields, as they came.
    pub(crate) relayed: Relayed,
    /// How its body is delimited.
    pub(crate) framing: Framing,
    /// The replica keeps the connection after it.
    pub(crate) keep_alive: bool,
}

impl<B> Exchange<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Whether no byte of the request has reached the socket yet, so that it can be sent again
    /// elsewhere as it is.
    pub(crate) fn nothing_sent(&self) -> bool {
        !self.request.wrote_any
    }

    /// Takes the request body back, if the exchange failed before sending any of it.
    pub(crate) fn into_unsent_body(self) -> Option<B> {
        if self.request.wrote_any {
            None
        } else {
            self.request.body
        }
    }

    /// Whether the request went out whole.
    fn sent_whole(&self) -> bool {
        let r = &self.request;
        r.done_writing_body
            && r.written == self.conn.write.len()
            && r.data.is_empty()
            && r.tail.is_empty()
    }

    /// Sends as much of the request as can go now; `Ready(Ok)` once all of it went, or once the
    /// socket refused a write after part of it went (kept in `write_failed`, for the reading side
    /// to tell). Fails for the request's own body, and for a write refused before any of it went.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ExchangeError>> {
        loop {
            let r = &mut self.request;
            if r.write_failed.is_some() {
                return Poll::Ready(Ok(()));
            }
            let pending = &self.conn.write[r.written..];
            if !pending.is_empty() || !r.data.is_empty() || !r.tail.is_empty() {
                let slices = [
                    IoSlice::new(pending),
                    IoSlice::new(&r.data),
                    IoSlice::new(r.tail),
                ];
                let mut n =
                    match ready!(Pin::new(&mut self.conn.io).poll_write_vectored(cx, &slices)) {
                        Ok(n) if n > 0 => n,
                        refused => {
                            let error = refused
                                .err()
                                .unwrap_or_else(|| io::ErrorKind::WriteZero.into());
                            if !r.wrote_any {
                                // Nothing of this request went out: whatever the replica sends
                                // answers something else (a keep-alive timeout's 408), and the
                                // request may go again.
                                return Poll::Ready(Err(error.into()));
                            }
                            r.write_failed = Some(error);
                            return Poll::Ready(Ok(()));
                        }
                    };
                r.wrote_any = true;
                let from_head = n.min(pending.len());
                r.written += from_head;
                n -= from_head;
                let from_data = n.min(r.data.len());
                let _ = r.data.split_to(from_data);
                n -= from_data;
                r.tail = &r.tail[n.min(r.tail.len())..];
                continue;
            }
            if r.done_writing_body {
                return Poll::Ready(Ok(()));
            }
            let Some(body) = r.body.as_mut() else {
                r.done_writing_body = true;
                continue;
            };
            // The head is written: the buffer now carries chunk framing.
            self.conn.write.clear();
            r.written = 0;
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        if r.chunked {
                            self.conn
                                .write
                                .extend_from_slice(http1::chunked::chunk_head(data.len()).as_ref());
                            r.tail = b"\r\n";
                        }
                        r.data = data;
                    }
                    Err(frame) => {
                        if let (true, Ok(trailers)) = (r.chunked, frame.into_trailers()) {
                            http1::chunked::last_chunk(Some(&trailers), &mut self.conn.write);
                            r.body = None;
                            r.done_writing_body = true;
                        }
                    }
                },
                Some(Err(error)) => {
                    return Poll::Ready(Err(ExchangeError::RequestBody(error.into())));
                }
                None => {
                    if r.chunked {
                        http1::chunked::last_chunk(None, &mut self.conn.write);
                    }
                    r.body = None;
                    r.done_writing_body = true;
                }
            }
        }
    }

    /// Sends the request and reads until the response head has come (informational heads
    /// skipped, `101` returned).
    pub(crate) fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ResponseHead, ExchangeError>> {
        let method = if self.head { Method::HEAD } else { Method::GET };
        loop {
            if let Poll::Ready(Err(error)) = self.poll_send(cx) {
                return Poll::Ready(Err(error));
            }
            while let Some(parsed) =
                http1::parse_response(&mut self.conn.read, &method, MAX_RESPONSE_HEAD)?
            {
                let status = parsed.parts.status;
                if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                return Poll::Ready(Ok(ResponseHead {
                    parts: parsed.parts,
                    relayed: parsed.relayed,
                    framing: parsed.framing,
                    keep_alive: parsed.keep_alive,
                }));
            }
            let read = ready!(self.conn.poll_fill(cx));
            if !matches!(read, Ok(n) if n > 0) {
                self.ended(read)?;
                return Poll::Ready(Err(ExchangeError::Closed));
            }
        }
    }

    /// How the replica's stream ended, `read` being the read that found its end: `Ok` for a
    /// clean close. A refused write is the cause of any end after it (a write fails only once
    /// the replica reset the connection, and the reset then reads as a clean close), so neither
    /// a missing answer nor a body that runs to the close passes for whole.
    fn ended(&mut self, read: io::Result<usize>) -> Result<(), ExchangeError> {
        if let Some(error) = self.request.write_failed.take() {
            return Err(error.into());
        }
        read.map(drop).map_err(ExchangeError::from)
    }

    /// The response body that follows `head`; it sends the rest of the request as it is polled.
    pub(crate) fn into_body(self, head: &ResponseHead) -> ResponseBody<B> {
        let reading = match head.framing {
            Framing::Empty | Framing::Length(0) => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(ChunkedDecoder::default()),
            Framing::Close => Reading::Close,
        };
        ResponseBody {
            keep_alive: head.keep_alive,
            exchange: self,
            reading,
        }
    }

    /// The socket and what was read past the `101` head, for a tunnel.
    pub(crate) fn into_upgraded(self) -> (TcpStream, Bytes) {
        (self.conn.io, self.conn.read.freeze())
    }
}

/// Where the response body stands.
#[derive(Debug)]
enum Reading {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the replica closes.
    Close,
    /// Ended.
    Done,
}

/// A replica's response body, read as it is polled; polling it also sends what is left of the
/// request. Once it has ended, [`ResponseBody::into_reusable`] gives the connection back when it
/// can carry another request.
#[derive(Debug)]
pub(crate) struct ResponseBody<B> {
    exchange: Exchange<B>,
    reading: Reading,
    keep_alive: bool,
}

impl<B> ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Whether the body has ended.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.reading, Reading::Done)
    }

    /// The connection, if the response ended, the request was sent whole, the replica keeps
    /// the connection and sent nothing more.
    pub(crate) fn into_reusable(self) -> Option<Box<Connection>> {
        let reusable = self.is_done()
            && self.keep_alive
            && self.exchange.sent_whole()
            && self.exchange.conn.read.is_empty();
        reusable.then_some(self.exchange.conn)
    }

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        loop {
            let read = &mut self.exchange.conn.read;
            match &mut self.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(left) if !read.is_empty() => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                    *left -= take as u64;
                    let data = read.split_to(take).freeze();
                    if *left == 0 {
                        self.reading = Reading::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Reading::Close if !read.is_empty() => {
                    let data = read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Reading::Chunked(decoder) => match decoder.decode(read)? {
                    Some(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some(Decoded::Trailers(trailers)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Some(Decoded::End) => {
                        self.reading = Reading::Done;
                        return Poll::Ready(None);
                    }
                    None => {}
                },
                Reading::Length(_) | Reading::Close => {}
            }
            let read = ready!(self.exchange.conn.poll_fill(cx));
            if !matches!(read, Ok(n) if n > 0) {
                self.exchange.ended(read)?;
                if matches!(self.reading, Reading::Close) {
                    self.reading = Reading::Done;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(ExchangeError::Closed)));
            }
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ExchangeError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        let this = self.get_mut();
        if !this.exchange.sent_whole()
            && let Poll::Ready(Err(error)) = this.exchange.poll_send(cx)
        {
            return Poll::Ready(Some(Err(error)));
        }
        this.poll_data(cx)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Done => SizeHint::with_exact(0),
            Reading::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// A connection to a replica, and the replica's end of it.
#[cfg(test)]
pub(crate) async fn connected() -> (Box<Connection>, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (Connection::new(client.unwrap(), 0), accepted.unwrap().0)
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use http::Uri;
    use http_body_util::{BodyExt, Empty, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// A request head with no fields.
    fn parts(method: Method, uri: &Uri) -> request::Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri.clone();
        parts
    }

    /// The replica resets its end, as a server closing with unread input or `SO_LINGER` 0 does.
    fn reset(peer: TcpStream) {
        socket2::SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
    }

    /// Until the reset reached our end (taking the socket's error: writes fail all the same).
    async fn reset_arrived(conn: &Connection) {
        for _ in 0..5000 {
            if socket2::SockRef::from(&conn.io)
                .take_error()
                .unwrap()
                .is_some()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the replica's reset never arrived");
    }

    /// Reads at the replica's end until a whole request head has come (with whatever followed
    /// it in the same reads).
    async fn read_head(peer: &mut TcpStream) {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = peer.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the request head came");
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn a_request_without_a_body_none_of_which_went_out_can_be_sent_again() {
        let (conn, peer) = connected().await;
        reset(peer);
        reset_arrived(&conn).await;
        let uri: Uri = "/".parse().unwrap();
        let mut exchange = conn.send(
            &parts(Method::GET, &uri),
            std::iter::empty(),
            Framing::Empty,
            Empty::<Bytes>::new(),
        );
        let failed = poll_fn(|cx| exchange.poll_head(cx)).await;
        assert!(failed.is_err(), "{failed:?}");
        assert!(exchange.nothing_sent());
        assert!(
            exchange.into_unsent_body().is_some(),
            "handed back to resend"
        );
    }

    #[tokio::test]
    async fn what_a_replica_sent_before_a_request_went_out_is_not_its_answer() {
        let (conn, mut peer) = connected().await;
        // A keep-alive timeout's answer, sent before any request, then the reset.
        peer.write_all(
            b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        )
        .await
        .unwrap();
        reset(peer);
        reset_arrived(&conn).await;
        let uri: Uri = "/".parse().unwrap();
        let mut exchange = conn.send(
            &parts(Method::POST, &uri),
            std::iter::empty(),
            Framing::Length(5),
            Full::new(Bytes::from_static(b"hello")),
        );
        let answered = poll_fn(|cx| exchange.poll_head(cx)).await;
        assert!(answered.is_err(), "not the 408: {answered:?}");
        assert!(
            exchange.into_unsent_body().is_some(),
            "handed back to resend"
        );
    }

    #[tokio::test]
    async fn a_body_delimited_by_the_close_and_cut_by_a_reset_does_not_end_as_complete() {
        let (conn, mut peer) = connected().await;
        const LENGTH: usize = 64 << 20;
        let uri: Uri = "/upload".parse().unwrap();
        let mut exchange = conn.send(
            &parts(Method::POST, &uri),
            std::iter::empty(),
            Framing::Length(LENGTH as u64),
            Full::new(Bytes::from(vec![b'x'; LENGTH])),
        );
        // The replica reads the head, answers with a body that ends at the close, and resets
        // over the upload it did not read.
        let replica = tokio::spawn(async move {
            read_head(&mut peer).await;
            peer.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart of it")
                .await
                .unwrap();
            reset(peer);
        });
        let head = poll_fn(|cx| exchange.poll_head(cx)).await.unwrap();
        assert_eq!(head.framing, Framing::Close);
        replica.await.unwrap();
        let body = exchange.into_body(&head).collect().await;
        assert!(body.is_err(), "ended as if whole");
    }

    #[test]
    fn a_connection_moved_to_another_workers_runtime_carries_the_next_exchange() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let (mut conn, peer) = runtime().block_on(connected());
        conn.proven = true;
        let peer = peer.into_std().unwrap();
        // Its first runtime is gone: only the new one's reactor can wake a read now.
        runtime().block_on(async move {
            let mut peer = TcpStream::from_std(peer).unwrap();
            let conn = conn.rehome(1).unwrap();
            assert_eq!((conn.home, conn.proven), (1, true));
            let uri: Uri = "/".parse().unwrap();
            let mut exchange = conn.send(
                &parts(Method::GET, &uri),
                std::iter::empty(),
                Framing::Empty,
                Empty::<Bytes>::new(),
            );
            let replica = tokio::spawn(async move {
                read_head(&mut peer).await;
                peer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                peer
            });
            let head = poll_fn(|cx| exchange.poll_head(cx)).await.unwrap();
            let _peer = replica.await.unwrap();
            let body = exchange.into_body(&head).collect().await.unwrap();
            assert_eq!(body.to_bytes(), "ok");
        });
    }
}
