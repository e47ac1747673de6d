//! Validation: turning settings as written (file or annotations) into trusted values, with errors
//! that name the key, the value and what would be accepted.

use std::time::Duration;

use super::file::{self, FileProcess, FileRoute, RouteSettings};
use super::{ConfigError, ProcessSpec, RouteDefaults, RouteSpec, ScalePolicy, Workload, defaults};

/// Builds an error for `key` = `value`, expecting `expected`.
pub(crate) type Invalid<'a> = &'a dyn Fn(&str, &dyn std::fmt::Display, &str) -> ConfigError;

/// Resolves `[defaults]` over the built-in defaults.
pub(crate) fn route_defaults(
    file: &RouteSettings,
    invalid: Invalid<'_>,
) -> Result<RouteDefaults, ConfigError> {
    let builtin = RouteDefaults {
        cold_start_timeout: defaults::COLD_START_TIMEOUT,
        max_queued: defaults::MAX_QUEUED,
        scaling: ScalePolicy {
            idle_timeout: defaults::IDLE_TIMEOUT,
            min_scale: 0,
            max_scale: defaults::MAX_SCALE,
            activation_scale: 1,
            target_concurrency: defaults::TARGET_CONCURRENCY,
            container_concurrency: 0,
            window: defaults::SCALE_WINDOW,
        },
    };
    resolve_settings(
        file,
        &builtin,
        &|field| format!("defaults.{field}"),
        invalid,
    )
}

/// Applies `settings` over `base` and validates the result; `key` names a field the way the user
/// wrote it (`routes[0].max_scale`, `activator.dev/max-scale`).
pub(crate) fn resolve_settings(
    settings: &RouteSettings,
    base: &RouteDefaults,
    key: &dyn Fn(&str) -> String,
    invalid: Invalid<'_>,
) -> Result<RouteDefaults, ConfigError> {
    let positive = |field: &str, value: Option<file::HumanDuration>, fallback: Duration| {
        let value = value.map_or(fallback, |d| d.0);
        if value.is_zero() {
            Err(invalid(
                &key(field),
                &"\"0s\"",
                "a positive duration such as \"10s\"",
            ))
        } else {
            Ok(value)
        }
    };
    let b = &base.scaling;
    let scaling = ScalePolicy {
        idle_timeout: positive("idle_timeout", settings.idle_timeout, b.idle_timeout)?,
        min_scale: settings.min_scale.unwrap_or(b.min_scale),
        max_scale: settings.max_scale.unwrap_or(b.max_scale),
        activation_scale: settings.activation_scale.unwrap_or(b.activation_scale),
        target_concurrency: settings.target_concurrency.unwrap_or(b.target_concurrency),
        container_concurrency: settings
            .container_concurrency
            .unwrap_or(b.container_concurrency),
        window: positive("scale_window", settings.scale_window, b.window)?,
    };
    if scaling.max_scale == 0 {
        return Err(invalid(&key("max_scale"), &0, "at least 1"));
    }
    if scaling.min_scale > scaling.max_scale {
        return Err(invalid(
            &key("min_scale"),
            &scaling.min_scale,
            &format!("at most max_scale ({})", scaling.max_scale),
        ));
    }
    if scaling.activation_scale == 0 || scaling.activation_scale > scaling.max_scale {
        return Err(invalid(
            &key("activation_scale"),
            &scaling.activation_scale,
            &format!("between 1 and max_scale ({})", scaling.max_scale),
        ));
    }
    if scaling.target_concurrency == 0 {
        return Err(invalid(&key("target_concurrency"), &0, "at least 1"));
    }
    let max_queued = settings.max_queued.unwrap_or(base.max_queued);
    if max_queued == 0 {
        return Err(invalid(&key("max_queued"), &0, "at least 1"));
    }
    Ok(RouteDefaults {
        cold_start_timeout: positive(
            "cold_start_timeout",
            settings.cold_start_timeout,
            base.cold_start_timeout,
        )?,
        max_queued,
        scaling,
    })
}

pub(crate) fn route_spec(
    index: usize,
    route: &FileRoute,
    defaults: &RouteDefaults,
    domain: &str,
    invalid: Invalid<'_>,
) -> Result<RouteSpec, ConfigError> {
    let key = |field: &str| format!("routes[{index}].{field}");
    for (field, value) in [("name", &route.name), ("namespace", &route.namespace)] {
        if !is_dns_label(value) {
            return Err(invalid(
                &key(field),
                &format!("{value:?}"),
                "a DNS label: lower-case letters, digits and '-', at most 63 characters",
            ));
        }
    }
    let mut hosts = vec![format!("{}.{}.{}", route.name, route.namespace, domain)];
    for (i, host) in route.hosts.iter().enumerate() {
        let normalised = normalise_host_name(host);
        let name = normalised.strip_prefix("*.").unwrap_or(&normalised);
        if !is_host_name(name) {
            return Err(invalid(
                &format!("routes[{index}].hosts[{i}]"),
                &format!("{host:?}"),
                "a host name such as \"hello.localhost\" or a wildcard such as \"*.example.com\"",
            ));
        }
        if !hosts.contains(&normalised) {
            hosts.push(normalised);
        }
    }
    let path_prefix = match route.path_prefix.as_deref() {
        None | Some("") | Some("/") => None,
        Some(p) if p.starts_with('/') => Some(p.trim_end_matches('/').to_owned()),
        Some(p) => {
            return Err(invalid(
                &key("path_prefix"),
                &format!("{p:?}"),
                "a path starting with '/'",
            ));
        }
    };
    let resolved = resolve_settings(&route.settings(), defaults, &key, invalid)?;
    let workload = match &route.process {
        Some(process) => Workload::Process(process_spec(index, process, invalid)?),
        None => {
            return Err(invalid(
                &key("process.command"),
                &"(missing)",
                "a command that runs the route's replicas, e.g. [\"python3\", \"-m\", \"http.server\", \"{port}\"]",
            ));
        }
    };
    Ok(RouteSpec {
        name: route.name.clone(),
        namespace: route.namespace.clone(),
        hosts,
        path_prefix,
        cold_start_timeout: resolved.cold_start_timeout,
        max_queued: resolved.max_queued,
        scaling: resolved.scaling,
        workload,
    })
}

fn process_spec(
    index: usize,
    process: &FileProcess,
    invalid: Invalid<'_>,
) -> Result<ProcessSpec, ConfigError> {
    let key = |field: &str| format!("routes[{index}].process.{field}");
    if process
        .command
        .first()
        .is_none_or(|program| program.trim().is_empty())
    {
        return Err(invalid(
            &key("command"),
            &format!("{:?}", process.command),
            "a non-empty program and its arguments",
        ));
    }
    if let Some(path) = &process.ready_path
        && !path.starts_with('/')
    {
        return Err(invalid(
            &key("ready_path"),
            &format!("{path:?}"),
            "a path starting with '/'",
        ));
    }
    Ok(ProcessSpec {
        command: process.command.clone(),
        ready_path: process.ready_path.clone(),
        env: process.env.clone(),
        workdir: process.workdir.clone(),
        stop_grace: process.stop_grace.map_or(defaults::STOP_GRACE, |d| d.0),
    })
}

/// Lower-cases and drops a trailing dot.
pub fn normalise_host_name(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
