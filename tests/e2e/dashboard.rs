//! The Grafana dashboard of `deploy/overlays/monitoring` against a real Prometheus scraping a real
//! activator: after traffic with a cold start, a 404, a full queue and a stalled stream, every
//! panel's query and every template variable's query returns data. A panel that asks for a
//! metric the activator does not export, or selects on a label its series do not carry, returns
//! nothing and fails here.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::support::prometheus::{Prometheus, Sample};
use super::support::{Activator, echo_route, host, metric, wait_until};

const DASHBOARD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/overlays/monitoring/activator-dashboard.json"
));

/// What Grafana puts for `$__rate_interval` with Prometheus's default 15s scrape interval
/// (four scrape intervals); it spans the whole test.
const RATE_INTERVAL: &str = "1m";

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// `(panel title, expression)` of every query of every panel.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |target| {
                    let expr = target["expr"].as_str().unwrap_or_default().to_owned();
                    (title.clone(), expr)
                })
        })
        .collect()
}

/// The query variables: `(name, value when "All" is chosen, label_values query)`.
fn variables(dashboard: &Value) -> Vec<(String, String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let field = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
            (field("name"), field("allValue"), field("query"))
        })
        .collect()
}

/// `text` with Grafana's variables replaced as Grafana does when "All" is chosen.
fn interpolate(text: &str, variables: &[(String, String, String)]) -> String {
    let mut text = text
        .replace("${__rate_interval}", RATE_INTERVAL)
        .replace("$__rate_interval", RATE_INTERVAL);
    let mut by_length: Vec<_> = variables.iter().collect();
    by_length.sort_by_key(|(name, _, _)| std::cmp::Reverse(name.len()));
    for (name, all, _) in by_length {
        text = text
            .replace(&format!("${{{name}}}"), all)
            .replace(&format!("${name}"), all);
    }
    assert!(
        !text.contains('$'),
        "a variable the dashboard does not define: {text}"
    );
    text
}

/// Splits `label_values(SELECTOR, LABEL)`.
fn label_values_query(query: &str) -> (&str, &str) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(SELECTOR, LABEL): {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .expect("label_values(SELECTOR, LABEL)");
    (selector.trim(), label.trim())
}

/// The `activator_*` metric names `expr` reads, histogram series named by their family.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("activator_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_panel_has_a_unique_id_a_place_and_queries_on_the_chosen_data_source() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39));
    let mut ids = std::collections::HashSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64().expect("a numeric id")),
            "{title}: id used twice"
        );
        assert!(
            panel["gridPos"]["w"].as_u64().is_some(),
            "{title}: no gridPos"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
    let names: Vec<_> = variables(&dashboard).into_iter().map(|v| v.0).collect();
    assert_eq!(names, ["namespace", "route"]);
}

/// Sends a GET on a raw connection and keeps the connection, so the request stays held.
async fn hold(activator: &Activator, host: &str) -> TcpStream {
    let mut stream = TcpStream::connect(activator.proxy).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn every_panel_and_variable_returns_data_from_a_real_prometheus() {
    let dashboard = dashboard();
    let queries = panel_queries(&dashboard);
    let variables = variables(&dashboard);
    let stuck = echo_route("stuck", "max_queued = 1\ncold_start_timeout = \"20s\"")
        .replace("stop_grace", "ready_path = \"/status/503\"\nstop_grace");
    let cold = echo_route("cold", "stream_idle_timeout = \"300ms\"");
    let activator = Activator::start(&format!("{cold}\n{stuck}")).await;
    let prometheus = Prometheus::start(activator.admin, Duration::from_millis(200)).await;
    // One scrape before any traffic, so that every counter is seen rising.
    wait_until("Prometheus scraped the routes", || async {
        prometheus
            .query("activator_desired_replicas")
            .await
            .is_ok_and(|samples| samples.len() == 2)
    })
    .await;

    // A cold start, a 404, a request held and one refused with queue_full, a stalled stream.
    assert_eq!(activator.get(&host("cold"), "/").await.status, 200);
    assert_eq!(activator.get("nobody.test", "/").await.status, 404);
    let held = hold(&activator, &host("stuck")).await;
    activator
        .wait_route("stuck", "holding one", |r| r.queued == 1)
        .await;
    let refused = activator.get(&host("stuck"), "/").await;
    assert_eq!(refused.headers["x-activator-error"], "queue_full");
    let stalled = activator
        .spawn_get(&host("cold"), "/stream/2/60000")
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(stalled.into_body());
    assert!(body.await.is_err(), "the stalled body ends with an error");
    wait_until("the stall counted", || async {
        let text = activator.metrics().await;
        metric(
            &text,
            r#"activator_stream_idle_timeouts_total{route="cold"}"#,
        ) == 1.0
    })
    .await;

    // Every metric a panel reads reaches Prometheus (the scrape after the last event).
    let wanted: std::collections::BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .collect();
    let mut missing = Vec::new();
    for _ in 0..100 {
        let known = prometheus.metric_names().await;
        missing = wanted
            .iter()
            .filter(|name| !known.contains(name))
            .cloned()
            .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "the dashboard reads metrics the activator does not export (see the README's metrics table): {missing:?}"
    );

    for (name, _, query) in &variables {
        let (selector, label) = label_values_query(query);
        let values = prometheus
            .label_values(label, &interpolate(selector, &variables))
            .await
            .unwrap_or_else(|e| panic!("variable {name}: {query}: {e}"));
        let expected: &[&str] = match name.as_str() {
            "namespace" => &["default"],
            _ => &["cold", "stuck"],
        };
        assert_eq!(values, expected, "variable {name}: {query}");
    }

    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let promql = interpolate(expr, &variables);
        let finite = |samples: &[Sample]| samples.iter().any(|s| s.value.is_finite());
        let mut answer = Ok(Vec::new());
        for _ in 0..50 {
            answer = prometheus.query(&promql).await;
            if answer.as_ref().is_ok_and(|samples| finite(samples)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match answer {
            Ok(samples) if finite(&samples) => {}
            Ok(samples) => {
                let values: Vec<String> = samples
                    .iter()
                    .map(|s| format!("{:?} = {}", s.labels, s.value))
                    .collect();
                empty.push(format!("{title}: {promql}\n  returned {values:?}"));
            }
            Err(error) => empty.push(format!("{title}: {promql}\n  failed: {error}")),
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}\nPrometheus log:\n{}",
        empty.join("\n"),
        prometheus.log()
    );

    drop(held);
    activator.stop().await;
}
