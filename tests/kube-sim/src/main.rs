//! `kube-sim`: runs the simulator until interrupted, so `kubectl` and the activator can be
//! pointed at it by hand. See the crate README for flags and the control API.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use kube_sim::{ImageMapping, Sim, SimConfig};

/// A stand-in Kubernetes API server and kubelet that runs local processes as pods.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address of the API server.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Write a kubeconfig for the server to this file.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Run IMAGE as COMMAND (a shell command; {ip}, {port}, {name}, {namespace} are filled in).
    #[arg(long = "image", value_name = "NAME=COMMAND", value_parser = ImageMapping::parse)]
    images: Vec<ImageMapping>,
    /// Scale every probe period, delay, grace period and back-off by this factor.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Pods get addresses .2, .3, … in this /24.
    #[arg(long, default_value = "127.0.0.0")]
    pod_network: Ipv4Addr,
    /// Changes kept for watches to resume from.
    #[arg(long, default_value_t = 1000)]
    history_limit: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kube_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into a redirected log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = SimConfig {
        listen: args.listen,
        images: args.images,
        time_scale: args.time_scale,
        pod_network: args.pod_network,
        history_limit: args.history_limit,
        kubeconfig_path: args.write_kubeconfig,
        ..SimConfig::default()
    };
    let sim = match Sim::start(config).await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("kube-sim: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("kube-sim listening on {}", sim.url());
    println!("kubeconfig: {}", sim.kubeconfig_path().display());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            eprintln!("kube-sim: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
