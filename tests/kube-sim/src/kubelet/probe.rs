//! Readiness probes as the kubelet runs them: `httpGet` (a 200–399 answer), `tcpSocket` (a
//! connection) and `exec` (exit code 0), each bounded by `timeoutSeconds`, with the probe's
//! delays and thresholds (Kubernetes defaults when absent), all scaled by the time scale; and
//! how consecutive results add up to readiness.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::SimConfig;
use crate::meta;

/// A probe's schedule and what it checks.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    spec: Value,
    /// Delay before the first probe.
    pub(crate) initial_delay: Duration,
    /// Time between probes.
    pub(crate) period: Duration,
    timeout: Duration,
    /// Consecutive successes to become ready.
    pub(crate) success_threshold: u32,
    /// Consecutive failures to become unready.
    pub(crate) failure_threshold: u32,
}

fn seconds(spec: &Value, field: &str, default: f64) -> f64 {
    spec.get(field).and_then(Value::as_f64).unwrap_or(default)
}

impl Probe {
    /// The probe from a container's `readinessProbe`, if it has one.
    pub(crate) fn from_container(container: &Value, config: &SimConfig) -> Option<Self> {
        let spec = container.get("readinessProbe")?.clone();
        let threshold = |field, default: f64| seconds(&spec, field, default).max(1.0) as u32;
        Some(Self {
            initial_delay: config.scaled(seconds(&spec, "initialDelaySeconds", 0.0)),
            period: config.scaled(seconds(&spec, "periodSeconds", 10.0).max(1.0)),
            // Timeouts are not scaled below a floor: a real process still needs real time to answer.
            timeout: config
                .scaled(seconds(&spec, "timeoutSeconds", 1.0))
                .max(Duration::from_millis(200)),
            success_threshold: threshold("successThreshold", 1.0),
            failure_threshold: threshold("failureThreshold", 3.0),
            spec,
        })
    }

    /// Runs the probe once against the pod at `ip`.
    pub(crate) async fn check(&self, ip: Ipv4Addr, container: &Value) -> bool {
        let attempt = async {
            if let Some(http) = self.spec.get("httpGet") {
                let port = resolve_port(http.get("port"), container)?;
                let host = match meta::str_at(http, "/host") {
                    "" => ip.to_string(),
                    h => h.to_string(),
                };
                let path = match meta::str_at(http, "/path") {
                    "" => "/",
                    p => p,
                };
                http_get(&host, port, path, http.get("httpHeaders")).await
            } else if let Some(tcp) = self.spec.get("tcpSocket") {
                let port = resolve_port(tcp.get("port"), container)?;
                TcpStream::connect((ip, port)).await.ok().map(|_| true)
            } else if let Some(exec) = self.spec.pointer("/exec/command").and_then(Value::as_array)
            {
                let words: Vec<&str> = exec.iter().filter_map(Value::as_str).collect();
                let (program, args) = words.split_first()?;
                let status = tokio::process::Command::new(program)
                    .args(args)
                    .env("POD_IP", ip.to_string())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .ok()?;
                Some(status.success())
            } else {
                Some(true)
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

/// A probe port: a number, or the name of one of the container's ports.
fn resolve_port(port: Option<&Value>, container: &Value) -> Option<u16> {
    match port? {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(name) => name.parse().ok().or_else(|| {
            container
                .get("ports")?
                .as_array()?
                .iter()
                .find(|p| p["name"] == name.as_str())?
                .get("containerPort")?
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        }),
        _ => None,
    }
}

async fn http_get(host: &str, port: u16, path: &str, headers: Option<&Value>) -> Option<bool> {
    let mut stream = TcpStream::connect((host, port)).await.ok()?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in headers.and_then(Value::as_array).into_iter().flatten() {
        request.push_str(&format!(
            "{}: {}\r\n",
            meta::str_at(h, "/name"),
            meta::str_at(h, "/value")
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    let code: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
    Some((200..400).contains(&code))
}

/// Consecutive probe results and the readiness they add up to.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Readiness {
    successes: u32,
    failures: u32,
    /// Whether the results so far make the container ready.
    pub(crate) ready: bool,
}

impl Readiness {
    /// A container that just started: ready at once without a probe (as in Kubernetes),
    /// otherwise not until the probe passes.
    pub(crate) fn starting(probe: Option<&Probe>) -> Self {
        Self {
            ready: probe.is_none(),
            ..Self::default()
        }
    }

    /// Counts one probe result against the probe's thresholds.
    pub(crate) fn record(&mut self, passed: bool, probe: &Probe) {
        if passed {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= probe.success_threshold {
                self.ready = true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= probe.failure_threshold || !self.ready {
                self.ready = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn probe(success_threshold: u32, failure_threshold: u32) -> Probe {
        let container = json!({"readinessProbe": {
            "tcpSocket": {"port": 80},
            "successThreshold": success_threshold,
            "failureThreshold": failure_threshold,
        }});
        Probe::from_container(&container, &SimConfig::default()).expect("a probe")
    }

    #[test]
    fn readiness_needs_the_success_threshold_in_a_row() {
        let probe = probe(2, 3);
        let mut readiness = Readiness::default();
        readiness.record(true, &probe);
        assert!(!readiness.ready);
        readiness.record(false, &probe);
        readiness.record(true, &probe);
        assert!(!readiness.ready, "the failure reset the count");
        readiness.record(true, &probe);
        assert!(readiness.ready);
    }

    #[test]
    fn a_ready_container_stays_ready_until_the_failure_threshold() {
        let probe = probe(1, 3);
        let mut readiness = Readiness::default();
        readiness.record(true, &probe);
        readiness.record(false, &probe);
        readiness.record(false, &probe);
        assert!(readiness.ready);
        readiness.record(false, &probe);
        assert!(!readiness.ready);
    }
}
