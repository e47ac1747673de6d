//! Resolving the flags and the file into a [`Config`]: flags win over the file, the file over
//! the defaults, and every value is checked with an error naming the flag or key.

use std::collections::HashMap;
use std::time::Duration;

use ipnet::IpNet;

use super::file::FileConfig;
use super::validate::{route_defaults, route_spec};
use super::{Cli, Config, ConfigError, Connections, Forwarding, KubeSettings, address, defaults};
use crate::policy::{Ceilings, HostGrant, Policy};
use crate::spec::{
    HumanDuration, check_duration, defaults::MAX_DURATION, is_dns_label, is_host_name,
    normalise_host_name,
};

/// The whole configuration from `cli` over `file` (read from `origin`).
pub(super) fn config(cli: &Cli, file: FileConfig, origin: &str) -> Result<Config, ConfigError> {
    let invalid = |key: &str, value: &dyn std::fmt::Display, expected: &str| ConfigError::Invalid {
        origin: origin.to_owned(),
        key: key.to_owned(),
        value: value.to_string(),
        expected: expected.to_owned(),
    };
    // A value from a flag is named by its flag, one from the file by its key.
    let pick = |key: &str, flag: bool| {
        if flag {
            format!("--{}", key.replace('_', "-"))
        } else {
            key.to_owned()
        }
    };
    let duration = |key: &str,
                    flag: Option<Duration>,
                    file: Option<HumanDuration>,
                    default: Duration,
                    zero_ok: bool| {
        let value = flag.or(file.map(|d| d.0)).unwrap_or(default);
        let name = pick(key, flag.is_some());
        if value.is_zero() && !zero_ok {
            return Err(invalid(
                &name,
                &"\"0s\"",
                "a positive duration such as \"10s\"",
            ));
        }
        if value > MAX_DURATION {
            return Err(invalid(
                &name,
                &format!("\"{}\"", humantime::format_duration(value)),
                "at most a day (\"24h\")",
            ));
        }
        Ok(value)
    };
    let listen = |key: &str, flag: Option<&String>, file: Option<&String>, default: &str| {
        let (name, text) = match (flag, file) {
            (Some(text), _) => (pick(key, true), text.as_str()),
            (None, Some(text)) => (key.to_owned(), text.as_str()),
            (None, None) => (key.to_owned(), default),
        };
        address::parse(text).map_err(|expected| invalid(&name, &format!("{text:?}"), &expected))
    };

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
    let routes = routes(&file, &defaults, &domain, &invalid)?;
    let cluster = super::cluster::settings(cli, &file.cluster, &invalid)?;
    let kube = if cli.kube {
        Some(KubeSettings {
            cluster,
            namespace: cli.namespace.clone(),
            probe_interval: duration(
                "probe_interval",
                cli.probe_interval,
                file.probe_interval,
                defaults::PROBE_INTERVAL,
                false,
            )?,
        })
    } else {
        None
    };
    let shutdown_delay_default = if cli.kube {
        defaults::SHUTDOWN_DELAY_KUBE
    } else {
        Duration::ZERO
    };
    Ok(Config {
        listen: listen(
            "listen",
            cli.listen.as_ref(),
            file.listen.as_ref(),
            defaults::LISTEN,
        )?,
        admin_listen: listen(
            "admin_listen",
            cli.admin_listen.as_ref(),
            file.admin_listen.as_ref(),
            defaults::ADMIN_LISTEN,
        )?,
        domain: domain.clone(),
        drain_timeout: duration(
            "drain_timeout",
            cli.drain_timeout,
            file.drain_timeout,
            defaults::DRAIN_TIMEOUT,
            true,
        )?,
        shutdown_delay: duration(
            "shutdown_delay",
            cli.shutdown_delay,
            file.shutdown_delay,
            shutdown_delay_default,
            true,
        )?,
        scaler_tick: duration(
            "scaler_tick",
            None,
            file.scaler_tick,
            defaults::SCALER_TICK,
            false,
        )?,
        connect_timeout: duration(
            "connect_timeout",
            None,
            file.connect_timeout,
            defaults::CONNECT_TIMEOUT,
            false,
        )?,
        connections: Connections {
            header_read_timeout: duration(
                "header_read_timeout",
                cli.header_read_timeout,
                file.header_read_timeout,
                defaults::HEADER_READ_TIMEOUT,
                false,
            )?,
            keepalive_timeout: duration(
                "keepalive_timeout",
                cli.keepalive_timeout,
                file.keepalive_timeout,
                defaults::KEEPALIVE_TIMEOUT,
                false,
            )?,
            max_connections: match cli.max_connections.or(file.max_connections) {
                Some(0) => {
                    return Err(invalid(
                        &pick("max_connections", cli.max_connections.is_some()),
                        &0,
                        "at least 1",
                    ));
                }
                Some(max) => max,
                None => max_connections_from_open_files(),
            },
            workers: match cli.workers.or(file.workers) {
                Some(0) => {
                    return Err(invalid(
                        &pick("workers", cli.workers.is_some()),
                        &0,
                        "at least 1",
                    ));
                }
                Some(workers) => workers,
                None => default_workers(),
            },
            max_header_bytes: match cli.max_header_bytes.or(file.max_header_bytes) {
                Some(bytes) if bytes < 1024 => {
                    return Err(invalid(
                        &pick("max_header_bytes", cli.max_header_bytes.is_some()),
                        &bytes,
                        "at least 1024",
                    ));
                }
                Some(bytes) => bytes,
                None => defaults::MAX_HEADER_BYTES,
            },
        },
        forwarding: forwarding(cli, &file, &invalid, &pick)?,
        policy: policy(&file, &domain, &invalid)?,
        max_queued_total: match file.limits.max_queued_total {
            Some(0) => return Err(invalid("limits.max_queued_total", &0, "at least 1")),
            Some(total) => total,
            None => defaults::MAX_QUEUED_TOTAL,
        },
        defaults,
        kube,
        routes,
    })
}

/// The file's routes; names and hosts must be unique.
fn routes(
    file: &FileConfig,
    defaults: &crate::spec::Settings,
    domain: &str,
    invalid: super::validate::Invalid<'_>,
) -> Result<Vec<crate::spec::RouteSpec>, ConfigError> {
    let mut routes = Vec::with_capacity(file.routes.len());
    let mut claims: HashMap<(String, Option<String>), String> = HashMap::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (index, route) in file.routes.iter().enumerate() {
        let spec = route_spec(index, route, defaults, domain, invalid)?;
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
    Ok(routes)
}

/// Host grants, ceilings on annotations, and namespaces whose hand-written EndpointSlices count.
fn policy(
    file: &FileConfig,
    domain: &str,
    invalid: super::validate::Invalid<'_>,
) -> Result<Policy, ConfigError> {
    let limits = &file.limits;
    let builtin = Ceilings::default();
    let ceiling = |key: &'static str, value: Option<HumanDuration>, default: Duration| {
        let value = value.map_or(default, |d| d.0);
        check_duration(key, value)
            .map_err(|e| invalid(&format!("limits.{key}"), &e.value, &e.expected))
    };
    let count = |key: &str, value: Option<u64>, default: u64| match value {
        Some(0) => Err(invalid(&format!("limits.{key}"), &0, "at least 1")),
        Some(value) => Ok(value),
        None => Ok(default),
    };
    let small = |key: &str, value: Option<u32>, default: u32| {
        count(key, value.map(u64::from), u64::from(default)).map(|v| v as u32)
    };
    let ceilings = Ceilings {
        max_queued: count("max_queued", limits.max_queued, builtin.max_queued)?,
        cold_start_timeout: ceiling(
            "cold_start_timeout",
            limits.cold_start_timeout,
            builtin.cold_start_timeout,
        )?,
        response_timeout: ceiling(
            "response_timeout",
            limits.response_timeout,
            builtin.response_timeout,
        )?,
        max_scale: small("max_scale", limits.max_scale, builtin.max_scale)?,
        activation_scale: small(
            "activation_scale",
            limits.activation_scale,
            builtin.activation_scale,
        )?,
    };
    let mut host_grants = Vec::with_capacity(file.host_grants.len());
    for (index, grant) in file.host_grants.iter().enumerate() {
        if !is_dns_label(&grant.namespace) {
            return Err(invalid(
                &format!("host_grants[{index}].namespace"),
                &format!("{:?}", grant.namespace),
                "a namespace name (a DNS label)",
            ));
        }
        let mut hosts = Vec::with_capacity(grant.hosts.len());
        for (i, host) in grant.hosts.iter().enumerate() {
            let normalised = normalise_host_name(host);
            if !is_host_name(normalised.strip_prefix("*.").unwrap_or(&normalised)) {
                return Err(invalid(
                    &format!("host_grants[{index}].hosts[{i}]"),
                    &format!("{host:?}"),
                    "a host name such as \"shop.example.com\" or a wildcard such as \"*.shop.example.com\"",
                ));
            }
            hosts.push(normalised);
        }
        host_grants.push(HostGrant {
            namespace: grant.namespace.clone(),
            hosts,
        });
    }
    let mut unmanaged_slice_namespaces = std::collections::HashSet::new();
    for (index, namespace) in file.trusted_endpointslice_namespaces.iter().enumerate() {
        if !is_dns_label(namespace) {
            return Err(invalid(
                &format!("trusted_endpointslice_namespaces[{index}]"),
                &format!("{namespace:?}"),
                "a namespace name (a DNS label)",
            ));
        }
        unmanaged_slice_namespaces.insert(namespace.clone());
    }
    Ok(Policy {
        domain: domain.to_owned(),
        host_grants,
        ceilings,
        unmanaged_slice_namespaces,
    })
}

/// Trusted proxies (CIDRs or single addresses) and allowed upgrades.
fn forwarding(
    cli: &Cli,
    file: &FileConfig,
    invalid: super::validate::Invalid<'_>,
    pick: &dyn Fn(&str, bool) -> String,
) -> Result<Forwarding, ConfigError> {
    let mut forwarding = Forwarding::default();
    let from_flag = cli.trusted_proxies.is_some();
    if let Some(list) = cli
        .trusted_proxies
        .as_ref()
        .or(file.trusted_proxies.as_ref())
    {
        forwarding.trusted_proxies = list
            .iter()
            .map(|text| text.trim())
            .filter(|text| !text.is_empty())
            .map(|text| {
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(
                            &pick("trusted_proxies", from_flag),
                            &format!("{text:?}"),
                            "CIDRs or addresses, e.g. \"10.0.0.0/8\" or \"192.168.1.10\"",
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    let from_flag = cli.allowed_upgrades.is_some();
    if let Some(list) = cli
        .allowed_upgrades
        .as_ref()
        .or(file.allowed_upgrades.as_ref())
    {
        forwarding.allowed_upgrades = Vec::new();
        for protocol in list.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let token = protocol.split('/').next().unwrap_or_default();
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(invalid(
                    &pick("allowed_upgrades", from_flag),
                    &format!("{protocol:?}"),
                    "protocol names as in the Upgrade header, e.g. \"websocket\"",
                ));
            }
            forwarding.allowed_upgrades.push(token.to_ascii_lowercase());
        }
    }
    Ok(forwarding)
}

/// Half the open-files limit left after the reserve: each proxied request may hold a client and
/// a replica connection.
fn max_connections_from_open_files() -> usize {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let budget = soft.saturating_sub(defaults::RESERVED_FILES) / 2;
    usize::try_from(budget.max(64)).unwrap_or(usize::MAX)
}

/// The worker count without a `workers` setting: every CPU this process may use, as nginx's
/// `worker_processes auto`, Envoy's `--concurrency` and HAProxy's `nbthread` take. Rust's count
/// honours the CPU affinity mask and a cgroup's CPU quota, so a pod's `resources.limits.cpu` is
/// used whole. On 2 CPUs shared with the clients and the replica, two workers served 1.06–1.10×
/// one worker's requests per second in every alternating run, at 0.90–1.05× its CPU per request
/// (BENCHMARKS.md, warm path).
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
