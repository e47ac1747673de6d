//! The accept loop: every connection served as HTTP/1.1 (with upgrades) or h2c, and the counters
//! `/__stats` reports. What each request gets is decided in `routes`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::startup::Startup;

/// Counters over the server's life.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connections: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) max_in_flight: AtomicU64,
}

/// Counts a request in flight for as long as it lives.
pub(crate) struct InFlight(Arc<Stats>);

impl InFlight {
    pub(crate) fn new(stats: &Arc<Stats>) -> InFlight {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(stats))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: Arc<Stats>,
    /// Answered as `os.hostname`.
    pub(crate) hostname: String,
    /// Reported by `/__stats`.
    pub(crate) startup: Startup,
}

/// Serves every connection `listener` accepts, forever, naming itself `hostname` in answers and
/// reporting `startup` in `/__stats`.
pub async fn serve(listener: TcpListener, hostname: String, startup: Startup) {
    let shared = Arc::new(Shared {
        stats: Arc::new(Stats::default()),
        hostname,
        startup,
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors, most likely: let some connections close first.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        shared.stats.connections.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(crate::routes::handle(request, peer, &shared).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
