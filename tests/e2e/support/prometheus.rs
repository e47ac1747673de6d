//! A real Prometheus server for tests: started on 127.0.0.1 with one scrape job, queried through
//! its HTTP API (`/api/v1/query`, `/api/v1/label/NAME/values`), killed when dropped.
//!
//! The binary is `prometheus` on the PATH (Debian package `prometheus`, which also brings
//! `promtool`); without it, starting one fails the test naming the package, never skips it.
//! Prometheus cannot listen on port 0 and tell which port it got, so a port is taken from a
//! bound-and-released socket, and another is tried if the server cannot bind it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::process::{Child, Command};

/// A Prometheus server scraping one target.
pub struct Prometheus {
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One sample of an instant query's answer.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The series' labels.
    pub labels: serde_json::Map<String, Value>,
    /// Its value (`NaN` and infinities included).
    pub value: f64,
}

/// The Prometheus binary, or a panic saying how to install it.
fn binary() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .map(|dir| std::path::Path::new(dir).join("prometheus"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` server binary is not on the PATH: install it with \
                 `apt-get install prometheus` (Debian; scripts/test and .ci/run install it)"
            )
        })
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0")
}

/// Percent-encodes `text` for a URL query component.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts a server scraping `target`'s `/metrics` every `interval` (job `activator`), and
    /// waits until it is ready to answer queries.
    pub async fn start(target: SocketAddr, interval: Duration) -> Prometheus {
        let binary = binary();
        let mut dir = tempfile::tempdir().expect("a temporary directory");
        let millis = interval.as_millis();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {millis}ms\n  scrape_timeout: {millis}ms\n\
                 scrape_configs:\n  - job_name: activator\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("writing the Prometheus config");
        let mut last_log = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut prometheus = Prometheus {
                addr,
                child,
                dir,
                client: Client::builder(TokioExecutor::new()).build_http(),
            };
            if prometheus.wait_ready().await {
                return prometheus;
            }
            last_log = prometheus.log();
            let _ = prometheus.child.kill().await;
            dir = prometheus.dir;
        }
        panic!("Prometheus did not become ready; its log:\n{last_log}");
    }

    /// Waits (at most 30 seconds) for `/-/ready`; false if the process exited first.
    async fn wait_ready(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok((StatusCode::OK, _)) = self.get("/-/ready").await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// What the server logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, path_and_query: &str) -> Result<(StatusCode, Bytes), String> {
        let request = Request::get(format!("http://{}{path_and_query}", self.addr))
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// The `data` of an API answer, or what went wrong (Prometheus's own error for a bad query).
    async fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (status, body) = self.get(path_and_query).await?;
        let answer: Value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        if answer["status"] != "success" {
            return Err(format!(
                "{status}: {}: {}",
                answer["errorType"].as_str().unwrap_or("error"),
                answer["error"].as_str().unwrap_or_default()
            ));
        }
        Ok(answer["data"].clone())
    }

    /// Evaluates `promql` now (`/api/v1/query`): the samples of a vector, or the one of a scalar.
    ///
    /// # Errors
    /// The query is invalid, or the answer is not a vector or scalar.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(promql)))
            .await?;
        let number = |pair: &Value| {
            pair.get(1)
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|series| Sample {
                    labels: series["metric"].as_object().cloned().unwrap_or_default(),
                    value: number(&series["value"]),
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample {
                labels: serde_json::Map::new(),
                value: number(&data["result"]),
            }]),
            other => Err(format!("a {other:?} result, not a vector: {data}")),
        }
    }

    /// The values label `label` takes on the series matching `selector`
    /// (`/api/v1/label/LABEL/values?match[]=SELECTOR`), as Grafana's `label_values` asks.
    ///
    /// # Errors
    /// The selector is invalid.
    pub async fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, String> {
        let data = self
            .api(&format!(
                "/api/v1/label/{}/values?match[]={}",
                encode(label),
                encode(selector)
            ))
            .await?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    /// Every metric name Prometheus holds a series of.
    pub async fn metric_names(&self) -> Vec<String> {
        self.label_values("__name__", "{__name__=~\".+\"}")
            .await
            .unwrap_or_default()
    }
}
