//! HTTP/1.1 messages as the activator reads and writes them itself (RFC 9112): heads parsed with
//! `httparse` (a request's into `http`'s types but for the fields only its replica reads, a
//! replica's response fields kept as they came), heads written back out, and how each body is
//! framed (a `Content-Length`, the chunked coding, or the connection's close).
//!
//! Pure: no sockets, no timers. [`crate::server::http1`] serves client connections with it and
//! [`crate::balancer::upstream`] talks to replicas with it; both sides share the one notion of
//! framing here, so what the activator accepts from one peer and what it writes to the other can
//! never disagree.
//!
//! Strict where a lenient reading could be turned against a proxy (request smuggling): a request
//! with both `Transfer-Encoding` and `Content-Length`, with a transfer coding other than a final
//! `chunked`, with several differing lengths, or with `Transfer-Encoding` in HTTP/1.0 is refused
//! (RFC 9112 §6.1, §6.3), as is any head `httparse` rejects.

pub(crate) mod chunked;
pub(crate) mod head;
pub(crate) mod names;
pub(crate) mod passthrough;
pub(crate) mod relayed;

pub(crate) use chunked::{ChunkedDecoder, Decoded};
pub(crate) use head::{HeadError, parse_response, write_request_head};

/// How a message's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    Close,
}

impl Framing {
    /// Whether the message has no body bytes to read.
    pub(crate) fn is_empty(self) -> bool {
        matches!(self, Framing::Empty | Framing::Length(0))
    }
}

/// Header fields a head may have at most: hyper's and Envoy's default (`max_headers_count`).
pub(crate) const MAX_HEADERS: usize = 100;

/// Writes one `name: value` field line.
pub(crate) fn write_field_line(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Adds fields kept as slices of the head they came in (a replica's response fields, a request's
/// that passed through) to `headers`, their values sharing the head's bytes.
pub(crate) fn append_fields<'a>(
    head: &bytes::Bytes,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    headers: &mut http::HeaderMap,
) {
    for (name, value) in fields {
        // Both were checked as the head was parsed (`httparse` takes the same characters).
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_maybe_shared(head.slice_ref(value)),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
}
