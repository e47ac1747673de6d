//! Requests that could be read two ways are refused, and what reaches the replica is what was
//! routed: one host, no tunnel for CONNECT, only allowed upgrades, forwarded headers believed
//! only from trusted proxies, and headers within the limit.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::support::{Activator, echo_route, host, metric, raw_exchange};

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
        .header("connection", "keep-alive, x-internal")
        .header("x-internal", "secret")
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
    for gone in ["x-internal", "keep-alive", "proxy-authorization"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the replica: {headers}"
        );
    }
    assert_eq!(headers["host"], host("hello"), "Host is preserved");
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], host("hello"));
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
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "www.example.com")
        .body(Full::default())
        .unwrap();
    let headers = activator.send(request).await.json()["headers"].clone();
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
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
