//! Sending a request to a replica: one pooled HTTP/1.1 client shared by all requests, bodies
//! streamed both ways, protocol upgrades tunnelled, and a short retry (on another lease, so
//! possibly another replica) while a replica refuses connections before any byte of the request
//! was sent, or when an idempotent request without a body failed before any response.
//!
//! Retrying needs the request body back after a failed connect. The client drops the request on
//! a connect error, so the body travels wrapped in an [`UpstreamBody`] that, when dropped without
//! ever having been polled, hands the untouched body back through a oneshot channel. A body that
//! was polled even once is never retried.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, request};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

use crate::balancer::Lease;
use crate::body::BoxBody;
use crate::proxy::headers;
use crate::proxy::respond::ProxyError;
use crate::route::Route;
use crate::stats::RequestGuard;

/// Attempts at most, while connections are refused.
const CONNECT_ATTEMPTS: u32 = 6;
/// First pause between attempts; doubles each time (5, 10, 20, 40, 80 ms).
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// The client all requests to replicas share.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpConnector, UpstreamBody>,
}

impl Upstream {
    /// A pooled client whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .set_host(false)
            .build(connector);
        Upstream { client }
    }

    /// Forwards one request of `route` and returns the replica's response, whose body keeps the
    /// request counted (and its endpoint leased) until it has been sent to the client.
    pub async fn forward(
        &self,
        route: &Arc<Route>,
        request: Request<Incoming>,
        client_ip: &http::HeaderValue,
        guard: RequestGuard,
        arrived: Instant,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let upgrade = headers::is_upgrade(&parts);
        let client_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        headers::prepare_request(&mut parts, client_ip, upgrade);

        let mut body = Some(body);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        let (mut response, lease) = loop {
            let lease = route
                .acquire()
                .await
                .map_err(|source| ProxyError::Activation {
                    route: route.id().to_owned(),
                    source,
                })?;
            let (upstream_body, mut reclaim) = UpstreamBody::new(body.take());
            let request = upstream_request(&parts, &lease, upstream_body);
            match self.client.request(request).await {
                Ok(response) => break (response, lease),
                Err(error) => {
                    let addr = lease.endpoint().addr();
                    drop(lease);
                    let refused = error.is_connect() && is_refused(&error);
                    // An idempotent request without a body that failed before any response (the
                    // replica died, or the pooled connection to it already had) is safe to send
                    // again, as nginx's default `proxy_next_upstream error` does.
                    let replayable = !error.is_connect()
                        && !upgrade
                        && parts.method.is_idempotent()
                        && reclaim.had_no_body();
                    let retry = attempt < CONNECT_ATTEMPTS && (refused || replayable);
                    if retry && let Some(untouched) = reclaim.take_back() {
                        tracing::debug!(route = %route.id(), %addr, attempt, %error, "replica failed before answering; retrying");
                        body = untouched;
                        attempt += 1;
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                        continue;
                    }
                    return Err(ProxyError::Upstream {
                        route: route.id().to_owned(),
                        addr,
                        detail: describe(&error),
                    });
                }
            }
        };

        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            headers::strip_hop_by_hop(response.headers_mut(), true);
            route.metrics().response(status.as_u16(), arrived.elapsed());
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            if let Some(client_upgrade) = client_upgrade {
                tokio::spawn(tunnel(client_upgrade, upstream_upgrade, (guard, lease)));
            }
            return Ok(response.map(|_| crate::body::empty()));
        }
        headers::strip_hop_by_hop(response.headers_mut(), false);
        let done = Done {
            route: Arc::clone(route),
            status: status.as_u16(),
            arrived,
            _open: (guard, lease),
        };
        Ok(response.map(|incoming| {
            Tracked {
                inner: incoming,
                _done: done,
            }
            .boxed()
        }))
    }
}

fn upstream_request(
    parts: &request::Parts,
    lease: &Lease,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(lease.endpoint().authority().clone());
    uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Copies bytes both ways between the client's and the replica's upgraded connections, keeping
/// the request open (counted, leased) for as long as the tunnel lives.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    open: (RequestGuard, Lease),
) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(%error, "upgraded connection ended with an error");
            }
        }
        Err(error) => tracing::debug!(%error, "protocol upgrade did not complete"),
    }
    drop(open);
}

fn is_refused(error: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
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

/// A request body on its way to a replica; see the module docs for the hand-back.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Option<Incoming>,
    hand_back: Option<oneshot::Sender<Incoming>>,
}

/// Receives a body handed back unpolled.
pub(crate) struct Reclaim(Option<oneshot::Receiver<Incoming>>);

impl Reclaim {
    /// Whether the request had no body at all.
    fn had_no_body(&self) -> bool {
        self.0.is_none()
    }

    /// `Some(body)` if the body can be sent again: `Some(None)` for a request without a body.
    fn take_back(&mut self) -> Option<Option<Incoming>> {
        match self.0.take() {
            None => Some(None),
            Some(mut rx) => rx.try_recv().ok().map(Some),
        }
    }
}

impl UpstreamBody {
    fn new(body: Option<Incoming>) -> (UpstreamBody, Reclaim) {
        match body {
            Some(body) if !body.is_end_stream() => {
                let (tx, rx) = oneshot::channel();
                (
                    UpstreamBody {
                        inner: Some(body),
                        hand_back: Some(tx),
                    },
                    Reclaim(Some(rx)),
                )
            }
            _ => (
                UpstreamBody {
                    inner: None,
                    hand_back: None,
                },
                Reclaim(None),
            ),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.hand_back = None;
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let (Some(tx), Some(body)) = (self.hand_back.take(), self.inner.take()) {
            let _ = tx.send(body);
        }
    }
}

/// What a response body carries until it has been sent: the open request, the endpoint lease,
/// and what the response metrics need.
struct Done<T> {
    route: Arc<Route>,
    status: u16,
    arrived: Instant,
    _open: T,
}

impl<T> Drop for Done<T> {
    fn drop(&mut self) {
        self.route
            .metrics()
            .response(self.status, self.arrived.elapsed());
    }
}

/// The replica's response body, streamed as it comes.
struct Tracked {
    inner: Incoming,
    _done: Done<(RequestGuard, Lease)>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
