//! The one body type the proxy answers with, and helpers to build it.
//!
//! Upstream bodies stream through unchanged (boxed once); synthetic answers (errors, admin pages)
//! are small in-memory bodies. Request bodies arrive as [`RequestBody`]: hyper's, or one the
//! activator's own HTTP/1 server reads on demand ([`client`]).

pub(crate) mod client;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody as Boxed};

/// Why a body ended early: the peer's connection failed, or the stream stalled.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the activator sends.
pub(crate) type BoxBody = Boxed<Bytes, BoxError>;

/// An empty body.
pub(crate) fn empty() -> BoxBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body holding `chunk` whole.
pub(crate) fn full(chunk: impl Into<Bytes>) -> BoxBody {
    Full::new(chunk.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A client's request body, as the listener that read the request hands it on.
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// None at all.
    Empty,
    /// Read by hyper (HTTP/2 connections, and HTTP/1 ones handed to hyper).
    Hyper(hyper::body::Incoming),
    /// Read by the activator's own HTTP/1 server.
    Client(client::ClientBody),
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => std::task::Poll::Ready(None),
            RequestBody::Hyper(body) => std::pin::Pin::new(body)
                .poll_frame(cx)
                .map_err(BoxError::from),
            RequestBody::Client(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Client(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Empty => http_body::SizeHint::with_exact(0),
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Client(body) => body.size_hint(),
        }
    }
}
