//! Configuration: CLI flags (with `ACTIVATOR_*` environment equivalents), the TOML config file,
//! defaults, and validation into a [`Config`] the rest of the crate can trust.
//!
//! Flags win over the file, the file wins over defaults. Every error names the key, the value and
//! what was expected, and nothing starts half-configured: [`Config::load`] either returns a whole
//! valid config or an error.

mod cli;
mod file;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::{Cli, Command, LogFormat};
use file::FileConfig;
use validate::{route_defaults, route_spec};

use crate::spec::{RouteDefaults, RouteSpec, is_host_name, normalise_host_name};

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
    /// How often the scaler looks at every route.
    pub scaler_tick: Duration,
    /// How long a connection to a replica may take before the request fails with 502.
    pub connect_timeout: Duration,
    /// Route settings for routes that do not set them (annotation-discovered routes too).
    pub defaults: RouteDefaults,
    /// Kubernetes mode, if enabled.
    pub kube: Option<KubeSettings>,
    /// The routes, in file order (none in Kubernetes mode: they are discovered).
    pub routes: Vec<RouteSpec>,
}

/// Settings of Kubernetes mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// Only this namespace; `None` = all.
    pub namespace: Option<String>,
    /// Period of direct probes of pods the kubelet has not marked ready yet.
    pub probe_interval: Duration,
}

impl Default for KubeSettings {
    fn default() -> KubeSettings {
        KubeSettings {
            namespace: None,
            probe_interval: defaults::PROBE_INTERVAL,
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
    /// Scaler period.
    pub(crate) const SCALER_TICK: Duration = Duration::from_secs(1);
    /// Upstream connect timeout.
    pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Direct probe period of not-ready pods (Knative probes every 200ms; the kubelet every 10s).
    pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(25);
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
        /// Key path such as `routes[0].max_scale`.
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
        Config::from_parts(cli, file, &origin)
    }

    /// Builds a config from the text of a config file alone (flags at their defaults).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file = file::parse(text).map_err(|message| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message,
        })?;
        // No flags, and nothing from the environment: the text alone decides.
        Config::from_parts(&Cli::default(), file, "<config>")
    }

    fn from_parts(cli: &Cli, file: FileConfig, origin: &str) -> Result<Config, ConfigError> {
        let invalid =
            |key: &str, value: &dyn std::fmt::Display, expected: &str| ConfigError::Invalid {
                origin: origin.to_owned(),
                key: key.to_owned(),
                value: value.to_string(),
                expected: expected.to_owned(),
            };
        let parse_addr = |s: &str| s.parse::<SocketAddr>().expect("default address parses");
        let domain = normalise_host_name(
            cli.domain
                .as_deref()
                .or(file.domain.as_deref())
                .unwrap_or(defaults::DOMAIN),
        );
        if !is_host_name(&domain) {
            return Err(invalid(
                "domain",
                &format!("{domain:?}"),
                "a DNS name such as 127.0.0.1.nip.io",
            ));
        }
        if cli.kube && !file.routes.is_empty() {
            return Err(invalid(
                "routes",
                &format!("{} route(s)", file.routes.len()),
                "no [[routes]] with --kube: routes come from Deployments labelled activator.dev/enabled=true",
            ));
        }
        let defaults = route_defaults(&file.defaults, &invalid)?;
        let mut routes = Vec::with_capacity(file.routes.len());
        let mut claims: HashMap<(String, Option<String>), String> = HashMap::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (index, route) in file.routes.iter().enumerate() {
            let spec = route_spec(index, route, &defaults, &domain, &invalid)?;
            if let Some(first) = ids.insert(spec.id(), index) {
                return Err(invalid(
                    &format!("routes[{index}].name"),
                    &format!("{:?}", spec.name),
                    &format!(
                        "a name unique in namespace {:?}; routes[{first}] already uses it",
                        spec.namespace
                    ),
                ));
            }
            for host in &spec.hosts {
                let claim = (host.clone(), spec.path_prefix.clone());
                if let Some(owner) = claims.insert(claim, spec.id()) {
                    return Err(invalid(
                        &format!("routes[{index}].hosts"),
                        &format!("{host:?}"),
                        &format!("a host no other route claims; route {owner} already answers it"),
                    ));
                }
            }
            routes.push(spec);
        }
        let drain_timeout = cli
            .drain_timeout
            .or(file.drain_timeout.map(|d| d.0))
            .unwrap_or(defaults::DRAIN_TIMEOUT);
        let scaler_tick = file.scaler_tick.map_or(defaults::SCALER_TICK, |d| d.0);
        if scaler_tick.is_zero() {
            return Err(invalid(
                "scaler_tick",
                &"\"0s\"",
                "a positive duration such as \"1s\"",
            ));
        }
        let connect_timeout = file
            .connect_timeout
            .map_or(defaults::CONNECT_TIMEOUT, |d| d.0);
        if connect_timeout.is_zero() {
            return Err(invalid(
                "connect_timeout",
                &"\"0s\"",
                "a positive duration such as \"2s\"",
            ));
        }
        let kube = cli.kube.then(|| KubeSettings {
            namespace: cli.namespace.clone(),
            probe_interval: cli
                .probe_interval
                .or(file.probe_interval.map(|d| d.0))
                .unwrap_or(defaults::PROBE_INTERVAL),
        });
        if kube.as_ref().is_some_and(|k| k.probe_interval.is_zero()) {
            return Err(invalid(
                "probe_interval",
                &"\"0s\"",
                "a positive duration such as \"25ms\"",
            ));
        }
        Ok(Config {
            defaults,
            kube,
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| parse_addr(defaults::LISTEN)),
            admin_listen: cli
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| parse_addr(defaults::ADMIN_LISTEN)),
            domain,
            drain_timeout,
            scaler_tick,
            connect_timeout,
            routes,
        })
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
        assert_eq!(route.scaling.idle_timeout, Duration::from_secs(60));
        assert_eq!(route.cold_start_timeout, Duration::from_secs(120));
        assert_eq!(route.max_queued, 10_000);
        assert_eq!(route.scaling.activation_replicas(), 1);
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
            config.routes[0].scaling.idle_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(config.routes[0].max_queued, 7);
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
