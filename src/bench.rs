//! Entry points for the micro-benchmarks in `benches/micro.rs`: thin wrappers around the
//! request path's internals (route lookup, in-flight counting and endpoint leases, header
//! rewriting), so the crate's modules stay private. Not an API for anything else.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use http::request::Parts;

use crate::balancer::Backends;
use crate::metrics::Metrics;
use crate::provider::{BoxFuture, Provider, ProviderError, Reporter, ScaleRequest, Scaled};
use crate::route::Route;
use crate::routing::{RouteTable, normalise_host};
use crate::spec::{ProcessSpec, RouteSpec, Settings, Workload};
use crate::stats::HoldBudget;
use crate::stats::RouteStats;

/// A route table, as the proxy looks routes up.
#[derive(Debug)]
pub struct Table(RouteTable);

impl Table {
    /// A table with one route per entry of `routes`, named `svcI` in `default`, answering the
    /// hosts listed (normalised: lower case, `*.suffix` for wildcards).
    pub fn new(routes: Vec<Vec<String>>) -> Table {
        let provider: Arc<dyn Provider> = Arc::new(Unused);
        let metrics = Metrics::new();
        let defaults = Settings::default();
        let routes = routes
            .into_iter()
            .enumerate()
            .map(|(i, hosts)| {
                let spec = RouteSpec {
                    name: format!("svc{i}"),
                    namespace: "default".into(),
                    hosts,
                    path_prefix: None,
                    settings: defaults,
                    workload: Workload::Process(ProcessSpec {
                        command: vec!["true".into()],
                        ready_path: None,
                        env: Default::default(),
                        workdir: None,
                        stop_grace: crate::spec::defaults::STOP_GRACE,
                    }),
                };
                Route::new(spec, &provider, &HoldBudget::new(u64::MAX), &metrics)
            })
            .collect();
        Table(RouteTable::new(routes, "127.0.0.1.nip.io"))
    }

    /// Normalises a Host header value and looks it up with `path`, as the proxy does; whether a
    /// route answers.
    pub fn lookup(&self, host: &str, path: &str) -> bool {
        normalise_host(host).is_some_and(|host| self.0.lookup(&host, path).is_some())
    }
}

/// Makes the calling thread count as worker thread `index`, whose shard of a route's counters
/// it then uses, as the proxy's workers do.
pub fn act_as_worker(index: usize) {
    crate::workers::set_index(index);
}

/// One route's in-flight counter and one ready endpoint.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<RouteStats>,
    backends: Arc<Backends>,
}

impl InFlight {
    /// Counters for `workers` worker threads ([`act_as_worker`]).
    pub fn for_workers(workers: usize) -> InFlight {
        let backends = Arc::new(Backends::new(0));
        backends.set_ready(&[SocketAddr::from(([127, 0, 0, 1], 8081))]);
        InFlight {
            stats: Arc::new(RouteStats::with_shards(workers)),
            backends,
        }
    }

    /// Counts a request open, and ends it.
    pub fn guard(&self) {
        drop(std::hint::black_box(self.stats.begin()));
    }

    /// Leases the endpoint, and returns it.
    pub fn lease(&self) {
        drop(std::hint::black_box(self.backends.try_acquire()));
    }

    /// Both, as every proxied request does.
    pub fn guard_and_lease(&self) {
        let guard = std::hint::black_box(self.stats.begin());
        let lease = std::hint::black_box(self.backends.try_acquire());
        drop((lease, guard));
    }
}

/// Rewrites a client request's head for a replica, as the proxy does for an untrusted peer at
/// `client_ip`.
pub fn prepare_request(parts: &mut Parts, client_ip: &HeaderValue) {
    let client = crate::proxy::headers::Client {
        ip: client_ip.clone(),
        trusted: false,
    };
    let carried = crate::proxy::headers::Carried::of(&parts.headers);
    std::hint::black_box(crate::proxy::headers::prepare_request(
        parts, &client, None, false, None, carried,
    ));
}

/// A provider that is never asked for anything: lookups do not scale.
struct Unused;

impl Provider for Unused {
    fn attach(&self, _: &RouteSpec, _: Reporter) {}
    fn detach(&self, _: &str) {}
    fn scale<'a>(&'a self, _: ScaleRequest<'a>) -> BoxFuture<'a, Result<Scaled, ProviderError>> {
        Box::pin(async { Ok(Scaled::Applied) })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
