//! What passes through: headers as a reverse proxy should rewrite them, streamed bodies, trailers,
//! WebSocket upgrades, and HTTP/2 clients.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::Message;

use super::support::{Activator, echo_route, host, raw_exchange, websocket};

#[tokio::test]
async fn a_streamed_response_arrives_chunk_by_chunk_before_it_ends() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    // Two chunks, five seconds apart: the first must reach the client long before the second.
    let request = Request::get(format!("http://{}/stream/2/5000", activator.proxy))
        .header("host", host("hello"))
        .body(Full::default())
        .unwrap();
    let response = activator.client.request(request).await.unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(4), body.frame())
        .await
        .expect("the first chunk arrives before the backend sends the second")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "chunk 0\n");
    assert!(
        body.frame().now_or_never().is_none(),
        "the response has not ended yet"
    );
    drop(body);
    activator.stop().await;
}

#[tokio::test]
async fn trailers_pass_both_ways() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    let mut request_trailers = HeaderMap::new();
    request_trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let frames = futures_util::stream::iter([
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"payload"))),
        Ok(Frame::trailers(request_trailers)),
    ]);
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("http://{}/trailers", activator.proxy))
        .header("host", host("hello"))
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .body(StreamBody::new(frames))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("response trailers arrive");
    assert_eq!(
        trailers["x-request-trailers"], "x-checksum",
        "the replica saw the request trailer"
    );
    assert_eq!(collected.to_bytes(), "body\n");
    activator.stop().await;
}

#[tokio::test]
async fn a_websocket_echoes_through_the_proxy() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    let (mut socket, response) = websocket(activator.proxy, &host("hello"), "/ws").await;
    assert_eq!(response.status(), 101);
    for text in ["hello", "through the activator"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    let status = activator.route("hello").await;
    assert_eq!(
        status.in_flight, 1,
        "an open WebSocket counts as a request in flight"
    );
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    drop(socket);
    activator
        .wait_route("hello", "without requests", |r| r.in_flight == 0)
        .await;
    activator.stop().await;
}

#[tokio::test]
async fn an_h2c_client_is_served() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    // HTTP/2 with prior knowledge: the route's host travels as :authority, the socket goes to the proxy.
    let stream = tokio::net::TcpStream::connect(activator.proxy)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("the proxy speaks h2c");
    tokio::spawn(connection);
    let authority = format!("{}:{}", host("hello"), activator.proxy.port());
    let request = Request::get(format!("http://{authority}/h2"))
        .version(http::Version::HTTP_2)
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8",
        "the replica's fields reach an HTTP/2 client"
    );
    assert!(response.headers().contains_key("date"));
    let length = response.headers()["content-length"].clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(length, body.len().to_string().as_str());
    // An answer to HEAD tells its length only by the field, which an HTTP/2 client still gets.
    let head = Request::head(format!("http://{authority}/h2"))
        .version(http::Version::HTTP_2)
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(head).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().contains_key("content-length"),
        "{:?}",
        response.headers()
    );
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "replicas are spoken to in HTTP/1.1"
    );
    assert_eq!(
        echo["headers"]["host"], authority,
        "the :authority becomes the Host header"
    );
    activator.stop().await;
}

#[tokio::test]
async fn uploads_of_known_length_reuse_the_replica_connection() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    let upload = || {
        Request::post(format!("http://{}/upload", activator.proxy))
            .header("host", host("hello"))
            .body(Full::new(Bytes::from(vec![7u8; 256 * 1024])))
            .unwrap()
    };
    // The first upload opens a connection to the replica; the others, one after another, find
    // it back in the pool once the body went whole and the response ended.
    for _ in 0..10 {
        let answer = activator.send(upload()).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["bytes"], 256 * 1024);
    }
    let stats = activator.get(&host("hello"), "/__stats").await.json();
    let connections = stats["connections"].as_u64().unwrap();
    assert!(
        connections <= 2,
        "{connections} connections for 10 uploads and a GET: {stats}"
    );
    activator.stop().await;
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let activator = Activator::start(&echo_route("pipe", "")).await;
    let h = host("pipe");
    // Three requests in one write; the last asks for the close that ends the exchange.
    let raw = format!(
        "GET /bytes/3 HTTP/1.1\r\nHost: {h}\r\n\r\n\
         GET /bytes/5 HTTP/1.1\r\nHost: {h}\r\n\r\n\
         GET /bytes/7 HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
    let lengths: Vec<&str> = answer
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("content-length: "))
        .collect();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
    assert_eq!(lengths, ["3", "5", "7"], "{answer}");
    activator.stop().await;
}

#[tokio::test]
async fn an_http2_preface_that_arrives_in_pieces_is_served_as_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let activator = Activator::start(&echo_route("h2", "")).await;
    let mut stream = tokio::net::TcpStream::connect(activator.proxy)
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    // The preface as a slow client sends it: its first two lines alone read as a whole HTTP/1
    // head (of version 2.0, which would be refused).
    for piece in [&b"PRI * HT"[..], b"TP/2.0\r\n\r\n", b"SM\r\n\r\n"] {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An empty SETTINGS frame: the client's half of the connection preface.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut frame))
        .await
        .expect("the activator answers")
        .unwrap();
    // The server's preface is a SETTINGS frame (type 4) on stream 0, not an HTTP/1 status line.
    assert_eq!(frame[3], 4, "{:?}", String::from_utf8_lossy(&frame));
    assert_eq!(&frame[5..9], &[0, 0, 0, 0]);
    drop(stream);
    activator.stop().await;
}
