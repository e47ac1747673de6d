//! The config file as written (TOML), before validation.
//!
//! Every table rejects unknown keys, so a misspelt key is an error naming it rather than a
//! setting silently ignored. Durations are strings such as `"10s"`, `"250ms"` or `"2m"`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::spec::{HumanDuration, RouteSettings, UpstreamProtocol};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<String>,
    pub(crate) admin_listen: Option<String>,
    pub(crate) domain: Option<String>,
    pub(crate) drain_timeout: Option<HumanDuration>,
    pub(crate) shutdown_delay: Option<HumanDuration>,
    pub(crate) header_read_timeout: Option<HumanDuration>,
    pub(crate) keepalive_timeout: Option<HumanDuration>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) workers: Option<usize>,
    pub(crate) max_header_bytes: Option<usize>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    pub(crate) allowed_upgrades: Option<Vec<String>>,
    pub(crate) scaler_tick: Option<HumanDuration>,
    pub(crate) connect_timeout: Option<HumanDuration>,
    pub(crate) probe_interval: Option<HumanDuration>,
    #[serde(default)]
    pub(crate) defaults: RouteSettings,
    #[serde(default)]
    pub(crate) limits: FileLimits,
    #[serde(default)]
    pub(crate) cluster: FileCluster,
    #[serde(default)]
    pub(crate) host_grants: Vec<FileGrant>,
    #[serde(default)]
    pub(crate) trusted_endpointslice_namespaces: Vec<String>,
    #[serde(default)]
    pub(crate) routes: Vec<FileRoute>,
}

/// The `[limits]` table: ceilings on tenants' annotations and one bound on held requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimits {
    pub(crate) max_queued: Option<u64>,
    pub(crate) cold_start_timeout: Option<HumanDuration>,
    pub(crate) response_timeout: Option<HumanDuration>,
    pub(crate) max_scale: Option<u32>,
    pub(crate) activation_scale: Option<u32>,
    pub(crate) max_queued_total: Option<u64>,
}

/// The `[cluster]` table: how replicas elect the one that decides, and how it hears the others.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCluster {
    pub(crate) lease: Option<String>,
    pub(crate) peer_service: Option<String>,
    pub(crate) lease_duration: Option<HumanDuration>,
    pub(crate) renew_deadline: Option<HumanDuration>,
    pub(crate) retry_period: Option<HumanDuration>,
    pub(crate) poll_interval: Option<HumanDuration>,
    pub(crate) poll_timeout: Option<HumanDuration>,
    pub(crate) scale_down_hold: Option<HumanDuration>,
}

/// One `[[host_grants]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileGrant {
    pub(crate) namespace: String,
    pub(crate) hosts: Vec<String>,
}

/// One `[[routes]]` entry.
///
/// The route settings are listed here again rather than `#[serde(flatten)]`ed from
/// [`RouteSettings`]: serde cannot combine `flatten` with `deny_unknown_fields`, and a misspelt key
/// must stay an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRoute {
    pub(crate) name: String,
    #[serde(default = "default_namespace")]
    pub(crate) namespace: String,
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    pub(crate) path_prefix: Option<String>,
    pub(crate) idle_timeout: Option<HumanDuration>,
    pub(crate) cold_start_timeout: Option<HumanDuration>,
    pub(crate) response_timeout: Option<HumanDuration>,
    pub(crate) stream_idle_timeout: Option<HumanDuration>,
    pub(crate) max_queued: Option<u64>,
    pub(crate) min_scale: Option<u32>,
    pub(crate) max_scale: Option<u32>,
    pub(crate) activation_scale: Option<u32>,
    pub(crate) target_concurrency: Option<u32>,
    pub(crate) container_concurrency: Option<u32>,
    pub(crate) scale_window: Option<HumanDuration>,
    pub(crate) upstream_protocol: Option<UpstreamProtocol>,
    pub(crate) waiting_page: Option<bool>,
    pub(crate) process: Option<FileProcess>,
}

impl FileRoute {
    /// The route's own settings, as written (unset keys fall back to `[defaults]`).
    pub(crate) fn settings(&self) -> RouteSettings {
        RouteSettings {
            idle_timeout: self.idle_timeout,
            cold_start_timeout: self.cold_start_timeout,
            response_timeout: self.response_timeout,
            stream_idle_timeout: self.stream_idle_timeout,
            max_queued: self.max_queued,
            min_scale: self.min_scale,
            max_scale: self.max_scale,
            activation_scale: self.activation_scale,
            target_concurrency: self.target_concurrency,
            container_concurrency: self.container_concurrency,
            scale_window: self.scale_window,
            upstream_protocol: self.upstream_protocol,
            waiting_page: self.waiting_page,
        }
    }
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// A route's `[routes.process]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileProcess {
    pub(crate) command: Vec<String>,
    pub(crate) ready_path: Option<String>,
    #[serde(default)]
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) workdir: Option<PathBuf>,
    pub(crate) stop_grace: Option<HumanDuration>,
}

/// Parses the file text; the error names the key path (`routes[0].idle_timeout`).
pub(crate) fn parse(text: &str) -> Result<FileConfig, String> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message();
        match inner.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                format!("{path} (line {line}): {message}")
            }
            None if path == "." => message.to_owned(),
            None => format!("{path}: {message}"),
        }
    })
}
