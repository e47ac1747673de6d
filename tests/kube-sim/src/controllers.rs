//! The control loops that make the store behave like a cluster: deployments → pods, services →
//! EndpointSlices, and the garbage collector. Each is level-triggered: it reconciles everything
//! after any change (and on a slow tick), which is simple and plenty fast at test scale.

pub mod deployment;
pub mod endpointslice;
pub mod gc;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

/// Runs `reconcile` after every batch of store changes and at least every `tick`, until
/// `shutdown` turns true.
pub async fn run_loop(
    store: Arc<Store>,
    tick: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut reconcile: impl FnMut(&Store),
) {
    let mut changes = store.subscribe();
    loop {
        reconcile(&store);
        tokio::select! {
            _ = changes.recv() => while changes.try_recv().is_ok() {},
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
