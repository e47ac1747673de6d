//! The real kube-rs client and runtime against the simulator: typed CRUD, selectors, Status
//! errors, optimistic concurrency, the scale subresource, and watchers that survive closed
//! watches and expired history.

#[path = "support/start.rs"]
mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use support::{WAIT, start};
use tokio::sync::mpsc;

fn lease(name: &str, holder: &str, labels: serde_json::Value) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "labels": labels},
        "spec": {"holderIdentity": holder},
    }))
    .expect("a lease")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn objects_are_created_read_listed_and_refused_as_kubernetes_does() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    let pp = PostParams::default();
    leases
        .create(&pp, &lease("a", "x", json!({"tier": "web"})))
        .await
        .expect("create a");
    leases
        .create(&pp, &lease("b", "x", json!({"tier": "db"})))
        .await
        .expect("create b");
    leases
        .create(&pp, &lease("c", "x", json!({})))
        .await
        .expect("create c");

    let (code, reason) = api_error(leases.create(&pp, &lease("a", "x", json!({}))).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    let (code, reason) = api_error(leases.get("missing").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));

    let mut generated = lease("", "x", json!({}));
    generated.metadata.generate_name = Some("gen-".into());
    let generated = leases.create(&pp, &generated).await.expect("generateName");
    let name = generated.metadata.name.unwrap_or_default();
    assert!(
        name.starts_with("gen-") && name.len() == "gen-".len() + 5,
        "{name}"
    );
    assert!(generated.metadata.uid.is_some());
    assert!(generated.metadata.creation_timestamp.is_some());

    let names = |list: kube::core::ObjectList<Lease>| {
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect();
        names.sort();
        names
    };
    let cases = [
        ("tier=web", vec!["a"]),
        ("tier==web", vec!["a"]),
        ("tier!=web", vec!["b", "c", name.as_str()]),
        ("tier in (web,db)", vec!["a", "b"]),
        ("tier notin (web)", vec!["b", "c", name.as_str()]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c", name.as_str()]),
    ];
    for (selector, expected) in cases {
        let listed = leases
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list");
        let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
        expected.sort();
        assert_eq!(names(listed), expected, "{selector}");
    }
    let by_field = leases
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(names(by_field), vec!["b"]);
    let bad = leases
        .list(&ListParams::default().fields("spec.holderIdentity=x"))
        .await;
    assert_eq!(api_error(bad).0, 400);

    leases
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(api_error(leases.get("c").await).0, 404);
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_gets_409_conflict() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    let created = leases
        .create(&PostParams::default(), &lease("l", "one", json!({})))
        .await
        .expect("create");
    let mut fresh = created.clone();
    fresh.spec.get_or_insert_default().holder_identity = Some("two".into());
    let replaced = leases
        .replace("l", &PostParams::default(), &fresh)
        .await
        .expect("replace");
    assert!(
        replaced.metadata.resource_version > created.metadata.resource_version,
        "versions increase"
    );
    let mut stale = created;
    stale.spec.get_or_insert_default().holder_identity = Some("three".into());
    let (code, reason) = api_error(leases.replace("l", &PostParams::default(), &stale).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let now = leases.get("l").await.expect("get");
    assert_eq!(
        now.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("two")
    );
}

#[tokio::test]
async fn patch_scale_changes_replicas_and_is_counted_once() {
    let sim = start().await;
    sim.apply_yaml(include_str!("../manifests/helloworld.yaml"))
        .expect("apply");
    let deployments: Api<Deployment> = Api::default_namespaced(sim.client().expect("client"));
    let name = "helloworld-00001-deployment";
    let before = deployments.get(name).await.expect("get");
    let scale = deployments
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patch scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    let counters = sim.counters();
    assert_eq!(counters.count("patch", "deployments/scale"), 1);
    assert_eq!(counters.count("patch", "deployments"), 0);

    sim.wait_for_ready_endpoints("default", "helloworld", 3, WAIT)
        .await
        .expect("3 ready");
    sim.wait_for("status to follow", WAIT, |sim| {
        let d = sim.get("deployments", "default", name).unwrap_or_default();
        d["status"]["readyReplicas"] == 3 && d["status"]["availableReplicas"] == 3
    })
    .await
    .expect("status");
    let after = deployments.get(name).await.expect("get");
    let generation = |d: &Deployment| d.metadata.generation.unwrap_or(0);
    assert_eq!(generation(&after), generation(&before) + 1);
    let status = after.status.clone().expect("status");
    assert_eq!(status.observed_generation, Some(generation(&after)));
    assert_eq!(
        (status.replicas, status.updated_replicas),
        (Some(3), Some(3))
    );
    let got = deployments.get_scale(name).await.expect("get scale");
    assert_eq!(got.status.map(|s| s.replicas), Some(3));

    let pods: Api<Pod> = Api::default_namespaced(sim.client().expect("client"));
    let listed = pods
        .list(&ListParams::default().labels("app=helloworld"))
        .await
        .expect("pods");
    let mut ips: Vec<String> = listed
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "three distinct pod addresses");
}

/// Collects a watcher's events into a channel.
fn spawn_watcher(api: Api<Lease>) -> mpsc::UnboundedReceiver<watcher::Event<Lease>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            if let Ok(event) = event
                && tx.send(event).is_err()
            {
                return;
            }
        }
    });
    rx
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

/// Waits for the watcher to report lease `l` held by `who`, live or in a re-list.
async fn expect_holder(events: &mut mpsc::UnboundedReceiver<watcher::Event<Lease>>, who: &str) {
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.recv().await {
            if let watcher::Event::Apply(l) | watcher::Event::InitApply(l) = event
                && holder(&l).as_deref() == Some(who)
            {
                return;
            }
        }
        panic!("the watcher ended");
    })
    .await;
    assert!(seen.is_ok(), "the watcher never reported holder {who}");
}

async fn set_holder(api: &Api<Lease>, who: &str) {
    let patch = Patch::Merge(json!({"spec": {"holderIdentity": who}}));
    api.patch("l", &PatchParams::default(), &patch)
        .await
        .expect("patch");
}

#[tokio::test]
async fn a_watcher_survives_a_closed_watch_and_an_expired_history_without_missing_updates() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    let mut events = spawn_watcher(leases.clone());
    leases
        .create(&PostParams::default(), &lease("l", "first", json!({})))
        .await
        .expect("create");
    expect_holder(&mut events, "first").await;

    // A closed watch: the update made while no watch is open arrives on the resumed watch.
    sim.close_watches();
    set_holder(&leases, "second").await;
    expect_holder(&mut events, "second").await;
    assert!(sim.counters().count("watch", "leases") >= 2);
    let lists_before = sim.counters().count("list", "leases");

    // An expired history: the resume gets 410, the watcher re-lists and sees the update.
    sim.expire_watch_history();
    sim.close_watches();
    set_holder(&leases, "third").await;
    expect_holder(&mut events, "third").await;
    assert!(
        sim.counters().count("list", "leases") > lists_before,
        "the watcher re-listed"
    );

    set_holder(&leases, "fourth").await;
    expect_holder(&mut events, "fourth").await;
}

#[tokio::test]
async fn a_reflector_store_follows_the_server_through_faults() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client().expect("client"));
    let (reader, writer) = reflector::store();
    let stream = watcher(leases.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.expect("ready");
    for name in ["a", "b"] {
        leases
            .create(&PostParams::default(), &lease(name, "x", json!({})))
            .await
            .expect("create");
    }
    sim.expire_watch_history();
    sim.close_watches();
    leases
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    leases
        .create(&PostParams::default(), &lease("c", "x", json!({})))
        .await
        .expect("create");
    let converged = tokio::time::timeout(WAIT, async {
        loop {
            let mut names: Vec<String> = reader
                .state()
                .iter()
                .filter_map(|l| l.metadata.name.clone())
                .collect();
            names.sort();
            if names == ["b", "c"] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    task.abort();
    assert!(
        converged.is_ok(),
        "the reflector holds b and c: {:?}",
        reader.state()
    );
}
