//! A request on its way to a replica, in the replica's protocol, and what can be sent again when
//! an attempt fails.
//!
//! HTTP/1.1: the head is written from the prepared parts, which stay here, so a request without
//! a body can be sent again at no cost; the body goes out once, and comes back only if not a
//! byte of the request reached the socket. HTTP/2: the request is hyper's, built from the parts
//! (copied for a request that may be replayed, moved otherwise); hyper hands back a request its
//! connection closed before taking.

use std::sync::Arc;

use http::uri::Authority;
use http::{Request, Response, Uri, Version, request};
use hyper::body::Incoming;

use crate::balancer::stall::Exchange;
use crate::balancer::upstream::exchange::{self, ExchangeError, ResponseBody};
use crate::balancer::upstream::{Connection, UpstreamBody};
use crate::body::RequestBody;
use crate::http1::Framing;
use crate::http1::passthrough::Passthrough;
use crate::proxy::headers::Added;
use crate::spec::UpstreamProtocol;

/// What a replica answered, before its body.
#[derive(Debug)]
pub(crate) enum Answer {
    /// An HTTP/1.1 response whose body follows on the connection.
    Http1(ResponseBody<UpstreamBody>),
    /// A `101`: the connection now belongs to the tunnel.
    Upgraded(exchange::Exchange<UpstreamBody>),
    /// An HTTP/2 response.
    Http2(Incoming),
}

/// Why an attempt failed, and whether the request can go again.
#[derive(Debug)]
pub(crate) struct Failed {
    /// What went wrong.
    pub(crate) error: Box<dyn std::error::Error + Send + Sync>,
    /// The request went out untouched (the connection was closed before taking it): it can be
    /// sent again at once.
    pub(crate) unsent: bool,
}

/// What an HTTP/2 request needs besides the head.
#[derive(Debug)]
struct Http2 {
    /// Where the request goes (`:authority`).
    authority: Option<Authority>,
    /// The request hyper handed back unsent.
    unsent: Option<Request<UpstreamBody>>,
}

/// A request to send, as often as it may be sent.
#[derive(Debug)]
pub(crate) struct Outgoing {
    parts: request::Parts,
    /// The fields the activator adds that `parts` does not carry.
    added: Added,
    /// How the body is framed for an HTTP/1.1 replica.
    framing: Framing,
    /// The body, until it went out.
    body: Option<UpstreamBody>,
    /// Shared by the request and response bodies: when bytes last moved, whether the request
    /// was sent whole. `None` for a request without a body.
    pub(crate) exchange: Option<Arc<Exchange>>,
    /// An idempotent request without a body: it may be sent again after a failure.
    replayable: bool,
    /// HTTP/2's part (boxed: most replicas speak HTTP/1.1).
    h2: Option<Box<Http2>>,
}

impl Outgoing {
    /// The request whose rewritten head is `parts` and whose body is `body`, for a replica
    /// speaking `protocol`; a stalled body fails after `stream_idle`.
    #[inline(always)]
    pub(crate) fn new(
        protocol: UpstreamProtocol,
        parts: request::Parts,
        added: Added,
        body: RequestBody,
        upgrade: bool,
        stream_idle: std::time::Duration,
    ) -> Outgoing {
        use http_body::Body as _;
        let empty = body.is_end_stream();
        let framing = if empty {
            Framing::Empty
        } else {
            body.size_hint()
                .exact()
                .map_or(Framing::Chunked, Framing::Length)
        };
        let exchange = (!empty).then(|| Arc::new(Exchange::new()));
        let body = match &exchange {
            Some(exchange) => UpstreamBody::new(body, Arc::clone(exchange), stream_idle),
            None => UpstreamBody::empty(),
        };
        let h2 = (protocol == UpstreamProtocol::H2c).then(|| {
            let authority = parts
                .headers
                .get(http::header::HOST)
                .and_then(|host| Authority::try_from(host.as_bytes()).ok());
            Box::new(Http2 {
                authority,
                unsent: None,
            })
        });
        Outgoing {
            replayable: !upgrade && parts.method.is_idempotent() && empty,
            parts,
            added,
            framing,
            body: Some(body),
            exchange,
            h2,
        }
    }

    /// Starts an HTTP/1.1 exchange on `connection`, unless the body already went out.
    pub(crate) fn send_http1(
        &mut self,
        connection: Box<Connection>,
    ) -> Option<exchange::Exchange<UpstreamBody>> {
        let body = self.body.take()?;
        Some(connection.send(&self.parts, self.added.fields(), self.framing, body))
    }

    /// What an HTTP/1.1 exchange that failed with `error` leaves to send again.
    pub(crate) fn http1_failed(
        &mut self,
        exchange: exchange::Exchange<UpstreamBody>,
        error: ExchangeError,
    ) -> Failed {
        let unsent = exchange.nothing_sent();
        self.body = if unsent {
            exchange.into_unsent_body()
        } else if self.replayable {
            Some(UpstreamBody::empty())
        } else {
            None
        };
        Failed {
            error: Box::new(error),
            unsent,
        }
    }

    /// The request for an HTTP/2 stream: the one hyper handed back, else a copy of the head if
    /// it may be sent again, else the head itself (once).
    pub(crate) fn take_http2(&mut self) -> Option<Request<UpstreamBody>> {
        let h2 = self.h2.as_mut()?;
        if let Some(unsent) = h2.unsent.take() {
            return Some(unsent);
        }
        let body = self.body.take()?;
        let target = target(&self.parts.uri, h2.authority.as_ref());
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = target;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = if self.replayable {
            self.body = Some(UpstreamBody::empty());
            self.parts.headers.clone()
        } else {
            std::mem::take(&mut self.parts.headers)
        };
        if let Some(passed) = self.parts.extensions.get::<Passthrough>() {
            passed.append_to(request.headers_mut());
        }
        self.added.append_to(request.headers_mut());
        // HTTP/2 carries the authority in `:authority`, not in `Host`.
        request.headers_mut().remove(http::header::HOST);
        Some(request)
    }

    /// Notes what an HTTP/2 attempt that failed handed back.
    pub(crate) fn http2_failed(
        &mut self,
        mut failed: hyper::client::conn::TrySendError<Request<UpstreamBody>>,
    ) -> Failed {
        let unsent = failed.take_message();
        let is_unsent = unsent.is_some();
        if let Some(h2) = self.h2.as_mut() {
            h2.unsent = unsent;
        }
        Failed {
            error: Box::new(failed.into_error()),
            unsent: is_unsent,
        }
    }

    /// Whether another attempt has something to send.
    pub(crate) fn can_retry(&self, failed: &Failed) -> bool {
        failed.unsent || (self.replayable && self.body.is_some())
    }
}

/// The target an HTTP/2 replica gets: absolute, with the routed authority.
fn target(uri: &Uri, authority: Option<&Authority>) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    match authority {
        None => Uri::from(path),
        Some(authority) => Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query(path.clone())
            .build()
            .unwrap_or_else(|_| Uri::from(path)),
    }
}

/// An HTTP/2 response as [`Answer`].
pub(crate) fn http2_answer(response: Response<Incoming>) -> Response<Answer> {
    response.map(Answer::Http2)
}
