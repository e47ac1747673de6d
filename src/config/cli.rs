//! The command line: flags (each with an `ACTIVATOR_*` environment variable) and subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::spec::parse_duration;

/// Command-line interface of the `activator` binary. `Default` is no flags at all (nothing read
/// from the environment either).
#[derive(Debug, Default, Parser)]
#[command(name = "activator", version, about = "Scale-to-zero HTTP activator")]
pub struct Cli {
    /// What to do; without a subcommand the activator serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file (TOML) with routes and settings.
    #[arg(long, env = "ACTIVATOR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address of the proxy listener [default: 0.0.0.0:8080].
    #[arg(long, env = "ACTIVATOR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (/metrics, /healthz, /readyz, /routes) [default: 0.0.0.0:9090].
    #[arg(long, env = "ACTIVATOR_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Domain of default hosts: route NAME in namespace NS answers NAME.NS.DOMAIN [default: 127.0.0.1.nip.io].
    #[arg(long, env = "ACTIVATOR_DOMAIN")]
    pub domain: Option<String>,
    /// Log format.
    #[arg(long, env = "ACTIVATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long in-flight and held requests may drain on shutdown [default: 30s].
    #[arg(long, env = "ACTIVATOR_DRAIN_TIMEOUT", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Discover routes from Deployments labelled activator.dev/enabled=true (in-cluster config,
    /// else KUBECONFIG) instead of the config file's [[routes]].
    #[arg(long, env = "ACTIVATOR_KUBE")]
    pub kube: bool,
    /// With --kube: only this namespace [default: all namespaces].
    #[arg(long, env = "ACTIVATOR_NAMESPACE", requires = "kube")]
    pub namespace: Option<String>,
    /// With --kube: how often not-yet-ready pods are probed directly [default: 25ms].
    #[arg(long, env = "ACTIVATOR_PROBE_INTERVAL", value_parser = parse_duration)]
    pub probe_interval: Option<Duration>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the routes of a running activator (its admin `/routes`) as a table.
    Routes {
        /// Admin address of the running activator.
        #[arg(
            long,
            env = "ACTIVATOR_ADMIN_URL",
            default_value = "http://127.0.0.1:9090"
        )]
        admin: String,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
