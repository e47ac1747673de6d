//! Limits that keep one bad client or replica from holding anything for long: connections that
//! send nothing or stall their headers, idle keep-alive connections, a connection limit that
//! leaves the admin listener answering, replicas that never answer or stall mid-body, clients
//! that never read, uploads that stall (the client's or the replica's doing), and tunnels that
//! go quiet.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{
    Activator, echo_route, host, metric, start_upload, wait_closed, wait_until, websocket,
};

/// Short limits, so each test takes a fraction of a second.
const FAST: &str = "header_read_timeout = \"300ms\"\nkeepalive_timeout = \"300ms\"\n";

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let activator = Activator::start(&format!("{FAST}{}", echo_route("a", ""))).await;
    let mut silent = TcpStream::connect(activator.proxy).await.unwrap();
    wait_closed(&mut silent, "a silent connection").await;
    activator.stop().await;
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_closed_after_the_header_timeout() {
    let activator = Activator::start(&format!("{FAST}{}", echo_route("a", ""))).await;
    let mut slow = TcpStream::connect(activator.proxy).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    wait_closed(&mut slow, "a slow head").await;
    activator.stop().await;
}

#[tokio::test]
async fn an_http2_connection_that_opens_no_stream_is_closed() {
    let activator = Activator::start(&format!("{FAST}{}", echo_route("a", ""))).await;
    let mut h2 = TcpStream::connect(activator.proxy).await.unwrap();
    // The connection preface and an empty SETTINGS frame, then nothing.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    wait_closed(&mut h2, "an HTTP/2 connection without streams").await;
    activator.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_busy_one_is_not() {
    let activator = Activator::start(&format!(
        "header_read_timeout = \"2s\"\nkeepalive_timeout = \"1s\"\n{}",
        echo_route("a", "")
    ))
    .await;
    let mut conn = TcpStream::connect(activator.proxy).await.unwrap();
    let request = format!("GET /bytes/10 HTTP/1.1\r\nHost: {}\r\n\r\n", host("a"));
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        conn.write_all(request.as_bytes()).await.unwrap();
        let n = conn.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_closed(&mut conn, "an idle keep-alive connection").await;
    activator.stop().await;
}

#[tokio::test]
async fn beyond_max_connections_new_ones_wait_and_the_admin_listener_still_answers() {
    let activator = Activator::start(&format!(
        "max_connections = 2\nheader_read_timeout = \"20s\"\n{}",
        echo_route("a", "")
    ))
    .await;
    let first = TcpStream::connect(activator.proxy).await.unwrap();
    let _second = TcpStream::connect(activator.proxy).await.unwrap();
    // The third connects (the kernel's backlog) but is not served while the limit is reached.
    let mut third = TcpStream::connect(activator.proxy).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host("a")
    );
    third.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond max_connections");
    assert_eq!(activator.admin("/healthz").await.status, 200);
    drop(first);
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    activator.stop().await;
}

#[tokio::test]
async fn a_replica_that_never_answers_gets_504_upstream_timeout() {
    let activator = Activator::start(&echo_route("slow", "response_timeout = \"300ms\"")).await;
    let answer = activator.get(&host("slow"), "/delay/600000").await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.headers["x-activator-error"], "upstream_timeout");
    assert!(
        answer.text().contains("response_timeout"),
        "{}",
        answer.text()
    );
    // Its count ends as its task lets go of it, which can be just after the answer arrived.
    activator
        .wait_route("slow", "the request no longer in flight", |r| {
            r.in_flight == 0
        })
        .await;
    // The replica still serves others.
    assert_eq!(activator.get(&host("slow"), "/").await.status, 200);
    activator.stop().await;
}

#[tokio::test]
async fn each_request_on_a_connection_gets_its_own_response_timeout() {
    // A client connection's requests take turns with one response timer, set anew for each: a
    // request after an answered one still times out at its own deadline, and requests at once
    // over HTTP/2 each time out.
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::Request;
    let activator = Activator::start(&echo_route("slow", "response_timeout = \"300ms\"")).await;
    let stream = TcpStream::connect(activator.proxy).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let get = |path: &str| {
        Request::get(path)
            .header("host", host("slow"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    for path in ["/", "/delay/600000", "/", "/delay/600000"] {
        let slow = path != "/";
        if slow {
            // Past the previous request's deadline, were it still set.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let sent = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), sender.send_request(get(path)))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(answer.status(), if slow { 504 } else { 200 }, "{path}");
        if slow {
            assert!(
                sent.elapsed() >= Duration::from_millis(300),
                "timed out after {:?}, before its own deadline",
                sent.elapsed()
            );
        }
        answer.into_body().collect().await.unwrap();
    }
    let slow = || {
        Request::get("/delay/600000")
            .header("host", host("slow"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let stream = TcpStream::connect(activator.proxy).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let answers = futures_util::future::join_all((0..3).map(|_| {
        let mut sender = sender.clone();
        let request = slow();
        async move { sender.send_request(request).await.unwrap().status() }
    }));
    let statuses = tokio::time::timeout(Duration::from_secs(10), answers)
        .await
        .expect("answers in time");
    assert_eq!(statuses, [504, 504, 504]);
    activator.stop().await;
}

#[tokio::test]
async fn an_upload_still_moving_is_not_cut_short_by_the_response_timeout() {
    // The timeout counts from the request's end, as Envoy's route timeout does: an upload that
    // takes longer than it, but keeps moving, is answered.
    let activator = Activator::start(&echo_route("up", "response_timeout = \"300ms\"")).await;
    let mut client = TcpStream::connect(activator.proxy).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 8\r\nConnection: close\r\n\r\n",
        host("up")
    );
    client.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"x").await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    activator.stop().await;
}

#[tokio::test]
async fn a_response_that_stalls_mid_body_is_ended_and_counted() {
    let activator = Activator::start(&echo_route("stall", "stream_idle_timeout = \"300ms\"")).await;
    // Two chunks a minute apart: the first arrives, then nothing.
    let response = activator
        .spawn_get(&host("stall"), "/stream/2/60000")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body());
    let ended = tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("the stalled body ends");
    assert!(
        ended.is_err(),
        "the body ends with an error, not as complete"
    );
    wait_until("the stall counted and the request over", || async {
        let metrics = activator.metrics().await;
        metric(
            &metrics,
            r#"activator_stream_idle_timeouts_total{route="stall"}"#,
        ) == 1.0
            && activator.route("stall").await.in_flight == 0
    })
    .await;
    activator.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_response_is_let_go() {
    let activator = Activator::start(&echo_route("big", "stream_idle_timeout = \"300ms\"")).await;
    assert_eq!(activator.get(&host("big"), "/").await.status, 200);
    let mut reader_never = TcpStream::connect(activator.proxy).await.unwrap();
    let request = format!(
        "GET /bytes/200000000 HTTP/1.1\r\nHost: {}\r\n\r\n",
        host("big")
    );
    reader_never.write_all(request.as_bytes()).await.unwrap();
    activator
        .wait_route("big", "serving it", |r| r.in_flight == 1)
        .await;
    wait_until("the stalled client let go and counted", || async {
        let metrics = activator.metrics().await;
        metric(
            &metrics,
            r#"activator_stream_idle_timeouts_total{route="big"}"#,
        ) == 1.0
            && activator.route("big").await.in_flight == 0
    })
    .await;
    drop(reader_never);
    activator.stop().await;
}

#[tokio::test]
async fn a_stalled_upload_answered_early_does_not_trap_the_next_request() {
    let activator = Activator::start(&echo_route(
        "up",
        "max_scale = 1\nstream_idle_timeout = \"2s\"",
    ))
    .await;
    let pid = activator.get(&host("up"), "/").await.json()["pid"].clone();
    // An upload of 100,000 bytes that sends 10 and stops; the replica answers 401 at once.
    let mut uploader = TcpStream::connect(activator.proxy).await.unwrap();
    let head = format!(
        "POST /status/401 HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n0123456789",
        host("up")
    );
    uploader.write_all(head.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), uploader.read(&mut byte))
            .await
            .expect("the early answer arrives")
            .unwrap();
        assert_eq!(
            n,
            1,
            "the answer's head ends: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // The rest of the upload would be taken for the next request: the answer says the
    // connection ends with it.
    assert!(head.contains("connection: close"), "{head}");
    // The next request to that replica is served at once, not behind the unfinished upload.
    let next = tokio::time::timeout(Duration::from_secs(1), activator.get(&host("up"), "/"))
        .await
        .expect("the next request is not trapped");
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["pid"], pid, "the same replica");
    drop(uploader);
    activator.stop().await;
}

#[tokio::test]
async fn an_upload_the_client_stops_sending_gets_408_not_the_replicas_blame() {
    let activator = Activator::start(&echo_route("up", "stream_idle_timeout = \"300ms\"")).await;
    let raw = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789",
        host("up")
    );
    let mut uploader = TcpStream::connect(activator.proxy).await.unwrap();
    uploader.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), uploader.read_to_end(&mut answer))
        .await
        .expect("an answer, then the close")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("x-activator-error: request_timeout"),
        "{answer}"
    );
    assert_eq!(
        activator.responses("up", 502).await,
        0.0,
        "not the replica's failure"
    );
    activator.stop().await;
}

/// A replica that reads a request's head and then neither its body nor anything else, and never
/// answers a POST; a GET gets `ok`.
fn deaf_replica_route(name: &str, settings: &str) -> String {
    let script = r#"
import socket, sys, threading, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(64)
def serve(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return
        data += more
    if data.startswith(b"GET"):
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    else:
        time.sleep(60)
    conn.close()
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;
    format!(
        "[[routes]]\nname = \"{name}\"\nmin_scale = 1\n{settings}\n[routes.process]\ncommand = [\"python3\", \"-c\", {script:?}, \"{{port}}\"]\nready_path = \"/\"\nstop_grace = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_replica_stops_reading_gets_504_after_the_stream_idle_timeout() {
    let activator = Activator::start(&deaf_replica_route(
        "deaf",
        "stream_idle_timeout = \"300ms\"\nresponse_timeout = \"60s\"",
    ))
    .await;
    assert_eq!(activator.get(&host("deaf"), "/").await.status, 200);
    // More than the sockets between client and replica hold, so that the upload stops moving.
    const LENGTH: usize = 64 << 20;
    let (mut read, uploading) =
        start_upload(activator.proxy, &host("deaf"), "/upload", LENGTH).await;
    // The answer, then the end of the connection: the rest of the upload is not read.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer))
        .await
        .expect("an answer long before the response timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(
        answer.contains("x-activator-error: upstream_timeout"),
        "{answer}"
    );
    assert!(answer.contains("stream_idle_timeout"), "{answer}");
    assert_eq!(
        metric(
            &activator.metrics().await,
            r#"activator_stream_idle_timeouts_total{route="deaf"}"#
        ),
        1.0
    );
    uploading.abort();
    activator.stop().await;
}

#[tokio::test]
async fn a_quiet_websocket_tunnel_is_closed_after_the_stream_idle_timeout() {
    use futures_util::StreamExt;
    let activator = Activator::start(&echo_route("ws", "stream_idle_timeout = \"300ms\"")).await;
    let (mut socket, _) = websocket(activator.proxy, &host("ws"), "/ws").await;
    let ended = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
    assert!(ended.is_ok(), "the quiet tunnel is still open");
    wait_until("the idle tunnel counted and over", || async {
        let metrics = activator.metrics().await;
        metric(
            &metrics,
            r#"activator_stream_idle_timeouts_total{route="ws"}"#,
        ) == 1.0
            && activator.route("ws").await.in_flight == 0
    })
    .await;
    activator.stop().await;
}
