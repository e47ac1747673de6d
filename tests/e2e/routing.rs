//! Requests find their route by Host, and nothing else reaches a replica.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{Activator, echo_route, host};

#[tokio::test]
async fn an_unknown_host_gets_404_and_no_replica_sees_it() {
    let activator = Activator::start(&echo_route("hello", "min_scale = 1")).await;
    activator
        .wait_route("hello", "ready", |r| r.ready_replicas == 1)
        .await;
    let before = activator.get(&host("hello"), "/__stats").await.json();

    for unknown in [
        "nobody.default.127.0.0.1.nip.io",
        "hello.other.127.0.0.1.nip.io",
        "127.0.0.1",
    ] {
        let answer = activator.get(unknown, "/").await;
        assert_eq!(answer.status, 404, "{unknown}");
        assert_eq!(answer.headers["x-activator-error"], "no_route");
        assert!(
            answer.text().contains(unknown.split(':').next().unwrap()),
            "{}",
            answer.text()
        );
    }

    let after = activator.get(&host("hello"), "/__stats").await.json();
    assert_eq!(
        after["requests"],
        before["requests"].as_u64().unwrap() + 1,
        "only the stats request got through"
    );
    let metrics = activator.metrics().await;
    assert!(
        metrics.contains(
            r#"activator_requests_rejected_total{namespace="",reason="no_route",route=""} 3"#
        ),
        "{metrics}"
    );
    activator.stop().await;
}

#[tokio::test]
async fn a_request_without_host_gets_400() {
    let activator = Activator::start(&echo_route("hello", "")).await;
    let mut stream = TcpStream::connect(activator.proxy).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("x-activator-error: missing_host"),
        "{response}"
    );
    assert!(response.contains("no Host header"), "{response}");
    activator.stop().await;
}

#[tokio::test]
async fn hosts_match_case_insensitively_with_port_and_trailing_dot_and_extra_hosts() {
    let activator = Activator::start(&echo_route(
        "hello",
        "hosts = [\"hello.localhost\", \"*.apps.test\"]",
    ))
    .await;
    for h in [
        "HELLO.default.127.0.0.1.nip.io:8080",
        "hello.default.127.0.0.1.nip.io.",
        "hello.localhost",
        "a.b.apps.test",
    ] {
        assert_eq!(activator.get(h, "/").await.status, 200, "{h}");
    }
    activator.stop().await;
}
