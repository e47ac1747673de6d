//! The admin listener's service: `/metrics` (Prometheus text), `/healthz` (the process is alive),
//! `/readyz` (routes are loaded and the activator is not draining), `/routes` (JSON, one object
//! per route; `activator routes` prints it as a table), and, with several replicas, what they ask
//! each other ([`crate::cluster::peer`]): every replica's report, and the holds of a scale to
//! zero, which only another listed replica may ask for.

use std::future::{Future, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, BoxBody, RequestBody};
use crate::cluster::peer::{HOLD_PATH, PeerReport, RELEASE_PATH, REPORT_PATH, query_value};
use crate::cluster::{Cluster, local_report};
use crate::http1::HeadError;
use crate::metrics::Metrics;
use crate::route::RouteStatus;
use crate::routing::RouteTable;
use crate::server::{Answered, Respond};

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

/// The longest hold a peer may ask for.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// The admin service.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    table: Arc<RouteTable>,
    metrics: Metrics,
    health: Arc<Health>,
    cluster: Option<Arc<Cluster>>,
    /// Who is asking, on a connection's copy.
    remote: Option<SocketAddr>,
}

impl Admin {
    /// An admin service over the routes, metrics and health, and this replica among others.
    pub(crate) fn new(
        table: Arc<RouteTable>,
        metrics: Metrics,
        health: Arc<Health>,
        cluster: Option<Arc<Cluster>>,
    ) -> Admin {
        Admin {
            table,
            metrics,
            health,
            cluster,
            remote: None,
        }
    }

    /// The service for one connection from `remote`.
    pub(crate) fn from(&self, remote: SocketAddr) -> Admin {
        Admin {
            remote: Some(remote),
            ..self.clone()
        }
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<BoxBody> {
        let path = request.uri().path();
        if request.method() == Method::POST && (path == HOLD_PATH || path == RELEASE_PATH) {
            return self.peer_request(path, request.uri().query().unwrap_or_default());
        }
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
                let routes: Vec<RouteStatus> = self
                    .table
                    .routes()
                    .iter()
                    .map(|r| {
                        let mut status = r.status(now);
                        status.replicas = self.cluster.as_ref().and_then(|c| c.status(r, now));
                        status
                    })
                    .collect();
                let json = serde_json::to_vec_pretty(&routes).unwrap_or_default();
                let mut response = Response::new(body::full(json));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            REPORT_PATH => match &self.cluster {
                Some(cluster) => json(&cluster.report(&self.table, tokio::time::Instant::now())),
                None => text(
                    StatusCode::NOT_FOUND,
                    "Not found: this activator runs alone.\n",
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "Not found. Try /metrics, /healthz, /readyz or /routes.\n",
            ),
        }
    }
}

impl Admin {
    /// A hold or release of a route, asked by the Lease holder.
    fn peer_request(&self, path: &str, query: &str) -> Response<BoxBody> {
        let Some(cluster) = &self.cluster else {
            return text(
                StatusCode::NOT_FOUND,
                "Not found: this activator runs alone.\n",
            );
        };
        // Only a replica the peer Service lists may close routes here.
        if !self
            .remote
            .is_some_and(|remote| cluster.is_peer(remote.ip()))
        {
            return text(
                StatusCode::FORBIDDEN,
                "Forbidden: only another activator replica listed in the peer Service may ask.\n",
            );
        }
        let Some(id) = query_value(query, "route") else {
            return text(StatusCode::BAD_REQUEST, "Missing route=NAMESPACE/NAME.\n");
        };
        let routes = self.table.routes();
        let route = routes.iter().find(|r| r.id() == id);
        let now = tokio::time::Instant::now();
        if path == RELEASE_PATH {
            if let Some(route) = route {
                route.activation().release_hold();
            }
            return text(StatusCode::OK, "released\n");
        }
        let hold = query_value(query, "ms")
            .and_then(|ms| ms.parse().ok())
            .map_or(MAX_HOLD, Duration::from_millis)
            .min(MAX_HOLD);
        let mut report = PeerReport {
            identity: cluster.identity().to_owned(),
            routes: Default::default(),
        };
        if let Some(route) = route {
            route.activation().hold_for_scale_down(now + hold);
            report.routes.insert(
                id.to_owned(),
                local_report(route, tokio::time::Instant::now()),
            );
        }
        json(&report)
    }
}

fn json(value: &impl serde::Serialize) -> Response<BoxBody> {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(body::full(json));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
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

impl Respond for Admin {
    fn respond(&self, request: Request<RequestBody>) -> impl Future<Output = Answered> + Send + '_ {
        ready(self.answer(&request).into())
    }

    fn refuse(&self, error: &HeadError) -> Response<BoxBody> {
        let status = match error {
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::TooLarge { .. } | HeadError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
        };
        text(status, "The request head could not be read.\n")
    }
}
