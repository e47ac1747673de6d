//! Server-side printing: `kubectl get` asks for a `meta.k8s.io` `Table` and prints the server's
//! columns (with `-o wide` the priority 1 ones too), for lists, single objects and watches; and
//! the `Table` itself as the API server shapes it.

#[path = "support/start.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::{WAIT, require_kubectl, start};
use tokio::io::{AsyncBufReadExt, BufReader};

const SEED: &str = include_str!("../manifests/helloworld.yaml");
const DEPLOYMENT: &str = "helloworld-00001-deployment";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// The whitespace-separated words of the line of `output` that starts with `name`.
fn row<'a>(output: &'a str, name: &str) -> Vec<&'a str> {
    output
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{output}"))
        .split_whitespace()
        .collect()
}

fn header(output: &str) -> Vec<&str> {
    output
        .lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// GET `path` with `Accept: accept` and returns the status, `Content-Type` and body.
async fn get(address: SocketAddr, path: &str, accept: &str) -> (u16, String, Value) {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", address.to_string())
        .header("accept", accept)
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, content_type, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_prints_the_servers_columns() {
    require_kubectl();
    let sim = start().await;
    sim.apply_yaml(SEED).expect("seed");
    let ready = sim
        .wait_for_ready_endpoints("default", "helloworld", 1, WAIT)
        .await
        .expect("a ready pod");
    let ip = ready[0].ip().to_string();

    let pods = sim
        .kubectl(&["get", "pods", "-o", "wide"])
        .await
        .expect("get pods");
    assert_eq!(
        header(&pods),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{pods}"
    );
    let pod = row(&pods, DEPLOYMENT);
    assert_eq!(pod[1..4], ["1/1", "Running", "0"], "{pods}");
    assert_eq!(pod[5..], [ip.as_str(), "kube-sim", "<none>", "<none>"]);
    let narrow = sim.kubectl(&["get", "pods"]).await.expect("get pods");
    assert_eq!(
        header(&narrow),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let single = sim
        .kubectl(&["get", "pod", pod[0]])
        .await
        .expect("get one pod");
    assert_eq!(row(&single, pod[0])[1..3], ["1/1", "Running"]);

    let deployments = sim.kubectl(&["get", "deploy"]).await.expect("get deploy");
    assert_eq!(
        header(&deployments),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(row(&deployments, DEPLOYMENT)[1..4], ["1/1", "1", "1"]);
    let wide = sim
        .kubectl(&["get", "deploy", "-o", "wide"])
        .await
        .expect("get deploy wide");
    assert_eq!(
        row(&wide, DEPLOYMENT)[5..],
        ["echo", "mendhak/http-https-echo", "app=helloworld"]
    );

    let slices = sim
        .kubectl(&["get", "endpointslices"])
        .await
        .expect("get endpointslices");
    assert_eq!(
        header(&slices),
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    );
    assert_eq!(row(&slices, "helloworld-")[1..4], ["IPv4", "80", &ip]);

    let services = sim
        .kubectl(&["get", "services", "-o", "wide"])
        .await
        .expect("get services");
    assert_eq!(
        header(&services),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    let service = row(&services, "helloworld");
    assert_eq!(service[1], "ClusterIP");
    assert_eq!(service[3..5], ["<none>", "80/TCP"]);
    assert_eq!(service[6], "app=helloworld");

    let namespaces = sim.kubectl(&["get", "namespaces"]).await.expect("get ns");
    assert_eq!(header(&namespaces), ["NAME", "STATUS", "AGE"]);
    assert_eq!(row(&namespaces, "default")[1], "Active");

    let all = sim.kubectl(&["get", "all"]).await.expect("get all");
    for kind in ["pod/", "service/helloworld", "deployment.apps/"] {
        assert!(all.contains(kind), "{kind} in\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_prints_a_row_for_every_change() {
    require_kubectl();
    let sim = start().await;
    sim.apply_yaml(SEED).expect("seed");
    sim.wait_for_ready_endpoints("default", "helloworld", 1, WAIT)
        .await
        .expect("a ready pod");
    let mut watch = tokio::process::Command::new("kubectl")
        .args(["get", "pods", "--watch"])
        .env("KUBECONFIG", sim.kubeconfig_path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line in time")
            .expect("readable")
            .expect("kubectl still watching")
    };
    assert!(next().await.starts_with("NAME "), "the header comes first");
    let first = next().await;
    let first_pod = first
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();

    sim.kubectl(&["scale", "deployment", DEPLOYMENT, "--replicas=2"])
        .await
        .expect("scale");
    let mut seen = Vec::new();
    loop {
        let line = next().await;
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_ne!(words[0], "NAME", "the header is printed once");
        seen.push(line.clone());
        if words[0] != first_pod && words[1..3] == ["1/1", "Running"] {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("Pending") || l.contains("0/1")),
        "the new pod is seen before it is ready: {seen:?}"
    );
}

#[tokio::test]
async fn a_table_carries_columns_once_and_each_objects_metadata() {
    let sim = start().await;
    sim.apply_yaml(SEED).expect("seed");
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let (status, content_type, table) = get(sim.address(), path, TABLE).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json;as=Table;v=v1;g=meta.k8s.io");
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert!(table["metadata"]["resourceVersion"].is_string());
    let columns: Vec<(&str, i64)> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["priority"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        columns,
        [
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ]
    );
    let row = &table["rows"][0];
    assert_eq!(row["cells"][0], DEPLOYMENT);
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(row["object"]["metadata"]["name"], DEPLOYMENT);
    assert!(row["object"].get("spec").is_none());

    let whole = format!("{path}/{DEPLOYMENT}?includeObject=Object");
    let (_, _, one) = get(sim.address(), &whole, TABLE).await;
    assert_eq!(one["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["rows"][0]["object"]["kind"], "Deployment");
    assert_eq!(one["rows"][0]["object"]["spec"]["replicas"], 1);

    let beta = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";
    let (_, _, old) = get(sim.address(), path, beta).await;
    assert_eq!(old["apiVersion"], "meta.k8s.io/v1beta1");
    let (_, content_type, plain) = get(sim.address(), path, "application/json").await;
    assert_eq!(content_type, "application/json");
    assert_eq!(plain["kind"], "DeploymentList");
    let (status, _, refused) =
        get(sim.address(), &format!("{path}?includeObject=All"), TABLE).await;
    assert_eq!(
        (status, refused["reason"].as_str()),
        (400, Some("BadRequest"))
    );
}

#[tokio::test]
async fn a_table_watch_sends_one_row_tables_with_columns_first_only() {
    let sim = start().await;
    sim.apply_yaml("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: a}\nspec: {holderIdentity: one}\n")
        .expect("a lease");
    let stream = tokio::net::TcpStream::connect(sim.address())
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request =
        hyper::Request::get("/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1")
            .header("host", sim.address().to_string())
            .header("accept", TABLE)
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(
        response.headers()["content-type"],
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    );
    let mut body = response.into_body();
    let mut buffered = Vec::new();
    let mut events: Vec<Value> = Vec::new();
    sim.apply_yaml("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: a}\nspec: {holderIdentity: two}\n")
        .expect("an update");
    while events.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event in time")
            .expect("the watch goes on")
            .expect("a frame");
        buffered.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]));
        while let Some(end) = buffered.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffered.drain(..=end).collect();
            events.push(serde_json::from_slice(&line).expect("a JSON event"));
        }
    }
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(
        events[0]["object"]["columnDefinitions"][1]["name"],
        "Holder"
    );
    assert_eq!(events[0]["object"]["rows"][0]["cells"][1], "one");
    assert_eq!(events[1]["type"], "MODIFIED");
    assert!(events[1]["object"]["columnDefinitions"].is_null());
    assert_eq!(events[1]["object"]["rows"][0]["cells"][1], "two");
}
