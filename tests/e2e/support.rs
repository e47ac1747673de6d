//! Shared test helpers: start an activator on 127.0.0.1:0, talk to it, wait for conditions; and
//! a real Prometheus server to scrape it (`prometheus`).

pub mod prometheus;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use activator::app::App;
use activator::config::Config;
use activator::route::RouteStatus;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The echo backend binary, built by the workspace's `activator-echo` package. Panics with the
/// command that builds it when it is missing: a test must never pass without its replicas.
pub fn echo() -> &'static str {
    static ECHO: OnceLock<String> = OnceLock::new();
    ECHO.get_or_init(|| match activator_echo::locate() {
        Ok(path) => path.display().to_string(),
        Err(missing) => panic!("{missing}"),
    })
}

/// The default host of route `name` in `default`.
pub fn host(name: &str) -> String {
    format!("{name}.default.127.0.0.1.nip.io")
}

/// A WebSocket client connection to `path` on route host `host` through the proxy at `proxy`,
/// and the handshake's response; panics if the handshake fails.
pub async fn websocket(
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request = format!("ws://{host}{path}").into_client_request().unwrap();
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tokio_tungstenite::client_async(request, stream)
        .await
        .expect("the WebSocket handshake passes")
}

/// A route table entry running the echo backend; `settings` are extra `key = value` lines.
pub fn echo_route(name: &str, settings: &str) -> String {
    echo_route_with(name, settings, &[])
}

/// Like [`echo_route`], with extra echo arguments and no ready path (TCP probe) unless set.
pub fn echo_route_with(name: &str, settings: &str, echo_args: &[&str]) -> String {
    let mut command = vec![
        format!("{:?}", echo()),
        "\"--port\"".into(),
        "\"{port}\"".into(),
    ];
    command.extend(echo_args.iter().map(|a| format!("{a:?}")));
    format!(
        "[[routes]]\nname = \"{name}\"\n{settings}\n[routes.process]\ncommand = [{}]\nstop_grace = \"2s\"\n",
        command.join(", ")
    )
}

/// An activator running in this process.
pub struct Activator {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A response, body read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    async fn read(response: http::Response<hyper::body::Incoming>) -> Answer {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("the body arrives").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Activator {
    /// Starts an activator with `toml` (its listen addresses are ignored: both listeners bind
    /// 127.0.0.1:0). The scaler ticks every 50ms unless the config says otherwise.
    pub async fn start(toml: &str) -> Activator {
        let toml = if toml.contains("scaler_tick") {
            toml.to_owned()
        } else {
            format!("scaler_tick = \"50ms\"\n{toml}")
        };
        let config =
            Config::from_toml(&toml).unwrap_or_else(|e| panic!("test config invalid: {e}\n{toml}"));
        Activator::start_app(App::new(config)).await
    }

    /// Runs `app` on two fresh 127.0.0.1:0 listeners.
    pub async fn start_app(app: App) -> Activator {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Activator::start_app_on(app, proxy, admin)
    }

    /// Runs `app` on the listeners given.
    pub fn start_app_on(app: App, proxy: TcpListener, admin: TcpListener) -> Activator {
        let (proxy_addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(proxy, admin, async move {
            let _ = stop.await;
        }));
        Activator {
            proxy: proxy_addr,
            admin: admin_addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// GET `path` with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> Answer {
        self.send(
            Request::get(format!("http://{}{path}", self.proxy))
                .header("host", host)
                .body(Full::default())
                .unwrap(),
        )
        .await
    }

    /// Sends a GET in the background (for a request that will be held) and returns its handle.
    pub fn spawn_get(
        &self,
        host: &str,
        path: &str,
    ) -> JoinHandle<http::Response<hyper::body::Incoming>> {
        let request = Request::get(format!("http://{}{path}", self.proxy))
            .header("host", host)
            .body(Full::default())
            .unwrap();
        let client = self.client.clone();
        tokio::spawn(async move {
            client
                .request(request)
                .await
                .expect("the activator answers")
        })
    }

    /// Sends a request to the proxy and reads the answer whole.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Answer {
        let response = self
            .client
            .request(request)
            .await
            .expect("the activator answers");
        Answer::read(response).await
    }

    /// Sends a request over a fresh HTTP/2 (prior knowledge) connection and reads the answer.
    pub async fn send_h2(&self, request: Request<Full<Bytes>>) -> Answer {
        let stream = tokio::net::TcpStream::connect(self.proxy).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("the proxy speaks h2c");
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .expect("the activator answers");
        Answer::read(response).await
    }

    /// GET an admin path.
    pub async fn admin(&self, path: &str) -> Answer {
        self.send(
            Request::get(format!("http://{}{path}", self.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await
    }

    /// `/routes`.
    pub async fn routes(&self) -> Vec<RouteStatus> {
        serde_json::from_slice(&self.admin("/routes").await.body)
            .expect("/routes is a list of routes")
    }

    /// The status of route `name`.
    pub async fn route(&self, name: &str) -> RouteStatus {
        self.routes()
            .await
            .into_iter()
            .find(|r| r.name == name)
            .expect("route exists")
    }

    /// `/metrics`.
    pub async fn metrics(&self) -> String {
        self.admin("/metrics").await.text()
    }

    /// How many responses with status `code` route `name` (namespace `default`) has counted.
    pub async fn responses(&self, name: &str, code: u16) -> f64 {
        let series = format!(
            r#"activator_requests_total{{code="{code}",namespace="default",route="{name}"}}"#
        );
        metric(&self.metrics().await, &series)
    }

    /// Waits until route `name` satisfies `condition` (at most 10 seconds).
    pub async fn wait_route(
        &self,
        name: &str,
        what: &str,
        condition: impl Fn(&RouteStatus) -> bool,
    ) -> RouteStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.route(name).await;
            if condition(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "route {name} never became {what}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the activator and waits for it (and its replicas) to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the activator stops cleanly");
        }
    }
}

impl Drop for Activator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The value of a metric line `name{labels}` in Prometheus text, 0 if absent.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            series_matches(series, name_and_labels)
                .then(|| value.parse().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

/// `series` has the metric name of `wanted` and every label `wanted` lists.
fn series_matches(series: &str, wanted: &str) -> bool {
    let (name, labels) = wanted.split_once('{').unwrap_or((wanted, ""));
    let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
    series_name == name
        && labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty())
            .all(|label| {
                series_labels
                    .trim_end_matches('}')
                    .split(',')
                    .any(|l| l == label)
            })
}

/// Whether process `pid` is alive (not reaped and not a zombie).
pub fn process_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone (at most 10 seconds).
pub async fn wait_process_gone(pid: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while process_alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `condition` holds (at most 10 seconds), checking every 10ms.
pub async fn wait_until<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `raw` bytes on a new connection to `addr` and reads until the peer closes (at most 10
/// seconds); the text received.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the peer closes the connection");
    String::from_utf8_lossy(&received).into_owned()
}

/// Waits (at most 10 seconds) for the peer to close `stream`, discarding what it sends; panics if
/// it does not.
pub async fn wait_closed(stream: &mut tokio::net::TcpStream, what: &str) {
    use tokio::io::AsyncReadExt;
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: the connection is still open");
}

/// Starts a POST of `length` bytes to `path` at `host` on a new connection to `proxy`, written
/// by a task of its own in 64 KiB pieces (its writes may fail once the activator stops reading),
/// which keeps the connection open until it is aborted; returns the connection's read half and
/// the task.
pub async fn start_upload(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    length: usize,
) -> (
    tokio::net::tcp::OwnedReadHalf,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    use tokio::io::AsyncWriteExt;
    let conn = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (read, mut write) = conn.into_split();
    let head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n");
    let uploading = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..length.div_ceil(chunk.len()) {
            write.write_all(&chunk).await?;
        }
        // Written whole, the connection stays open for the answer: dropping the write half
        // would half-close it, which the activator takes for the client leaving (as nginx and
        // Go's server do) when the replica took the whole upload before answering.
        std::future::pending::<()>().await;
        drop(write);
        Ok(())
    });
    (read, uploading)
}
