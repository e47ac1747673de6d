//! The one place errors become HTTP responses: a status, an `x-activator-error` reason, and a
//! plain-text sentence a person can act on.

use std::time::Duration;

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::activation::ActivationError;
use crate::body::{self, BoxBody};

/// Why the activator answered a request itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// No Host header or `:authority`.
    #[error("missing host")]
    MissingHost,
    /// The request names its host ambiguously.
    #[error("ambiguous host: {detail}")]
    HostMismatch {
        /// What disagrees.
        detail: String,
    },
    /// The request is not well-formed HTTP/1.1 (or frames its body ambiguously).
    #[error("bad request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: &'static str,
    },
    /// The client stopped sending its request body for the stream idle timeout.
    #[error("the request body stalled for {timeout:?}")]
    RequestTimeout {
        /// The route's stream idle timeout.
        timeout: Duration,
    },
    /// `CONNECT`: the activator is not a tunnel.
    #[error("CONNECT is not allowed")]
    MethodNotAllowed,
    /// The request's headers exceed `max_header_bytes`.
    #[error("request headers of {size} bytes exceed {max}")]
    HeadersTooLarge {
        /// Their size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The request has more header fields than hyper's HTTP/1 parser takes (100, Envoy's
    /// `max_headers_count` too); HTTP/2 requests are held to the same number.
    #[error("request has {count} header fields, more than {max}")]
    TooManyHeaders {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// No route answers the host.
    #[error("no route for host {host:?}")]
    NoRoute {
        /// The normalised host.
        host: String,
    },
    /// The route could not give the request a replica.
    #[error("route {route}: {source}")]
    Activation {
        /// `namespace/name`.
        route: String,
        /// Why.
        #[source]
        source: ActivationError,
    },
    /// The replica sent no response head within the route's `response_timeout`, or stopped
    /// taking the request body for its `stream_idle_timeout`.
    #[error("route {route}: replica {addr} sent no response within {timeout:?}")]
    UpstreamTimeout {
        /// `namespace/name`.
        route: String,
        /// The replica.
        addr: std::net::SocketAddr,
        /// The limit that ran out.
        timeout: Duration,
        /// It was the stream idle timeout: the replica stopped reading the request body.
        upload_stalled: bool,
    },
    /// The replica failed before a response started.
    #[error("route {route}: replica {addr} failed: {detail}")]
    Upstream {
        /// `namespace/name`.
        route: String,
        /// The replica.
        addr: std::net::SocketAddr,
        /// What happened, from the connection error chain.
        detail: String,
    },
}

impl ProxyError {
    /// The `x-activator-error` reason (also the `reason` label of rejected requests).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ProxyError::MissingHost => "missing_host",
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::RequestTimeout { .. } => "request_timeout",
            ProxyError::HostMismatch { .. } => "host_mismatch",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::HeadersTooLarge { .. } | ProxyError::TooManyHeaders { .. } => {
                "headers_too_large"
            }
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::Upstream { .. } => "upstream",
            ProxyError::Activation { source, .. } => match source {
                ActivationError::QueueFull { .. } => "queue_full",
                ActivationError::Timeout { .. } => "cold_start_timeout",
                ActivationError::ReplicaFailed { .. } => "replica_failed",
                ActivationError::Starting => "starting",
                ActivationError::RouteRemoved => "route_removed",
                ActivationError::ShuttingDown => "shutting_down",
            },
        }
    }

    /// The status code.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingHost
            | ProxyError::HostMismatch { .. }
            | ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::HeadersTooLarge { .. } | ProxyError::TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Activation { source, .. } => match source {
                ActivationError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    fn message(&self) -> String {
        match self {
            ProxyError::MissingHost => "The request has no Host header (or HTTP/2 :authority), so the activator \
                 cannot tell which service it is for. Send one, e.g. \
                 'Host: helloworld.default.127.0.0.1.nip.io'.\n"
                .to_owned(),
            ProxyError::HostMismatch { detail } => format!(
                "The request names its host ambiguously: {detail}. Send one Host header that \
                 matches the request target (or HTTP/2 :authority).\n"
            ),
            ProxyError::BadRequest { detail } => format!(
                "The request is not valid HTTP/1.1: {detail}. Send a well-formed request; the \
                 connection is closed after this answer.\n"
            ),
            ProxyError::RequestTimeout { timeout } => format!(
                "The request's body stopped arriving for {} (stream_idle_timeout), so the \
                 request was abandoned. Send the body without pausing that long.\n",
                human(*timeout)
            ),
            ProxyError::MethodNotAllowed => "CONNECT is not allowed: the activator is a reverse proxy, not a \
                 tunnel. Send the request itself (GET, POST, ...) with a Host header.\n"
                .to_owned(),
            ProxyError::HeadersTooLarge { size, max } => format!(
                "The request's headers are {size} bytes, more than the {max} allowed \
                 (max_header_bytes). Send fewer or smaller headers (large cookies are the usual \
                 cause).\n"
            ),
            ProxyError::TooManyHeaders { count, max } => format!(
                "The request has {count} header fields, more than the {max} allowed. Send fewer \
                 (several fields of one name can be joined into one, separated by commas).\n"
            ),
            ProxyError::UpstreamTimeout {
                route,
                timeout,
                upload_stalled: true,
                ..
            } => format!(
                "Route {route}: the replica stopped reading the request body and sent no \
                 response for {} (stream_idle_timeout). The request may or may not have been \
                 carried out.\n",
                human(*timeout)
            ),
            ProxyError::UpstreamTimeout { route, timeout, .. } => format!(
                "Route {route}: the replica sent no response within {} (response_timeout). The \
                 request may or may not have been carried out.\n",
                human(*timeout)
            ),
            ProxyError::NoRoute { host } => format!(
                "No route answers host \"{host}\". Each route answers NAME.NAMESPACE.<domain> and the \
                 hosts it lists; check the Host header, or list the routes with 'activator routes'.\n"
            ),
            ProxyError::Upstream { route, .. } => format!(
                "Route {route}: the replica failed before answering. The request may be retried; \
                 if this persists, the service's operators can find why in the activator's log \
                 under this request id.\n"
            ),
            ProxyError::Activation { route, source } => match source {
                ActivationError::QueueFull { max, total: false } => format!(
                    "Route {route} is starting and already holds {max} waiting requests (max_queued). \
                     Retry in a moment.\n"
                ),
                ActivationError::QueueFull { max, total: true } => format!(
                    "The activator already holds {max} waiting requests across all services \
                     (max_queued_total), so route {route} cannot hold more. Retry in a moment.\n"
                ),
                ActivationError::Timeout { limit, ready, .. } => {
                    let mut text = format!(
                        "Route {route}: no replica could take the request within {} (cold_start_timeout).",
                        human(*limit)
                    );
                    if *ready > 0 {
                        text.push_str(" Its replicas are all busy (container_concurrency).");
                    } else {
                        text.push_str(" The service did not become ready in time.");
                    }
                    text.push_str(
                        " Retry later; the service's operators can find why in the activator's log \
                         under this request id, or with 'activator routes'.\n",
                    );
                    text
                }
                ActivationError::ReplicaFailed { retry_in, .. } => format!(
                    "Route {route}: the service's replicas keep failing to start, so the request \
                     was not held. The next attempt to start one is in {}; retry then. The \
                     service's operators can find why in the activator's log under this request \
                     id, or with 'activator routes'.\n",
                    human(*retry_in)
                ),
                ActivationError::Starting => format!(
                    "Route {route} is starting; this page reloads itself until it is ready.\n"
                ),
                ActivationError::RouteRemoved => {
                    format!("Route {route} was removed while the request waited for a replica.\n")
                }
                ActivationError::ShuttingDown => {
                    "The activator is shutting down and could not serve this request in time; retry it.\n"
                        .to_owned()
                }
            },
        }
    }

    /// Seconds after which a retry may succeed, for `Retry-After`.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::Activation {
                source:
                    ActivationError::QueueFull { .. }
                    | ActivationError::ShuttingDown
                    | ActivationError::Starting,
                ..
            } => Some(1),
            ProxyError::Activation {
                source: ActivationError::ReplicaFailed { retry_in, .. },
                ..
            } => Some(retry_in.as_secs_f64().ceil().max(1.0) as u64),
            _ => None,
        }
    }
}

fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The gRPC status the activator answers `error` with, as a gRPC server would have (the codes of
/// <https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
fn grpc_status(error: &ProxyError) -> u16 {
    match error {
        ProxyError::MissingHost
        | ProxyError::HostMismatch { .. }
        | ProxyError::BadRequest { .. } => 3, // INVALID_ARGUMENT
        ProxyError::NoRoute { .. } => 5, // NOT_FOUND
        ProxyError::HeadersTooLarge { .. } | ProxyError::TooManyHeaders { .. } => 8, // RESOURCE_EXHAUSTED
        ProxyError::MethodNotAllowed => 12, // UNIMPLEMENTED
        ProxyError::UpstreamTimeout { .. }
        | ProxyError::RequestTimeout { .. }
        | ProxyError::Activation {
            source: ActivationError::Timeout { .. },
            ..
        } => 4, // DEADLINE_EXCEEDED
        ProxyError::Upstream { .. } | ProxyError::Activation { .. } => 14, // UNAVAILABLE
    }
}

/// Whether a request's `content-type` says it is gRPC (`application/grpc`, `application/grpc+proto`, ...).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// How the activator's own answer to one request is written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reply {
    /// The request's id, quoted in the answer.
    pub(crate) request_id: Option<HeaderValue>,
    /// The request is gRPC: answer as a gRPC server would.
    pub(crate) grpc: bool,
}

/// The response for `error`: plain text a person can act on, or for gRPC clients a trailers-only
/// gRPC status. Either carries `x-activator-error` and the request id, and nothing internal
/// (replica addresses, probe output): those are in the log line with that id.
pub(crate) fn error_response(error: &ProxyError, reply: &Reply) -> Response<BoxBody> {
    let mut text = error.message();
    if let Some(id) = reply.request_id.as_ref().and_then(|v| v.to_str().ok()) {
        text.truncate(text.trim_end().len());
        text.push_str(&format!(" (request id {id})\n"));
    }
    let mut response = if let ProxyError::Activation {
        route,
        source: ActivationError::Starting,
    } = error
    {
        waiting_page(route)
    } else if reply.grpc {
        let mut response = Response::new(body::empty());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(grpc_status(error)));
        if let Ok(message) = HeaderValue::from_str(&grpc_message(text.trim_end())) {
            headers.insert("grpc-message", message);
        }
        response
    } else {
        let mut response = Response::new(body::full(text));
        *response.status_mut() = error.status();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        "x-activator-error",
        HeaderValue::from_static(error.reason()),
    );
    if let Some(id) = &reply.request_id {
        headers.insert("x-request-id", id.clone());
    }
    if let Some(seconds) = error.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let ProxyError::MethodNotAllowed = error {
        headers.insert(
            ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
        );
    }
    response
}

/// The page a browser gets while its route starts: it says so, and reloads itself every second
/// until a replica answers instead (503 so that nothing caches it).
fn waiting_page(route: &str) -> Response<BoxBody> {
    let route = route.replace(['<', '>', '&', '"'], "");
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"1\">\n<title>Starting {route}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;margin:4em auto;max-width:32em;color:#333}}</style>\n\
         </head>\n<body>\n<h1>Starting…</h1>\n<p>The service <code>{route}</code> was idle and is \
         starting now. This page reloads itself until it is ready, usually within a few seconds.</p>\n\
         </body>\n</html>\n"
    );
    let mut response = Response::new(body::full(page));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// `text` percent-encoded as `grpc-message` requires: every byte outside printable ASCII, and
/// `%` itself.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_start_timeout_names_the_route_and_the_wait_but_nothing_internal() {
        let error = ProxyError::Activation {
            route: "default/hello".into(),
            source: ActivationError::Timeout {
                limit: Duration::from_millis(300),
                ready: 0,
                problem: Some("replica 1 (pid 4242) at 10.0.0.7:8080 exited".into()),
            },
        };
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        let text = error.message();
        assert!(
            text.contains("default/hello") && text.contains("300ms"),
            "{text}"
        );
        assert!(
            !text.contains("4242") && !text.contains("10.0.0.7"),
            "{text}"
        );
    }

    #[test]
    fn a_grpc_client_gets_a_trailers_only_status_with_the_same_sentence() {
        let error = ProxyError::NoRoute {
            host: "nobody.test".into(),
        };
        let reply = Reply {
            request_id: Some(HeaderValue::from_static("abc")),
            grpc: true,
        };
        let response = error_response(&error, &reply);
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers["grpc-status"], "5");
        assert_eq!(headers["x-activator-error"], "no_route");
        let message = headers["grpc-message"].to_str().unwrap();
        assert!(
            message.contains("nobody.test") && message.contains("request id abc"),
            "{message}"
        );
        assert_eq!(grpc_message("50% ü"), "50%25 %C3%BC");
    }

    #[test]
    fn a_full_queue_says_when_to_retry() {
        let error = ProxyError::Activation {
            route: "default/hello".into(),
            source: ActivationError::QueueFull {
                max: 5,
                total: false,
            },
        };
        let response = error_response(&error, &Reply::default());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["x-activator-error"], "queue_full");
    }
}
