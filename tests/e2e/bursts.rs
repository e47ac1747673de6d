//! Cold bursts at a fragile replica: `python3 -m http.server` listens with a backlog of 5, speaks
//! HTTP/1.0 and closes every connection. Released all at once, a burst overflows its accept
//! queue and requests stall for seconds; paced, every one is answered. It also answers a POST
//! with 501 and closes without reading the body: the answer, not a 502, reaches the client.

use std::time::Duration;

use futures_util::future::join_all;

use super::support::{Activator, host, start_upload, wait_until};

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

#[tokio::test]
async fn an_http11_client_of_an_http10_replica_gets_http11_and_keeps_its_connection() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let activator = Activator::start(&python_route("py", dir.path())).await;
    let mut conn = tokio::net::TcpStream::connect(activator.proxy)
        .await
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host("py"));
    for round in 0..2 {
        conn.write_all(request.as_bytes()).await.unwrap();
        let text = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
            .await
            .expect("an answer")
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(text.starts_with("HTTP/1.1 200"), "round {round}: {text}");
        assert!(!text.to_lowercase().contains("connection: close"), "{text}");
    }
    activator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_given_before_a_large_upload_was_read_reaches_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let activator = Activator::start(&python_route("py", dir.path())).await;
    assert_eq!(activator.get(&host("py"), "/").await.status, 200);
    const LENGTH: usize = 4 << 20;
    for round in 0..3 {
        // Its writes fail once the activator stops reading, which is allowed.
        let (mut read, uploading) =
            start_upload(activator.proxy, &host("py"), "/upload", LENGTH).await;
        // The whole answer, read by its Content-Length: whether the connection then closes
        // depends on whether the activator had read the whole upload by then.
        let answer = tokio::time::timeout(Duration::from_secs(20), read_response(&mut read))
            .await
            .expect("an answer within 20 s")
            .unwrap_or_else(|e| panic!("round {round}: the answer was lost: {e}"));
        assert!(
            answer.starts_with("HTTP/1.1 501"),
            "round {round}: {answer}"
        );
        assert!(answer.contains("Unsupported method"), "{answer}");
        uploading.abort();
    }
    activator.stop().await;
}

/// Reads one response with a Content-Length from `read`, head and body.
async fn read_response(read: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&received).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            if received.len() >= end + 4 + length {
                return Ok(String::from_utf8_lossy(&received).into_owned());
            }
        }
        let n = read.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&buf[..n]);
    }
}

/// A replica like `python3 -m http.server` (threads, HTTP/1.0, a connection per request) whose
/// `/slow` answers only after a minute.
fn slow_python_route(name: &str) -> String {
    let script = r#"
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(60)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;
    format!(
        "[[routes]]\nname = \"{name}\"\nmin_scale = 1\n[routes.process]\ncommand = [\"python3\", \"-c\", {script:?}, \"{{port}}\"]\nstop_grace = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_to_a_replica_that_closes_connections_do_not_block_the_others() {
    let activator = Activator::start(&slow_python_route("py")).await;
    let h = host("py");
    assert_eq!(activator.get(&h, "/").await.status, 200);
    // Twenty times the replica's first window of new connections: each one's probation ends
    // once the replica's kernel acknowledged its request, not when its answer comes.
    let slow: Vec<_> = (0..80).map(|_| activator.spawn_get(&h, "/slow")).collect();
    wait_until("the slow requests are in flight", || async {
        activator.route("py").await.in_flight == 80
    })
    .await;
    // Answered while all of them still wait, rather than after them (or after a second for
    // every four of them, were probations only to expire).
    let fast = tokio::time::timeout(Duration::from_secs(10), activator.get(&h, "/"))
        .await
        .expect("a fast request is not stuck behind slow ones");
    assert_eq!(fast.status, 200);
    assert!(slow.iter().all(|s| !s.is_finished()));
    for request in slow {
        request.abort();
    }
    activator.stop().await;
}
