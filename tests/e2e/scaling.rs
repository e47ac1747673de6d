//! The scaler: idle routes go to zero (or min_scale) and their processes stop; busy routes get
//! more replicas.

use futures_util::future::join_all;

use super::support::{Activator, echo_route, host, process_alive, wait_process_gone};

#[tokio::test]
async fn an_idle_route_scales_to_zero_and_its_process_stops() {
    let activator = Activator::start(&echo_route("hello", "idle_timeout = \"300ms\"")).await;
    let answer = activator.get(&host("hello"), "/").await;
    let pid = answer.json()["pid"].as_u64().unwrap();
    assert!(process_alive(pid));
    let status = activator
        .wait_route("hello", "idle", |r| r.desired_replicas == 0)
        .await;
    assert_eq!(status.state.as_str(), "idle");
    wait_process_gone(pid).await;
    activator.stop().await;
}

#[tokio::test]
async fn min_scale_keeps_a_replica_through_idleness() {
    let activator = Activator::start(&echo_route(
        "warm",
        "idle_timeout = \"100ms\"\nmin_scale = 1",
    ))
    .await;
    activator
        .wait_route("warm", "ready without any request", |r| {
            r.ready_replicas == 1
        })
        .await;
    let pid = activator.get(&host("warm"), "/").await.json()["pid"]
        .as_u64()
        .unwrap();
    // Several idle timeouts and scaler ticks later, the same replica still runs.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let status = activator.route("warm").await;
    assert_eq!((status.desired_replicas, status.ready_replicas), (1, 1));
    assert!(process_alive(pid));
    assert_eq!(
        activator.get(&host("warm"), "/").await.json()["pid"]
            .as_u64()
            .unwrap(),
        pid
    );
    activator.stop().await;
}

#[tokio::test]
async fn concurrency_over_the_target_adds_replicas_up_to_max_scale() {
    let activator = Activator::start(&echo_route(
        "busy",
        "target_concurrency = 2\nmax_scale = 3\nscale_window = \"1s\"",
    ))
    .await;
    let h = host("busy");
    let load = join_all((0..12).map(|_| activator.get(&h, "/delay/1500")));
    let watch = activator.wait_route("busy", "at three replicas", |r| r.ready_replicas == 3);
    let (answers, status) = tokio::join!(load, watch);
    assert!(answers.iter().all(|a| a.status == 200));
    assert_eq!(status.desired_replicas, 3, "never beyond max_scale");
    activator.stop().await;
}

#[tokio::test]
async fn stopping_the_activator_stops_every_replica() {
    let activator = Activator::start(&format!(
        "{}{}",
        echo_route("one", "min_scale = 1"),
        echo_route("two", "min_scale = 2")
    ))
    .await;
    activator
        .wait_route("two", "ready", |r| r.ready_replicas == 2)
        .await;
    let mut pids = vec![
        activator.get(&host("one"), "/").await.json()["pid"]
            .as_u64()
            .unwrap(),
    ];
    for _ in 0..10 {
        pids.push(
            activator.get(&host("two"), "/").await.json()["pid"]
                .as_u64()
                .unwrap(),
        );
    }
    activator.stop().await;
    for pid in pids {
        assert!(!process_alive(pid), "replica {pid} outlived the activator");
    }
}

#[tokio::test]
async fn a_replica_writing_bytes_that_are_not_utf8_and_endless_lines_keeps_running() {
    // Invalid UTF-8, then 100,000 bytes without a newline, then the echo server (which logs a
    // line of its own when it listens).
    let script = format!(
        "printf '\\377\\376 not UTF-8\\n'; head -c 100000 /dev/zero | tr '\\0' x; exec {} --port $PORT",
        super::support::echo()
    );
    let route = format!(
        "[[routes]]\nname = \"noisy\"\n[routes.process]\ncommand = [\"sh\", \"-c\", {script:?}]\n"
    );
    let activator = Activator::start(&route).await;
    let first = activator.get(&host("noisy"), "/").await;
    assert_eq!(first.status, 200, "{}", first.text());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = activator.get(&host("noisy"), "/").await;
    assert_eq!(
        second.json()["pid"],
        first.json()["pid"],
        "the same replica, still running"
    );
    assert!(process_alive(first.json()["pid"].as_u64().unwrap()));
    activator.stop().await;
}
