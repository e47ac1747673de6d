//! Requests that could be read two ways are refused, and what reaches the replica is what was
//! routed: one host, no tunnel for CONNECT, only allowed upgrades, forwarded headers believed
//! only from trusted proxies, and headers within the limit.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::support::{Activator, echo_route, host, metric, raw_exchange};

#[tokio::test]
async fn a_body_two_parsers_could_end_differently_gets_400_and_nothing_after_it_is_served() {
    let activator = Activator::start(&echo_route("a", "")).await;
    let h = host("a");
    let next = format!("GET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n");
    for (what, framing) in [
        (
            "Transfer-Encoding and Content-Length",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "a chunk size that is not hex",
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZ\r\n",
        ),
        (
            "a size line ending in a bare LF",
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3c\n",
        ),
        (
            "trailers ending in a bare LF",
            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
        ),
    ] {
        let raw = format!("POST /upload HTTP/1.1\r\nHost: {h}\r\n{framing}{next}");
        let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(
            answer.contains("x-activator-error: bad_request"),
            "{what}: {answer}"
        );
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{what}: {answer}");
        assert!(!answer.contains("smuggled"), "{what}: {answer}");
    }
    assert_eq!(
        activator.responses("a", 502).await,
        0.0,
        "the client's malformed body is not the replica's failure"
    );
    activator.stop().await;
}

#[tokio::test]
async fn a_malformed_chunked_body_to_an_h2c_replica_gets_400_too() {
    let activator = Activator::start(&echo_route("h2", "upstream_protocol = \"h2c\"")).await;
    let h = host("h2");
    assert_eq!(activator.get(&h, "/").await.status, 200);
    let raw = format!(
        "POST /upload HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nGET /smuggled HTTP/1.1\r\nHost: {h}\r\n\r\n"
    );
    let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("x-activator-error: bad_request"),
        "{answer}"
    );
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    activator.stop().await;
}

#[tokio::test]
async fn an_answer_that_leaves_the_body_unread_says_the_connection_closes() {
    let activator = Activator::start(&echo_route("a", "")).await;
    // No route for this host: answered 404 without reading the body, so the bytes after it
    // cannot be told from the next request, and the client must know not to send one.
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: nobody.test\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: {}\r\n\r\n",
        host("a")
    );
    let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    activator.stop().await;
}

#[tokio::test]
async fn a_client_expecting_100_continue_is_invited_once_its_body_is_wanted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let activator = Activator::start(&echo_route("a", "")).await;
    let mut client = tokio::net::TcpStream::connect(activator.proxy)
        .await
        .unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        host("a")
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut interim = vec![0u8; b"HTTP/1.1 100 Continue\r\n\r\n".len()];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.read_exact(&mut interim),
    )
    .await
    .expect("a 100 Continue before the body")
    .unwrap();
    assert_eq!(&interim[..], b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"hello").await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("100 Continue"), "invited once: {answer}");

    // Answered without its body (no route): no invitation, and the connection closes.
    let raw =
        "POST / HTTP/1.1\r\nHost: nobody.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    activator.stop().await;
}

#[tokio::test]
async fn a_target_naming_another_host_than_the_host_header_gets_400() {
    let activator =
        Activator::start(&format!("{}{}", echo_route("a", ""), echo_route("b", ""))).await;
    let raw = format!(
        "GET http://{}/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host("b"),
        host("a")
    );
    let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("x-activator-error: host_mismatch"),
        "{answer}"
    );
    assert!(answer.contains("Host header"), "{answer}");
    // Neither route saw a request.
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(&metrics, r#"activator_cold_starts_total{route="a"}"#),
        0.0
    );
    assert_eq!(
        metric(&metrics, r#"activator_cold_starts_total{route="b"}"#),
        0.0
    );
    activator.stop().await;
}

#[tokio::test]
async fn an_absolute_form_target_agreeing_with_host_is_served_with_that_host() {
    let activator = Activator::start(&echo_route("a", "")).await;
    let raw = format!(
        "GET http://{h}/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n",
        h = host("a").to_uppercase()
    );
    let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["path"], "/x", "origin form to the replica");
    assert_eq!(echo["headers"]["host"], host("a").to_uppercase());
    activator.stop().await;
}

#[tokio::test]
async fn two_host_headers_get_400() {
    let activator = Activator::start(&echo_route("a", "")).await;
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        host("a")
    );
    let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("x-activator-error: host_mismatch"),
        "{answer}"
    );
    activator.stop().await;
}

#[tokio::test]
async fn connect_gets_405_with_allow() {
    let activator = Activator::start(&echo_route("a", "")).await;
    let raw = format!(
        "CONNECT {h}:443 HTTP/1.1\r\nHost: {h}:443\r\nConnection: close\r\n\r\n",
        h = host("a")
    );
    let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.contains("x-activator-error: method_not_allowed"),
        "{answer}"
    );
    assert!(
        answer.to_lowercase().contains("allow: get, head"),
        "{answer}"
    );
    activator.stop().await;
}

#[tokio::test]
async fn an_upgrade_that_is_not_allowed_reaches_the_replica_as_a_plain_request() {
    let activator = Activator::start(&echo_route("a", "")).await;
    let request = Request::get(format!("http://{}/headers", activator.proxy))
        .header("host", host("a"))
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", "h2c")
        .header("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA")
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = activator.send(request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let headers = &answer.json()["headers"];
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the replica: {headers}"
        );
    }
    activator.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_client_are_replaced() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    let request = Request::get(format!("http://{}/headers", activator.proxy))
        .header("host", host("hello"))
        .header("connection", "keep-alive, x-internal, host, x-request-id")
        .header("x-internal", "secret")
        .header("x-request-id", "client-id-1")
        .header(
            "forwarded",
            "for=203.0.113.7;proto=https;host=admin.internal",
        )
        .header("x-real-ip", "203.0.113.7")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp5")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "bank.example")
        .header("x-custom", "kept")
        .body(Full::default())
        .unwrap();
    let answer = activator.send(request).await;
    assert_eq!(answer.status, 200);
    let echo = answer.json();
    let headers = &echo["headers"];
    for gone in [
        "x-internal",
        "keep-alive",
        "proxy-authorization",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the replica: {headers}"
        );
    }
    assert_eq!(
        headers["host"],
        host("hello"),
        "Host is preserved, even named in Connection"
    );
    assert_eq!(headers["x-request-id"], "client-id-1");
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], host("hello"));
    activator.stop().await;
}

#[tokio::test]
async fn fields_only_the_replica_reads_reach_it_in_order_unless_connection_names_them() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    let h = host("hello");
    let fields = "USER-AGENT: probe/1\r\nAccept-Language: da\r\nSec-Fetch-Mode: navigate\r\n\
                  X-Custom: kept\r\naccept-language: en;q=0.5\r\nAuthorization: Bearer t\r\n";
    // What the echo replica saw of a request sent with `fields` and this `Connection` line.
    let seen = async |connection: &str| {
        let raw = format!(
            "GET /headers HTTP/1.1\r\nHost: {h}\r\n{fields}Connection: {connection}\r\n\r\n"
        );
        let answer = raw_exchange(activator.proxy, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        serde_json::from_str::<serde_json::Value>(body).unwrap()["headers"].take()
    };
    let headers = seen("close").await;
    assert_eq!(headers["user-agent"], "probe/1");
    assert_eq!(headers["sec-fetch-mode"], "navigate");
    assert_eq!(headers["authorization"], "Bearer t");
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(
        headers["accept-language"],
        serde_json::json!(["da", "en;q=0.5"]),
        "lines of one name keep their order"
    );
    assert_eq!(headers["host"], h);
    // Named by `Connection`, a field is the connection's, however the proxy reads it otherwise.
    let headers = seen("close, User-Agent").await;
    assert!(headers.get("user-agent").is_none(), "{headers}");
    assert_eq!(headers["sec-fetch-mode"], "navigate");
    assert_eq!(
        headers["accept-language"],
        serde_json::json!(["da", "en;q=0.5"])
    );
    activator.stop().await;
}

#[tokio::test]
async fn a_request_with_several_ids_reaches_the_replica_with_one_new_id() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    for (first, second) in [("one", "two"), ("one", &*"x".repeat(129))] {
        let request = Request::get(format!("http://{}/headers", activator.proxy))
            .header("host", host("hello"))
            .header("x-request-id", first)
            .header("x-request-id", second)
            .body(Full::default())
            .unwrap();
        let answer = activator.send(request).await;
        assert_eq!(answer.status, 200);
        let id = &answer.json()["headers"]["x-request-id"];
        let id = id
            .as_str()
            .unwrap_or_else(|| panic!("one id reaches the replica, not {id}"));
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "a new id, not {id}"
        );
    }
    activator.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_are_kept_and_appended() {
    let activator = Activator::start(&format!(
        "trusted_proxies = [\"127.0.0.0/8\"]\n{}",
        echo_route("hello", "")
    ))
    .await;
    let request = Request::get(format!("http://{}/headers", activator.proxy))
        .header("host", host("hello"))
        .header("x-forwarded-for", "203.0.113.7")
        // A proxy that adds a line of its own (HAProxy's `option forwardfor`).
        .header("x-forwarded-for", "198.51.100.2")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "www.example.com")
        .header("forwarded", "for=203.0.113.7")
        .body(Full::default())
        .unwrap();
    let headers = activator.send(request).await.json()["headers"].clone();
    assert_eq!(
        headers["x-forwarded-for"],
        "203.0.113.7, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(headers["forwarded"], "for=203.0.113.7, for=127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], "www.example.com");
    activator.stop().await;
}

#[tokio::test]
async fn headers_beyond_max_header_bytes_get_431_saying_so() {
    let activator =
        Activator::start(&format!("max_header_bytes = 4096\n{}", echo_route("a", ""))).await;
    let request = Request::get(format!("http://{}/", activator.proxy))
        .header("host", host("a"))
        .header("cookie", "c".repeat(5000))
        .body(Full::default())
        .unwrap();
    let answer = activator.send(request).await;
    assert_eq!(answer.status, 431);
    assert_eq!(answer.headers["x-activator-error"], "headers_too_large");
    assert!(
        answer.text().contains("max_header_bytes"),
        "{}",
        answer.text()
    );
    let small = activator.get(&host("a"), "/").await;
    assert_eq!(small.status, 200);
    activator.stop().await;
}

#[tokio::test]
async fn more_than_a_hundred_header_fields_get_431_saying_so_over_http2_too() {
    let activator = Activator::start(&echo_route("a", "")).await;
    let mut request = Request::get(format!("http://{}/", activator.proxy))
        .version(http::Version::HTTP_2)
        .header("host", host("a"));
    for i in 0..120 {
        request = request.header(format!("x-field-{i}"), "1");
    }
    let answer = activator
        .send_h2(request.body(Full::default()).unwrap())
        .await;
    assert_eq!(answer.status, 431);
    assert_eq!(answer.headers["x-activator-error"], "headers_too_large");
    assert!(answer.text().contains("header fields"), "{}", answer.text());
    activator.stop().await;
}

/// A replica that answers every request with the raw bytes its path names.
fn raw_replica_route(name: &str) -> String {
    let script = r#"
import socket, sys
answers = {
    b"/both": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nhello, smuggled!\r\n0\r\n\r\n",
    b"/switch": b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"/gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nsmuggled",
    b"/gzipped": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n8\r\nsmuggled\r\n0\r\n\r\n",
}
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(64)
while True:
    conn, _ = server.accept()
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
    path = head.split(b" ")[1] if head.count(b" ") >= 2 else b"/"
    conn.sendall(answers.get(path, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    conn.close()
"#;
    format!(
        "[[routes]]\nname = \"{name}\"\n[routes.process]\ncommand = [\"python3\", \"-c\", {script:?}, \"{{port}}\"]\nstop_grace = \"1s\"\n"
    )
}

#[tokio::test]
async fn a_replica_response_framed_two_ways_or_not_chunked_last_or_switching_unasked_gets_502() {
    let activator = Activator::start(&raw_replica_route("raw")).await;
    assert_eq!(activator.get(&host("raw"), "/fine").await.status, 200);
    for path in ["/both", "/switch", "/gzip", "/gzipped"] {
        let answer = activator.get(&host("raw"), path).await;
        assert_eq!(answer.status, 502, "{path}: {}", answer.text());
        assert_eq!(answer.headers["x-activator-error"], "upstream", "{path}");
        assert!(!answer.text().contains("smuggled"), "{path}");
    }
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"activator_requests_total{code="502",namespace="default",route="raw"}"#
        ),
        4.0,
        "{metrics}"
    );
    activator.stop().await;
}
