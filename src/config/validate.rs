//! Validation of the file's routes: settings as written become [`RouteSpec`]s, with errors that
//! name the key the way the file spells it (`routes[0].max_scale`), the value and what would be
//! accepted. The rules themselves live with the route model ([`crate::spec`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::file::{FileProcess, FileRoute};
use crate::spec::{
    BadHost, ProcessSpec, RouteSettings, RouteSpec, SettingError, Settings, Workload, defaults,
    is_dns_label, route_hosts,
};

/// Builds an error for `key` = `value`, expecting `expected`.
pub(crate) type Invalid<'a> = &'a dyn Fn(&str, &dyn std::fmt::Display, &str) -> ConfigError;

/// Names a setting error's field under `prefix` (`defaults.`, `routes[0].`).
fn setting_error(prefix: &str, error: SettingError, invalid: Invalid<'_>) -> ConfigError {
    invalid(
        &format!("{prefix}{}", error.field),
        &error.value,
        &error.expected,
    )
}

/// Resolves `[defaults]` over the built-in defaults.
pub(crate) fn route_defaults(
    file: &RouteSettings,
    invalid: Invalid<'_>,
) -> Result<Settings, ConfigError> {
    file.resolve(&Settings::default())
        .map_err(|e| setting_error("defaults.", e, invalid))
}

/// The route of `[[routes]]` entry `index`.
pub(crate) fn route_spec(
    index: usize,
    route: &FileRoute,
    defaults: &Settings,
    domain: &str,
    invalid: Invalid<'_>,
) -> Result<RouteSpec, ConfigError> {
    let prefix = format!("routes[{index}].");
    let key = |field: &str| format!("{prefix}{field}");
    for (field, value) in [("name", &route.name), ("namespace", &route.namespace)] {
        if !is_dns_label(value) {
            return Err(invalid(
                &key(field),
                &format!("{value:?}"),
                "a DNS label: lower-case letters, digits and '-', at most 63 characters",
            ));
        }
    }
    let hosts = route_hosts(
        &route.name,
        &route.namespace,
        domain,
        route.hosts.iter().map(String::as_str),
    )
    .map_err(|bad| match &bad {
        BadHost::Invalid { index, host } => invalid(
            &format!("{prefix}hosts[{index}]"),
            &format!("{host:?}"),
            &bad.expected(),
        ),
        BadHost::TooMany { count } => invalid(
            &format!("{prefix}hosts"),
            &format!("{count} hosts"),
            &bad.expected(),
        ),
    })?;
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
    let resolved = route
        .settings()
        .resolve(defaults)
        .map_err(|e| setting_error(&prefix, e, invalid))?;
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
        settings: resolved,
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
    let program = &process.command[0];
    if let Err(problem) = find_program(program, process) {
        return Err(invalid(
            &key("command"),
            &format!("{program:?}"),
            &format!("a program that exists and may be executed; {problem}"),
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

/// Where `program` of `process` is found: as a path (relative to the replica's working
/// directory), or in the `PATH` the replica gets. The error says where it looked.
fn find_program(program: &str, process: &FileProcess) -> Result<PathBuf, String> {
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = match &process.workdir {
            Some(dir) if !program.starts_with('/') => dir.join(program),
            _ => PathBuf::from(program),
        };
        return if executable(&path) {
            Ok(path)
        } else if path.exists() {
            Err(format!("{} is not an executable file", path.display()))
        } else {
            Err(format!("{} does not exist", path.display()))
        };
    }
    let search = process
        .env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("not found in PATH ({search})"))
}
