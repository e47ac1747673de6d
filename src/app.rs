//! The application: builds the routes, provider, metrics and services from a [`Config`], and runs
//! the proxy listener, the admin listener and the scaler until shutdown.
//!
//! Shutdown, in order: `/readyz` fails; the proxy stops accepting connections; requests in flight
//! and held requests drain for up to the drain timeout, after which requests still held are
//! answered 503 `shutting_down`; then the scaler and admin listener stop and the provider stops
//! every replica it started.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{Admin, Health};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::provider::kube::discovery::Discovery;
use crate::provider::process::ProcessProvider;
use crate::proxy::Proxy;
use crate::route::{Closed, Route};
use crate::routing::RouteTable;
use crate::{scaler, server};

/// After the drain timeout, how long requests still held get to receive their 503.
const FINAL_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// A configured activator, ready to run.
#[derive(Debug)]
pub struct App {
    config: Config,
    metrics: Metrics,
    table: Arc<RouteTable>,
    provider: Arc<dyn Provider>,
    health: Arc<Health>,
    discovery: Option<Discovery>,
}

impl std::fmt::Debug for dyn Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Provider")
    }
}

impl App {
    /// An activator serving `config`'s routes with local processes.
    pub fn new(config: Config) -> App {
        App::with_provider(config, Arc::new(ProcessProvider::new()))
    }

    /// An activator serving `config`'s routes through `provider`.
    pub fn with_provider(config: Config, provider: Arc<dyn Provider>) -> App {
        let metrics = Metrics::new();
        let routes = config
            .routes
            .iter()
            .map(|spec| Route::new(spec.clone(), Arc::clone(&provider), &metrics))
            .collect();
        let table = Arc::new(RouteTable::new(routes));
        App::assemble(config, metrics, table, provider, None)
    }

    /// An activator serving the routes of Deployments labelled `activator.dev/enabled=true`, found
    /// and scaled through `client`. `/readyz` turns ready once the watch caches have synced.
    pub fn kube(config: Config, client: kube::Client) -> App {
        let metrics = Metrics::new();
        let table = Arc::new(RouteTable::new(Vec::new()));
        let (discovery, provider) =
            Discovery::new(client, &config, Arc::clone(&table), metrics.clone());
        App::assemble(config, metrics, table, provider, Some(discovery))
    }

    fn assemble(
        config: Config,
        metrics: Metrics,
        table: Arc<RouteTable>,
        provider: Arc<dyn Provider>,
        discovery: Option<Discovery>,
    ) -> App {
        metrics.register_gauges(table.clone());
        App {
            config,
            metrics,
            table,
            provider,
            health: Arc::new(Health::default()),
            discovery,
        }
    }

    /// The route table.
    pub fn table(&self) -> &Arc<RouteTable> {
        &self.table
    }

    /// Serves until `shutdown` completes, then drains and stops (see the module docs).
    pub async fn run(
        self,
        proxy: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let App {
            config,
            metrics,
            table,
            provider,
            health,
            discovery,
        } = self;
        let (stop, stopped) = watch::channel(false);
        let wait_stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let admin_service = Admin::new(Arc::clone(&table), metrics.clone(), Arc::clone(&health));
        let admin_task = tokio::spawn(server::serve(
            admin,
            move |_| admin_service.clone(),
            wait_stop(stopped.clone()),
        ));
        let scaler_task = tokio::spawn(scaler::run(
            Arc::clone(&table),
            config.scaler_tick,
            wait_stop(stopped.clone()),
        ));
        let discovery_task = match discovery {
            Some(discovery) => Some(tokio::spawn(
                discovery.run(Arc::clone(&health), wait_stop(stopped.clone())),
            )),
            None => {
                health.set_loaded();
                None
            }
        };

        let proxy_service = Proxy::new(Arc::clone(&table), metrics.clone(), config.connect_timeout);
        let (drain_began, mut draining) = watch::channel(false);
        let drain_health = Arc::clone(&health);
        let serving = server::serve(
            proxy,
            move |remote| proxy_service.service(remote),
            async move {
                shutdown.await;
                drain_health.set_draining();
                tracing::info!("shutting down: draining requests");
                let _ = drain_began.send(true);
            },
        );
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
                    route.close(Closed::ShuttingDown);
                }
                let _ = tokio::time::timeout(FINAL_ANSWER_GRACE, &mut serving).await;
            }
        }

        let _ = stop.send(true);
        let _ = scaler_task.await;
        if let Some(task) = discovery_task {
            let _ = task.await;
        }
        provider.shutdown().await;
        let _ = admin_task.await;
        tracing::info!("stopped");
    }
}
