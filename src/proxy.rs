//! The per-request service: check the request ([`checks`]), find the route by host, count the
//! request, get it a replica (holding it while the route activates), forward it, and turn any
//! failure into the response [`respond::error_response`] gives. Nothing here panics or logs per
//! request at the default level.

pub(crate) mod checks;
mod forward;
pub(crate) mod headers;
pub(crate) mod respond;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use http::{HeaderValue, Request, Response};

use crate::activation;
use crate::activity::Activity;
use crate::body::{BoxBody, RequestBody};
use crate::config::Forwarding;
use crate::http1::HeadError;
use crate::metrics::Metrics;
use crate::routing::{RouteTable, normalise_host};
use crate::server::{Answered, Respond};
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
            client,
            activity: Arc::clone(activity),
            timer: forward::SpareTimer::default(),
        }
    }

    /// Answers one request.
    ///
    /// Routed and rewritten at once, before anything waits: only what the wait needs is kept in
    /// the future, which keeps every request's future (and so every held request) small. The
    /// future is the forwarding's own, wrapped by hand rather than by an `async` block, which
    /// would keep a second copy of it.
    fn handle<'a>(
        &'a self,
        request: Request<RequestBody>,
        client: &'a Client,
        activity: &'a Arc<Activity>,
        timer: &'a forward::SpareTimer,
    ) -> impl Future<Output = Answered> + Send + 'a {
        let arrived = Instant::now();
        match self.route(request, client) {
            Ok((routed, reply)) => {
                let route = Arc::clone(&routed.route);
                let guard = route.stats().begin_at(arrived.into());
                Either::Right(Answering {
                    forwarding: self
                        .shared
                        .upstream
                        .forward(routed, activity, timer, guard, arrived),
                    route,
                    reply,
                    arrived,
                })
            }
            Err((error, reply)) => {
                self.shared
                    .metrics
                    .unrouted(error.status().as_u16(), error.reason());
                log_refusal(&error, &reply);
                Either::Left(std::future::ready(error_response(&error, &reply).into()))
            }
        }
    }

    /// Checks `request`, finds its route and rewrites its head for the replica; also returns
    /// how to answer it should anything fail.
    #[allow(clippy::result_large_err)]
    #[inline(always)]
    fn route(
        &self,
        request: Request<RequestBody>,
        client: &Client,
    ) -> Result<(forward::Routed, Reply), (ProxyError, Reply)> {
        let shared = &self.shared;
        let carried = headers::Carried::of(request.headers());
        let (request_id, id_to_add) = request_id(request.headers(), carried.request_id);
        let reply = Reply {
            request_id: Some(request_id),
            grpc: carried.content_type && respond::is_grpc(request.headers()),
        };
        let authority = match checks::routed_authority(&request, shared.settings.max_header_bytes) {
            Ok(authority) => authority,
            Err(error) => return Err((error, reply)),
        };
        let Some(host) = normalise_host(authority) else {
            return Err((ProxyError::MissingHost, reply));
        };
        let Some(route) = shared.table.lookup(&host, request.uri().path()) else {
            let host = host.into_owned();
            return Err((ProxyError::NoRoute { host }, reply));
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
        let browser = matches!(*request.method(), http::Method::GET | http::Method::HEAD)
            && carried.accept
            && request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("text/html"));
        let routed = forward::Routed::new(
            route,
            request,
            forward::Client {
                client,
                authority,
                allowed_upgrades: &shared.settings.forwarding.allowed_upgrades,
                deadline,
                browser,
                request_id: id_to_add,
                carried,
            },
        );
        Ok((routed, reply))
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

/// The request's `x-request-id`, as a client or an ingress sent it in one line, else a new one,
/// returned a second time to be added in place of whatever lines the client sent (with the other
/// fields the activator adds, see [`headers::Added`]): the replica sees one id, the one logged.
/// `carried`: the request has an `x-request-id` field to look up.
fn request_id(headers: &http::HeaderMap, carried: bool) -> (HeaderValue, Option<HeaderValue>) {
    let new_id = || {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex
            .chunks_exact_mut(2)
            .zip(fastrand::u128(..).to_le_bytes())
        {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        // Owned by one allocation that the copy the replica gets shares.
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(hex))
            .expect("hex digits are a valid header value")
    };
    if !carried {
        let id = new_id();
        return (id.clone(), Some(id));
    }
    let mut lines = headers.get_all(&REQUEST_ID).iter();
    match (lines.next(), lines.next()) {
        (Some(kept), None) if !kept.is_empty() && kept.len() <= 128 => (kept.clone(), None),
        _ => {
            let id = new_id();
            (id.clone(), Some(id))
        }
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

pin_project_lite::pin_project! {
    /// A routed request's answer: the replica's response, or the activator's own if forwarding
    /// failed.
    struct Answering<F> {
        #[pin]
        forwarding: F,
        route: Arc<crate::route::Route>,
        reply: Reply,
        arrived: Instant,
    }
}

impl<F> Future for Answering<F>
where
    F: Future<Output = Result<Answered, ProxyError>>,
{
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let this = self.project();
        match ready!(this.forwarding.poll(cx)) {
            Ok(response) => Poll::Ready(response),
            Err(error) => {
                let metrics = this.route.metrics();
                metrics.rejected(error.reason());
                metrics.response(error.status().as_u16(), this.arrived.elapsed());
                log_refusal(&error, this.reply);
                Poll::Ready(error_response(&error, this.reply).into())
            }
        }
    }
}

/// The proxy for one client connection.
#[derive(Debug)]
pub(crate) struct ProxyService {
    proxy: Proxy,
    client: Client,
    activity: Arc<Activity>,
    /// The response timer its requests take in turn.
    timer: forward::SpareTimer,
}

impl Respond for ProxyService {
    fn respond(&self, request: Request<RequestBody>) -> impl Future<Output = Answered> + Send + '_ {
        self.proxy
            .handle(request, &self.client, &self.activity, &self.timer)
    }

    fn refuse(&self, error: &HeadError) -> Response<BoxBody> {
        let error = match *error {
            HeadError::TooLarge { size, .. } => ProxyError::HeadersTooLarge {
                size,
                max: self.proxy.shared.settings.max_header_bytes,
            },
            HeadError::TooManyHeaders => ProxyError::TooManyHeaders {
                count: checks::MAX_HEADERS + 1,
                max: checks::MAX_HEADERS,
            },
            HeadError::Malformed(detail) => ProxyError::BadRequest { detail },
        };
        let reply = Reply::default();
        self.proxy
            .shared
            .metrics
            .unrouted(error.status().as_u16(), error.reason());
        log_refusal(&error, &reply);
        error_response(&error, &reply)
    }
}
