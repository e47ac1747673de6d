//! The echo server that stands in for `mendhak/http-https-echo` pods: listens on
//! `$POD_IP:$HTTP_PORT` (defaults `0.0.0.0` and 8080) and answers every request with a JSON
//! description of it. With `--exit-on-stdin-eof` it exits when its standard input closes, so it
//! never outlives the simulator that started it.

#![forbid(unsafe_code)]

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let ip = std::env::var("POD_IP").unwrap_or_else(|_| "0.0.0.0".to_string());
    let port = std::env::var("HTTP_PORT").unwrap_or_else(|_| "8080".to_string());
    let hostname = std::env::var("HOSTNAME").unwrap_or_else(|_| "kube-sim-echo".to_string());
    let listener = match TcpListener::bind(format!("{ip}:{port}")).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("kube-sim-echo: cannot listen on {ip}:{port}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("kube-sim-echo: listening on {ip}:{port}");
    if std::env::args().any(|a| a == "--exit-on-stdin-eof") {
        tokio::spawn(async {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    kube_sim::echo::serve(listener, hostname).await;
    std::process::ExitCode::SUCCESS
}
