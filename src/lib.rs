//! `activator`: a scale-to-zero HTTP reverse proxy.
//!
//! Requests are routed by Host header to a [`route::Route`]. When the route's workload has no ready
//! replica, the request is held in a bounded queue while the [`provider::Provider`] scales the
//! workload up; it is released the moment a replica can serve. Requests in flight are counted per
//! route ([`stats`]) and read by the idle-timeout [`scaler`], which scales idle workloads back to
//! zero and adds replicas when concurrency per replica runs over its target.
//!
//! The crate is laid out one concept per module:
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | CLI flags, the config file, defaults and validation |
//! | [`routing`] | host normalisation and the route table snapshot |
//! | [`route`] | one served route: its spec, endpoints, stats and activation state |
//! | [`activation`] | holding requests until a replica is ready; single-flight scale-up |
//! | [`balancer`] | the ready endpoints of a route and the choice among them |
//! | [`stats`] | in-flight guards, counts, last activity, time-weighted concurrency |
//! | [`scaler`] | the loop that scales routes by idleness and concurrency |
//! | [`provider`] | the [`provider::Provider`] trait and its implementations |
//! | [`proxy`] | the per-request service; the one place errors become responses |
//! | [`server`] | the listeners, connection handling and graceful shutdown |
//! | [`admin`] | `/metrics`, `/healthz`, `/readyz`, `/routes` |
//! | [`metrics`] | the Prometheus metrics on an explicit registry |

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

pub mod activation;
pub mod admin;
pub mod app;
pub mod balancer;
pub mod body;
pub mod config;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod route;
pub mod routes_table;
pub mod routing;
pub mod scaler;
pub mod server;
pub mod stats;
pub mod telemetry;
