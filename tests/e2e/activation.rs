//! Held requests: released when a replica is ready, bounded in number and in time, and gone from
//! the queue the moment their client goes.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::support::{Activator, echo_route, echo_route_with, host, metric};

#[tokio::test]
async fn a_thousand_concurrent_requests_to_a_cold_route_all_succeed_after_one_scale_up() {
    // Concurrency far above the target would add replicas; a huge target leaves it to activation.
    let activator = Activator::start(&echo_route(
        "hello",
        "max_scale = 5\ntarget_concurrency = 1000000",
    ))
    .await;
    assert_eq!(activator.route("hello").await.desired_replicas, 0);

    let h = host("hello");
    let answers = join_all((0..1000).map(|_| activator.get(&h, "/"))).await;

    assert!(
        answers.iter().all(|a| a.status == 200),
        "every held request is served"
    );
    let pids: HashSet<u64> = answers
        .iter()
        .map(|a| a.json()["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "one replica served them all");
    let metrics = activator.metrics().await;
    let up = r#"activator_scale_events_total{direction="up",namespace="default",result="success",route="hello"}"#;
    assert_eq!(
        metric(&metrics, up),
        1.0,
        "exactly one scale-up:\n{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"activator_cold_starts_total{route="hello"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"activator_requests_total{code="200",route="hello"}"#
        ),
        1000.0
    );
    let status = activator.route("hello").await;
    assert_eq!(
        (
            status.desired_replicas,
            status.ready_replicas,
            status.queued
        ),
        (1, 1, 0)
    );
    activator.stop().await;
}

/// A route whose replica never becomes ready: it listens, but its ready path answers 503.
fn never_ready(name: &str, settings: &str) -> String {
    echo_route(name, settings).replace("stop_grace", "ready_path = \"/status/503\"\nstop_grace")
}

#[tokio::test]
async fn a_replica_that_never_becomes_ready_gives_504_and_says_why_only_to_the_operator() {
    let activator = Activator::start(&never_ready("stuck", "cold_start_timeout = \"1s\"")).await;
    let answer = activator.get(&host("stuck"), "/").await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.headers["x-activator-error"], "cold_start_timeout");
    let text = answer.text();
    assert!(text.contains("default/stuck"), "names the route: {text}");
    assert!(text.contains("1.0s"), "names the time waited: {text}");
    let id = answer.headers["x-request-id"].to_str().unwrap();
    assert!(text.contains(id), "quotes the request id: {text}");
    assert!(
        !text.contains("503") && !text.contains("pid") && !text.contains("127.0.0.1"),
        "nothing internal reaches the client: {text}"
    );
    let status = activator.route("stuck").await;
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("GET /status/503 answered 503"),
        "/routes says what is wrong with the replica: {message}"
    );
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"activator_requests_rejected_total{reason="cold_start_timeout",route="stuck"}"#
        ),
        1.0
    );
    activator.stop().await;
}

#[tokio::test]
async fn beyond_max_queued_requests_get_503_with_retry_after_at_once() {
    let activator = Activator::start(&never_ready(
        "stuck",
        "max_queued = 2\ncold_start_timeout = \"20s\"",
    ))
    .await;
    let h = host("stuck");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (proxy, h) = (activator.proxy, h.clone());
            tokio::spawn(async move { hold_raw(proxy, &h).await })
        })
        .collect();
    activator
        .wait_route("stuck", "holding two", |r| r.queued == 2)
        .await;

    let answer = activator.get(&h, "/").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["x-activator-error"], "queue_full");
    assert_eq!(answer.headers["retry-after"], "1");
    assert!(
        answer.text().contains("holds 2 waiting requests"),
        "{}",
        answer.text()
    );
    for h in held {
        h.abort();
    }
    activator.stop().await;
}

/// Sends a GET on a raw connection and keeps the connection open without reading.
async fn hold_raw(proxy: std::net::SocketAddr, host: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    std::future::pending::<()>().await;
    stream
}

#[tokio::test]
async fn a_client_that_disconnects_while_held_leaves_the_queue() {
    let activator = Activator::start(&never_ready("stuck", "cold_start_timeout = \"20s\"")).await;
    let mut stream = TcpStream::connect(activator.proxy).await.unwrap();
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host("stuck")).as_bytes())
        .await
        .unwrap();
    activator
        .wait_route("stuck", "holding one", |r| r.queued == 1)
        .await;
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(&metrics, r#"activator_requests_queued{route="stuck"}"#),
        1.0
    );

    drop(stream);
    activator
        .wait_route("stuck", "empty", |r| r.queued == 0 && r.in_flight == 0)
        .await;
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(&metrics, r#"activator_requests_queued{route="stuck"}"#),
        0.0
    );
    activator.stop().await;
}

#[tokio::test]
async fn container_concurrency_one_never_gives_a_replica_two_requests_at_once() {
    let activator = Activator::start(&echo_route(
        "single",
        "container_concurrency = 1\nmax_scale = 1\ncold_start_timeout = \"30s\"",
    ))
    .await;
    let h = host("single");
    let answers = join_all((0..50).map(|_| activator.get(&h, "/delay/5"))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let stats = activator.get(&h, "/__stats").await.json();
    assert_eq!(
        stats["max_in_flight"], 1,
        "the replica saw at most one request at a time: {stats}"
    );
    assert_eq!(stats["requests"], 51);
    activator.stop().await;
}

#[tokio::test]
async fn a_request_arriving_while_the_route_scales_to_zero_is_served() {
    // The replica keeps serving for 3s after SIGTERM, so the scale-down is still under way when
    // the next request arrives.
    let route = echo_route_with(
        "hello",
        "idle_timeout = \"200ms\"",
        &["--term-delay-ms", "3000"],
    );
    let activator = Activator::start(&route).await;
    let h = host("hello");
    let first = activator.get(&h, "/").await;
    assert_eq!(first.status, 200);
    let first_pid = first.json()["pid"].as_u64().unwrap();
    activator
        .wait_route("hello", "scaled to zero", |r| {
            r.desired_replicas == 0 && r.ready_replicas == 0
        })
        .await;
    assert!(
        super::support::process_alive(first_pid),
        "the old replica is still stopping"
    );

    let second = activator.get(&h, "/").await;
    assert_eq!(
        second.status,
        200,
        "held and served, not failed: {}",
        second.text()
    );
    assert_ne!(
        second.json()["pid"].as_u64().unwrap(),
        first_pid,
        "a fresh replica served it"
    );
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(&metrics, r#"activator_cold_starts_total{route="hello"}"#),
        2.0
    );
    activator.stop().await;
}

#[tokio::test]
async fn requests_racing_the_idle_scale_down_are_never_failed() {
    // Requests spaced around the idle timeout (plus up to one 50ms scaler tick) land before,
    // during and after scale-downs; the longest gaps are sure to see one.
    let activator = Activator::start(&echo_route("hello", "idle_timeout = \"100ms\"")).await;
    let h = host("hello");
    for i in 0..24u64 {
        let answer = activator.get(&h, "/").await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.text());
        tokio::time::sleep(Duration::from_millis(80 + (i % 6) * 25)).await;
    }
    let metrics = activator.metrics().await;
    let down = r#"activator_scale_events_total{direction="down",result="success",route="hello"}"#;
    assert!(
        metric(&metrics, down) >= 1.0,
        "no scale-down happened: {metrics}"
    );
    activator.stop().await;
}

#[tokio::test]
async fn a_replica_dying_mid_request_gives_502_and_is_restarted() {
    let activator = Activator::start(&echo_route("fragile", "")).await;
    let h = host("fragile");
    let first = activator.get(&h, "/").await.json()["pid"].as_u64().unwrap();

    // A POST is not replayed: the replica died with it, so the client learns so.
    let request = http::Request::post(format!("http://{}/exit/3", activator.proxy))
        .header("host", &h)
        .body(Default::default())
        .unwrap();
    let answer = activator.send(request).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.headers["x-activator-error"], "upstream");
    assert!(
        answer.text().contains("default/fragile"),
        "{}",
        answer.text()
    );

    let next = activator.get(&h, "/").await;
    assert_eq!(
        next.status,
        200,
        "the next request waits for the restarted replica: {}",
        next.text()
    );
    assert_ne!(next.json()["pid"].as_u64().unwrap(), first);
    activator.stop().await;
}

#[tokio::test]
async fn held_requests_get_503_shutting_down_when_the_drain_time_runs_out() {
    let config = format!(
        "drain_timeout = \"200ms\"\n{}",
        never_ready("stuck", "cold_start_timeout = \"20s\"")
    );
    let activator = Activator::start(&config).await;
    let held = activator.spawn_get(&host("stuck"), "/");
    activator
        .wait_route("stuck", "holding one", |r| r.queued == 1)
        .await;
    activator.stop().await;
    let response = held.await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-activator-error"], "shutting_down");
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test]
async fn an_idempotent_request_to_a_replica_that_just_died_is_replayed() {
    let activator = Activator::start(&echo_route("fragile", "")).await;
    let h = host("fragile");
    for _ in 0..5 {
        let pid = activator.get(&h, "/").await.json()["pid"].as_u64().unwrap();
        // Kill the replica behind the activator's back: its pooled connection is now dead.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        super::support::wait_process_gone(pid).await;
        let answer = activator.get(&h, "/").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_ne!(answer.json()["pid"].as_u64().unwrap(), pid);
    }
    activator.stop().await;
}

#[tokio::test]
async fn the_global_bound_on_held_requests_answers_503_whichever_route_asks() {
    let activator = Activator::start(&format!(
        "[limits]\nmax_queued_total = 2\n{}{}",
        never_ready("one", "cold_start_timeout = \"20s\""),
        never_ready("two", "cold_start_timeout = \"20s\"")
    ))
    .await;
    let held = [
        activator.spawn_get(&host("one"), "/"),
        activator.spawn_get(&host("two"), "/"),
    ];
    activator
        .wait_route("one", "holding", |r| r.queued == 1)
        .await;
    activator
        .wait_route("two", "holding", |r| r.queued == 1)
        .await;
    for route in ["one", "two"] {
        let refused = activator.get(&host(route), "/").await;
        assert_eq!(refused.status, 503, "{route}");
        assert_eq!(refused.headers["x-activator-error"], "queue_full");
        assert!(refused.headers.contains_key("retry-after"));
        assert!(
            refused.text().contains("max_queued_total"),
            "{}",
            refused.text()
        );
    }
    for request in held {
        request.abort();
    }
    activator.stop().await;
}

#[tokio::test]
async fn a_replica_that_keeps_exiting_before_it_is_ready_fails_requests_fast() {
    // Exits at once with status 3, saying why: a crash loop.
    let route = "[[routes]]\nname = \"crashy\"\ncold_start_timeout = \"60s\"\n\
                 [routes.process]\ncommand = [\"sh\", \"-c\", \"echo cannot open database >&2; exit 3\"]\n";
    let activator = Activator::start(route).await;
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        activator.get(&host("crashy"), "/"),
    )
    .await
    .expect("answered long before the 60s cold-start timeout");
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.headers["x-activator-error"], "replica_failed");
    assert!(answer.headers.contains_key("retry-after"));
    assert!(
        !answer.text().contains("database") && !answer.text().contains("status"),
        "the body keeps the details to the operator: {}",
        answer.text()
    );
    // While the back-off lasts, new requests are refused at once too.
    let again = activator.get(&host("crashy"), "/").await;
    assert_eq!(again.headers["x-activator-error"], "replica_failed");
    let status = activator.route("crashy").await;
    assert_eq!(status.state.as_str(), "failed");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("exit status: 3") && message.contains("cannot open database"),
        "/routes says why: {message}"
    );
    let metrics = activator.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"activator_cold_starts_total{result="failed",route="crashy"}"#
        ),
        1.0,
        "{metrics}"
    );
    activator.stop().await;
}
