//! A replica's response on its way to the client: what makes one unfit to relay, and the body
//! that streams it while keeping its request counted, its endpoint leased and its connection
//! accounted for.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::outgoing::Answer;
use crate::activity::Activity;
use crate::balancer::Lease;
use crate::balancer::stall::{Exchange, StallTimer, Stalled};
use crate::balancer::upstream::Sender;
use crate::body::BoxError;
use crate::http1;
use crate::http1::relayed::{Relayed, framing_fault};
use crate::route::Route;
use crate::stats::RequestGuard;

/// Why a replica's response cannot be relayed, if it cannot: one framed both by
/// `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3: a sign of request smuggling; nginx
/// answers 502 too) or by a `Transfer-Encoding` other than `chunked` alone, or a `101`
/// to a request that asked for no upgrade (RFC 9110 §15.2.2).
pub(crate) fn malformed<B>(
    response: &Response<B>,
    relayed: Option<&Relayed>,
    upgrade_asked: bool,
) -> Option<&'static str> {
    let fault = match relayed {
        Some(relayed) => relayed.malformed(),
        // An HTTP/2 replica's answer, as a map.
        None => {
            let headers = response.headers();
            framing_fault(
                headers.contains_key(http::header::TRANSFER_ENCODING),
                headers.contains_key(http::header::CONTENT_LENGTH),
                http1::head::chunked_alone(headers),
            )
        }
    };
    if fault.is_some() {
        return fault;
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrade_asked {
        return Some("the replica switched protocols for a request that asked for no upgrade");
    }
    None
}

/// What a response body carries until it has been sent: the open request, the endpoint lease,
/// and what the response metrics need.
pub(crate) struct Done {
    pub(crate) route: Arc<Route>,
    pub(crate) status: u16,
    pub(crate) arrived: Instant,
    /// When the body ended, if the clock was read for it already.
    pub(crate) ended: Option<Instant>,
    pub(crate) open: (RequestGuard, Lease),
}

impl Drop for Done {
    fn drop(&mut self) {
        // One clock read ends the request for the metrics, the route's counters and the pool.
        let ended = self.ended.unwrap_or_else(Instant::now);
        self.route
            .metrics()
            .response(self.status, ended.saturating_duration_since(self.arrived));
        self.open.0.end_at(ended.into());
    }
}

/// The replica's response body, streamed as it comes. It ends with an error once nothing moved
/// either way for the route's stream idle timeout; once it has ended, and the request body was
/// sent whole, an HTTP/1.1 connection goes back to the endpoint's pool.
pub(crate) struct Tracked {
    /// `None` only while it is dropped.
    pub(crate) inner: Option<Answer>,
    /// An HTTP/2 stream's place, freed when the body is done.
    pub(crate) _stream: Option<Sender>,
    pub(crate) ended: bool,
    pub(crate) stalled: bool,
    /// Shared with the request body, if the request has one.
    pub(crate) exchange: Option<Arc<Exchange>>,
    pub(crate) stall: StallTimer,
    /// The client connection, to tell whether its watchdog closed it for a stall.
    pub(crate) activity: Arc<Activity>,
    pub(crate) done: Done,
}

impl Tracked {
    fn inner_end_stream(&self) -> bool {
        match &self.inner {
            Some(Answer::Http1(body)) => body.is_end_stream(),
            Some(Answer::Http2(body)) => body.is_end_stream(),
            Some(Answer::Upgraded(_)) | None => true,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Some(Answer::Http1(body)) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            Some(Answer::Http2(body)) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            Some(Answer::Upgraded(_)) | None => Poll::Ready(None),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(exchange) = &this.exchange {
                    exchange.moved();
                }
                this.stall.progressed();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.stall.poll_stalled(cx, this.exchange.as_deref()) {
                Poll::Ready(()) => {
                    this.stalled = true;
                    this.done.route.metrics().stream_idle_timeout();
                    Poll::Ready(Some(Err(Stalled(this.stall.timeout()).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(Answer::Http1(body)) => body.size_hint(),
            Some(Answer::Http2(body)) => body.size_hint(),
            Some(Answer::Upgraded(_)) | None => SizeHint::with_exact(0),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let ended = self.ended || self.inner_end_stream();
        if !ended && !self.stalled && self.activity.stalled() {
            // The client connection's watchdog closed it: the client stopped reading.
            self.done.route.metrics().stream_idle_timeout();
        }
        let sent_whole = self.exchange.as_ref().is_none_or(|e| e.sent_whole());
        if ended
            && sent_whole
            && let Some(Answer::Http1(body)) = self.inner.take()
            && let Some(connection) = body.into_reusable()
        {
            let now = Instant::now();
            self.done.ended = Some(now);
            self.done
                .open
                .1
                .endpoint()
                .connections()
                .put(connection, now);
        }
        // Otherwise the connection is mid-exchange: dropping it closes it.
    }
}
