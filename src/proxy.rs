//! The per-request service: check the request ([`checks`]), find the route by host, count the
//! request, get it a replica (holding it while the route activates), forward it, and turn any
//! failure into the response [`respond::error_response`] gives. Nothing here panics or logs per
//! request at the default level.

pub(crate) mod checks;
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

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::activation;
use crate::activity::Activity;
use crate::body::BoxBody;
use crate::config::Forwarding;
use crate::metrics::Metrics;
use crate::routing::{RouteTable, normalise_host};
use forward::Upstream;
use headers::Client;
use respond::{ProxyError, Reply, error_response};

/// What the proxy needs to know besides the routes.
#[derive(Debug, Clone)]
pub(crate) struct ProxySettings {
    /// Connecting to a replica gives up after this.
    pub(crate) connect_timeout: Duration,
    /// Request headers beyond this many bytes get 431.
    pub(crate) max_header_bytes: usize,
    /// Trusted proxies and allowed upgrades.
    pub(crate) forwarding: Forwarding,
}

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
    settings: ProxySettings,
}

impl Proxy {
    /// A proxy over `table`.
    pub(crate) fn new(table: Arc<RouteTable>, metrics: Metrics, settings: ProxySettings) -> Proxy {
        Proxy {
            shared: Arc::new(Shared {
                table,
                upstream: Upstream::new(settings.connect_timeout),
                metrics,
                settings,
            }),
        }
    }

    /// The service for one client connection from `remote`, whose traffic `activity` counts.
    pub(crate) fn service(&self, remote: SocketAddr, activity: &Arc<Activity>) -> ProxyService {
        let ip = remote.ip();
        let client = Client {
            ip: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            trusted: self
                .shared
                .settings
                .forwarding
                .trusted_proxies
                .iter()
                .any(|net| net.contains(&ip)),
        };
        ProxyService {
            proxy: self.clone(),
            client: Arc::new(client),
            activity: Arc::clone(activity),
        }
    }

    /// Answers one request.
    async fn handle(
        &self,
        mut request: Request<Incoming>,
        client: &Client,
        activity: &Arc<Activity>,
    ) -> Response<BoxBody> {
        let arrived = Instant::now();
        let shared = &self.shared;
        let reply = Reply {
            request_id: Some(request_id(request.headers_mut())),
            grpc: respond::is_grpc(request.headers()),
        };
        let refuse = |error: ProxyError| {
            shared
                .metrics
                .unrouted(error.status().as_u16(), error.reason());
            log_refusal(&error, &reply);
            error_response(&error, &reply)
        };
        let authority = match checks::routed_authority(&request, shared.settings.max_header_bytes) {
            Ok(authority) => authority,
            Err(error) => return refuse(error),
        };
        let Some(host) = normalise_host(authority) else {
            return refuse(ProxyError::MissingHost);
        };
        let Some(route) = shared.table.lookup(&host, request.uri().path()) else {
            let host = host.into_owned();
            return refuse(ProxyError::NoRoute { host });
        };
        // The Host the replica sees is the authority the request was routed by: the Host header
        // itself unless the target (absolute form, HTTP/2's :authority) named it.
        let authority = request
            .uri()
            .authority()
            .and_then(|_| HeaderValue::from_str(authority).ok());
        let deadline = reply
            .grpc
            .then(|| request.headers().get("grpc-timeout").and_then(grpc_timeout))
            .flatten();
        let version = request.version();
        let browser = matches!(*request.method(), http::Method::GET | http::Method::HEAD)
            && request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("text/html"));
        let guard = route.stats().begin();
        let forwarding = &shared.settings.forwarding;
        match shared
            .upstream
            .forward(
                &route,
                request.map(crate::body::RequestBody::Hyper),
                forward::Context {
                    client,
                    authority,
                    allowed_upgrades: &forwarding.allowed_upgrades,
                    activity,
                    deadline,
                    version,
                    browser,
                },
                guard,
                arrived,
            )
            .await
        {
            Ok(response) => response,
            Err(error) => {
                let metrics = route.metrics();
                metrics.rejected(error.reason());
                metrics.response(error.status().as_u16(), arrived.elapsed());
                log_refusal(&error, &reply);
                error_response(&error, &reply)
            }
        }
    }
}

/// A gRPC client's `grpc-timeout` (an integer of at most 8 digits and a unit: `H`ours,
/// `M`inutes, `S`econds, `m`illi-, `u` micro-, `n`anoseconds), if it is well formed.
fn grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The header that carries a request's id, in the log and to the replica.
pub(crate) static REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The request's `x-request-id`, as a client or an ingress sent it, else a new one (added to the
/// request, so the replica sees it too).
fn request_id(headers: &mut http::HeaderMap) -> HeaderValue {
    let new_id = || {
        let mut hex = [0u8; 32];
        let random = fastrand::u128(..);
        for (i, byte) in hex.iter_mut().enumerate() {
            *byte = b"0123456789abcdef"[((random >> (i * 4)) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&hex).expect("hex digits are a valid header value")
    };
    // One lookup of the map either way.
    match headers.entry(&REQUEST_ID) {
        http::header::Entry::Occupied(kept)
            if !kept.get().is_empty() && kept.get().len() <= 128 =>
        {
            kept.get().clone()
        }
        http::header::Entry::Occupied(mut odd) => {
            let id = new_id();
            odd.insert(id.clone());
            id
        }
        http::header::Entry::Vacant(slot) => slot.insert(new_id()).clone(),
    }
}

/// Logs what the activator answered itself, with the detail the client is not given (the
/// replica's address, what failed): replica failures and timeouts at WARN, the client's own
/// mistakes and overload at DEBUG (a line per request would flood the log).
fn log_refusal(error: &ProxyError, reply: &Reply) {
    let id = reply
        .request_id
        .as_ref()
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let reason = error.reason();
    match error {
        ProxyError::Upstream { .. }
        | ProxyError::UpstreamTimeout { .. }
        | ProxyError::Activation {
            source: activation::ActivationError::Timeout { .. },
            ..
        } => tracing::warn!(request_id = id, reason, "{error}"),
        _ => tracing::debug!(request_id = id, reason, "{error}"),
    }
}

/// The proxy as a tower service for one connection.
#[derive(Debug, Clone)]
pub(crate) struct ProxyService {
    proxy: Proxy,
    client: Arc<Client>,
    activity: Arc<Activity>,
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
        let client = Arc::clone(&self.client);
        let activity = Arc::clone(&self.activity);
        Box::pin(async move { Ok(proxy.handle(request, &client, &activity).await) })
    }
}
