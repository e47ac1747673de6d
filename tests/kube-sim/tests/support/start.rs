//! Starting a simulator for the integration tests: a hundred times faster than real time, with
//! the workspace's `activator-echo` standing in for `mendhak/http-https-echo`; `kubectl`, which
//! `kubectl`, which the tests that run it require; and a small HTTP client for talking to pods.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kube_sim::{Sim, SimConfig};
use serde_json::Value;

/// An upper bound for every wait; never reached when things work.
pub const WAIT: Duration = Duration::from_secs(30);

/// The echo server binary (shell-quoted for a command line). Panics naming the command that
/// builds it when it is missing: these tests need real pods and must not pass without them.
pub fn echo() -> &'static str {
    static ECHO: OnceLock<String> = OnceLock::new();
    ECHO.get_or_init(|| match activator_echo::locate() {
        Ok(path) => format!("'{}'", path.display()),
        Err(missing) => panic!("{missing}"),
    })
}

/// Starts a simulator from `config`, at time scale 0.01, running the workspace's echo server.
pub async fn start_with(config: SimConfig) -> Sim {
    let config = SimConfig {
        echo_command: Some(echo().to_string()),
        ..config.time_scale(0.01)
    };
    Sim::start(config).await.expect("the simulator starts")
}

/// Starts a simulator with the default configuration.
pub async fn start() -> Sim {
    start_with(SimConfig::default()).await
}

/// Panics unless `kubectl` runs, naming what to install: a test that calls kubectl must fail
/// without it, never pass having checked nothing.
pub fn require_kubectl() {
    let runs = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        runs,
        "kubectl is not on PATH; this test runs the real kubectl against the simulator. Install kubectl 1.32 (https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/, or the Debian package `kubectl` from https://pkgs.k8s.io/core:/stable:/v1.32/deb/)"
    );
}

/// Sends `GET path` to `address` and returns the status and the body parsed as JSON
/// (`Value::Null` when it is not JSON).
///
/// # Errors
/// When the connection or the exchange fails.
pub async fn http_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, Value)> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}
