//! The command line: flags (each with an `ACTIVATOR_*` environment variable) and subcommands.

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
    /// Address of the proxy listener: HOST:PORT, :PORT (every interface) or [IPv6]:PORT
    /// [default: 0.0.0.0:8080].
    #[arg(long, env = "ACTIVATOR_LISTEN")]
    pub listen: Option<String>,
    /// Address of the admin listener (/metrics, /healthz, /readyz, /routes), as --listen
    /// [default: 0.0.0.0:9090].
    #[arg(long, env = "ACTIVATOR_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
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
    /// After SIGTERM, how long /readyz fails while requests are still accepted, before the drain
    /// [default: 5s with --kube, else 0s].
    #[arg(long, env = "ACTIVATOR_SHUTDOWN_DELAY", value_parser = parse_duration)]
    pub shutdown_delay: Option<Duration>,
    /// A connection's request head must arrive whole within this; also for connections that send
    /// nothing, and HTTP/2 connections that open no stream [default: 30s].
    #[arg(long, env = "ACTIVATOR_HEADER_READ_TIMEOUT", value_parser = parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// An idle keep-alive connection is closed after this (HTTP/2: GOAWAY) [default: 75s].
    #[arg(long, env = "ACTIVATOR_KEEPALIVE_TIMEOUT", value_parser = parse_duration)]
    pub keepalive_timeout: Option<Duration>,
    /// Client connections open at once on the proxy listener [default: from the open-files limit].
    #[arg(long, env = "ACTIVATOR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Threads serving the proxy listener, each with a listening socket of its own [default:
    /// every CPU this process may use, by its CPU affinity and cgroup quota].
    #[arg(long, env = "ACTIVATOR_WORKERS")]
    pub workers: Option<usize>,
    /// Request header bytes at most; beyond → 431 [default: 65536].
    #[arg(long, env = "ACTIVATOR_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Peers (CIDRs, comma-separated) whose X-Forwarded-* headers are kept [default: none].
    #[arg(long, env = "ACTIVATOR_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Upgrade protocols tunnelled to replicas (comma-separated) [default: websocket].
    #[arg(long, env = "ACTIVATOR_ALLOWED_UPGRADES", value_delimiter = ',')]
    pub allowed_upgrades: Option<Vec<String>>,
    /// With --kube: the Lease whose holder makes every scale-down and scale-out decision, as
    /// NAMESPACE/NAME [default: $POD_NAMESPACE/activator, else activator-system/activator].
    #[arg(long, env = "ACTIVATOR_LEASE")]
    pub lease: Option<String>,
    /// With --kube: the Service whose EndpointSlices list the other activator replicas (their
    /// port named `admin`), as NAMESPACE/NAME [default: as --lease].
    #[arg(long, env = "ACTIVATOR_PEER_SERVICE")]
    pub peer_service: Option<String>,
    /// This replica's name among its peers and in the Lease (the downward API's pod name)
    /// [default: the hostname].
    #[arg(long, env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,
    /// The namespace this replica runs in (the downward API's pod namespace).
    #[arg(long, env = "POD_NAMESPACE", hide = true)]
    pub pod_namespace: Option<String>,
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
