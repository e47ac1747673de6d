//! Events are one resource seen through two APIs: what kube-rs's `Recorder` posts through
//! `events.k8s.io/v1` is what `kubectl get events` and `kubectl describe` read through core
//! `v1`, and a core Event is listed, read and watched through `events.k8s.io/v1`.

#[path = "support/start.rs"]
mod support;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event as Published, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use support::{WAIT, require_kubectl, start};

const SEED: &str = include_str!("../manifests/helloworld.yaml");
const DEPLOYMENT: &str = "helloworld-00001-deployment";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_are_core_events_to_kubectl() {
    require_kubectl();
    let sim = start().await;
    sim.apply_yaml(SEED).expect("seed");
    let client = sim.client().expect("client");
    let deployment = Api::<Deployment>::default_namespaced(client.clone())
        .get(DEPLOYMENT)
        .await
        .expect("the deployment");
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "activator".into(),
            instance: Some("activator-0".into()),
        },
    );
    let published = Published {
        type_: EventType::Warning,
        reason: "ColdStartFailed".into(),
        note: Some("no ready endpoint within 5s".into()),
        action: "Activate".into(),
        secondary: None,
    };
    let reference = deployment.object_ref(&());
    recorder
        .publish(&published, &reference)
        .await
        .expect("create");
    // The same event again: the recorder PATCHes the series of the first one.
    recorder
        .publish(&published, &reference)
        .await
        .expect("patch");

    let listed = sim
        .kubectl(&["get", "events", "-o", "json"])
        .await
        .expect("get events");
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{listed}");
    let event = &items[0];
    assert_eq!(event["apiVersion"], "v1");
    assert_eq!(event["message"], "no ready endpoint within 5s");
    assert_eq!(event["involvedObject"]["kind"], "Deployment");
    assert_eq!(event["involvedObject"]["name"], DEPLOYMENT);
    assert_eq!(event["involvedObject"]["uid"], json!(deployment.uid()));
    assert_eq!(event["reportingComponent"], "activator");
    assert_eq!(event["reportingInstance"], "activator-0");
    assert_eq!(event["series"]["count"], 2);
    assert!(event.get("note").is_none() && event.get("regarding").is_none());

    let selected = sim
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={DEPLOYMENT},type=Warning"),
            "-o",
            "name",
        ])
        .await
        .expect("get by field");
    assert_eq!(selected.lines().count(), 1, "{selected}");
    let unrelated = sim
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=other",
            "-o",
            "name",
        ])
        .await
        .expect("get by field");
    assert_eq!(unrelated.trim(), "");

    let printed = sim.kubectl(&["get", "events"]).await.expect("get events");
    let mut lines = printed.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{printed}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[1..],
        [
            "Warning",
            "ColdStartFailed",
            &format!("deployment/{DEPLOYMENT}"),
            "no",
            "ready",
            "endpoint",
            "within",
            "5s"
        ],
        "{printed}"
    );
    let wide = sim
        .kubectl(&["get", "events", "-o", "wide"])
        .await
        .expect("get events wide");
    assert!(
        wide.contains("activator, activator-0"),
        "the source column names the reporter: {wide}"
    );

    let described = sim
        .kubectl(&["describe", "deployment", DEPLOYMENT])
        .await
        .expect("describe");
    let events = described
        .split("Events:")
        .nth(1)
        .expect("an Events section");
    assert!(events.contains("ColdStartFailed"), "{described}");
    assert!(
        events.contains("no ready endpoint within 5s"),
        "{described}"
    );
}

#[tokio::test]
async fn core_events_are_listed_read_and_watched_through_events_k8s_io() {
    let sim = start().await;
    let client = sim.client().expect("client");
    let core: Api<CoreEvent> = Api::default_namespaced(client.clone());
    let events: Api<Event> = Api::default_namespaced(client);
    let watch = events
        .watch(&WatchParams::default().fields("regarding.name=web"), "0")
        .await
        .expect("watch");
    let mut watch = Box::pin(watch);

    let posted: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "web.1"},
        "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "default"},
        "message": "Scaled up to 1",
        "reason": "ScalingReplicaSet",
        "type": "Normal",
        "source": {"component": "deployment-controller"},
        "count": 3,
        "firstTimestamp": "2025-01-01T00:00:00Z",
        "lastTimestamp": "2025-01-01T00:01:00Z",
    }))
    .expect("an event");
    core.create(&PostParams::default(), &posted)
        .await
        .expect("create");

    let read = events.get("web.1").await.expect("get");
    assert_eq!(read.note.as_deref(), Some("Scaled up to 1"));
    let regarding = read.regarding.as_ref().expect("regarding");
    assert_eq!(regarding.name.as_deref(), Some("web"));
    assert_eq!(read.deprecated_count, Some(3));
    let source = read.deprecated_source.as_ref().expect("deprecatedSource");
    assert_eq!(source.component.as_deref(), Some("deployment-controller"));
    assert!(read.deprecated_first_timestamp.is_some());

    let listed = events
        .list(&ListParams::default().fields("reason=ScalingReplicaSet"))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    let none = events
        .list(&ListParams::default().fields("regarding.name=other"))
        .await
        .expect("list");
    assert!(none.items.is_empty());

    let seen = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("a watch event in time")
        .expect("the stream goes on")
        .expect("no error");
    match seen {
        WatchEvent::Added(event) => {
            assert_eq!(event.name_any(), "web.1");
            assert_eq!(event.note.as_deref(), Some("Scaled up to 1"));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }

    core.delete("web.1", &Default::default())
        .await
        .expect("delete");
    let (code, _) = match events.get("web.1").await {
        Err(kube::Error::Api(status)) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    };
    assert_eq!(code, 404);
}
