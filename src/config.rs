//! Configuration: CLI flags (with `ACTIVATOR_*` environment equivalents), the TOML config file,
//! defaults, and validation into a [`Config`] the rest of the crate can trust.
//!
//! Flags win over the file, the file wins over defaults. Every error names the key (or flag), the
//! value and what was expected, and nothing starts half-configured: [`Config::load`] either
//! returns a whole valid config or an error.

mod address;
mod cli;
mod cluster;
mod file;
mod resolve;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use cli::{Cli, Command, LogFormat};
use file::FileConfig;

use crate::policy::Policy;
use crate::spec::{RouteSpec, Settings};

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Domain of default hosts.
    pub domain: String,
    /// How long requests may drain on shutdown.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long `/readyz` fails while the listeners still accept, before the drain.
    pub shutdown_delay: Duration,
    /// How often the scaler looks at every route.
    pub scaler_tick: Duration,
    /// How long a connection to a replica may take before the request fails with 502.
    pub connect_timeout: Duration,
    /// Limits on client connections and requests.
    pub connections: Connections,
    /// Which forwarded headers are trusted, and which upgrades are tunnelled.
    pub forwarding: Forwarding,
    /// Route settings for routes that do not set them (annotation-discovered routes too).
    pub defaults: Settings,
    /// What tenants' annotations may claim and ask for (Kubernetes mode).
    pub policy: Policy,
    /// Held requests across all routes at most; beyond it, 503 `queue_full` whichever route asks.
    pub max_queued_total: u64,
    /// Kubernetes mode, if enabled.
    pub kube: Option<KubeSettings>,
    /// The routes, in file order (none in Kubernetes mode: they are discovered).
    pub routes: Vec<RouteSpec>,
}

/// Limits on client connections, with defaults from systems people trust (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// A request head must arrive whole within this, counted from its first byte; a new
    /// connection must send something, and an HTTP/2 connection open a stream, within it too.
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this (HTTP/2: GOAWAY).
    pub keepalive_timeout: Duration,
    /// Client connections open at once on the proxy listener.
    pub max_connections: usize,
    /// Threads serving the proxy listener.
    pub workers: usize,
    /// Request header bytes (names, values and line overhead) at most; beyond → 431.
    pub max_header_bytes: usize,
}

/// Which forwarded headers are believed, and which protocol upgrades are tunnelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// Peers whose `X-Forwarded-*` headers are kept and appended to; others' are replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// `Upgrade` protocols tunnelled to replicas, lower case.
    pub allowed_upgrades: Vec<String>,
}

impl Default for Forwarding {
    fn default() -> Forwarding {
        Forwarding {
            trusted_proxies: Vec::new(),
            allowed_upgrades: vec!["websocket".to_owned()],
        }
    }
}

/// Settings of Kubernetes mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// Only this namespace; `None` = all.
    pub namespace: Option<String>,
    /// Period of direct probes of pods the kubelet has not marked ready yet.
    pub probe_interval: Duration,
    /// How this replica finds and works with the others.
    pub cluster: ClusterSettings,
}

impl Default for KubeSettings {
    fn default() -> KubeSettings {
        KubeSettings {
            namespace: None,
            probe_interval: defaults::PROBE_INTERVAL,
            cluster: ClusterSettings::default(),
        }
    }
}

/// A namespaced object, written `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How activator replicas share the work (Kubernetes mode): the Lease that elects the one that
/// decides, the Service that lists them all, and the timings of both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This replica's name: the Lease's `holderIdentity` while it leads.
    pub identity: String,
    /// The Lease.
    pub lease: ObjectName,
    /// The Service whose EndpointSlices list the replicas (port named `admin`).
    pub peer_service: ObjectName,
    /// How long a Lease not renewed keeps others from taking it.
    pub lease_duration: Duration,
    /// The holder stops deciding when it could not renew for this long (less than
    /// `lease_duration`, so it stops before anyone else can take over).
    pub renew_deadline: Duration,
    /// Period of renewals, and of attempts while the Lease is free.
    pub retry_period: Duration,
    /// Period of the holder's polls of its peers' reports.
    pub poll_interval: Duration,
    /// A peer's answer must arrive within this, or the peer counts as busy.
    pub poll_timeout: Duration,
    /// How long a replica keeps a route closed for a scale to zero decided by the holder, unless
    /// it sees the zero land or the holder gives up first.
    pub scale_down_hold: Duration,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        let object = ObjectName {
            namespace: defaults::CLUSTER_NAMESPACE.to_owned(),
            name: defaults::CLUSTER_NAME.to_owned(),
        };
        ClusterSettings {
            identity: cluster::hostname(),
            lease: object.clone(),
            peer_service: object,
            lease_duration: defaults::LEASE_DURATION,
            renew_deadline: defaults::RENEW_DEADLINE,
            retry_period: defaults::RETRY_PERIOD,
            poll_interval: defaults::POLL_INTERVAL,
            poll_timeout: defaults::POLL_TIMEOUT,
            scale_down_hold: defaults::SCALE_DOWN_HOLD,
        }
    }
}

/// Defaults of the top-level settings, with the reasoning in the README.
pub(crate) mod defaults {
    use std::time::Duration;

    /// Proxy listener.
    pub(crate) const LISTEN: &str = "0.0.0.0:8080";
    /// Admin listener.
    pub(crate) const ADMIN_LISTEN: &str = "0.0.0.0:9090";
    /// Domain of default hosts.
    pub(crate) const DOMAIN: &str = "127.0.0.1.nip.io";
    /// Shutdown drain.
    pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    /// Lame-duck time with `--kube`: endpoints are removed from Services within a few seconds of
    /// a pod turning unready (Knative's activator waits likewise before draining).
    pub(crate) const SHUTDOWN_DELAY_KUBE: Duration = Duration::from_secs(5);
    /// Scaler period.
    pub(crate) const SCALER_TICK: Duration = Duration::from_secs(1);
    /// Upstream connect timeout.
    pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Direct probe period of not-ready pods (Knative probes every 200ms; the kubelet every 10s).
    pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(25);
    /// Request head read (hyper's default; Go's servers commonly set ReadHeaderTimeout near it).
    pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// Idle keep-alive connection (nginx's `keepalive_timeout`).
    pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
    /// Request header bytes (Envoy's `max_request_headers_kb` can go to 96; Go allows 1 MiB;
    /// 64 KiB is the larger of nginx's default buffers and Envoy's default 60 KiB).
    pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
    /// Open files kept back from the connection budget: the admin listener, replica pipes, the
    /// Kubernetes client, logs.
    pub(crate) const RESERVED_FILES: u64 = 1024;
    /// Connections the admin listener serves at once, apart from the proxy's.
    pub(crate) const ADMIN_CONNECTIONS: usize = 256;
    /// Held requests across all routes (see the README for the arithmetic against deploy/'s
    /// memory limit).
    pub(crate) const MAX_QUEUED_TOTAL: u64 = 20_000;
    /// Namespace of the Lease and the peer Service when `POD_NAMESPACE` is not set (deploy/'s).
    pub(crate) const CLUSTER_NAMESPACE: &str = "activator-system";
    /// Name of the Lease and of the peer Service (deploy/'s Service).
    pub(crate) const CLUSTER_NAME: &str = "activator";
    /// client-go's leader election defaults: lease 15s, renew deadline 10s, retry 2s.
    pub(crate) const LEASE_DURATION: Duration = Duration::from_secs(15);
    /// See [`LEASE_DURATION`].
    pub(crate) const RENEW_DEADLINE: Duration = Duration::from_secs(10);
    /// See [`LEASE_DURATION`].
    pub(crate) const RETRY_PERIOD: Duration = Duration::from_secs(2);
    /// Peer polls (Knative's activators report every second; KEDA's scaler polls every 500ms).
    pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);
    /// A peer that has not answered within this counts as busy for the round.
    pub(crate) const POLL_TIMEOUT: Duration = Duration::from_millis(500);
    /// A route closed for a scale to zero reopens after this at the latest.
    pub(crate) const SCALE_DOWN_HOLD: Duration = Duration::from_secs(5);
}

/// A configuration that cannot be used; the message names the key, the value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Key path, line and what was wrong.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{origin}: {key} = {value}: {expected}")]
    Invalid {
        /// The file, or "flags".
        origin: String,
        /// Key path such as `routes[0].max_scale`, or a flag such as `--listen`.
        key: String,
        /// The offending value.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

impl Config {
    /// Reads the config file named by `cli` (if any), applies flags over it and validates.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let (file, origin) = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file = file::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.clone(),
                    message,
                })?;
                (file, path.display().to_string())
            }
            None => (FileConfig::default(), "flags".to_owned()),
        };
        resolve::config(cli, file, &origin)
    }

    /// Builds a config from the text of a config file alone (flags at their defaults).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file = file::parse(text).map_err(|message| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message,
        })?;
        // No flags, and nothing from the environment: the text alone decides.
        resolve::config(&Cli::default(), file, "<config>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[routes]]
name = "helloworld"
[routes.process]
command = ["python3", "-m", "http.server", "{port}"]
"#;

    fn error_of(text: &str) -> String {
        Config::from_toml(text)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn a_minimal_route_gets_the_documented_defaults() {
        let config = Config::from_toml(MINIMAL).expect("valid");
        let route = &config.routes[0];
        assert_eq!(route.namespace, "default");
        assert_eq!(route.hosts, vec!["helloworld.default.127.0.0.1.nip.io"]);
        assert_eq!(route.settings.scaling.idle_timeout, Duration::from_secs(60));
        assert_eq!(route.settings.cold_start_timeout, Duration::from_secs(120));
        assert_eq!(route.settings.max_queued, 10_000);
        assert_eq!(route.settings.scaling.activation_replicas(), 1);
        assert_eq!(config.listen, "0.0.0.0:8080".parse().unwrap());
    }

    #[test]
    fn route_settings_override_defaults_which_override_built_ins() {
        let text = r#"
[defaults]
idle_timeout = "5s"
max_queued = 7
[[routes]]
name = "helloworld"
idle_timeout = "250ms"
[routes.process]
command = ["true"]
"#;
        let config = Config::from_toml(text).expect("valid");
        assert_eq!(
            config.routes[0].settings.scaling.idle_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(config.routes[0].settings.max_queued, 7);
    }

    #[test]
    fn a_bad_duration_names_the_key_the_value_and_the_expected_form() {
        let msg = error_of(&MINIMAL.replace(
            "name = \"helloworld\"",
            "name = \"helloworld\"\nidle_timeout = \"10 parsecs\"",
        ));
        assert!(msg.contains("routes[0].idle_timeout"), "{msg}");
        assert!(msg.contains("10 parsecs"), "{msg}");
        assert!(msg.contains("\"10s\""), "{msg}");
    }

    #[test]
    fn a_misspelt_key_is_named() {
        let msg = error_of(&MINIMAL.replace(
            "name = \"helloworld\"",
            "name = \"helloworld\"\nidle_timout = \"10s\"",
        ));
        assert!(msg.contains("idle_timout"), "{msg}");
    }

    #[test]
    fn workers_default_to_every_cpu_this_process_may_use_and_zero_is_refused() {
        let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(super::resolve::default_workers(), usable);
        let config = Config::from_toml(MINIMAL).expect("valid");
        assert_eq!(config.connections.workers, usable);
        let config = Config::from_toml(&format!("workers = 3\n{MINIMAL}")).expect("valid");
        assert_eq!(config.connections.workers, 3);
        let msg = error_of(&format!("workers = 0\n{MINIMAL}"));
        assert!(msg.contains("workers = 0: at least 1"), "{msg}");
    }

    #[test]
    fn inconsistent_scales_are_rejected_with_the_bound() {
        let msg = error_of(&MINIMAL.replace(
            "name = \"helloworld\"",
            "name = \"helloworld\"\nmin_scale = 4\nmax_scale = 3",
        ));
        assert!(
            msg.contains("routes[0].min_scale = 4: at most max_scale (3)"),
            "{msg}"
        );
    }

    #[test]
    fn a_command_that_cannot_be_found_names_the_program_and_the_path_searched() {
        let msg = error_of(&MINIMAL.replace("\"python3\"", "\"no-such-binary\""));
        assert!(msg.contains("routes[0].process.command"), "{msg}");
        assert!(
            msg.contains("no-such-binary") && msg.contains("not found in PATH ("),
            "{msg}"
        );
        let plain = tempfile::NamedTempFile::new().unwrap();
        let path = plain.path().display().to_string();
        let msg = error_of(&MINIMAL.replace("\"python3\"", &format!("{path:?}")));
        assert!(
            msg.contains(&format!("{path} is not an executable file")),
            "{msg}"
        );
    }

    #[test]
    fn a_route_without_a_command_is_rejected() {
        let msg = error_of("[[routes]]\nname = \"a\"\n");
        assert!(msg.contains("routes[0].process.command"), "{msg}");
    }

    #[test]
    fn two_routes_claiming_one_host_are_rejected() {
        let text = r#"
[[routes]]
name = "helloworld"
hosts = ["x.test"]
[routes.process]
command = ["true"]
[[routes]]
name = "other"
hosts = ["X.test."]
[routes.process]
command = ["true"]
"#;
        let msg = error_of(text);
        assert!(
            msg.contains("route default/helloworld already answers it"),
            "{msg}"
        );
    }

    #[test]
    fn names_must_be_dns_labels() {
        let msg = error_of(&MINIMAL.replace("\"helloworld\"", "\"Hello_World\""));
        assert!(
            msg.contains("routes[0].name = \"Hello_World\": a DNS label"),
            "{msg}"
        );
    }
}
