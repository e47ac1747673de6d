//! The application: builds the routes, provider, metrics and services from a [`Config`], and runs
//! the proxy listener, the admin listener and the scaler until shutdown.
//!
//! Shutdown, in order: `/readyz` fails at once while the proxy keeps serving for the shutdown
//! delay (so endpoints stop pointing here first); then the proxy stops accepting connections and
//! asks open ones to close when idle; requests in flight and held requests drain for up to the
//! drain timeout, after which requests still held are answered 503 `shutting_down`; then the
//! scaler and admin listener stop and the provider stops every replica it started. With several
//! activator replicas, the Lease is handed back as soon as shutdown begins, so another replica
//! decides while this one drains.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::activation::Closed;
use crate::admin::{Admin, Health};
use crate::balancer::CLOSE_IDLE_EVERY;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::config::defaults::ADMIN_CONNECTIONS;
use crate::metrics::Metrics;
use crate::provider::kube::discovery::Discovery;
use crate::provider::process::ProcessProvider;
use crate::provider::{Provider, RouteSet};
use crate::proxy::{Proxy, ProxySettings};
use crate::route::Route;
use crate::routing::RouteTable;
use crate::server::Limits;
use crate::server::watchdog::Timeouts;
use crate::spec::RouteSpec;
use crate::stats::HoldBudget;
use crate::{scaler, server};

/// After the drain timeout, how long requests still held get to receive their 503.
const FINAL_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// A configured activator, ready to run.
#[derive(Debug)]
pub struct App {
    config: Config,
    metrics: Metrics,
    routes: Arc<ServedRoutes>,
    health: Arc<Health>,
    discovery: Option<Discovery>,
    cluster: Option<Arc<Cluster>>,
}

impl App {
    /// An activator serving `config`'s routes with local processes.
    pub fn new(config: Config) -> App {
        let metrics = Metrics::new();
        let provider: Arc<dyn Provider> = Arc::new(ProcessProvider::new());
        let routes = ServedRoutes::new(provider, metrics.clone(), &config);
        routes.replace(config.routes.clone());
        App::assemble(config, metrics, routes, None, None)
    }

    /// An activator serving the routes of Deployments labelled `activator.dev/enabled=true`, found
    /// and scaled through `client`. `/readyz` turns ready once the watch caches have synced.
    pub fn kube(config: Config, client: kube::Client) -> App {
        let metrics = Metrics::new();
        let settings = config.kube.clone().unwrap_or_default();
        let cluster = Cluster::new(client.clone(), settings.cluster.clone(), metrics.clone());
        let (discovery, provider) = Discovery::new(client, &config, settings, metrics.clone());
        let routes = ServedRoutes::new(provider, metrics.clone(), &config);
        App::assemble(config, metrics, routes, Some(discovery), Some(cluster))
    }

    fn assemble(
        config: Config,
        metrics: Metrics,
        routes: Arc<ServedRoutes>,
        discovery: Option<Discovery>,
        cluster: Option<Arc<Cluster>>,
    ) -> App {
        metrics.register_gauges(routes.table.clone());
        App {
            config,
            metrics,
            routes,
            health: Arc::new(Health::default()),
            discovery,
            cluster,
        }
    }

    /// Serves until `shutdown` completes, then drains and stops (see the module docs), with the
    /// proxy listener served on the calling runtime.
    pub async fn run(
        self,
        proxy: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        self.serve(ProxyListeners::Here(proxy), admin, shutdown)
            .await;
    }

    /// Like [`App::run`], with the proxy served by a worker thread per listening socket
    /// ([`crate::workers::bind`] makes them); everything else runs on the calling runtime.
    pub async fn run_on_workers(
        self,
        proxy: Vec<std::net::TcpListener>,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        self.serve(ProxyListeners::Workers(proxy), admin, shutdown)
            .await;
    }

    async fn serve(
        self,
        proxy: ProxyListeners,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let App {
            config,
            metrics,
            routes,
            health,
            discovery,
            cluster,
        } = self;
        let table = Arc::clone(&routes.table);
        let (stop, stopped) = watch::channel(false);
        let wait_stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let connections = config.connections;
        let timeouts = Timeouts {
            header_read: connections.header_read_timeout,
            keepalive: connections.keepalive_timeout,
            stream_idle: config.defaults.stream_idle_timeout,
        };
        let admin_addr = admin.local_addr();
        let admin_service = Admin::new(
            Arc::clone(&table),
            metrics.clone(),
            Arc::clone(&health),
            cluster.clone(),
        );
        let admin_limits = Limits {
            timeouts,
            max_connections: ADMIN_CONNECTIONS,
            max_header_buffer: connections.max_header_bytes,
        };
        let admin_task = tokio::spawn(server::serve(
            admin,
            admin_limits,
            move |remote, _| admin_service.from(remote),
            wait_stop(stopped.clone()),
        ));
        let (leave, leaving) = watch::channel(false);
        let leave_on_shutdown = leave.clone();
        let cluster_task = match (cluster.clone(), admin_addr) {
            (Some(cluster), Ok(admin_addr)) => Some(tokio::spawn(cluster.run(
                admin_addr,
                wait_stop(leaving.clone()),
                wait_stop(stopped.clone()),
            ))),
            (Some(_), Err(error)) => {
                tracing::warn!(%error, "the admin listener has no address: deciding alone");
                None
            }
            (None, _) => None,
        };
        let scaler_task = tokio::spawn(scaler::run(
            Arc::clone(&table),
            config.scaler_tick,
            cluster,
            wait_stop(stopped.clone()),
        ));
        let idle_task = tokio::spawn(close_idle_connections(
            Arc::clone(&table),
            wait_stop(stopped.clone()),
        ));
        let discovery_task = match discovery {
            Some(discovery) => {
                let served: Arc<dyn RouteSet> = routes.clone();
                let health = Arc::clone(&health);
                Some(tokio::spawn(discovery.run(
                    served,
                    move || health.set_loaded(),
                    wait_stop(stopped.clone()),
                )))
            }
            None => {
                health.set_loaded();
                None
            }
        };

        let proxy_service = Proxy::new(
            Arc::clone(&table),
            metrics.clone(),
            ProxySettings {
                connect_timeout: config.connect_timeout,
                max_header_bytes: connections.max_header_bytes,
                forwarding: config.forwarding.clone(),
            },
        );
        let proxy_limits = Limits {
            timeouts,
            max_connections: connections.max_connections,
            // A head still unfinished at this size is refused as it is read (431, connection
            // closed); below it the proxy reads it whole and answers 431 itself.
            max_header_buffer: connections.max_header_bytes.saturating_mul(2),
        };
        let (drain_began, mut draining) = watch::channel(false);
        let drain_health = Arc::clone(&health);
        let shutdown_delay = config.shutdown_delay;
        let stop_serving = async move {
            shutdown.await;
            // Lame duck: fail readiness so endpoints stop pointing here, but keep serving
            // whoever still arrives until they have.
            drain_health.set_draining();
            let _ = leave_on_shutdown.send(true);
            if !shutdown_delay.is_zero() {
                tracing::info!(
                    shutdown_delay_ms = shutdown_delay.as_millis() as u64,
                    "shutting down: not ready, still serving"
                );
                tokio::time::sleep(shutdown_delay).await;
            }
            tracing::info!("shutting down: draining requests");
            let _ = drain_began.send(true);
        };
        let make = move |remote, activity: &Arc<_>| proxy_service.service(remote, activity);
        let serving = async move {
            match proxy {
                ProxyListeners::Here(listener) => {
                    server::serve(listener, proxy_limits, make, stop_serving).await;
                }
                ProxyListeners::Workers(listeners) => {
                    server::serve_on_workers(listeners, proxy_limits, make, stop_serving).await;
                }
            }
        };
        tokio::pin!(serving);
        let drain_timeout = config.drain_timeout;
        tokio::select! {
            () = &mut serving => {}
            _ = async {
                let _ = draining.wait_for(|d| *d).await;
                tokio::time::sleep(drain_timeout).await;
            } => {
                tracing::warn!(drain_timeout_ms = drain_timeout.as_millis() as u64, "drain timeout: answering held requests");
                for route in table.routes().iter() {
                    route.activation().close(Closed::ShuttingDown);
                }
                let _ = tokio::time::timeout(FINAL_ANSWER_GRACE, &mut serving).await;
            }
        }

        let _ = leave.send_replace(true);
        let _ = stop.send(true);
        let _ = scaler_task.await;
        let _ = idle_task.await;
        if let Some(task) = cluster_task {
            let _ = task.await;
        }
        if let Some(task) = discovery_task {
            let _ = task.await;
        }
        routes.provider.shutdown().await;
        let _ = admin_task.await;
        tracing::info!("stopped");
    }
}

/// Where the proxy listener is served.
enum ProxyListeners {
    /// On the runtime the app runs on.
    Here(TcpListener),
    /// On worker threads, one per socket.
    Workers(Vec<std::net::TcpListener>),
}

/// The routes being served: builds each route (attaching it to the provider), keeps the table
/// current, and closes and detaches the routes that go.
#[derive(Debug)]
struct ServedRoutes {
    table: Arc<RouteTable>,
    provider: Arc<dyn Provider>,
    /// Held requests across every route.
    budget: Arc<HoldBudget>,
    metrics: Metrics,
}

impl ServedRoutes {
    fn new(provider: Arc<dyn Provider>, metrics: Metrics, config: &Config) -> Arc<ServedRoutes> {
        Arc::new(ServedRoutes {
            table: Arc::new(RouteTable::new(Vec::new(), &config.domain)),
            provider,
            budget: HoldBudget::new(config.max_queued_total),
            metrics,
        })
    }
}

impl RouteSet for ServedRoutes {
    fn replace(&self, specs: Vec<RouteSpec>) {
        let current = self.table.routes();
        let mut existing: HashMap<&str, &Arc<Route>> =
            current.iter().map(|route| (route.id(), route)).collect();
        let mut next = Vec::with_capacity(specs.len());
        let mut reindex = false;
        for spec in specs {
            match existing.remove(spec.id().as_str()) {
                Some(route) => {
                    let old = route.spec();
                    if **old != spec {
                        reindex |= old.hosts != spec.hosts || old.path_prefix != spec.path_prefix;
                        tracing::info!(route = %route.id(), "route configuration changed");
                        route.set_spec(spec);
                    }
                    next.push(Arc::clone(route));
                }
                None => {
                    next.push(Route::new(
                        spec,
                        &self.provider,
                        &self.budget,
                        &self.metrics,
                    ));
                    reindex = true;
                }
            }
        }
        for gone in existing.into_values() {
            gone.activation().close(Closed::Removed);
            gone.metrics().remove();
            self.provider.detach(gone.id());
            reindex = true;
        }
        if reindex {
            self.table.replace(next);
        }
    }
}

/// Every [`CLOSE_IDLE_EVERY`] until `stop`, closes the replicas' connections that were idle too
/// long or that their replica closed: without requests, nothing else would.
async fn close_idle_connections(table: Arc<RouteTable>, stop: impl Future<Output = ()>) {
    let mut every = tokio::time::interval(CLOSE_IDLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = every.tick() => {
                for route in table.routes().iter() {
                    route.backends().close_idle();
                }
            }
        }
    }
}
