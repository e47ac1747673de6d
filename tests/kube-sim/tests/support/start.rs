//! Starting a simulator for the integration tests: a hundred times faster than real time, with
//! the echo server this crate just built standing in for `mendhak/http-https-echo`; and whether
//! `kubectl` is there for the tests that run it.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::time::Duration;

use kube_sim::{Sim, SimConfig};

/// The echo server binary built for these tests.
pub const ECHO: &str = env!("CARGO_BIN_EXE_kube-sim-echo");

/// An upper bound for every wait; never reached when things work.
pub const WAIT: Duration = Duration::from_secs(30);

/// Starts a simulator from `config`, at time scale 0.01, running the test-built echo server.
pub async fn start_with(config: SimConfig) -> Sim {
    let config = SimConfig {
        echo_command: Some(ECHO.to_string()),
        ..config.time_scale(0.01)
    };
    Sim::start(config).await.expect("the simulator starts")
}

/// Starts a simulator with the default configuration.
pub async fn start() -> Sim {
    start_with(SimConfig::default()).await
}

/// Whether `kubectl` is on `PATH`; says so when it is not, so the test can skip.
pub fn kubectl_available() -> bool {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("kubectl is not on PATH; skipping");
    }
    found
}
