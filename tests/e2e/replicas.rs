//! Several activator replicas in front of one workload, against kube-sim: they elect a Lease
//! holder, which decides from the sum of everyone's counts.
//!
//! Local replicas run in this process, each on its own loopback address (127.X.Y.2, .3, …),
//! found through a selectorless Service `default/activator` and one hand-written EndpointSlice
//! per replica (port `admin`), as an operator could write them. The failover test runs the real
//! manifests instead: deploy/base's three activator pods, one of which it kills.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use activator::app::App;
use activator::config::{Config, KubeSettings};
use futures_util::future::join_all;
use kube_sim::faults::{ErrorFault, Latency};
use kube_sim::{Sim, SimConfig};
use tokio::net::TcpListener;

use super::kube::{DEPLOYMENT, helloworld, replicas, sim};
use super::support::{Activator, echo, host, metric};

/// Fast election and polls, so that the tests take seconds.
const CLUSTER: &str = r#"
[cluster]
lease = "default/activator"
peer_service = "default/activator"
lease_duration = "3s"
renew_deadline = "2s"
retry_period = "500ms"
poll_interval = "200ms"
poll_timeout = "150ms"
scale_down_hold = "3s"
"#;

const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);

/// The selectorless Service listing the replicas.
const PEER_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: activator, namespace: default}
spec:
  ports: [{name: admin, port: 9090}]
"#;

/// A hand-written EndpointSlice listing one replica.
fn slice(identity: &str, admin: SocketAddr) -> String {
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {identity}
  namespace: default
  labels: {{kubernetes.io/service-name: activator}}
addressType: IPv4
ports: [{{name: admin, port: {port}, protocol: TCP}}]
endpoints:
  - addresses: ["{ip}"]
    conditions: {{ready: true}}
    targetRef: {{kind: Pod, namespace: default, name: {identity}}}
"#,
        ip = admin.ip(),
        port = admin.port(),
    )
}

/// A loopback /24 of this test's own, so tests running side by side never share addresses.
fn subnet() -> [u8; 3] {
    [127, fastrand::u8(100..=250), fastrand::u8(1..=254)]
}

fn address(subnet: [u8; 3], host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(subnet[0], subnet[1], subnet[2], host))
}

/// An activator in Kubernetes mode against `sim` as replica `identity`.
async fn kube_app(sim: &Sim, identity: &str) -> App {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("activator=debug")
        .try_init();
    let mut config = Config::from_toml("scaler_tick = \"50ms\"").unwrap();
    config.kube = Some(KubeSettings {
        namespace: None,
        probe_interval: Duration::from_millis(25),
        cluster: cluster_settings(identity),
    });
    let kubeconfig = kube::config::Kubeconfig::read_from(sim.kubeconfig_path()).unwrap();
    let kube_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    App::kube(config, activator::kube_client(kube_config).unwrap())
}

/// The cluster settings [`CLUSTER`] writes, for replica `identity`.
fn cluster_settings(identity: &str) -> activator::config::ClusterSettings {
    use activator::config::{ClusterSettings, ObjectName};
    let object = ObjectName {
        namespace: "default".into(),
        name: "activator".into(),
    };
    ClusterSettings {
        identity: identity.into(),
        lease: object.clone(),
        peer_service: object,
        lease_duration: LEASE_DURATION,
        renew_deadline: RENEW_DEADLINE,
        retry_period: Duration::from_millis(500),
        poll_interval: Duration::from_millis(200),
        poll_timeout: Duration::from_millis(150),
        scale_down_hold: Duration::from_secs(3),
    }
}

/// Replicas on one simulator.
struct Replicas {
    sim: Sim,
    subnet: [u8; 3],
    replicas: Vec<Activator>,
}

impl Replicas {
    /// `count` replicas in front of the seed's helloworld with `idle_timeout`, each listed in the
    /// peer Service, ready once their caches synced.
    async fn start(count: u8, idle_timeout: &str) -> Replicas {
        let sim = sim(0.01).await;
        sim.apply_yaml(&helloworld(idle_timeout)).unwrap();
        sim.apply_yaml(PEER_SERVICE).unwrap();
        let subnet = subnet();
        let mut replicas = Vec::new();
        for n in 0..count {
            let ip = address(subnet, n + 2);
            let proxy = TcpListener::bind((ip, 0)).await.unwrap();
            let admin = TcpListener::bind((ip, 0)).await.unwrap();
            let identity = format!("activator-{n}");
            sim.apply_yaml(&slice(&identity, admin.local_addr().unwrap()))
                .unwrap();
            let app = kube_app(&sim, &identity).await;
            replicas.push(Activator::start_app_on(app, proxy, admin));
        }
        for replica in &replicas {
            super::support::wait_until("the replica is ready", || async {
                replica.admin("/readyz").await.status == 200
            })
            .await;
        }
        Replicas {
            sim,
            subnet,
            replicas,
        }
    }

    /// Which replicas say they hold the Lease.
    async fn leaders(&self) -> Vec<usize> {
        let mut leaders = Vec::new();
        for (n, replica) in self.replicas.iter().enumerate() {
            if metric(&replica.metrics().await, "activator_leader") == 1.0 {
                leaders.push(n);
            }
        }
        leaders
    }

    /// The one replica holding the Lease, once there is exactly one (at most 10 seconds).
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leaders = self.leaders().await;
            if let [one] = leaders[..] {
                return one;
            }
            assert!(Instant::now() < deadline, "leaders: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Successful scale-ups of helloworld, summed over replicas.
    async fn scale_ups(&self) -> f64 {
        let mut total = 0.0;
        for replica in &self.replicas {
            total += metric(
                &replica.metrics().await,
                "activator_scale_events_total{route=\"helloworld\",direction=\"up\",result=\"success\"}",
            );
        }
        total
    }
}

#[tokio::test]
async fn sparse_traffic_through_one_replica_keeps_the_workload_up_and_it_scales_to_zero_once_after()
{
    let idle = Duration::from_secs(2);
    let cluster = Replicas::start(3, "2s").await;
    let leader = cluster.leader().await;
    // Through a replica that does not decide: only the sum can tell the leader of this traffic.
    let through = &cluster.replicas[(leader + 1) % 3];
    let h = host("helloworld");
    let began = Instant::now();
    let mut last_answer = began;
    while began.elapsed() < idle * 3 + Duration::from_millis(500) {
        let answer = through.get(&h, "/").await;
        last_answer = Instant::now();
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            replicas(&cluster.sim, DEPLOYMENT),
            1,
            "scaled while one replica had traffic, after {:?}",
            began.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        cluster.sim.counters().count("patch", "deployments/scale"),
        1,
        "only the activation was written"
    );
    // The leader's view: the route summed, with every replica's part.
    let status = cluster.replicas[leader].route("helloworld").await;
    let shared = status.replicas.expect("the leader shows the sum");
    assert_eq!(shared.replicas.len(), 3, "{shared:?}");
    assert_eq!(shared.replicas[0].state, "self");
    assert!(
        shared.replicas[1..].iter().all(|r| r.state == "answering"),
        "{shared:?}"
    );

    cluster
        .sim
        .wait_for("the idle scale to zero", Duration::from_secs(20), |sim| {
            replicas(sim, DEPLOYMENT) == 0
        })
        .await
        .unwrap();
    let took = last_answer.elapsed();
    assert!(
        took >= idle,
        "scaled to zero {took:?} after the last request"
    );
    tokio::time::sleep(idle).await;
    assert_eq!(replicas(&cluster.sim, DEPLOYMENT), 0);
    assert_eq!(
        cluster.sim.counters().count("patch", "deployments/scale"),
        2,
        "one scale-up and one scale to zero"
    );
}

#[tokio::test]
async fn a_cold_burst_over_three_replicas_makes_one_successful_scale_up() {
    let cluster = Replicas::start(3, "60s").await;
    cluster.leader().await;
    let h = host("helloworld");
    // 90 held requests stay below one replica's target concurrency (100): no scale-out.
    let requests: Vec<_> = (0..90)
        .map(|n| cluster.replicas[n % 3].spawn_get(&h, "/"))
        .collect();
    for response in join_all(requests).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(cluster.scale_ups().await, 1.0);
    assert_eq!(replicas(&cluster.sim, DEPLOYMENT), 1);
}

#[tokio::test]
async fn a_peer_that_accepts_but_never_answers_keeps_the_workload_up_without_stalling_the_leader() {
    let idle = Duration::from_secs(1);
    let cluster = Replicas::start(2, "1s").await;
    // A third "replica" that takes connections and never says a word.
    let silent = TcpListener::bind((address(cluster.subnet, 9), 0))
        .await
        .unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let keep = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    cluster
        .sim
        .apply_yaml(&slice("activator-silent", silent_addr))
        .unwrap();
    let leader = cluster.leader().await;
    let answer = cluster.replicas[0].get(&host("helloworld"), "/").await;
    assert_eq!(answer.status, 200);
    let leader_metrics = || async { cluster.replicas[leader].metrics().await };
    super::support::wait_until("the silent peer is counted unreachable", || async {
        metric(
            &leader_metrics().await,
            "activator_peers{state=\"unreachable\"}",
        ) == 1.0
    })
    .await;
    let errors_before = metric(&leader_metrics().await, "activator_peer_poll_errors_total");

    tokio::time::sleep(idle * 3).await;
    assert_eq!(
        replicas(&cluster.sim, DEPLOYMENT),
        1,
        "a peer that never answers counts as busy"
    );
    // The leader kept polling at its pace (every 200ms, each poll given up after 150ms)
    // rather than waiting on the silent peer.
    let errors =
        metric(&leader_metrics().await, "activator_peer_poll_errors_total") - errors_before;
    assert!(errors >= 10.0, "only {errors} polls in {:?}", idle * 3);
    assert_eq!(
        metric(
            &leader_metrics().await,
            "activator_peers{state=\"answering\"}"
        ),
        1.0
    );

    // Once it leaves the Service, its silence no longer counts.
    let left = Instant::now();
    cluster
        .sim
        .kubectl(&["delete", "endpointslice", "activator-silent"])
        .await
        .unwrap();
    cluster
        .sim
        .wait_for("the scale to zero", Duration::from_secs(10), |sim| {
            replicas(sim, DEPLOYMENT) == 0
        })
        .await
        .unwrap();
    assert!(
        left.elapsed() < idle * 3,
        "scaled to zero {:?} after the silent peer left",
        left.elapsed()
    );
    keep.abort();
}

#[tokio::test]
async fn requests_that_arrive_while_the_zero_is_being_written_are_held_and_served() {
    let cluster = Replicas::start(3, "1s").await;
    let leader = cluster.leader().await;
    let h = host("helloworld");
    assert_eq!(cluster.replicas[leader].get(&h, "/").await.status, 200);
    // Widen the race: every scale write now takes 1.5s to land.
    cluster.sim.faults().add_latency(Latency {
        verb: Some("patch".into()),
        resource: Some("deployments/scale".into()),
        millis: 1500,
    });
    let followers: Vec<&Activator> = (0..3)
        .filter(|n| *n != leader)
        .map(|n| &cluster.replicas[n])
        .collect();
    // Wait until the leader has closed the route on the others and sent the zero.
    super::support::wait_until("the followers are closed for the scale to zero", || async {
        let mut closed = true;
        for follower in &followers {
            closed &= follower.route("helloworld").await.closed_for_scale_down;
        }
        closed
    })
    .await;
    let patches = cluster.sim.counters().count("patch", "deployments/scale");
    // Now, between the leader's last look and the zero landing, requests reach the others.
    let racing: Vec<_> = followers
        .iter()
        .flat_map(|f| std::iter::repeat_n(f.proxy, 5))
        .map(|proxy| {
            let h = h.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let (status, body) = super::binary::get(proxy, &h, "/").await;
                (status, body, sent.elapsed())
            })
        })
        .collect();
    cluster
        .sim
        .wait_for("the zero lands", Duration::from_secs(10), |sim| {
            replicas(sim, DEPLOYMENT) == 0
        })
        .await
        .unwrap();
    for answer in join_all(racing).await {
        let (status, body, took) = answer.unwrap();
        assert_eq!(status, 200, "a racing request failed: {body}");
        // Held across the zero's write and the re-activation's, not sent to the replica that
        // was being stopped.
        assert!(
            took >= Duration::from_millis(1000),
            "answered after {took:?}"
        );
    }
    assert_eq!(
        replicas(&cluster.sim, DEPLOYMENT),
        1,
        "the held requests activated the workload again"
    );
    assert!(
        cluster.sim.counters().count("patch", "deployments/scale") > patches,
        "the zero was written, then the workload re-activated"
    );
}

#[tokio::test]
async fn a_request_open_on_another_replica_stops_the_scale_to_zero_before_it_is_written() {
    let cluster = Replicas::start(2, "1s").await;
    let leader = cluster.leader().await;
    let other = &cluster.replicas[1 - leader];
    let h = host("helloworld");
    assert_eq!(other.get(&h, "/").await.status, 200);
    // A slow request through the other replica spans several idle timeouts: the workload stays.
    let slow = other.spawn_get(&h, "/delay/3000");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&cluster.sim, DEPLOYMENT), 1);
    assert_eq!(slow.await.unwrap().status(), 200);
    assert_eq!(
        cluster.sim.counters().count("patch", "deployments/scale"),
        1,
        "no scale to zero was written while the request was open"
    );
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_deciding_before_its_lease_could_be_taken() {
    let cluster = Replicas::start(3, "60s").await;
    let leader = cluster.leader().await;
    // Every Lease write now fails, the leader's renewals and the others' attempts alike.
    let cut = Instant::now();
    cluster.sim.faults().add_error(ErrorFault {
        verb: Some("update".into()),
        resource: Some("leases".into()),
        status: 503,
        share: 1.0,
        retry_after_seconds: None,
        count: None,
    });
    let deadline = cut + LEASE_DURATION;
    loop {
        let leaders = cluster.leaders().await;
        assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
        if leaders.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader still decides {:?} after its renewals began failing",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = cut.elapsed();
    assert!(
        stopped <= RENEW_DEADLINE + Duration::from_millis(600),
        "stopped deciding {stopped:?} after its last renewal could have been sent"
    );
    // Once the API answers again, one replica leads again (the same one, or another).
    cluster.sim.faults().clear();
    let again = cluster.leader().await;
    tracing::info!(before = leader, after = again, "leader again");
}

/// The activator image as a command with fast cluster timings: every pod shares the machine's
/// network, so it listens on its pod address.
fn activator_image(config: &std::path::Path) -> String {
    format!(
        "ACTIVATOR_LISTEN={{ip}}:8080 ACTIVATOR_ADMIN_LISTEN={{ip}}:9090 ACTIVATOR_CONFIG='{}' exec '{}'",
        config.display(),
        env!("CARGO_BIN_EXE_activator")
    )
}

/// The ready pods of the activator Deployment, by name, with their addresses.
fn ready_activators(sim: &Sim) -> Vec<(String, IpAddr)> {
    sim.list("pods", Some("activator-system"))
        .into_iter()
        .filter(|pod| pod.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|pod| {
            pod.pointer("/status/conditions")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .filter_map(|pod| {
            let name = pod.pointer("/metadata/name")?.as_str()?.to_owned();
            let ip = pod.pointer("/status/podIP")?.as_str()?.parse().ok()?;
            Some((name, ip))
        })
        .collect()
}

/// The Lease's holder and renew time, as the API server has them.
fn holder(sim: &Sim) -> Option<(String, String)> {
    let lease = sim.get("leases", "activator-system", "activator")?;
    Some((
        lease.pointer("/spec/holderIdentity")?.as_str()?.to_owned(),
        lease.pointer("/spec/renewTime")?.as_str()?.to_owned(),
    ))
}

#[tokio::test]
async fn killing_the_leader_mid_traffic_loses_no_request_and_the_survivors_still_scale_to_zero() {
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(
        &mut config,
        format!(
            "scaler_tick = \"100ms\"\n{}",
            CLUSTER
                .replace("lease = \"default/activator\"\n", "")
                .replace("peer_service = \"default/activator\"\n", "")
        )
        .as_bytes(),
    )
    .unwrap();
    // At half speed the kubelet restarts a killed container after 5s, later than the 3s lease:
    // one of the survivors takes over.
    let sim_config = SimConfig {
        echo_command: Some(format!("'{}'", echo())),
        ..SimConfig::default()
            .time_scale(0.5)
            .image("activator", &activator_image(config.path()))
    };
    let sim = Sim::start(sim_config).await.expect("kube-sim starts");
    let root = env!("CARGO_MANIFEST_DIR");
    sim.kubectl(&["apply", "-k", &format!("{root}/deploy/base")])
        .await
        .expect("kubectl apply -k deploy/base");
    sim.apply_yaml(&helloworld("2s")).unwrap();
    sim.wait_for(
        "three ready activator pods",
        Duration::from_secs(60),
        |sim| ready_activators(sim).len() == 3,
    )
    .await
    .unwrap();
    sim.wait_for("a Lease holder", Duration::from_secs(30), |sim| {
        holder(sim).is_some()
    })
    .await
    .unwrap();
    let (leader, _) = holder(&sim).unwrap();
    let pods = ready_activators(&sim);
    let survivors: Vec<SocketAddr> = pods
        .iter()
        .filter(|(name, _)| *name != leader)
        .map(|(_, ip)| SocketAddr::new(*ip, 8080))
        .collect();
    assert_eq!(survivors.len(), 2, "{pods:?} led by {leader}");

    // Traffic through the two survivors, one request after another on each, all along.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let traffic: Vec<_> = survivors
        .iter()
        .map(|&to| {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                while !*stopped.borrow_and_update() {
                    let (status, body) = super::binary::get(to, &host("helloworld"), "/").await;
                    assert_eq!(status, 200, "through {to}: {body}");
                    answered += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    assert!(
        sim.crash_pod("activator-system", &leader),
        "killed {leader}"
    );
    let new_leader = sim
        .wait_for("a new Lease holder", LEASE_DURATION * 3, |sim| {
            holder(sim).is_some_and(|(h, _)| h != leader)
        })
        .await;
    let took_over = killed.elapsed();
    assert!(new_leader.is_ok(), "{new_leader:?}");
    // Within the lease duration of the last renewal, plus the one retry period it may wait.
    assert!(
        took_over < LEASE_DURATION + Duration::from_secs(1),
        "took over {took_over:?} after the kill"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    for task in traffic {
        assert!(task.await.expect("no request failed") > 0);
    }
    sim.wait_for(
        "the survivors scale the idle workload to zero",
        Duration::from_secs(30),
        |sim| replicas(sim, DEPLOYMENT) == 0,
    )
    .await
    .unwrap();
    println!("failover: a survivor held the Lease {took_over:?} after the leader was killed");
    sim.shutdown().await;
}
