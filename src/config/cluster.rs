//! Resolving how replicas share the work: identity, the Lease, the peer Service and their
//! timings, from flags, the downward API's environment and the file's `[cluster]` table.

use std::time::Duration;

use super::file::FileCluster;
use super::validate::Invalid;
use super::{Cli, ClusterSettings, ConfigError, ObjectName, defaults};
use crate::spec::{HumanDuration, defaults::MAX_DURATION, is_dns_label};

/// The machine's host name (a pod's is its name), or `activator` if it cannot be read.
pub(super) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| defaults::CLUSTER_NAME.to_owned())
}

/// Parses `NAMESPACE/NAME`; the error says what was expected.
pub(super) fn parse_object_name(text: &str) -> Result<ObjectName, &'static str> {
    const EXPECTED: &str = "NAMESPACE/NAME, e.g. \"activator-system/activator\"";
    let (namespace, name) = text.trim().split_once('/').ok_or(EXPECTED)?;
    if !is_dns_label(namespace) || !is_dns_label(name) {
        return Err(EXPECTED);
    }
    Ok(ObjectName {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// The cluster settings from `cli` over `file`.
pub(super) fn settings(
    cli: &Cli,
    file: &FileCluster,
    invalid: Invalid<'_>,
) -> Result<ClusterSettings, ConfigError> {
    let builtin = ClusterSettings::default();
    let identity = match cli.pod_name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => builtin.identity,
    };
    let home = ObjectName {
        namespace: cli
            .pod_namespace
            .as_deref()
            .map(str::trim)
            .filter(|ns| !ns.is_empty())
            .unwrap_or(defaults::CLUSTER_NAMESPACE)
            .to_owned(),
        name: defaults::CLUSTER_NAME.to_owned(),
    };
    let object = |key: &str, flag: Option<&String>, file: Option<&String>| {
        let (name, text) = match (flag, file) {
            (Some(text), _) => (format!("--{}", key.replace('_', "-")), text),
            (None, Some(text)) => (format!("cluster.{key}"), text),
            (None, None) => return Ok(home.clone()),
        };
        parse_object_name(text).map_err(|expected| invalid(&name, &format!("{text:?}"), expected))
    };
    let lease = object("lease", cli.lease.as_ref(), file.lease.as_ref())?;
    let peer_service = object(
        "peer_service",
        cli.peer_service.as_ref(),
        file.peer_service.as_ref(),
    )?;

    let duration = |key: &str, value: Option<HumanDuration>, default: Duration| {
        let value = value.map_or(default, |d| d.0);
        let text = format!("\"{}\"", humantime::format_duration(value));
        if value.is_zero() {
            return Err(invalid(
                &format!("cluster.{key}"),
                &text,
                "a positive duration such as \"2s\"",
            ));
        }
        if value > MAX_DURATION {
            return Err(invalid(
                &format!("cluster.{key}"),
                &text,
                "at most a day (\"24h\")",
            ));
        }
        Ok(value)
    };
    let lease_duration = duration(
        "lease_duration",
        file.lease_duration,
        builtin.lease_duration,
    )?;
    let renew_deadline = duration(
        "renew_deadline",
        file.renew_deadline,
        builtin.renew_deadline,
    )?;
    let retry_period = duration("retry_period", file.retry_period, builtin.retry_period)?;
    let poll_interval = duration("poll_interval", file.poll_interval, builtin.poll_interval)?;
    let poll_timeout = duration("poll_timeout", file.poll_timeout, builtin.poll_timeout)?;
    let scale_down_hold = duration(
        "scale_down_hold",
        file.scale_down_hold,
        builtin.scale_down_hold,
    )?;
    let human = |d: Duration| format!("\"{}\"", humantime::format_duration(d));
    if lease_duration.subsec_nanos() != 0 {
        return Err(invalid(
            "cluster.lease_duration",
            &human(lease_duration),
            "whole seconds (a Lease counts its duration in seconds), e.g. \"15s\"",
        ));
    }
    // client-go's rules: the holder must give up before anyone may take over, and have time for
    // more than one renewal before it gives up.
    if renew_deadline >= lease_duration {
        return Err(invalid(
            "cluster.renew_deadline",
            &human(renew_deadline),
            &format!(
                "less than cluster.lease_duration ({})",
                human(lease_duration)
            ),
        ));
    }
    if renew_deadline.as_secs_f64() <= retry_period.as_secs_f64() * 1.2 {
        return Err(invalid(
            "cluster.retry_period",
            &human(retry_period),
            &format!(
                "less than cluster.renew_deadline / 1.2 ({})",
                human(renew_deadline)
            ),
        ));
    }
    if poll_timeout >= poll_interval {
        return Err(invalid(
            "cluster.poll_timeout",
            &human(poll_timeout),
            &format!("less than cluster.poll_interval ({})", human(poll_interval)),
        ));
    }
    if scale_down_hold <= poll_timeout {
        return Err(invalid(
            "cluster.scale_down_hold",
            &human(scale_down_hold),
            &format!("more than cluster.poll_timeout ({})", human(poll_timeout)),
        ));
    }
    Ok(ClusterSettings {
        identity,
        lease,
        peer_service,
        lease_duration,
        renew_deadline,
        retry_period,
        poll_interval,
        poll_timeout,
        scale_down_hold,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::file::FileConfig;
    use crate::config::{Cli, Config, resolve};

    fn error_of(text: &str) -> String {
        Config::from_toml(text)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn the_cluster_defaults_are_client_go_timings_and_activator_system() {
        let cli = Cli {
            kube: true,
            ..Cli::default()
        };
        let config = resolve::config(&cli, FileConfig::default(), "flags").expect("valid");
        let cluster = config.kube.expect("kube mode").cluster;
        assert_eq!(cluster.lease.to_string(), "activator-system/activator");
        assert_eq!(
            cluster.peer_service.to_string(),
            "activator-system/activator"
        );
        assert_eq!(cluster.lease_duration.as_secs(), 15);
        assert_eq!(cluster.renew_deadline.as_secs(), 10);
        assert_eq!(cluster.retry_period.as_secs(), 2);
        assert!(!cluster.identity.is_empty());
    }

    #[test]
    fn a_renew_deadline_not_below_the_lease_duration_is_refused() {
        let msg = error_of("[cluster]\nlease_duration = \"10s\"\nrenew_deadline = \"10s\"\n");
        assert!(
            msg.contains("cluster.renew_deadline = \"10s\": less than cluster.lease_duration"),
            "{msg}"
        );
    }

    #[test]
    fn a_lease_must_be_namespace_slash_name() {
        let msg = error_of("[cluster]\nlease = \"activator\"\n");
        assert!(
            msg.contains("cluster.lease = \"activator\": NAMESPACE/NAME"),
            "{msg}"
        );
    }

    #[test]
    fn a_poll_timeout_must_fit_in_the_poll_interval() {
        let msg = error_of("[cluster]\npoll_interval = \"1s\"\npoll_timeout = \"1s\"\n");
        assert!(msg.contains("cluster.poll_timeout"), "{msg}");
    }
}
