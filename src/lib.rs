//! `activator`: a scale-to-zero HTTP reverse proxy.
//!
//! Requests are routed by Host header to a [`route::Route`]. When the route's workload has no ready
//! replica, the request is held in a bounded queue while the [`provider::Provider`] scales the
//! workload up; it is released the moment a replica can serve. Requests in flight are counted per
//! route ([`stats`]) and read by the idle-timeout [`scaler`], which scales idle workloads back to
//! zero and adds replicas when concurrency per replica runs over its target.
//!
//! The crate is laid out one concept per module, and dependencies run one way: the listener
//! ([`server`]) serves the [`proxy`], which finds a route in the [`routing`] table and gets it a
//! replica through the route's parts ([`activation`], [`balancer`]), which count into [`stats`];
//! the [`scaler`] reads the stats and decides through [`activation`], which asks the
//! [`provider`]. A provider never sees a route: it reports through a narrow handle.
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | CLI flags, the config file, defaults and validation |
//! | `spec` | the route model both the config file and the annotations produce |
//! | `routing` | host normalisation and the route table snapshot |
//! | [`route`] | one served route: a plain aggregate of its spec and parts, and its status |
//! | `activation` | holding requests, the scale-down gate, and the replica count's one writer |
//! | `balancer` | a route's ready endpoints, the choice among them, and the connections to each |
//! | `stats` | in-flight guards, counts, last activity, time-weighted concurrency |
//! | `scaler` | the loop that scales routes by idleness and concurrency |
//! | `cluster` | several replicas: the Lease-elected holder decides from everyone's summed counts |
//! | `provider` | the provider trait, its report handle, and the process and Kubernetes providers |
//! | `proxy` | the per-request service; the one place errors become responses |
//! | `server` | the listeners, connection handling (HTTP/1.1 its own, HTTP/2 hyper's) and graceful shutdown |
//! | `http1` | the HTTP/1.1 codec the server and the replicas' connections share |
//! | `body` | the request and response body types that pass between them |
//! | `workers` | the proxy's worker threads, one single-threaded runtime and listening socket each |
//! | `huge_pages` | transparent huge pages off for the activator's memory, as they were for its replicas |
//! | `admin`, `metrics` | `/metrics`, `/healthz`, `/readyz`, `/routes`; the Prometheus registry |
//!
//! The public surface is what the binary, the tests and the benchmarks use: [`app::App`],
//! [`config`], [`route::RouteStatus`], [`routes_table`], [`telemetry`], [`kube_client`],
//! [`workers::bind`], [`huge_pages::disable`], and
//! [`bench`].

// Two `unsafe` blocks in the whole crate: the process provider's `pre_exec` hook, which makes local
// replicas die with the activator (see `provider::process::replica`), and the `TCP_INFO` query
// that tells a new upstream connection's pacing whether the replica acknowledged its request
// (see `balancer::pacing`).
#![deny(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

mod activation;
mod activity;
mod admin;
pub mod app;
mod balancer;
#[doc(hidden)]
pub mod bench;
mod body;
mod cluster;
pub mod config;
mod http1;
pub mod huge_pages;
mod metrics;
pub mod policy;
mod provider;
mod proxy;
pub mod route;
pub mod routes_table;
mod routing;
mod scaler;
mod scaling;
mod server;
mod spec;
mod stats;
pub mod telemetry;
pub mod workers;

pub use provider::kube::client as kube_client;
