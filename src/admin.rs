//! The admin listener's service: `/metrics` (Prometheus text), `/healthz` (the process is alive),
//! `/readyz` (routes are loaded and the activator is not draining), `/routes` (JSON, one object
//! per route; `activator routes` prints it as a table).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, BoxBody};
use crate::metrics::Metrics;
use crate::route::RouteStatus;
use crate::routing::RouteTable;

/// Whether the activator should receive traffic.
#[derive(Debug, Default)]
pub(crate) struct Health {
    loaded: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Routes are loaded (for Kubernetes: caches synced).
    pub(crate) fn set_loaded(&self) {
        self.loaded.store(true, Ordering::SeqCst);
    }

    /// Shutdown began.
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Ready for traffic.
    pub(crate) fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }
}

/// The admin service.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    table: Arc<RouteTable>,
    metrics: Metrics,
    health: Arc<Health>,
}

impl Admin {
    /// An admin service over the routes, metrics and health.
    pub(crate) fn new(table: Arc<RouteTable>, metrics: Metrics, health: Arc<Health>) -> Admin {
        Admin {
            table,
            metrics,
            health,
        }
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<BoxBody> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only GET and HEAD are served here.\n",
            );
        }
        match request.uri().path() {
            "/metrics" => {
                let mut response = Response::new(body::full(self.metrics.encode()));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.health.is_ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: loading routes or draining\n",
            ),
            "/routes" => {
                let now = tokio::time::Instant::now();
                let routes: Vec<RouteStatus> =
                    self.table.routes().iter().map(|r| r.status(now)).collect();
                let json = serde_json::to_vec_pretty(&routes).unwrap_or_default();
                let mut response = Response::new(body::full(json));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "Not found. Try /metrics, /healthz, /readyz or /routes.\n",
            ),
        }
    }
}

fn text(status: StatusCode, message: &'static str) -> Response<BoxBody> {
    let mut response = Response::new(body::full(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl<B> tower::Service<Request<B>> for Admin {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<BoxBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.answer(&request)))
    }
}
