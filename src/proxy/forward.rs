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

mod outgoing;
mod response;
mod timer;
mod tunnel;

use std::error::Error as StdError;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;

use crate::activation::Waiting;
use crate::activity::Activity;
use crate::balancer::Probation;
use crate::balancer::stall::{ClientFault, Exchange, StallTimer};
use crate::balancer::upstream::{Checkout, ConnectError, Sender};
use crate::body::RequestBody;
use crate::proxy::headers;
use crate::proxy::respond::ProxyError;
use crate::route::Route;
use crate::server::Answered;
use crate::spec::UpstreamProtocol;
use crate::stats::RequestGuard;
use outgoing::{Answer, Failed, Outgoing};
use response::{Done, Tracked, malformed};
pub(crate) use timer::SpareTimer;

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
pub(crate) struct Client<'a> {
    /// The peer, and whether its forwarded headers are trusted.
    pub(crate) client: &'a headers::Client,
    /// The authority the request was routed by: the replica's `Host`.
    pub(crate) authority: Option<HeaderValue>,
    /// Upgrade protocols tunnelled.
    pub(crate) allowed_upgrades: &'a [String],
    /// The client gives up after this (gRPC's `grpc-timeout`): a held request waits no longer.
    pub(crate) deadline: Option<Duration>,
    /// The request is a browser's page load (`GET`/`HEAD` accepting `text/html`).
    pub(crate) browser: bool,
    /// An `X-Request-Id` to add: the request came without one.
    pub(crate) request_id: Option<HeaderValue>,
    /// The fields of the request the proxy looks at.
    pub(crate) carried: headers::Carried,
}

/// A routed request, its head rewritten for its replica, and what its forwarding needs to know:
/// all a request keeps while it waits, so kept small.
#[derive(Debug)]
pub(crate) struct Routed {
    /// The route.
    pub(crate) route: Arc<Route>,
    outgoing: Outgoing,
    /// The client's side of an upgrade to tunnel.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    deadline: Option<Duration>,
    /// The HTTP version the client spoke.
    version: Version,
    /// A browser's page load, which may get the route's waiting page.
    waiting_page: bool,
    protocol: UpstreamProtocol,
    response_timeout: Duration,
    stream_idle: Duration,
}

impl Routed {
    /// `request`, from `client`, routed to `route`: its head rewritten for the replica
    /// ([`headers::prepare_request`]).
    #[inline(always)]
    pub(crate) fn new(
        route: Arc<Route>,
        request: Request<RequestBody>,
        client: Client<'_>,
    ) -> Routed {
        let settings = &route.spec().settings;
        let (response_timeout, stream_idle) =
            (settings.response_timeout, settings.stream_idle_timeout);
        let protocol = settings.upstream_protocol;
        let waiting_page = settings.waiting_page && client.browser;
        let (mut parts, body) = request.into_parts();
        let version = parts.version;
        // Upgrades are an HTTP/1.1 mechanism; over HTTP/2 to the replica there is none.
        let upgrade = protocol == UpstreamProtocol::Http1
            && client.carried.upgrade()
            && headers::is_allowed_upgrade(&mut parts, client.allowed_upgrades);
        let client_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let added = headers::prepare_request(
            &mut parts,
            client.client,
            client.authority,
            upgrade,
            client.request_id,
            client.carried,
        );
        // An idempotent request without a body that fails before any response (the replica died,
        // or the pooled connection to it already had) is safe to send again, as nginx's default
        // `proxy_next_upstream error` does.
        let outgoing = Outgoing::new(protocol, parts, added, body, upgrade, stream_idle);
        Routed {
            route,
            outgoing,
            client_upgrade,
            deadline: client.deadline,
            version,
            waiting_page,
            protocol,
            response_timeout,
            stream_idle,
        }
    }
}

impl Upstream {
    /// Requests whose new connections give up after `connect_timeout`.
    pub(crate) fn new(connect_timeout: Duration) -> Upstream {
        Upstream { connect_timeout }
    }

    /// Forwards a routed request and returns the replica's response, whose body keeps the
    /// request counted (and its endpoint leased) until it has been sent to the client. `activity`
    /// is the client connection's, told the route's stream idle timeout; `timer` is its response
    /// timer, when free.
    ///
    /// An `async` block rather than an `async fn`, so that its arguments are kept once (see
    /// [`crate::proxy`]'s `handle`).
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn forward<'a>(
        &'a self,
        mut routed: Routed,
        activity: &'a Arc<Activity>,
        timer: &'a SpareTimer,
        guard: RequestGuard,
        arrived: Instant,
    ) -> impl std::future::Future<Output = Result<Answered, ProxyError>> + Send + 'a {
        async move {
            let route = &routed.route;
            let (response_timeout, stream_idle, protocol) =
                (routed.response_timeout, routed.stream_idle, routed.protocol);
            let outgoing = &mut routed.outgoing;

            let mut backoff = FIRST_BACKOFF;
            let mut attempt = 1;
            let mut cold_start = None;
            // The time now, read again only after a wait: most requests read the clock once on
            // the way in.
            let mut now = arrived;
            let (mut response, mut relayed, lease, stream) = loop {
                // At once if a replica has room; else the request is held, in a future of its own
                // (boxed: holding is the rare path, and inline its state would enlarge every request).
                let granted = match route.activation().try_acquire() {
                    Some(granted) => granted,
                    None => {
                        let granted = Box::pin(route.activation().acquire(Waiting {
                            deadline: routed.deadline,
                            // Only the first attempt may get the page: a retry is already under way.
                            waiting_page: attempt == 1 && routed.waiting_page,
                        }))
                        .await
                        .map_err(|source| ProxyError::Activation {
                            route: route.id().to_owned(),
                            source,
                        })?;
                        now = Instant::now();
                        granted
                    }
                };
                cold_start = cold_start.or(granted.cold_start);
                let lease = granted.lease;
                let endpoint = lease.endpoint();
                let addr = endpoint.addr();
                let timed_out = |expired: Expired| {
                    if expired == Expired::UploadStalled {
                        route.metrics().stream_idle_timeout();
                    }
                    ProxyError::UpstreamTimeout {
                        route: route.id().to_owned(),
                        addr,
                        timeout: match expired {
                            Expired::Response => response_timeout,
                            Expired::UploadStalled => stream_idle,
                        },
                        upload_stalled: expired == Expired::UploadStalled,
                    }
                };
                let checkout = match endpoint.connections().try_get(protocol, now) {
                    Some(checkout) => Ok(checkout),
                    // Boxed, as the hold is: most requests find an idle connection.
                    None => {
                        let got = Box::pin(endpoint.connections().get(
                            protocol,
                            addr,
                            self.connect_timeout,
                            response_timeout,
                        ))
                        .await;
                        now = Instant::now();
                        got
                    }
                };
                let Checkout {
                    sender,
                    mut probation,
                } = match checkout {
                    Ok(checkout) => checkout,
                    Err(ConnectError::Busy { .. }) => return Err(timed_out(Expired::Response)),
                    Err(error) => {
                        drop(lease);
                        if attempt < CONNECT_ATTEMPTS && error.is_refused() {
                            tracing::debug!(route = %route.id(), %addr, attempt, %error, "replica refused the connection; retrying");
                            attempt += 1;
                            Box::pin(tokio::time::sleep(backoff)).await;
                            now = Instant::now();
                            backoff *= 2;
                            continue;
                        }
                        return Err(upstream_error(route, addr, &error));
                    }
                };
                // Scoped, so that nothing of a failed attempt is kept across the pause after it.
                {
                    let mut timer = timer.take((now + response_timeout).into());
                    let mut timeout = timer.sleep();
                    // A response leaves the loop where it arrives: carried out through a result
                    // instead, it would be copied once more on its way.
                    let failed: Failed = match sender {
                        Sender::Http1(connection) => {
                            let Some(mut exchange) = outgoing.send_http1(connection) else {
                                return Err(upstream_error(route, addr, &NothingToResend));
                            };
                            let head = std::future::poll_fn(|cx| exchange.poll_head(cx));
                            let waiting = HeadWait {
                                timeout: &mut timeout,
                                limit: response_timeout,
                                stream_idle,
                                uploading: outgoing.exchange.as_deref(),
                                probation: &mut probation,
                            };
                            match await_head(head, waiting).await {
                                Err(after) => return Err(timed_out(after)),
                                Ok(Ok(head)) => {
                                    // A response proves the connection: its slot in the
                                    // replica's window frees.
                                    drop(probation);
                                    let status = head.parts.status;
                                    let answer = if status == StatusCode::SWITCHING_PROTOCOLS {
                                        Answer::Upgraded(exchange)
                                    } else {
                                        Answer::Http1(exchange.into_body(&head))
                                    };
                                    let response = Response::from_parts(head.parts, answer);
                                    break (response, Some(head.relayed), lease, None);
                                }
                                Ok(Err(error)) => outgoing.http1_failed(exchange, error),
                            }
                        }
                        Sender::Http2 { mut send, _slot } => {
                            let Some(request) = outgoing.take_http2() else {
                                return Err(upstream_error(route, addr, &NothingToResend));
                            };
                            // Boxed: hyper's sending future is large, and most replicas speak HTTP/1.1.
                            let sending = Box::pin(send.try_send_request(request));
                            let waiting = HeadWait {
                                timeout: &mut timeout,
                                limit: response_timeout,
                                stream_idle,
                                uploading: outgoing.exchange.as_deref(),
                                probation: &mut probation,
                            };
                            match Box::pin(await_head(sending, waiting)).await {
                                Err(after) => return Err(timed_out(after)),
                                Ok(Ok(response)) => {
                                    drop(probation);
                                    let stream = Some(Sender::Http2 { send, _slot });
                                    break (outgoing::http2_answer(response), None, lease, stream);
                                }
                                Ok(Err(failed)) => outgoing.http2_failed(failed),
                            }
                        }
                    };
                    let client = outgoing.exchange.as_deref();
                    if let Some(fault) = client.and_then(Exchange::client_fault) {
                        // The client's body ended the exchange: not the replica's doing.
                        drop(probation);
                        return Err(client_error(fault, stream_idle));
                    }
                    if let Some(probation) = probation {
                        probation.failed();
                    }
                    drop(lease);
                    if attempt >= CONNECT_ATTEMPTS || !outgoing.can_retry(&failed) {
                        return Err(upstream_error(route, addr, failed.error.as_ref()));
                    }
                    attempt += 1;
                    if failed.unsent {
                        // The pooled connection closed before taking the request.
                        tracing::debug!(route = %route.id(), %addr, attempt, error = %failed.error, "connection closed before the request was sent; retrying");
                        continue;
                    }
                    tracing::debug!(route = %route.id(), %addr, attempt, error = %failed.error, "replica failed before answering; retrying");
                }
                Box::pin(tokio::time::sleep(backoff)).await;
                now = Instant::now();
                backoff *= 2;
            };

            let status = response.status();
            let client_upgrade = routed.client_upgrade.take();
            if let Some(detail) = malformed(&response, relayed.as_ref(), client_upgrade.is_some()) {
                // Its connection is dropped with the answer: what follows on it cannot be trusted.
                return Err(ProxyError::Upstream {
                    route: route.id().to_owned(),
                    addr: lease.endpoint().addr(),
                    detail: detail.to_owned(),
                });
            }
            if status == StatusCode::SWITCHING_PROTOCOLS {
                // The handshake's fields, `Upgrade` and `Connection` among them, go on as a map.
                if let Some(relayed) = relayed.take() {
                    relayed.append_all_to(response.headers_mut());
                }
                headers::strip_hop_by_hop(response.headers_mut(), true);
                route.metrics().response(status.as_u16(), arrived.elapsed());
                let (parts, answer) = response.into_parts();
                if let (Some(client_upgrade), Answer::Upgraded(exchange)) = (client_upgrade, answer)
                {
                    // The connection now belongs to the tunnel; it never goes back to the pool.
                    tokio::spawn(tunnel::tunnel(
                        client_upgrade,
                        exchange.into_upgraded(),
                        (guard, lease, activity.tunnel()),
                        stream_idle,
                        route.metrics().clone(),
                    ));
                }
                return Ok(Response::from_parts(parts, crate::body::empty()).into());
            }
            // A relayed head leaves its hop-by-hop fields behind as it is written; an HTTP/2
            // replica's map loses them here.
            if relayed.is_none() {
                headers::strip_hop_by_hop(response.headers_mut(), false);
            }
            // The client gets the HTTP version it spoke, whatever the replica answered in (an
            // HTTP/1.0 replica's status line would otherwise cost an HTTP/1.1 client its keep-alive).
            *response.version_mut() = routed.version;
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
            activity.set_stream_idle(stream_idle);
            let done = Done {
                route: Arc::clone(route),
                status: status.as_u16(),
                arrived,
                ended: None,
                open: (guard, lease),
            };
            let exchange = outgoing.exchange.take();
            let (parts, answer) = response.into_parts();
            let body = Tracked {
                inner: Some(answer),
                _stream: stream,
                ended: false,
                stalled: false,
                exchange,
                stall: StallTimer::new(stream_idle),
                activity: Arc::clone(activity),
                done,
            };
            let response = Response::from_parts(parts, body.boxed());
            Ok(Answered { response, relayed })
        }
    }
}

/// What waiting for a response head watches besides the response.
struct HeadWait<'a> {
    /// Fires `limit` after the request was sent whole.
    timeout: &'a mut std::pin::Pin<&'a mut tokio::time::Sleep>,
    limit: Duration,
    /// The route's stream idle timeout: a replica that takes none of the request body for this
    /// long, while the client's bytes wait on it, has stalled (nginx's `proxy_send_timeout`).
    stream_idle: Duration,
    /// The request's body, while it may still be going out: the response timeout counts from
    /// its end, as Envoy's route timeout counts from the end of the downstream request (a
    /// client that stops sending is the body's own stall timer's to end).
    uploading: Option<&'a Exchange>,
    /// A new connection's probation.
    probation: &'a mut Option<Probation>,
}

/// Which limit ran out while a response head was awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// The route's `response_timeout`, counted from the end of the request.
    Response,
    /// The route's `stream_idle_timeout`: the replica stopped taking the request body.
    UploadStalled,
}

/// The response head `sending` gives, or the limit that ran out first: the response timeout, or
/// the stream idle timeout for a replica that stopped taking the request body. A new
/// connection's probation also ends once the replica acknowledged the request and some time
/// passed ([`Probation::is_over`]): slow to answer is not lost, and a slow request must not keep
/// the replica's other requests from new connections. Looked at after 1, 2, 4 ... ms; a reused
/// connection has no probation, and no timer for it.
async fn await_head<T>(
    sending: impl std::future::Future<Output = T>,
    waiting: HeadWait<'_>,
) -> Result<T, Expired> {
    let HeadWait {
        timeout,
        limit,
        stream_idle,
        uploading,
        probation,
    } = waiting;
    tokio::pin!(sending);
    if uploading.is_some_and(|body| !body.sent_whole()) && stream_idle < limit {
        timeout
            .as_mut()
            .reset(tokio::time::Instant::now() + stream_idle);
    }
    let mut every = Duration::from_millis(1);
    let mut look = probation
        .is_some()
        .then(|| Box::pin(tokio::time::sleep(every)));
    loop {
        tokio::select! {
            biased;
            sent = &mut sending => return Ok(sent),
            () = timeout.as_mut() => {
                let now = tokio::time::Instant::now();
                match uploading {
                    Some(body) if !body.sent_whole() => {
                        let stalled_at = body.last_moved() + stream_idle;
                        if stalled_at <= now && !body.awaiting_client() {
                            return Err(Expired::UploadStalled);
                        }
                        let next = if stalled_at > now { stalled_at } else { now + stream_idle };
                        timeout.as_mut().reset(next.min(now + limit));
                    }
                    Some(body) if body.last_moved() + limit > now => {
                        timeout.as_mut().reset(body.last_moved() + limit);
                    }
                    // Dropped with the request inside: it may have been carried out, so it is
                    // never resent.
                    _ => return Err(Expired::Response),
                }
            }
            () = std::future::poll_fn(|cx| match look.as_mut() {
                Some(sleep) => sleep.as_mut().poll(cx),
                None => Poll::Pending,
            }) => {
                if probation.as_ref().is_some_and(Probation::is_over) {
                    drop(probation.take());
                    look = None;
                } else if let Some(sleep) = look.as_mut() {
                    every = (every * 2).min(Duration::from_millis(100));
                    sleep.as_mut().reset(tokio::time::Instant::now() + every);
                }
            }
        }
    }
}

/// A request whose body already went out cannot be sent on another connection.
#[derive(Debug, thiserror::Error)]
#[error("the request body was already sent")]
struct NothingToResend;

/// What an exchange the client's request body ended is answered with.
fn client_error(fault: ClientFault, stream_idle: Duration) -> ProxyError {
    match fault {
        ClientFault::Malformed => ProxyError::BadRequest {
            detail: "the request's chunked body is not well-formed",
        },
        ClientFault::Stalled => ProxyError::RequestTimeout {
            timeout: stream_idle,
        },
    }
}

/// What an exchange that failed by the replica's doing is answered with (the client's doing is
/// [`client_error`]'s, told apart by the request body as it passed: see [`ClientFault`]).
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
