//! A protocol upgrade's tunnel (WebSocket and the like): bytes copied both ways between the
//! client's upgraded connection and the replica's socket, for as long as either side sends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::activity::{Activity, CountedIo, OpenTunnel};
use crate::balancer::Lease;
use crate::metrics::RouteMetrics;
use crate::stats::RequestGuard;

/// Copies bytes both ways between the client's upgraded connection and the replica's socket
/// (after `early`, what the replica sent right behind its `101`), keeping the request open
/// (counted, leased) and its client connection open (its slot taken, a drain waiting) for as
/// long as the tunnel lives, and closing it once nothing moved either way for `stream_idle`.
pub(crate) async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    (upstream, early): (TcpStream, Bytes),
    open: (RequestGuard, Lease, OpenTunnel),
    stream_idle: Duration,
    metrics: RouteMetrics,
) {
    let client = match client.await {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(%error, "protocol upgrade did not complete");
            return;
        }
    };
    let activity = Arc::new(Activity::default());
    let mut client = CountedIo::new(TokioIo::new(client), Arc::clone(&activity));
    let mut upstream = CountedIo::new(upstream, Arc::clone(&activity));
    if !early.is_empty()
        && let Err(error) = client.write_all(&early).await
    {
        tracing::debug!(%error, "upgraded connection ended with an error");
        return;
    }
    let copying = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copying);
    let look = (stream_idle / 4).max(Duration::from_millis(5));
    let mut last = activity.snapshot();
    let mut last_moved = tokio::time::Instant::now();
    loop {
        tokio::select! {
            result = &mut copying => {
                if let Err(error) = result {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep(look) => {
                let now = activity.snapshot();
                if (now.reads, now.writes) != (last.reads, last.writes) {
                    last = now;
                    last_moved = tokio::time::Instant::now();
                } else if last_moved.elapsed() >= stream_idle {
                    tracing::debug!(idle_ms = stream_idle.as_millis() as u64, "closing an idle tunnel");
                    metrics.stream_idle_timeout();
                    break;
                }
            }
        }
    }
    drop(open);
}
