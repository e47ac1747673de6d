//! The activator's own HTTP/1 server: it reads each request head of a client connection with the
//! [`crate::http1`] codec, hands the request to the connection's [`Respond`], and writes the
//! answer back, request after request, on the connection's own task.
//!
//! Why not hyper's: a proxied request is read, forwarded and answered here with no task, channel
//! or boxed future of its own, and the head, its answer and the first body frame go out in one
//! write; and a request held for a cold start costs only what it needs (its parsed head and its
//! place in the queue), not a read buffer, a write buffer and a dispatcher (BENCHMARKS.md).
//!
//! What it leaves to hyper ([`Served::Handoff`]), with every byte read so far: a connection that
//! opens with the HTTP/2 preface, and one whose request asks for a protocol upgrade (hyper's
//! upgrade machinery then carries the tunnel). hyper serves such a connection to its end.
//!
//! A head that cannot be parsed gets `400`, one too large or with too many fields `431`, each
//! answered through the proxy's one error path, and the connection closes. A request body is read
//! only as its consumer asks ([`crate::body::client`]), with `100 Continue` first if the client
//! expects it. While a request without a body waits, the socket is still read, so that a client
//! that goes away is seen at once and its request dropped (leaving the hold queue). A response
//! of known length keeps its `Content-Length`; one of unknown length is chunked for HTTP/1.1
//! clients and runs to the close for HTTP/1.0 ones.

use std::future::Future;
use std::io::IoSlice;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode, Version};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Answered, Respond};
use crate::activity::Activity;
use crate::body::RequestBody;
use crate::body::client::{self, BodyFeed, ClientBodyError};
use crate::http1::head::{ParsedRequest, ResponseFraming};
use crate::http1::{self, ChunkedDecoder, Decoded, Framing, HeadError};

/// The interim response that invites a client waiting on `Expect: 100-continue` to send its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What a read of a request head asks for at least (nginx's `client_header_buffer_size` is
/// 1 KiB; most browser heads fit in 2).
const HEAD_READ: usize = 2 * 1024;
/// What a read of a request body asks for at first; it doubles while reads fill it, up to
/// [`MAX_BODY_READ`].
const BODY_READ: usize = 16 * 1024;
const MAX_BODY_READ: usize = 256 * 1024;
/// Bytes read ahead of a request still being answered (a pipelined request) at most.
const READ_AHEAD: usize = 64 * 1024;
/// How long a connection closed with input still coming is read (and the input dropped) after
/// its answer, at most, and how long the client may stay quiet meanwhile: nginx's
/// `lingering_time` and `lingering_timeout`.
const LINGER_FOR: Duration = Duration::from_secs(30);
const LINGER_QUIET: Duration = Duration::from_secs(5);

/// How a connection's HTTP/1 service ended.
#[derive(Debug)]
pub(crate) enum Served {
    /// The connection is done (closed by either side, or failed).
    Closed,
    /// hyper serves the connection from here on, starting with these bytes already read.
    Handoff(Bytes),
}

/// Serves HTTP/1 requests on `io` until the connection ends, or hyper has to take it over.
/// `max_head` bounds a request head; `activity` counts requests for the connection's watchdog,
/// and tells when the connection should close after its current request.
pub(crate) async fn serve<I, R>(
    io: &mut I,
    respond: &R,
    activity: &Arc<Activity>,
    max_head: usize,
) -> Served
where
    I: AsyncRead + AsyncWrite + Unpin,
    R: Respond,
{
    let mut connection = Connection {
        io,
        read: BytesMut::new(),
        write: Vec::new(),
        body_read: BODY_READ,
    };
    let mut first = true;
    loop {
        // Read until a whole head has come. The head is parsed here, not in a future of its
        // own: handed out of one, the request (a few hundred bytes) would be copied on its way.
        let parsed = loop {
            match connection.buffered_head(max_head, first) {
                Ok(Some(Head::Request(parsed))) => break parsed,
                Ok(Some(Head::Http2)) => return Served::Handoff(connection.read.freeze()),
                Ok(None) => {}
                Err(error) => {
                    let response = respond.refuse(&error).into();
                    let answered = connection
                        .answer(response, Version::HTTP_11, &Method::GET, true, None)
                        .await;
                    if answered.is_ok() {
                        connection.linger().await;
                    }
                    return Served::Closed;
                }
            }
            if !connection.read_more().await {
                // The client closed the connection (or it failed) between requests.
                return Served::Closed;
            }
        };
        first = false;
        if parsed.upgrade {
            // The head's bytes sit just before what is still in the buffer.
            let mut bytes = BytesMut::from(&parsed.raw[..]);
            bytes.extend_from_slice(&connection.read);
            return Served::Handoff(bytes.freeze());
        }
        let open = activity.begin();
        let (version, method) = (parsed.parts.version, parsed.parts.method.clone());
        let mut keep_alive = parsed.keep_alive;
        let (request, mut reader) = request(parsed);
        // Scoped, so that the answer's future (large) and what writing the answer needs share
        // their room in this future; pinned where it is made, as moving it costs a copy.
        let response = {
            let answering = pin!(respond.respond(request));
            match connection.await_response(answering, &mut reader).await {
                Some(response) => response,
                // The client went away (or its connection failed) while the request waited.
                None => return Served::Closed,
            }
        };
        let streaming = activity.stream();
        let written = connection
            .answer(
                response,
                version,
                &method,
                !keep_alive
                    || activity.retiring()
                    || reader.as_ref().is_some_and(BodyReader::unfinished),
                reader.as_mut(),
            )
            .await;
        drop((streaming, open));
        let unfinished = reader.as_ref().is_some_and(BodyReader::unfinished);
        keep_alive &=
            written.as_ref().is_ok_and(|kept| *kept) && !unfinished && !activity.retiring();
        if !keep_alive {
            if unfinished && written.is_ok() {
                connection.linger().await;
            } else {
                let _ = connection.io.shutdown().await;
            }
            return Served::Closed;
        }
    }
}

/// The request `parsed` announces, with the reader of its body, if it has one.
// Inlined, as the other steps a request head takes on its way to the replica are: each call
// that returns the request (a few hundred bytes) copies it.
#[inline(always)]
fn request(parsed: ParsedRequest) -> (Request<RequestBody>, Option<BodyReader>) {
    let (body, reader) = match parsed.framing {
        Framing::Empty | Framing::Length(0) | Framing::Close => (RequestBody::Empty, None),
        framing => {
            let length = match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            };
            let (body, feed) = client::channel(length);
            let reader = BodyReader {
                feed,
                decoding: match framing {
                    Framing::Length(n) => Decoding::Length(n),
                    _ => Decoding::Chunked(ChunkedDecoder::default()),
                },
                expect_continue: parsed.expect_continue,
                continue_sent: 0,
                state: Reading::Body,
            };
            (RequestBody::Client(body), Some(reader))
        }
    };
    (Request::from_parts(parsed.parts, body), reader)
}

/// What the bytes read so far begin with, once they hold a whole head. Not boxed: it is made
/// once per request, and read at once.
#[allow(clippy::large_enum_variant)]
enum Head {
    Request(ParsedRequest),
    /// The HTTP/2 preface: hyper's to serve.
    Http2,
}

struct Connection<'a, I> {
    io: &'a mut I,
    /// Bytes read and not yet taken.
    read: BytesMut,
    /// A response head being written, kept for its capacity.
    write: Vec<u8>,
    /// What the next body read asks for.
    body_read: usize,
}

/// A request body being read from the client for its consumer.
struct BodyReader {
    feed: BodyFeed,
    decoding: Decoding,
    /// The client waits for `100 Continue` before sending the body.
    expect_continue: bool,
    /// Bytes of the `100 Continue` written so far.
    continue_sent: usize,
    state: Reading,
}

/// How far a request body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Still coming.
    Body,
    /// Read to its end: the connection may carry another request.
    Ended,
    /// Malformed or cut short: whatever follows on the connection cannot be trusted as the next
    /// request.
    Failed,
}

enum Decoding {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl<I: AsyncRead + AsyncWrite + Unpin> Connection<'_, I> {
    /// Makes room to read a head into, unless enough is left: the room after a head that was
    /// split off will do, and reserving more would allocate anew (the head still holds the
    /// allocation), which a held request would keep for as long as it waits.
    fn make_room(&mut self) {
        if self.read.capacity() - self.read.len() < HEAD_READ / 2 {
            self.read.reserve(HEAD_READ);
        }
    }

    /// Ends the connection after an answer while the client may still be sending what was not
    /// read (a body, the rest of a refused head): the write side closes, and what comes is read
    /// and dropped until the client closes too, goes quiet for [`LINGER_QUIET`], or
    /// [`LINGER_FOR`] has passed. Closing at once would make the kernel reset the connection
    /// over the unread bytes, and a reset can destroy the answer before the client reads it.
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let until = tokio::time::Instant::now() + LINGER_FOR;
        loop {
            self.read.clear();
            self.make_room();
            let quiet = (tokio::time::Instant::now() + LINGER_QUIET).min(until);
            match tokio::time::timeout_at(quiet, self.io.read_buf(&mut self.read)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// The head the bytes read so far begin with, if they hold a whole one (or the whole HTTP/2
    /// preface, on the connection's `first` read).
    #[inline(always)]
    fn buffered_head(&mut self, max_head: usize, first: bool) -> Result<Option<Head>, HeadError> {
        if first && self.read.starts_with(H2_PREFACE) {
            return Ok(Some(Head::Http2));
        }
        if first && H2_PREFACE.starts_with(&self.read) {
            // Perhaps the preface, not all of it read yet.
            return Ok(None);
        }
        Ok(http1::head::parse_request(&mut self.read, max_head)?.map(Head::Request))
    }

    /// Reads more of a head; `false` once the client closed the connection or it failed.
    async fn read_more(&mut self) -> bool {
        self.make_room();
        matches!(self.io.read_buf(&mut self.read).await, Ok(n) if n > 0)
    }

    /// Waits for `answering`, meanwhile reading the request body for its consumer, or (with no
    /// body to read) watching for the client to go away. `None` if it did.
    async fn await_response<F>(
        &mut self,
        mut answering: Pin<&mut F>,
        reader: &mut Option<BodyReader>,
    ) -> Option<Answered>
    where
        F: Future<Output = Answered>,
    {
        std::future::poll_fn(|cx| {
            loop {
                if let Poll::Ready(response) = answering.as_mut().poll(cx) {
                    return Poll::Ready(Some(response));
                }
                match reader.as_mut().map(|reader| self.poll_feed(cx, reader)) {
                    // Fed a frame: the consumer may move on.
                    Some(Poll::Ready(true)) => continue,
                    Some(Poll::Pending) => return Poll::Pending,
                    // Nothing (more) to feed: watch for the client going away.
                    Some(Poll::Ready(false)) | None => {
                        if self.read.len() >= READ_AHEAD {
                            return Poll::Pending;
                        }
                        self.make_room();
                        return match ready!(pin!(self.io.read_buf(&mut self.read)).poll(cx)) {
                            Ok(0) | Err(_) => Poll::Ready(None),
                            // A pipelined request, kept for later.
                            Ok(_) => continue,
                        };
                    }
                }
            }
        })
        .await
    }

    /// Feeds the consumer one frame if it wants one: `Ready(true)` once fed, `Ready(false)` when
    /// nothing more will be fed (the body ended, failed or its consumer is gone); `Pending`
    /// otherwise.
    fn poll_feed(&mut self, cx: &mut Context<'_>, reader: &mut BodyReader) -> Poll<bool> {
        loop {
            if reader.state != Reading::Body {
                return Poll::Ready(false);
            }
            if reader.feed.is_dropped() {
                // The consumer is gone: the rest of the body is never read, and the connection
                // cannot be kept (the bytes left would be taken for the next request).
                return Poll::Ready(false);
            }
            ready!(reader.feed.poll_wanted(cx));
            if reader.feed.is_dropped() {
                return Poll::Ready(false);
            }
            if reader.expect_continue {
                // Asked for the body: the client may now send it, unless it has begun already.
                // Written from its own bytes, and to the end even across polls: the response
                // head may be waiting in `write`.
                if reader.continue_sent > 0 || self.read.is_empty() {
                    while reader.continue_sent < CONTINUE.len() {
                        let rest = &CONTINUE[reader.continue_sent..];
                        match ready!(Pin::new(&mut *self.io).poll_write(cx, rest)) {
                            Ok(n) if n > 0 => reader.continue_sent += n,
                            _ => {
                                reader
                                    .fail(ClientBodyError::Failed("the client connection failed"));
                                return Poll::Ready(false);
                            }
                        }
                    }
                }
                reader.expect_continue = false;
            }
            // A frame from what was already read, else read more.
            match reader.take(&mut self.read) {
                Ok(true) => return Poll::Ready(true),
                Ok(false) => {}
                Err(()) => return Poll::Ready(false),
            }
            if self.read.capacity() - self.read.len() < self.body_read / 2 {
                self.read.reserve(self.body_read);
            }
            let room = self.read.capacity() - self.read.len();
            match ready!(pin!(self.io.read_buf(&mut self.read)).poll(cx)) {
                Ok(0) | Err(_) => {
                    reader.fail(ClientBodyError::Failed(
                        "the client closed the connection before its body ended",
                    ));
                    return Poll::Ready(false);
                }
                Ok(n) => {
                    if n == room && self.body_read < MAX_BODY_READ {
                        self.body_read *= 2;
                    }
                }
            }
        }
    }

    /// Writes `response` for a client that spoke `version` and asked with `method`, closing
    /// after it if `close` (or if its framing needs the close), while still feeding the request
    /// body, if any is left. `Ok(true)` if the connection can take another request.
    async fn answer(
        &mut self,
        answered: Answered,
        version: Version,
        method: &Method,
        close: bool,
        mut reader: Option<&mut BodyReader>,
    ) -> std::io::Result<bool> {
        // The final response makes a `100 Continue` not yet begun moot (RFC 9110 §10.1.1): the
        // client sends its body or closes.
        // One begun is finished first, so that the head does not land inside it.
        if let Some(reader) = reader.as_deref_mut() {
            if (1..CONTINUE.len()).contains(&reader.continue_sent) {
                self.io.write_all(&CONTINUE[reader.continue_sent..]).await?;
                reader.continue_sent = CONTINUE.len();
            }
            reader.expect_continue = false;
        }
        let Answered { response, relayed } = answered;
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        // The head's `Content-Length` is written from this, whatever the fields said.
        let framing = if bodiless {
            Framing::Empty
        } else if let Some(n) = body.size_hint().exact() {
            Framing::Length(n)
        } else if version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::Close
        };
        let close = close || framing == Framing::Close;
        self.write.clear();
        http1::head::write_response_head(
            version,
            status,
            &parts.headers,
            relayed.as_ref(),
            ResponseFraming {
                framing,
                close,
                keep_alive_10: version == Version::HTTP_10 && !close,
            },
            &mut self.write,
        );
        drop((parts, relayed));
        let chunked = framing == Framing::Chunked;
        let mut head_sent = false;
        let mut ended = bodiless || body.is_end_stream();
        // The last chunk was queued.
        let mut terminated = !chunked;
        let mut writing = Writing::default();
        if ended && !terminated {
            writing.last_chunk();
            terminated = true;
        }
        std::future::poll_fn(|cx| {
            loop {
                // The request body's consumer may be waiting on the client.
                if let Some(reader) = reader.as_deref_mut()
                    && self.poll_feed(cx, reader) == Poll::Ready(true)
                {
                    continue;
                }
                if writing.is_empty() && !ended {
                    match Pin::new(&mut body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if writing.frame(frame, chunked) {
                                ended = true;
                                terminated = true;
                            }
                        }
                        Poll::Ready(Some(Err(_))) => {
                            // The replica failed mid-body: the client can only see it as a close.
                            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
                        }
                        Poll::Ready(None) => ended = true,
                        Poll::Pending if head_sent => return Poll::Pending,
                        // Nothing yet: the head goes out on its own.
                        Poll::Pending => {}
                    }
                    if !ended && body.is_end_stream() {
                        ended = true;
                    }
                    if ended && !terminated {
                        writing.last_chunk();
                        terminated = true;
                    }
                }
                let head = if head_sent { &[][..] } else { &self.write[..] };
                if head.is_empty() && writing.is_empty() {
                    if ended {
                        return Poll::Ready(Ok(!close));
                    }
                    continue;
                }
                let n = ready!(writing.poll_write(&mut *self.io, cx, head))?;
                let from_head = n.min(head.len());
                if from_head == head.len() {
                    head_sent = true;
                } else {
                    self.write.drain(..from_head);
                }
                writing.advance(n - from_head);
            }
        })
        .await
    }
}

impl BodyReader {
    /// The body was not read to its end by the time the response starts (it failed, nobody
    /// wants it, or the replica answered before it had it all): whatever is left of it would be
    /// taken for the next request, so the connection closes after the response, which says so.
    fn unfinished(&self) -> bool {
        self.state != Reading::Ended
    }

    /// Hands the consumer the next frame from `read`, if one is there: `Ok(true)` if fed,
    /// `Ok(false)` if more bytes are needed, `Err` if the body cannot be read on.
    fn take(&mut self, read: &mut BytesMut) -> Result<bool, ()> {
        match &mut self.decoding {
            Decoding::Length(left) => {
                if read.is_empty() {
                    return Ok(false);
                }
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                *left -= take as u64;
                self.feed.data(read.split_to(take).freeze());
                if *left == 0 {
                    // The consumer sees the end from the length; `end` lets it finish.
                    self.state = Reading::Ended;
                    self.feed.end(Ok(()));
                }
                Ok(true)
            }
            Decoding::Chunked(decoder) => match decoder.decode(read) {
                Ok(Some(Decoded::Data(data))) => {
                    self.feed.data(data);
                    Ok(true)
                }
                Ok(Some(Decoded::Trailers(trailers))) => {
                    // The trailers end the body: its consumer may ask for nothing more.
                    self.state = Reading::Ended;
                    self.feed.trailers(trailers);
                    Ok(true)
                }
                Ok(Some(Decoded::End)) => {
                    self.state = Reading::Ended;
                    self.feed.end(Ok(()));
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(error) => {
                    self.fail(ClientBodyError::Malformed(error.to_string()));
                    Err(())
                }
            },
        }
    }

    fn fail(&mut self, error: ClientBodyError) {
        self.state = Reading::Failed;
        self.feed.end(Err(error));
    }
}

/// A response body frame on its way out, with its chunk framing.
#[derive(Default)]
struct Writing {
    /// A chunk's size line.
    before: Vec<u8>,
    data: Bytes,
    /// The CRLF after a chunk's data.
    after: &'static [u8],
    /// The last chunk, with the trailers if any.
    end: Vec<u8>,
}

impl Writing {
    fn is_empty(&self) -> bool {
        self.before.is_empty()
            && self.data.is_empty()
            && self.after.is_empty()
            && self.end.is_empty()
    }

    /// Queues `frame`; `true` if it was the trailers, which end a chunked body.
    fn frame(&mut self, frame: Frame<Bytes>, chunked: bool) -> bool {
        match frame.into_data() {
            Ok(data) if data.is_empty() => false,
            Ok(data) => {
                if chunked {
                    self.before
                        .extend_from_slice(http1::chunked::chunk_head(data.len()).as_ref());
                    self.after = b"\r\n";
                }
                self.data = data;
                false
            }
            Err(frame) => match (chunked, frame.into_trailers()) {
                (true, Ok(trailers)) => {
                    http1::chunked::last_chunk(Some(&trailers), &mut self.end);
                    true
                }
                // Trailers cannot follow a body of known length: they are dropped, as hyper does.
                _ => false,
            },
        }
    }

    fn last_chunk(&mut self) {
        http1::chunked::last_chunk(None, &mut self.end);
    }

    fn poll_write<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        cx: &mut Context<'_>,
        head: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let slices = [
            IoSlice::new(head),
            IoSlice::new(&self.before),
            IoSlice::new(&self.data),
            IoSlice::new(self.after),
            IoSlice::new(&self.end),
        ];
        let n = ready!(Pin::new(io).poll_write_vectored(cx, &slices))?;
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        Poll::Ready(Ok(n))
    }

    fn advance(&mut self, mut n: usize) {
        let before = n.min(self.before.len());
        self.before.drain(..before);
        n -= before;
        let data = n.min(self.data.len());
        let _ = self.data.split_to(data);
        n -= data;
        let after = n.min(self.after.len());
        self.after = &self.after[after..];
        n -= after;
        self.end.drain(..n.min(self.end.len()));
    }
}
