//! Sending a request to a replica: a connection from the replica's pool (or a new one, paced),
//! bodies streamed both ways, protocol upgrades tunnelled, and a short retry while a replica
//! refuses connections.
//!
//! Retries, each on a fresh lease (so possibly another replica): a refused connect happens before
//! the request exists, and a pooled connection that closed before taking the request hands it
//! back untouched, so both retry the very same request, body unread. An idempotent request
//! without a body that failed before any response is replayed from a copy of its head. Any other
//! request whose sending had begun is never retried, and neither is one that timed out.
//!
//! Timeouts: no response head within the route's `response_timeout` → 504 `upstream_timeout`;
//! no byte either way for its `stream_idle_timeout` → the stream ends (counted in
//! `activator_stream_idle_timeouts_total`). A connection goes back to its pool only once its
//! request body was sent whole and its response body was read to the end.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::activation::Waiting;
use crate::activity::{Activity, CountedIo};
use crate::balancer::Lease;
use crate::balancer::stall::{Exchange, StallTimer, Stalled};
use crate::balancer::upstream::{Checkout, ConnectError, Sender, UpstreamBody};
use crate::balancer::{PROBATION_LIMIT, Probation};
use crate::body::{BoxBody, BoxError};
use crate::metrics::RouteMetrics;
use crate::proxy::headers::{self, Client};
use crate::proxy::respond::ProxyError;
use crate::route::Route;
use crate::spec::UpstreamProtocol;
use crate::stats::RequestGuard;

/// Attempts at most, while connections are refused.
const CONNECT_ATTEMPTS: u32 = 6;
/// First pause between attempts; doubles each time (5, 10, 20, 40, 80 ms).
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// How requests reach replicas. Connections themselves live in each endpoint's pool
/// ([`crate::balancer::upstream`]).
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    connect_timeout: Duration,
}

/// Who sent a request and how it was routed.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    /// The peer, and whether its forwarded headers are trusted.
    pub(crate) client: &'a Client,
    /// The authority the request was routed by: the replica's `Host`.
    pub(crate) authority: Option<HeaderValue>,
    /// Upgrade protocols tunnelled.
    pub(crate) allowed_upgrades: &'a [String],
    /// The client connection's counters, told the route's stream idle timeout.
    pub(crate) activity: &'a Arc<Activity>,
    /// The client gives up after this (gRPC's `grpc-timeout`): a held request waits no longer.
    pub(crate) deadline: Option<Duration>,
    /// The HTTP version the client spoke.
    pub(crate) version: Version,
    /// The request is a browser's page load (`GET`/`HEAD` accepting `text/html`).
    pub(crate) browser: bool,
}

impl Upstream {
    /// Requests whose new connections give up after `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Upstream {
        Upstream { connect_timeout }
    }

    /// Forwards one request of `route` and returns the replica's response, whose body keeps the
    /// request counted (and its endpoint leased) until it has been sent to the client.
    pub(crate) async fn forward(
        &self,
        route: &Arc<Route>,
        request: Request<Incoming>,
        context: Context<'_>,
        guard: RequestGuard,
        arrived: Instant,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let settings = route.spec().settings;
        let (response_timeout, stream_idle) =
            (settings.response_timeout, settings.stream_idle_timeout);
        let protocol = settings.upstream_protocol;
        let (mut parts, body) = request.into_parts();
        // Upgrades are an HTTP/1.1 mechanism; over HTTP/2 to the replica there is none.
        let upgrade = protocol == UpstreamProtocol::Http1
            && headers::is_allowed_upgrade(&mut parts, context.allowed_upgrades);
        let client_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        headers::prepare_request(&mut parts, context.client, context.authority, upgrade);
        let shape = Shape::of(protocol, &parts);
        // An idempotent request without a body that fails before any response (the replica died,
        // or the pooled connection to it already had) is safe to send again, as nginx's default
        // `proxy_next_upstream error` does: such a request keeps its head to rebuild it from.
        // Any other request moves its head (and its body) to the replica.
        let replayable = !upgrade && parts.method.is_idempotent() && body.is_end_stream();
        let (mut outgoing, replay, exchange) = if replayable {
            (
                upstream_request(&parts, &shape, UpstreamBody::empty()),
                Some(parts),
                None,
            )
        } else {
            let exchange = Arc::new(Exchange::new());
            let body = UpstreamBody::new(body, Arc::clone(&exchange), stream_idle);
            (
                upstream_request_moving(parts, &shape, body),
                None,
                Some(exchange),
            )
        };

        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        let mut cold_start = None;
        let (mut response, lease, sender) = loop {
            let granted = route
                .activation()
                .acquire(Waiting {
                    deadline: context.deadline,
                    // Only the first attempt may get the page: a retry is already under way.
                    waiting_page: attempt == 1 && settings.waiting_page && context.browser,
                })
                .await
                .map_err(|source| ProxyError::Activation {
                    route: route.id().to_owned(),
                    source,
                })?;
            cold_start = cold_start.or(granted.cold_start);
            let lease = granted.lease;
            let endpoint = lease.endpoint();
            let addr = endpoint.addr();
            let timed_out = || ProxyError::UpstreamTimeout {
                route: route.id().to_owned(),
                addr,
                timeout: response_timeout,
            };
            let Checkout {
                mut sender,
                mut probation,
            } = match endpoint
                .connections()
                .get(protocol, addr, self.connect_timeout, response_timeout)
                .await
            {
                Ok(checkout) => checkout,
                Err(ConnectError::Busy { .. }) => return Err(timed_out()),
                Err(error) => {
                    drop(lease);
                    if attempt < CONNECT_ATTEMPTS && error.is_refused() {
                        tracing::debug!(route = %route.id(), %addr, attempt, %error, "replica refused the connection; retrying");
                        attempt += 1;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                    return Err(upstream_error(route, addr, &error));
                }
            };
            // Pinned where it is rather than moved into a timeout wrapper: the sending future is
            // large, and this is every request's path.
            let sent = {
                let sending = sender.try_send(outgoing);
                tokio::pin!(sending);
                let timeout = tokio::time::sleep(response_timeout);
                tokio::pin!(timeout);
                // A new connection's probation also ends once the replica acknowledged the
                // request: slow to answer is not lost, and a slow request must not keep the
                // replica's other requests from new connections. Looked at after 1, 2, 4 ...
                // ms; a reused connection has no probation, and no timer for it.
                let since = Instant::now();
                let mut every = Duration::from_millis(1);
                let mut look = probation
                    .is_some()
                    .then(|| Box::pin(tokio::time::sleep(every)));
                loop {
                    tokio::select! {
                        biased;
                        sent = &mut sending => break sent,
                        // Dropped with the request inside: it may have been carried out, so it
                        // is never resent.
                        () = &mut timeout => return Err(timed_out()),
                        () = std::future::poll_fn(|cx| match look.as_mut() {
                            Some(sleep) => sleep.as_mut().poll(cx),
                            None => Poll::Pending,
                        }) => {
                            let known = probation.as_ref().and_then(Probation::acknowledged);
                            if known == Some(true)
                                || (known.is_none() && since.elapsed() >= PROBATION_LIMIT)
                            {
                                drop(probation.take());
                                look = None;
                            } else if let Some(sleep) = look.as_mut() {
                                every = (every * 2).min(Duration::from_millis(100));
                                sleep.as_mut().reset(tokio::time::Instant::now() + every);
                            }
                        }
                    }
                }
            };
            match sent {
                Ok(response) => {
                    // A response proves the connection: its slot in the replica's window frees.
                    drop(probation);
                    break (response, lease, sender);
                }
                Err(mut failed) => {
                    if let Some(probation) = probation {
                        probation.failed();
                    }
                    drop(lease);
                    if attempt < CONNECT_ATTEMPTS {
                        // Handed back unsent: the pooled connection closed before taking it.
                        if let Some(unsent) = failed.take_message() {
                            tracing::debug!(route = %route.id(), %addr, attempt, error = %failed.error(), "connection closed before the request was sent; retrying");
                            attempt += 1;
                            outgoing = unsent;
                            continue;
                        }
                        if let Some(head) = &replay {
                            tracing::debug!(route = %route.id(), %addr, attempt, error = %failed.error(), "replica failed before answering; retrying");
                            attempt += 1;
                            outgoing = upstream_request(head, &shape, UpstreamBody::empty());
                            tokio::time::sleep(backoff).await;
                            backoff *= 2;
                            continue;
                        }
                    }
                    return Err(upstream_error(route, addr, failed.error()));
                }
            }
        };

        let status = response.status();
        if let Some(detail) = malformed(&response, client_upgrade.is_some()) {
            // Its connection is dropped with `sender`: what follows on it cannot be trusted.
            return Err(ProxyError::Upstream {
                route: route.id().to_owned(),
                addr: lease.endpoint().addr(),
                detail: detail.to_owned(),
            });
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the tunnel; it never goes back to the pool.
            drop(sender);
            headers::strip_hop_by_hop(response.headers_mut(), true);
            route.metrics().response(status.as_u16(), arrived.elapsed());
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            if let Some(client_upgrade) = client_upgrade {
                tokio::spawn(tunnel(
                    client_upgrade,
                    upstream_upgrade,
                    (guard, lease),
                    stream_idle,
                    route.metrics().clone(),
                ));
            }
            return Ok(response.map(|_| crate::body::empty()));
        }
        headers::strip_hop_by_hop(response.headers_mut(), false);
        // The client gets the HTTP version it spoke, whatever the replica answered in (an
        // HTTP/1.0 replica's status line would otherwise cost an HTTP/1.1 client its keep-alive).
        *response.version_mut() = context.version;
        if let Some(waited) = cold_start {
            // Users and dashboards can see what a cold start cost this response.
            let timing = format!(
                "activator;desc=\"cold start\";dur={:.1}",
                waited.as_secs_f64() * 1e3
            );
            if let Ok(value) = HeaderValue::from_str(&timing) {
                response.headers_mut().append("server-timing", value);
            }
        }
        context.activity.set_stream_idle(stream_idle);
        let done = Done {
            route: Arc::clone(route),
            status: status.as_u16(),
            arrived,
            open: (guard, lease),
        };
        Ok(response.map(|incoming| {
            Tracked {
                inner: incoming,
                sender: Some(sender),
                ended: false,
                stalled: false,
                exchange,
                stall: StallTimer::new(stream_idle),
                activity: Arc::clone(context.activity),
                done,
            }
            .boxed()
        }))
    }
}

/// Why a replica's response cannot be relayed, if it cannot: one framed both by
/// `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3: a sign of request smuggling; nginx
/// answers 502 too) or by a `Transfer-Encoding` whose last coding is not `chunked`, or a `101`
/// to a request that asked for no upgrade (RFC 9110 §15.2.2).
fn malformed(response: &Response<Incoming>, upgrade_asked: bool) -> Option<&'static str> {
    let headers = response.headers();
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        if headers.contains_key(http::header::CONTENT_LENGTH) {
            return Some("the response has both Transfer-Encoding and Content-Length");
        }
        // The last coding must be chunked, or the body runs to the connection's close and its
        // codings would reach the client undone (nginx and Envoy refuse it too).
        let last = headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
            .map(<[u8]>::trim_ascii);
        if !last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked")) {
            return Some("the response's Transfer-Encoding does not end in chunked");
        }
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS && !upgrade_asked {
        return Some("the replica switched protocols for a request that asked for no upgrade");
    }
    None
}

fn upstream_error(
    route: &Route,
    addr: std::net::SocketAddr,
    error: &(dyn StdError + 'static),
) -> ProxyError {
    ProxyError::Upstream {
        route: route.id().to_owned(),
        addr,
        detail: describe(error),
    }
}

/// How a request is written for the replica's protocol: HTTP/1.1 with an origin-form target and
/// a `Host` header; HTTP/2 with an absolute target whose authority becomes `:authority` (the
/// `Host` header, which HTTP/2 replaces, is dropped).
#[derive(Debug)]
struct Shape {
    version: Version,
    authority: Option<Authority>,
}

impl Shape {
    fn of(protocol: UpstreamProtocol, parts: &request::Parts) -> Shape {
        match protocol {
            UpstreamProtocol::Http1 => Shape {
                version: Version::HTTP_11,
                authority: None,
            },
            UpstreamProtocol::H2c => Shape {
                version: Version::HTTP_2,
                authority: parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|host| Authority::try_from(host.as_bytes()).ok()),
            },
        }
    }

    /// The target the replica gets for `uri`.
    fn target(&self, uri: &Uri) -> Uri {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        match &self.authority {
            None => Uri::from(path),
            Some(authority) => Uri::builder()
                .scheme(http::uri::Scheme::HTTP)
                .authority(authority.clone())
                .path_and_query(path.clone())
                .build()
                .unwrap_or_else(|_| Uri::from(path)),
        }
    }

    fn apply(&self, request: &mut Request<UpstreamBody>) {
        *request.version_mut() = self.version;
        if self.version == Version::HTTP_2 {
            request.headers_mut().remove(http::header::HOST);
        }
    }
}

/// The request as the replica gets it, built from a copy of `parts`: the target and version its
/// protocol wants, the rewritten headers.
fn upstream_request(
    parts: &request::Parts,
    shape: &Shape,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = shape.target(&parts.uri);
    *request.headers_mut() = parts.headers.clone();
    shape.apply(&mut request);
    request
}

/// Like [`upstream_request`], moving `parts` instead of copying them.
fn upstream_request_moving(
    parts: request::Parts,
    shape: &Shape,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.uri_mut() = shape.target(&parts.uri);
    *request.method_mut() = parts.method;
    *request.headers_mut() = parts.headers;
    shape.apply(&mut request);
    request
}

/// Copies bytes both ways between the client's and the replica's upgraded connections, keeping
/// the request open (counted, leased) for as long as the tunnel lives, and closing it once
/// nothing moved either way for `stream_idle`.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    open: (RequestGuard, Lease),
    stream_idle: Duration,
    metrics: RouteMetrics,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "protocol upgrade did not complete");
            return;
        }
    };
    let activity = Arc::new(Activity::default());
    let mut client = CountedIo::new(TokioIo::new(client), Arc::clone(&activity));
    let mut upstream = CountedIo::new(TokioIo::new(upstream), Arc::clone(&activity));
    let copying = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copying);
    let look = (stream_idle / 4).max(Duration::from_millis(5));
    let mut last = activity.snapshot();
    let mut last_moved = tokio::time::Instant::now();
    loop {
        tokio::select! {
            result = &mut copying => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep(look) => {
                let now = activity.snapshot();
                if (now.reads, now.writes) != (last.reads, last.writes) {
                    last = now;
                    last_moved = tokio::time::Instant::now();
                } else if last_moved.elapsed() >= stream_idle {
                    tracing::debug!(idle_ms = stream_idle.as_millis() as u64, "closing an idle tunnel");
                    metrics.stream_idle_timeout();
                    break;
                }
            }
        }
    }
    drop(open);
}

/// The innermost useful description of a client error ("connection refused", "connection reset").
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut source = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// What a response body carries until it has been sent: the open request, the endpoint lease,
/// and what the response metrics need.
struct Done<T> {
    route: Arc<Route>,
    status: u16,
    arrived: Instant,
    open: T,
}

impl<T> Drop for Done<T> {
    fn drop(&mut self) {
        self.route
            .metrics()
            .response(self.status, self.arrived.elapsed());
    }
}

/// The replica's response body, streamed as it comes. It ends with an error once nothing moved
/// either way for the route's stream idle timeout; once it has ended, and the request body was
/// sent whole, its connection goes back to the endpoint's pool.
struct Tracked {
    inner: Incoming,
    sender: Option<Sender>,
    ended: bool,
    stalled: bool,
    /// Shared with the request body, if the request has one.
    exchange: Option<Arc<Exchange>>,
    stall: StallTimer,
    /// The client connection, to tell whether its watchdog closed it for a stall.
    activity: Arc<Activity>,
    done: Done<(RequestGuard, Lease)>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(exchange) = &this.exchange {
                    exchange.moved();
                }
                this.stall.progressed();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let ended = self.ended || self.inner.is_end_stream();
        let sent_whole = self.exchange.as_ref().is_none_or(|e| e.sent_whole());
        if ended && sent_whole {
            if let Some(sender) = self.sender.take() {
                self.done.open.1.endpoint().connections().put(sender);
            }
        } else if !ended && !self.stalled && self.activity.stalled() {
            // The client connection's watchdog closed it: the client stopped reading.
            self.done.route.metrics().stream_idle_timeout();
        }
        // Otherwise the connection is mid-exchange: dropping it closes it.
    }
}
