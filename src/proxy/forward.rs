//! Sending a request to a replica: a connection from the replica's pool (or a new one),
//! bodies streamed both ways, protocol upgrades tunnelled, and a short retry while a replica
//! refuses connections.
//!
//! Retries, each on a fresh lease (so possibly another replica): a refused connect happens before
//! the request exists, and a pooled connection that closed before taking the request hands it
//! back untouched, so both retry the very same request, body unread. An idempotent request
//! without a body that failed before any response is replayed from a copy of its head. Any other
//! request whose sending had begun is never retried.
//!
//! A connection goes back to its pool once its response body has been read to the end.

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
use hyper_util::rt::TokioIo;

use crate::balancer::Lease;
use crate::balancer::upstream::{Connection, UpstreamBody};
use crate::body::BoxBody;
use crate::proxy::headers;
use crate::proxy::respond::ProxyError;
use crate::route::Route;
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
        // An idempotent request without a body that fails before any response (the replica died,
        // or the pooled connection to it already had) is safe to send again, as nginx's default
        // `proxy_next_upstream error` does: such a request keeps its head to rebuild it from.
        // Any other request moves its head to the replica.
        let replayable = !upgrade && parts.method.is_idempotent() && body.is_end_stream();
        let (mut outgoing, replay) = if replayable {
            (upstream_request(&parts, UpstreamBody::empty()), Some(parts))
        } else {
            let body = UpstreamBody::new(body);
            (upstream_request_moving(parts, body), None)
        };

        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        let (mut response, lease, connection) = loop {
            let lease =
                route
                    .activation()
                    .acquire()
                    .await
                    .map_err(|source| ProxyError::Activation {
                        route: route.id().to_owned(),
                        source,
                    })?;
            let endpoint = lease.endpoint();
            let addr = endpoint.addr();
            let mut connection = match endpoint.pool().checkout().await {
                Some(pooled) => pooled,
                None => match endpoint
                    .pool()
                    .connect_or_reuse(addr, self.connect_timeout)
                    .await
                {
                    Ok(fresh) => fresh,
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
                },
            };
            match connection.try_send_request(outgoing).await {
                Ok(response) => break (response, lease, connection),
                Err(mut failed) => {
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
                            outgoing = upstream_request(head, UpstreamBody::empty());
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
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the tunnel; it never goes back to the pool.
            drop(connection);
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
            open: (guard, lease),
        };
        Ok(response.map(|incoming| {
            Tracked {
                inner: incoming,
                connection: Some(connection),
                ended: false,
                done,
            }
            .boxed()
        }))
    }
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

/// The request as the replica gets it, built from a copy of `parts`: origin-form URI, HTTP/1.1,
/// the rewritten headers.
fn upstream_request(parts: &request::Parts, body: UpstreamBody) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = origin_form(&parts.uri);
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Like [`upstream_request`], moving `parts` instead of copying them.
fn upstream_request_moving(parts: request::Parts, body: UpstreamBody) -> Request<UpstreamBody> {
    let mut request = Request::new(body);
    *request.uri_mut() = origin_form(&parts.uri);
    *request.method_mut() = parts.method;
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers;
    request
}

/// The path and query of `uri`, as an HTTP/1.1 request line to an origin server carries them.
fn origin_form(uri: &Uri) -> Uri {
    Uri::from(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    )
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

/// The replica's response body, streamed as it comes; once it has ended, its connection goes
/// back to the endpoint's pool.
struct Tracked {
    inner: Incoming,
    connection: Option<Connection>,
    ended: bool,
    done: Done<(RequestGuard, Lease)>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
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
        // A body dropped before its end leaves the connection mid-response: let it close.
        if (self.ended || self.inner.is_end_stream())
            && let Some(connection) = self.connection.take()
        {
            self.done.open.1.endpoint().pool().put(connection);
        }
    }
}
