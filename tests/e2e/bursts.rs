//! Cold bursts at a fragile replica: `python3 -m http.server` listens with a backlog of 5, speaks
//! HTTP/1.0 and closes every connection. Released all at once, a burst overflows its accept
//! queue and requests stall for seconds; paced, every one is answered.

use std::time::Duration;

use futures_util::future::join_all;

use super::support::{Activator, host};

/// A route whose replica is Python's built-in web server, serving an empty directory.
fn python_route(name: &str, dir: &std::path::Path) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nidle_timeout = \"60s\"\ntarget_concurrency = 1000000\n\
         [routes.process]\ncommand = [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{{port}}\"]\n\
         ready_path = \"/\"\nworkdir = {:?}\n",
        dir.display().to_string()
    )
}

async fn cold_burst(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let activator = Activator::start(&python_route("py", dir.path())).await;
    let h = host("py");
    // Each request is given 20s: a stalled one (an overflowed accept queue) takes that long to
    // be retransmitted through, or never gets through.
    let answers = join_all(
        (0..count).map(|_| tokio::time::timeout(Duration::from_secs(20), activator.get(&h, "/"))),
    )
    .await;
    let statuses: Vec<_> = answers
        .iter()
        .map(|a| a.as_ref().map(|a| a.status.as_u16()).unwrap_or(0))
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        ok,
        count,
        "statuses other than 200 (0 = no answer): {:?}",
        {
            let mut odd: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
            odd.sort();
            odd.dedup();
            odd
        }
    );
    assert_eq!(activator.route("py").await.ready_replicas, 1);
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cold_requests_to_python_http_server_are_all_answered() {
    cold_burst(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_requests_to_python_http_server_are_all_answered() {
    cold_burst(1000).await;
}
