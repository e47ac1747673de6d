//! The per-request service: find the route by host, count the request, get it a replica (holding
//! it while the route activates), forward it, and turn any failure into the response
//! [`respond::error_response`] gives. Nothing here panics or logs per request at the default
//! level.

mod forward;
pub(crate) mod headers;
pub(crate) mod respond;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::body::BoxBody;
use crate::metrics::Metrics;
use crate::routing::{RouteTable, normalise_host};
use forward::Upstream;
use respond::{ProxyError, error_response};

/// The proxy shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    table: Arc<RouteTable>,
    upstream: Upstream,
    metrics: Metrics,
}

impl Proxy {
    /// A proxy over `table`.
    pub(crate) fn new(
        table: Arc<RouteTable>,
        metrics: Metrics,
        connect_timeout: Duration,
    ) -> Proxy {
        Proxy {
            shared: Arc::new(Shared {
                table,
                upstream: Upstream::new(connect_timeout),
                metrics,
            }),
        }
    }

    /// The service for one client connection from `remote`.
    pub(crate) fn service(&self, remote: SocketAddr) -> ProxyService {
        let client_ip = HeaderValue::from_str(&remote.ip().to_string())
            .expect("an IP address is a valid header value");
        ProxyService {
            proxy: self.clone(),
            client_ip,
        }
    }

    /// Answers one request.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        client_ip: &HeaderValue,
    ) -> Response<BoxBody> {
        let arrived = Instant::now();
        let shared = &self.shared;
        let route = {
            let Some(host) = request_host(&request).and_then(normalise_host) else {
                let error = ProxyError::MissingHost;
                shared
                    .metrics
                    .unrouted(error.status().as_u16(), error.reason());
                return error_response(&error);
            };
            match shared.table.lookup(&host, request.uri().path()) {
                Some(route) => route,
                None => {
                    let error = ProxyError::NoRoute {
                        host: host.into_owned(),
                    };
                    shared
                        .metrics
                        .unrouted(error.status().as_u16(), error.reason());
                    return error_response(&error);
                }
            }
        };
        let guard = route.stats().begin();
        match shared
            .upstream
            .forward(&route, request, client_ip, guard, arrived)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                let metrics = route.metrics();
                metrics.rejected(error.reason());
                metrics.response(error.status().as_u16(), arrived.elapsed());
                error_response(&error)
            }
        }
    }
}

/// The request's host: `:authority` (HTTP/2, absolute-form) or the Host header.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request.headers().get(HOST)?.to_str().ok(),
    }
}

/// The proxy as a tower service for one connection.
#[derive(Debug, Clone)]
pub(crate) struct ProxyService {
    proxy: Proxy,
    client_ip: HeaderValue,
}

impl tower::Service<Request<Incoming>> for ProxyService {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let proxy = self.proxy.clone();
        let client_ip = self.client_ip.clone();
        Box::pin(async move { Ok(proxy.handle(request, &client_ip).await) })
    }
}
