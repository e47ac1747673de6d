//! The route model: what a route answers, how it scales and what runs it, as both the config
//! file and Kubernetes annotations produce it.
//!
//! Both origins write the same optional [`RouteSettings`]; [`RouteSettings::resolve`] applies them
//! over a base ([`Settings`]) and validates the result. Its [`SettingError`] names the setting
//! by its field (`max_scale`); each origin renames it the way its user wrote it
//! (`routes[0].max_scale`, `activator.dev/max-scale`). Host names are checked and normalised here
//! too ([`route_hosts`]), so a route from a file and a route from annotations answer the same
//! hosts for the same input.
//!
//! This module validates values; it reads no files and talks to no API.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Built-in route settings, with the reasoning in the README.
pub(crate) mod defaults {
    use std::time::Duration;

    /// Idle time before scale to zero (Knative: ~60s stable window plus grace).
    pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Longest wait of a held request.
    pub(crate) const COLD_START_TIMEOUT: Duration = Duration::from_secs(120);
    /// Held requests per route.
    pub(crate) const MAX_QUEUED: u64 = 10_000;
    /// Replicas at most.
    pub(crate) const MAX_SCALE: u32 = 10;
    /// Concurrency per replica before scaling out.
    pub(crate) const TARGET_CONCURRENCY: u32 = 100;
    /// Averaging window of the scaler.
    pub(crate) const SCALE_WINDOW: Duration = Duration::from_secs(60);
    /// SIGTERM → SIGKILL grace of a local replica.
    pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
    /// No response head from a replica within this → 504 (Knative's revision timeout).
    pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
    /// No byte either way on an open request or tunnel for this long → closed (Envoy's
    /// `stream_idle_timeout`).
    pub(crate) const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    /// Longest duration any setting accepts: beyond a day is a mistake, not a setting.
    pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
}

/// One route: where it answers, how it scales, and what runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Route name (a DNS label).
    pub name: String,
    /// Namespace (a DNS label).
    pub namespace: String,
    /// Every host the route answers, normalised: the default host first, then the listed ones
    /// (exact names, or `*.suffix` wildcards).
    pub hosts: Vec<String>,
    /// Only requests whose path starts with this segment prefix (longest match wins).
    pub path_prefix: Option<String>,
    /// Waiting, timeouts and scaling.
    pub settings: Settings,
    /// What runs the route's replicas.
    pub workload: Workload,
}

impl RouteSpec {
    /// `namespace/name`, the route's identity in logs and errors.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// How a route scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalePolicy {
    /// Nothing in flight or queued for this long scales the route to `min_scale`.
    pub idle_timeout: Duration,
    /// Replicas kept even when idle.
    pub min_scale: u32,
    /// Replicas never exceeded.
    pub max_scale: u32,
    /// Replicas started by a request that finds none (at least `min_scale`).
    pub activation_scale: u32,
    /// Average concurrency per replica above which replicas are added.
    pub target_concurrency: u32,
    /// Requests one replica serves at once; 0 means unlimited.
    pub container_concurrency: u32,
    /// Window of the time-weighted average concurrency the scaler reads.
    pub window: Duration,
}

impl ScalePolicy {
    /// Replicas a cold start asks for: `max(min_scale, activation_scale)`.
    pub fn activation_replicas(&self) -> u32 {
        self.activation_scale.max(self.min_scale).max(1)
    }
}

/// What runs a route's replicas.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Local processes started and stopped by the activator.
    Process(ProcessSpec),
    /// A Kubernetes Deployment scaled through its `scale` subresource.
    Kube(KubeWorkload),
}

/// A Deployment and the Service in front of its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeWorkload {
    /// The Deployment's name (in the route's namespace).
    pub deployment: String,
    /// The Service whose EndpointSlices list the pods.
    pub service: String,
    /// The EndpointSlice port name to send requests to ("" for a Service's single unnamed port).
    pub port_name: String,
    /// How the activator probes a pod the kubelet has not marked ready yet.
    pub probe: DirectProbe,
}

/// A direct readiness probe of a pod: HTTP GET `path` on `port`, else a TCP connect to the
/// serving port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirectProbe {
    /// HTTP path of the pod's readinessProbe, if it has an httpGet one.
    pub path: Option<String>,
    /// Port of the probe, if it differs from the serving port.
    pub port: Option<u16>,
}

/// A local command run as a replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// Program and arguments; `{port}` is replaced by the replica's port.
    pub command: Vec<String>,
    /// Readiness is an HTTP GET of this path answered 2xx/3xx; without it, a TCP connect.
    pub ready_path: Option<String>,
    /// Extra environment (`PORT` is always set).
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when a replica is stopped.
    pub stop_grace: Duration,
}

/// A route's settings, resolved: what every route starts from (built in, then the config file's
/// `[defaults]`), and what each route ends up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A held request waits at most this long for a ready replica.
    pub cold_start_timeout: Duration,
    /// Held requests beyond this many are refused with 503.
    pub max_queued: u64,
    /// No response head from the replica within this → 504 `upstream_timeout`.
    pub response_timeout: Duration,
    /// No byte either way on an open request or tunnel for this long → the stream is closed.
    pub stream_idle_timeout: Duration,
    /// How requests are sent to the route's replicas.
    pub upstream_protocol: UpstreamProtocol,
    /// How the route scales.
    pub scaling: ScalePolicy,
}

/// How requests are sent to a route's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request per connection at a time.
    #[default]
    Http1,
    /// HTTP/2 without TLS ("prior knowledge"), many streams per connection: what gRPC servers
    /// speak.
    H2c,
}

impl UpstreamProtocol {
    /// The setting's value as written.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        }
    }

    /// Parses `http1` or `h2c`.
    pub(crate) fn parse(text: &str) -> Option<UpstreamProtocol> {
        match text.trim().to_ascii_lowercase().as_str() {
            "http1" => Some(UpstreamProtocol::Http1),
            "h2c" => Some(UpstreamProtocol::H2c),
            _ => None,
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cold_start_timeout: defaults::COLD_START_TIMEOUT,
            max_queued: defaults::MAX_QUEUED,
            response_timeout: defaults::RESPONSE_TIMEOUT,
            stream_idle_timeout: defaults::STREAM_IDLE_TIMEOUT,
            upstream_protocol: UpstreamProtocol::Http1,
            scaling: ScalePolicy {
                idle_timeout: defaults::IDLE_TIMEOUT,
                min_scale: 0,
                max_scale: defaults::MAX_SCALE,
                activation_scale: 1,
                target_concurrency: defaults::TARGET_CONCURRENCY,
                container_concurrency: 0,
                window: defaults::SCALE_WINDOW,
            },
        }
    }
}

/// Route settings as written: every one optional, falling back to a base.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSettings {
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
}

/// A setting whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value}: {expected}")]
pub(crate) struct SettingError {
    /// The field, as in the config file (`max_scale`).
    pub(crate) field: &'static str,
    /// The value, as it is shown to the user.
    pub(crate) value: String,
    /// What would be accepted.
    pub(crate) expected: String,
}

impl SettingError {
    fn new(field: &'static str, value: impl fmt::Display, expected: impl Into<String>) -> Self {
        SettingError {
            field,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl RouteSettings {
    /// Applies these settings over `base` and validates the result.
    pub(crate) fn resolve(&self, base: &Settings) -> Result<Settings, SettingError> {
        let positive = |field, value: Option<HumanDuration>, fallback: Duration| {
            let value = value.map_or(fallback, |d| d.0);
            check_duration(field, value)
        };
        let b = &base.scaling;
        let scaling = ScalePolicy {
            idle_timeout: positive("idle_timeout", self.idle_timeout, b.idle_timeout)?,
            min_scale: self.min_scale.unwrap_or(b.min_scale),
            max_scale: self.max_scale.unwrap_or(b.max_scale),
            activation_scale: self.activation_scale.unwrap_or(b.activation_scale),
            target_concurrency: self.target_concurrency.unwrap_or(b.target_concurrency),
            container_concurrency: self
                .container_concurrency
                .unwrap_or(b.container_concurrency),
            window: positive("scale_window", self.scale_window, b.window)?,
        };
        if scaling.max_scale == 0 {
            return Err(SettingError::new("max_scale", 0, "at least 1"));
        }
        if scaling.min_scale > scaling.max_scale {
            return Err(SettingError::new(
                "min_scale",
                scaling.min_scale,
                format!("at most max_scale ({})", scaling.max_scale),
            ));
        }
        if scaling.activation_scale == 0 || scaling.activation_scale > scaling.max_scale {
            return Err(SettingError::new(
                "activation_scale",
                scaling.activation_scale,
                format!("between 1 and max_scale ({})", scaling.max_scale),
            ));
        }
        if scaling.target_concurrency == 0 {
            return Err(SettingError::new("target_concurrency", 0, "at least 1"));
        }
        let max_queued = self.max_queued.unwrap_or(base.max_queued);
        if max_queued == 0 {
            return Err(SettingError::new("max_queued", 0, "at least 1"));
        }
        Ok(Settings {
            cold_start_timeout: positive(
                "cold_start_timeout",
                self.cold_start_timeout,
                base.cold_start_timeout,
            )?,
            max_queued,
            response_timeout: positive(
                "response_timeout",
                self.response_timeout,
                base.response_timeout,
            )?,
            stream_idle_timeout: positive(
                "stream_idle_timeout",
                self.stream_idle_timeout,
                base.stream_idle_timeout,
            )?,
            upstream_protocol: self.upstream_protocol.unwrap_or(base.upstream_protocol),
            scaling,
        })
    }
}

/// `value` for `field` if it is positive and at most a day.
pub(crate) fn check_duration(
    field: &'static str,
    value: Duration,
) -> Result<Duration, SettingError> {
    if value.is_zero() {
        Err(SettingError::new(
            field,
            "\"0s\"",
            "a positive duration such as \"10s\"",
        ))
    } else if value > defaults::MAX_DURATION {
        Err(SettingError::new(
            field,
            format!("\"{}\"", humantime::format_duration(value)),
            "at most a day (\"24h\")",
        ))
    } else {
        Ok(value)
    }
}

/// Hosts one route may list besides its default host.
pub(crate) const MAX_HOSTS: usize = 100;

/// A listed host that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadHost {
    /// Neither a host name nor a `*.suffix` wildcard.
    Invalid {
        /// Its position in the list.
        index: usize,
        /// The host as written.
        host: String,
    },
    /// More than [`MAX_HOSTS`] are listed.
    TooMany {
        /// How many.
        count: usize,
    },
}

impl BadHost {
    /// What would be accepted.
    pub(crate) fn expected(&self) -> String {
        match self {
            BadHost::Invalid { .. } => {
                "a host name such as \"hello.localhost\" or a wildcard such as \"*.example.com\""
                    .to_owned()
            }
            BadHost::TooMany { count } => {
                format!("at most {MAX_HOSTS} hosts per route, not {count}")
            }
        }
    }
}

/// The hosts of route `name` in `namespace`: its default host `NAME.NAMESPACE.DOMAIN` first, then
/// each listed host normalised, without repeats. Linear in the list's length, which is bounded.
pub(crate) fn route_hosts<'a>(
    name: &str,
    namespace: &str,
    domain: &str,
    listed: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, BadHost> {
    let mut hosts = vec![format!("{name}.{namespace}.{domain}")];
    let mut seen: std::collections::HashSet<String> = hosts.iter().cloned().collect();
    for (index, host) in listed.into_iter().enumerate() {
        if index >= MAX_HOSTS {
            return Err(BadHost::TooMany { count: index + 1 });
        }
        let normalised = normalise_host_name(host);
        let bare = normalised.strip_prefix("*.").unwrap_or(&normalised);
        if !is_host_name(bare) {
            return Err(BadHost::Invalid {
                index,
                host: host.to_owned(),
            });
        }
        if seen.insert(normalised.clone()) {
            hosts.push(normalised);
        }
    }
    Ok(hosts)
}

/// Lower-cases and drops a trailing dot.
pub(crate) fn normalise_host_name(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `s` is a DNS label (RFC 1123): what Kubernetes accepts as a name or namespace.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a host name: dot-separated labels of letters, digits, `-` and `_`.
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

/// A duration written as a human string (`"10s"`, `"250ms"`, `"1m30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

/// What a duration is expected to look like, in error messages.
pub(crate) const DURATION_EXPECTED: &str = r#"a duration such as "10s", "250ms" or "2m""#;

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v)
                    .map(HumanDuration)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Parses `"10s"`, `"250ms"`, `"1m30s"`; the error says what is expected.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("`{text}` is not a duration; expected {DURATION_EXPECTED}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_fall_back_to_their_base() {
        let settings = RouteSettings {
            idle_timeout: Some(HumanDuration(Duration::from_secs(5))),
            ..RouteSettings::default()
        };
        let resolved = settings.resolve(&Settings::default()).unwrap();
        assert_eq!(resolved.scaling.idle_timeout, Duration::from_secs(5));
        assert_eq!(resolved.max_queued, defaults::MAX_QUEUED);
    }

    #[test]
    fn a_duration_beyond_a_day_is_refused_rather_than_overflowing_a_deadline() {
        let settings = RouteSettings {
            cold_start_timeout: Some(HumanDuration(Duration::from_secs(10_000_000_000_000))),
            ..RouteSettings::default()
        };
        let error = settings.resolve(&Settings::default()).unwrap_err();
        assert_eq!(error.field, "cold_start_timeout");
        assert!(error.expected.contains("at most a day"), "{error}");
    }

    #[test]
    fn inconsistent_scales_name_the_field_and_the_bound() {
        let settings = RouteSettings {
            min_scale: Some(4),
            max_scale: Some(3),
            ..RouteSettings::default()
        };
        let error = settings.resolve(&Settings::default()).unwrap_err();
        assert_eq!(
            error,
            SettingError::new("min_scale", 4, "at most max_scale (3)")
        );
    }

    #[test]
    fn hosts_start_with_the_default_host_and_are_normalised_once() {
        let hosts = route_hosts(
            "web",
            "shop",
            "x.test",
            ["A.Example.", "a.example", "*.b.test"],
        );
        assert_eq!(hosts.unwrap(), ["web.shop.x.test", "a.example", "*.b.test"]);
        let bad = route_hosts("web", "shop", "x.test", ["ok.test", "no spaces"]).unwrap_err();
        assert_eq!(
            bad,
            BadHost::Invalid {
                index: 1,
                host: "no spaces".into()
            }
        );
        let many: Vec<String> = (0..=MAX_HOSTS).map(|i| format!("h{i}.test")).collect();
        let error = route_hosts("web", "shop", "x.test", many.iter().map(String::as_str));
        assert_eq!(
            error,
            Err(BadHost::TooMany {
                count: MAX_HOSTS + 1
            })
        );
    }
}
