//! The one body type the proxy answers with, and helpers to build it.
//!
//! Upstream bodies stream through unchanged (boxed once); synthetic answers (errors, admin pages)
//! are small in-memory bodies.

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
