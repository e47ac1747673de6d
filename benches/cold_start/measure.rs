//! What every cold-start measurement shares: one cold request timed from outside and set against
//! the replica's own start as the replica reports it, bursts of requests sent together, the
//! route's state from `/routes`, and distributions summarised as their sample supports.
//!
//! The replica is `activator-echo`, asked for `/__stats`: its answer says when the process
//! started (the first instant of its `main`) and when it began to listen. So each run subtracts
//! the replica's start measured in that same run, not a median from other runs.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::harness::{http_get, quantile};

/// The request every measurement sends, to the route `cold` in `default`: the echo's
/// statistics, which carry its start.
const REQUEST: &str =
    "GET /__stats HTTP/1.1\r\nHost: cold.default.127.0.0.1.nip.io\r\nConnection: close\r\n\r\n";

/// Wall-clock microseconds since the Unix epoch.
pub fn unix_us(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// The replica's own start, as it reported it.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaStart {
    /// Wall clock at the start of the replica's `main`, µs since the epoch.
    pub started_us: f64,
    /// Wall clock when it listened, µs since the epoch.
    pub listening_us: f64,
    /// From its start to listening, ms (monotonic clock).
    pub to_listening_ms: f64,
}

impl ReplicaStart {
    /// From the body of an answer to `/__stats`.
    pub fn from_stats(body: &[u8]) -> Option<ReplicaStart> {
        let stats: Value = serde_json::from_slice(body).ok()?;
        let field = |key: &str| stats["startup"][key].as_f64();
        Some(ReplicaStart {
            started_us: field("started_unix_us")?,
            listening_us: field("listening_unix_us")?,
            to_listening_ms: field("start_to_listening_us")? / 1e3,
        })
    }
}

/// An answer read whole from a connection that closes after it.
struct Answer {
    /// Since the request was written: to the first byte, and to the end.
    first_byte: Duration,
    end: Duration,
    ok: bool,
    replica: Option<ReplicaStart>,
}

/// Writes [`REQUEST`] on `stream` and reads the answer to its end.
async fn exchange(mut stream: TcpStream, sent: Instant) -> std::io::Result<Answer> {
    stream.write_all(REQUEST.as_bytes()).await?;
    let mut raw = vec![0u8; 1];
    let n = stream.read(&mut raw).await?;
    let first_byte = sent.elapsed();
    if n == 0 {
        return Err(std::io::Error::other("closed without an answer"));
    }
    stream.read_to_end(&mut raw).await?;
    let end = sent.elapsed();
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |at| &raw[at + 4..]);
    Ok(Answer {
        first_byte,
        end,
        ok: raw.starts_with(b"HTTP/1.1 200"),
        replica: ReplicaStart::from_stats(body),
    })
}

/// One cold start seen from outside and from the replica.
#[derive(Debug, Clone, Copy)]
pub struct ColdRun {
    /// First request written → first byte of its answer, ms.
    pub first_byte_ms: f64,
    /// The replica's start → listening, ms, in this run.
    pub replica_ms: f64,
    /// Request written → the replica's `main`, ms (wall clocks of two processes).
    pub before_start_ms: f64,
    /// The replica listening → first byte of the answer, ms (wall clocks of two processes).
    pub after_listen_ms: f64,
}

impl ColdRun {
    /// What the activator (and, in Kubernetes mode, the cluster) added: the time to the first
    /// byte minus the replica's own start to listening.
    pub fn added_ms(&self) -> f64 {
        self.first_byte_ms - self.replica_ms
    }
}

/// Sends one request to a route at zero through `proxy` and times it.
///
/// # Panics
/// When the answer is not a 200 from the echo's `/__stats`.
pub async fn cold_request(proxy: SocketAddr) -> ColdRun {
    let stream = TcpStream::connect(proxy)
        .await
        .expect("connecting to the activator");
    stream.set_nodelay(true).expect("nodelay");
    let sent_wall = SystemTime::now();
    let sent = Instant::now();
    let answer = exchange(stream, sent).await.expect("an answer");
    assert!(answer.ok, "the cold request was not answered 200");
    let replica = answer
        .replica
        .expect("the echo's /__stats with its startup");
    let sent_us = unix_us(sent_wall);
    let first_byte_ms = answer.first_byte.as_secs_f64() * 1e3;
    ColdRun {
        first_byte_ms,
        replica_ms: replica.to_listening_ms,
        before_start_ms: (replica.started_us - sent_us) / 1e3,
        after_listen_ms: (sent_us + first_byte_ms * 1e3 - replica.listening_us) / 1e3,
    }
}

/// A burst's requests, in flight.
pub struct Burst {
    /// When they were written (all at once, on connections opened before).
    pub sent: Instant,
    sent_wall: SystemTime,
    tasks: Vec<JoinHandle<std::io::Result<Answer>>>,
}

/// How a burst was answered.
#[derive(Debug, Clone)]
pub struct BurstResult {
    pub ok: usize,
    pub failed: usize,
    /// Requests written → first and last answer's end, ms.
    pub first_answer_ms: f64,
    pub last_answer_ms: f64,
    /// The replica that served them (from any answer).
    pub replica: Option<ReplicaStart>,
    /// The replica listening → the last answer's end, ms.
    pub drain_ms: Option<f64>,
}

/// Connections opened ahead of a burst, so that the requests themselves go out together.
pub struct Connections(Vec<TcpStream>);

impl Connections {
    /// Opens `size` connections to `proxy` and lets them settle.
    pub async fn open(proxy: SocketAddr, size: usize) -> Connections {
        let mut connections = Vec::with_capacity(size);
        for _ in 0..size {
            connections.push(
                TcpStream::connect(proxy)
                    .await
                    .expect("connecting to the activator"),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Connections(connections)
    }

    /// Writes a request on every connection at once.
    pub fn send(self) -> Burst {
        let sent_wall = SystemTime::now();
        let sent = Instant::now();
        let tasks = self
            .0
            .into_iter()
            .map(|stream| tokio::spawn(exchange(stream, sent)))
            .collect();
        Burst {
            sent,
            sent_wall,
            tasks,
        }
    }
}

impl Burst {
    /// Waits for every answer.
    pub async fn answers(self) -> BurstResult {
        let (mut ok, mut failed) = (0, 0);
        let (mut first, mut last) = (f64::INFINITY, 0f64);
        let mut replica = None;
        for task in self.tasks {
            match task.await {
                Ok(Ok(answer)) if answer.ok => {
                    ok += 1;
                    let end = answer.end.as_secs_f64() * 1e3;
                    first = first.min(end);
                    last = last.max(end);
                    replica = replica.or(answer.replica);
                }
                _ => failed += 1,
            }
        }
        let sent_us = unix_us(self.sent_wall);
        BurstResult {
            ok,
            failed,
            first_answer_ms: first,
            last_answer_ms: last,
            drain_ms: replica.map(|r| (sent_us + last * 1e3 - r.listening_us) / 1e3),
            replica,
        }
    }
}

/// The first route's entry in `/routes`.
pub fn route_status(admin: SocketAddr) -> Option<Value> {
    let reply = http_get(admin, "admin", "/routes").ok()?;
    let routes: Value = serde_json::from_slice(&reply.body).ok()?;
    routes.as_array()?.first().cloned()
}

/// Waits until the route exists, has scaled to zero and has no replica left (at most 60s).
pub async fn wait_until_idle(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = tokio::task::spawn_blocking(move || route_status(admin))
            .await
            .ok()
            .flatten();
        if status.is_some_and(|s| {
            s["state"] == "idle" && s["ready_replicas"] == 0 && s["desired_replicas"] == 0
        }) {
            return;
        }
        assert!(Instant::now() < deadline, "the route never scaled to zero");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A sample of milliseconds, summarised as far as its size supports: the median, the 90th
/// percentile and the maximum, each with the sample size (a 99th percentile of 60 runs would be
/// their maximum under another name).
pub struct Distribution(Vec<f64>);

impl Distribution {
    pub fn new(values: impl IntoIterator<Item = f64>) -> Distribution {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        values.sort_by(f64::total_cmp);
        Distribution(values)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "n": self.0.len(),
            "p50_ms": quantile(&self.0, 0.5),
            "p90_ms": quantile(&self.0, 0.9),
            "max_ms": self.0.last(),
            "min_ms": self.0.first(),
        })
    }

    /// `p50 2.10 ms, p90 3.40 ms, max 5.00 ms (n = 60)`.
    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms (n = {})",
            quantile(&self.0, 0.5),
            quantile(&self.0, 0.9),
            self.0.last().copied().unwrap_or(f64::NAN),
            self.0.len()
        )
    }
}

/// The distributions of a series of cold runs, printed under `title` and returned as JSON.
pub fn report_runs(title: &str, runs: &[ColdRun]) -> Value {
    let parts = [
        (
            "first_request_to_first_byte",
            "first request → first byte   ",
            Distribution::new(runs.iter().map(|r| r.first_byte_ms)),
        ),
        (
            "replica_start_to_listening",
            "replica start → listening    ",
            Distribution::new(runs.iter().map(|r| r.replica_ms)),
        ),
        (
            "added",
            "added (per-run difference)   ",
            Distribution::new(runs.iter().map(ColdRun::added_ms)),
        ),
        (
            "request_to_replica_start",
            "  of which before its start  ",
            Distribution::new(runs.iter().map(|r| r.before_start_ms)),
        ),
        (
            "replica_listening_to_first_byte",
            "  of which after it listened ",
            Distribution::new(runs.iter().map(|r| r.after_listen_ms)),
        ),
    ];
    println!("{title}");
    let mut out = serde_json::Map::new();
    for (key, label, distribution) in parts {
        println!("  {label} {}", distribution.line());
        out.insert(key.to_owned(), distribution.to_json());
    }
    Value::Object(out)
}
