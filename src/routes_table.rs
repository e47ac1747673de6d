//! `activator routes`: fetches `/routes` from a running activator's admin listener and prints it
//! as a table for people.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::route::RouteStatus;

/// Fetches the routes from the admin address (`http://127.0.0.1:9090` or `127.0.0.1:9090`).
pub async fn fetch(admin: &str) -> Result<(Vec<RouteStatus>, String), String> {
    let base = if admin.contains("://") {
        admin.to_owned()
    } else {
        format!("http://{admin}")
    };
    let url = format!("{}/routes", base.trim_end_matches('/'));
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(uri)
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading {url}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let routes = serde_json::from_slice(&body)
        .map_err(|e| format!("{url} did not answer a routes list: {e}"))?;
    Ok((routes, text))
}

/// The routes as an aligned table.
pub fn render(routes: &[RouteStatus]) -> String {
    let header = [
        "NAMESPACE",
        "NAME",
        "STATE",
        "READY",
        "IN-FLIGHT",
        "QUEUED",
        "IDLE",
        "HOSTS",
    ];
    let rows: Vec<[String; 8]> = routes
        .iter()
        .map(|r| {
            let mut hosts = r.hosts.join(",");
            if let Some(prefix) = &r.path_prefix {
                hosts.push_str(&format!(" ({prefix})"));
            }
            [
                r.namespace.clone(),
                r.name.clone(),
                r.state.as_str().to_owned(),
                format!("{}/{}", r.ready_replicas, r.desired_replicas),
                r.in_flight.to_string(),
                r.queued.to_string(),
                r.idle_for()
                    .map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
                hosts,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for route in routes.iter().filter(|r| r.message.is_some()) {
        out.push_str(&format!(
            "\n{}/{}: {}",
            route.namespace,
            route.name,
            route.message.as_deref().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Phase;

    #[test]
    fn the_table_aligns_columns_and_shows_ready_over_desired() {
        let route = RouteStatus {
            name: "helloworld".into(),
            namespace: "default".into(),
            hosts: vec!["helloworld.default.127.0.0.1.nip.io".into()],
            path_prefix: None,
            state: Phase::Ready,
            desired_replicas: 2,
            ready_replicas: 1,
            in_flight: 3,
            queued: 0,
            requests_total: 10,
            idle_seconds: Some(1.25),
            average_concurrency: 0.5,
            message: None,
            closed_for_scale_down: false,
            replicas: None,
        };
        let table = render(&[route]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("NAMESPACE  NAME        STATE  READY"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("default    helloworld  ready  1/2"),
            "{table}"
        );
        assert!(
            lines[1].contains("1.2s") || lines[1].contains("1.3s"),
            "{table}"
        );
    }
}
