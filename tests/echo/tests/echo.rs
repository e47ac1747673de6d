//! The real `activator-echo` binary over real sockets: the echo's JSON, the headers that set its
//! status and delay, the test endpoints, h2c, WebSocket, the pod environment, and how it ends.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_activator-echo");

/// A running echo server.
struct Echo {
    child: Child,
    address: SocketAddr,
}

impl Echo {
    /// Starts the binary with `args` and extra environment, on a free port unless told
    /// otherwise, and waits for the line saying where it listens.
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Echo {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_remove("PORT")
            .env_remove("HTTP_PORT")
            .env_remove("POD_IP")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        if !args.contains(&"--port") && !env.iter().any(|(k, _)| *k == "HTTP_PORT") {
            command.args(["--port", "0"]);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("the echo starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .expect("a line");
        let address = line
            .trim()
            .strip_prefix("activator-echo listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Echo { child, address }
    }

    /// Sends `request` over a fresh connection of `version` and reads the answer whole.
    async fn send(
        &self,
        version: Version,
        request: Request<Full<Bytes>>,
    ) -> (u16, http::HeaderMap, Bytes) {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .expect("connect");
        let response = if version == Version::HTTP_2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2c handshake");
            tokio::spawn(connection);
            sender.send_request(request).await.expect("a response")
        } else {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            sender.send_request(request).await.expect("a response")
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, headers, body)
    }

    async fn get(&self, path: &str) -> (u16, Bytes) {
        let request = Request::get(path)
            .header("host", "echo.test:8080")
            .body(Full::default())
            .expect("request");
        let (status, _, body) = self.send(Version::HTTP_11, request).await;
        (status, body)
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[tokio::test]
async fn any_other_path_is_described_as_the_mendhak_image_describes_it() {
    let echo = Echo::start(&[], &[("HOSTNAME", "web-abc")]).await;
    let request = Request::post("/hello/there?from=test&x=1&x=2&q=a%20b")
        .header("host", "echo.test:8080")
        .header("content-type", "application/json")
        .header("x-twice", "1")
        .header("x-twice", "2")
        .body(Full::from(r#"{"greeting":"hi"}"#))
        .expect("request");
    let (status, headers, body) = echo.send(Version::HTTP_11, request).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    let answer = json_of(&body);
    assert_eq!(answer["path"], "/hello/there");
    assert_eq!(answer["method"], "POST");
    assert_eq!(answer["hostname"], "echo.test");
    assert_eq!(answer["ip"], "127.0.0.1");
    assert_eq!(answer["protocol"], "http");
    assert_eq!(
        answer["query"],
        json!({"from": "test", "x": ["1", "2"], "q": "a b"})
    );
    assert_eq!(answer["headers"]["host"], "echo.test:8080");
    assert_eq!(answer["headers"]["x-twice"], json!(["1", "2"]));
    assert_eq!(answer["body"], r#"{"greeting":"hi"}"#);
    assert_eq!(answer["json"], json!({"greeting": "hi"}));
    assert_eq!(answer["os"]["hostname"], "web-abc");
    assert_eq!(answer["version"], "HTTP/1.1");
    assert_eq!(answer["pid"], echo.child.id().expect("pid"));
}

#[tokio::test]
async fn request_headers_set_the_answer_status_and_delay() {
    let echo = Echo::start(&[], &[]).await;
    let request = Request::get("/")
        .header("x-set-response-status-code", "418")
        .header("x-set-response-delay-ms", "300")
        .body(Full::default())
        .expect("request");
    let started = Instant::now();
    let (status, _, body) = echo.send(Version::HTTP_11, request).await;
    assert_eq!(status, 418);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(json_of(&body)["path"], "/");
}

#[tokio::test]
async fn test_endpoints_answer_statuses_bytes_streams_and_statistics() {
    let echo = Echo::start(&[], &[]).await;
    assert_eq!(echo.get("/status/503").await.0, 503);
    assert_eq!(echo.get("/status/teapot").await.0, 400);
    let (status, bytes) = echo.get("/bytes/1024").await;
    assert_eq!((status, bytes.len()), (200, 1024));
    let (_, chunks) = echo.get("/stream/3/1").await;
    assert_eq!(chunks, "chunk 0\nchunk 1\nchunk 2\n");
    let (_, delayed) = echo.get("/delay/1").await;
    assert_eq!(json_of(&delayed)["path"], "/delay/1");

    let upload = Request::post("/upload")
        .body(Full::from(vec![7u8; 100_000]))
        .expect("request");
    let (_, _, counted) = echo.send(Version::HTTP_11, upload).await;
    assert_eq!(json_of(&counted)["bytes"], 100_000);

    let (_, stats) = echo.get("/__stats").await;
    let stats = json_of(&stats);
    assert_eq!(stats["requests"], 7);
    assert_eq!(stats["connections"], 7);
    assert_eq!(stats["in_flight"], 0);
}

#[tokio::test]
async fn statistics_say_when_the_process_started_and_began_to_listen() {
    let unix_micros = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    let before_spawn = unix_micros();
    let echo = Echo::start(&["--startup-delay-ms", "200"], &[]).await;
    let (_, stats) = echo.get("/__stats").await;
    let startup = &json_of(&stats)["startup"];
    let number = |key: &str| {
        startup[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in {startup}"))
    };
    let (started, listening) = (number("started_unix_us"), number("listening_unix_us"));
    assert!(
        before_spawn <= started && started < listening && listening <= unix_micros(),
        "spawned at {before_spawn}, then {startup}"
    );
    assert_eq!(number("start_to_listening_us"), listening - started);
    assert!(
        number("start_to_listening_us") >= 200_000,
        "the startup delay is part of the start: {startup}"
    );
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let echo = Echo::start(&[], &[]).await;
    let request = Request::get(format!("http://{}/over/h2", echo.address))
        .body(Full::default())
        .expect("request");
    let (status, _, body) = echo.send(Version::HTTP_2, request).await;
    assert_eq!(status, 200);
    let answer = json_of(&body);
    assert_eq!(answer["version"], "HTTP/2.0");
    assert_eq!(answer["path"], "/over/h2");
}

#[tokio::test]
async fn a_websocket_echoes_every_message() {
    let echo = Echo::start(&[], &[]).await;
    let url = format!("ws://{}/ws", echo.address);
    let (mut socket, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the handshake succeeds");
    assert_eq!(response.status(), 101);
    for text in ["one", "two"] {
        socket.send(Message::text(text)).await.expect("send");
        let echoed = socket.next().await.expect("a message").expect("ok");
        assert_eq!(echoed, Message::text(text));
    }
    assert_eq!(echo.get("/ws").await.0, 400, "a plain GET is refused");
}

#[tokio::test]
async fn a_pod_listens_on_its_address_and_http_port() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = probe.local_addr().expect("address").port();
    drop(probe);
    let echo = Echo::start(
        &[],
        &[("POD_IP", "127.0.0.1"), ("HTTP_PORT", &port.to_string())],
    )
    .await;
    assert_eq!(echo.address, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(echo.get("/").await.0, 200);
}

#[tokio::test]
async fn the_server_exits_when_its_standard_input_closes() {
    let mut echo = Echo::start(&["--exit-on-stdin-eof"], &[]).await;
    assert_eq!(echo.get("/").await.0, 200);
    drop(echo.child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(10), echo.child.wait())
        .await
        .expect("it exits")
        .expect("status");
    assert!(status.success());
}

#[tokio::test]
async fn with_a_term_delay_it_serves_on_after_sigterm_then_exits() {
    let mut echo = Echo::start(&["--term-delay-ms", "500"], &[]).await;
    let pid = echo.child.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(echo.get("/").await.0, 200, "still serving");
    let status = tokio::time::timeout(Duration::from_secs(10), echo.child.wait())
        .await
        .expect("it exits")
        .expect("status");
    assert!(status.success());
}

#[tokio::test]
async fn a_bad_argument_exits_with_usage() {
    let output = Command::new(BIN)
        .arg("--verbose")
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown argument \"--verbose\""),
        "{stderr}"
    );
    assert!(stderr.contains("usage: activator-echo"), "{stderr}");
}

#[test]
fn the_binary_is_found_where_cargo_puts_it() {
    let found = activator_echo::locate().expect("found");
    assert_eq!(
        found.canonicalize().expect("exists"),
        std::path::Path::new(BIN).canonicalize().expect("exists")
    );
}
