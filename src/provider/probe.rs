//! Readiness probes of a replica, run by the activator itself: an HTTP GET answered 2xx or 3xx (as a Kubernetes
//! `httpGet` probe), or, without a path, a TCP connect.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a single probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Probes `addr` (GET `path` when given, else a TCP connect); the error says what failed, for a
/// person.
pub(crate) async fn probe(addr: SocketAddr, path: Option<&str>) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, attempt(addr, path)).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe of {addr} timed out after {PROBE_TIMEOUT:?}")),
    }
}

async fn attempt(addr: SocketAddr, path: Option<&str>) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let Some(path) = path else {
        return Ok(());
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: activator-probe\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream
            .read(&mut head[len..])
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "GET {path}: connection closed before a status line"
            ));
        }
        len += n;
    }
    let line = String::from_utf8_lossy(&head[..len]);
    let code: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {code}"))
    }
}
