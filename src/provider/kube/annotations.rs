//! Reading a route from a Deployment's `activator.dev/*` annotations and its Service.
//!
//! Pure functions, no API calls: [`route_spec`] turns a Deployment and the Service it names into a
//! [`RouteSpec`], or an [`AnnotationError`] naming the annotation, its value and what would be
//! accepted. Defaults come from the config file's `[defaults]`, so a route from annotations and a
//! route from the file start from the same settings.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::policy::{Clamped, Policy, Refusal};
use crate::spec::UpstreamProtocol;
use crate::spec::{
    BadHost, DURATION_EXPECTED, DirectProbe, HumanDuration, KubeWorkload, RouteSettings, RouteSpec,
    SettingError, Settings, Workload, check_duration, is_dns_label, parse_duration, route_hosts,
};

/// The label that opts a Deployment in.
pub(crate) const ENABLED_LABEL: &str = "activator.dev/enabled";
/// The Service in front of the Deployment's pods.
const SERVICE: &str = "activator.dev/service";
/// The Service port (number or name) requests go to.
const PORT: &str = "activator.dev/port";
/// Extra hosts, comma-separated.
pub(crate) const HOSTS: &str = "activator.dev/hosts";
/// `http1` or `h2c`.
const UPSTREAM_PROTOCOL: &str = "activator.dev/upstream-protocol";

/// A value that cannot be used, on one annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}={value:?}: expected {expected}")]
pub(crate) struct AnnotationError {
    /// The annotation.
    pub(crate) key: String,
    /// Its value.
    pub(crate) value: String,
    /// What would be accepted.
    pub(crate) expected: String,
}

impl From<SettingError> for AnnotationError {
    fn from(error: SettingError) -> AnnotationError {
        AnnotationError {
            key: annotation_of(error.field),
            value: error.value,
            expected: error.expected,
        }
    }
}

/// Longest annotation value quoted in an error; the rest is summarised (values are tenants', and
/// errors go to logs and Events).
const QUOTED_VALUE: usize = 200;

fn error(key: &str, value: &str, expected: &str) -> AnnotationError {
    let value = match value.char_indices().nth(QUOTED_VALUE) {
        Some((cut, _)) => format!("{}… ({} bytes)", &value[..cut], value.len()),
        None => value.to_owned(),
    };
    AnnotationError {
        key: key.to_owned(),
        value,
        expected: expected.to_owned(),
    }
}

/// The annotation that sets a route setting field.
pub(crate) fn annotation_of(field: &str) -> String {
    format!("activator.dev/{}", field.replace('_', "-"))
}

/// The name of the Service a Deployment names: its annotation, else its `app` label, else its own
/// name. Also the route's name.
pub(crate) fn service_name(deployment: &Deployment) -> Result<String, AnnotationError> {
    let meta = &deployment.metadata;
    let name = match meta.annotations.as_ref().and_then(|a| a.get(SERVICE)) {
        Some(service) => service.trim().to_owned(),
        None => meta
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .cloned()
            .or_else(|| meta.name.clone())
            .unwrap_or_default(),
    };
    if is_dns_label(&name) {
        Ok(name)
    } else {
        Err(error(SERVICE, &name, "the name of a Service (a DNS label)"))
    }
}

/// A Deployment's route as the operator's policy lets it be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Routed {
    /// The route.
    pub(crate) spec: RouteSpec,
    /// Settings asked above their ceilings, and clamped.
    pub(crate) clamped: Vec<Clamped>,
    /// Hosts asked for but not allowed to the Deployment's namespace, left out.
    pub(crate) refused: Vec<(String, Refusal)>,
}

/// The route a Deployment asks for, given the Service it names, within `policy`.
pub(crate) fn route_spec(
    deployment: &Deployment,
    service: &Service,
    defaults: &Settings,
    policy: &Policy,
) -> Result<Routed, AnnotationError> {
    let domain = policy.domain.as_str();
    let empty = BTreeMap::new();
    let annotations = deployment.metadata.annotations.as_ref().unwrap_or(&empty);
    let namespace = deployment
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let name = service_name(deployment)?;
    let mut asked = settings(annotations)?;
    let (port_name, detected) = service_port(service, annotations.get(PORT).map(String::as_str))?;
    if asked.upstream_protocol.is_none() {
        asked.upstream_protocol = detected;
    }
    let clamped = policy.ceilings.clamp(&mut asked);
    let resolved = asked.resolve(defaults)?;
    let listed = annotations
        .get(HOSTS)
        .map(String::as_str)
        .unwrap_or_default();
    let hosts = route_hosts(
        &name,
        &namespace,
        domain,
        listed.split(',').map(str::trim).filter(|h| !h.is_empty()),
    )
    .map_err(|bad| match bad {
        BadHost::Invalid { .. } => error(
            HOSTS,
            listed,
            "comma-separated host names or *.suffix wildcards",
        ),
        BadHost::TooMany { .. } => error(HOSTS, listed, &bad.expected()),
    })?;

    // The default host comes first and is always the namespace's own.
    let mut refused = Vec::new();
    let mut kept = Vec::with_capacity(hosts.len());
    for (index, host) in hosts.into_iter().enumerate() {
        match policy.allows(&namespace, &host) {
            Err(why) if index > 0 => refused.push((host, why)),
            _ => kept.push(host),
        }
    }
    Ok(Routed {
        spec: RouteSpec {
            name: name.clone(),
            namespace,
            hosts: kept,
            path_prefix: None,
            settings: resolved,
            workload: Workload::Kube(KubeWorkload {
                deployment: deployment.metadata.name.clone().unwrap_or_default(),
                service: name,
                port_name,
                probe: direct_probe(deployment),
            }),
        },
        clamped,
        refused,
    })
}

fn settings(annotations: &BTreeMap<String, String>) -> Result<RouteSettings, AnnotationError> {
    let duration = |field: &'static str| -> Result<Option<HumanDuration>, AnnotationError> {
        let key = annotation_of(field);
        annotations
            .get(&key)
            .map(|v| {
                let parsed = parse_duration(v).map_err(|_| error(&key, v, DURATION_EXPECTED))?;
                check_duration(field, parsed)
                    .map(HumanDuration)
                    .map_err(|e| error(&key, v, &e.expected))
            })
            .transpose()
    };
    let number = |field: &str| -> Result<Option<u32>, AnnotationError> {
        let key = annotation_of(field);
        annotations
            .get(&key)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| error(&key, v, "a whole number"))
            })
            .transpose()
    };
    Ok(RouteSettings {
        idle_timeout: duration("idle_timeout")?,
        cold_start_timeout: duration("cold_start_timeout")?,
        response_timeout: duration("response_timeout")?,
        stream_idle_timeout: duration("stream_idle_timeout")?,
        max_queued: number("max_queued")?.map(u64::from),
        min_scale: number("min_scale")?,
        max_scale: number("max_scale")?,
        activation_scale: number("activation_scale")?,
        target_concurrency: number("target_concurrency")?,
        container_concurrency: number("container_concurrency")?,
        scale_window: duration("scale_window")?,
        upstream_protocol: annotations
            .get(UPSTREAM_PROTOCOL)
            .map(|v| {
                UpstreamProtocol::parse(v)
                    .ok_or_else(|| error(UPSTREAM_PROTOCOL, v, "\"http1\" or \"h2c\""))
            })
            .transpose()?,
    })
}

/// The EndpointSlice port name for the Service port the annotation picks (by number or name),
/// or the Service's first port; and `h2c` if that port says it speaks HTTP/2 without TLS
/// (`appProtocol: kubernetes.io/h2c`, or a name `h2c` or starting with `grpc`).
fn service_port(
    service: &Service,
    wanted: Option<&str>,
) -> Result<(String, Option<UpstreamProtocol>), AnnotationError> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let chosen = match wanted.map(str::trim) {
        None => ports.first(),
        Some(wanted) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(wanted) || p.port.to_string() == wanted),
    };
    match chosen {
        Some(port) => {
            let name = port.name.clone().unwrap_or_default();
            // The KEDA HTTP add-on's signal, and Knative's port-name convention.
            let h2c = port.app_protocol.as_deref() == Some("kubernetes.io/h2c")
                || name == "h2c"
                || name.starts_with("grpc");
            Ok((name, h2c.then_some(UpstreamProtocol::H2c)))
        }
        None => {
            let service_name = service.metadata.name.clone().unwrap_or_default();
            let known: Vec<String> = ports
                .iter()
                .map(|p| {
                    p.name
                        .clone()
                        .map_or_else(|| p.port.to_string(), |n| format!("{n} ({})", p.port))
                })
                .collect();
            Err(error(
                PORT,
                wanted.unwrap_or(""),
                &format!(
                    "a port of Service {service_name}: {}",
                    if known.is_empty() {
                        "it has none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        }
    }
}

/// The pod template's readinessProbe as the activator can run it: an httpGet path and port, or a
/// TCP connect (to the probe's port, else the serving port).
fn direct_probe(deployment: &Deployment) -> DirectProbe {
    let containers: &[Container] = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let Some((container, probe)) = containers
        .iter()
        .find_map(|c| c.readiness_probe.as_ref().map(|p| (c, p)))
    else {
        return DirectProbe::default();
    };
    let port_of = |port: &IntOrString| -> Option<u16> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => container
                .ports
                .as_ref()?
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        }
    };
    if let Some(http) = &probe.http_get {
        return DirectProbe {
            path: Some(http.path.clone().unwrap_or_else(|| "/".to_owned())),
            port: port_of(&http.port),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        return DirectProbe {
            path: None,
            port: port_of(&tcp.port),
        };
    }
    DirectProbe::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::HostGrant;

    fn deployment(yaml_annotations: &[(&str, &str)]) -> Deployment {
        let annotations: serde_json::Map<String, serde_json::Value> = yaml_annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "helloworld-00001-deployment",
                "namespace": "default",
                "labels": {"app": "helloworld", "activator.dev/enabled": "true"},
                "annotations": annotations,
            },
            "spec": {
                "selector": {"matchLabels": {"app": "helloworld"}},
                "template": {"spec": {"containers": [{
                    "name": "echo",
                    "image": "mendhak/http-https-echo",
                    "ports": [{"name": "http", "containerPort": 80}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                }]}},
            },
        }))
        .unwrap()
    }

    fn service() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "helloworld", "namespace": "default"},
            "spec": {"selector": {"app": "helloworld"}, "ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 9000}]},
        }))
        .unwrap()
    }

    fn defaults() -> Settings {
        Settings::default()
    }

    fn policy(domain: &str) -> Policy {
        Policy {
            domain: domain.into(),
            ..Policy::default()
        }
    }

    #[test]
    fn hosts_the_namespace_may_not_claim_are_left_out_and_the_rest_kept() {
        let d = deployment(&[(
            "activator.dev/hosts",
            "api.default.x.test, web.other.x.test, elsewhere.test",
        )]);
        let routed = route_spec(&d, &service(), &defaults(), &policy("x.test")).unwrap();
        assert_eq!(
            routed.spec.hosts,
            ["helloworld.default.x.test", "api.default.x.test"]
        );
        assert_eq!(
            routed.refused,
            [
                ("web.other.x.test".to_owned(), Refusal::OtherNamespace),
                ("elsewhere.test".to_owned(), Refusal::NotGranted)
            ]
        );
    }

    #[test]
    fn an_h2c_service_port_makes_the_route_speak_h2c_unless_the_annotation_says_otherwise() {
        let mut grpc = service();
        grpc.spec.as_mut().unwrap().ports =
            Some(vec![serde_json::from_value(
            serde_json::json!({"name": "web", "port": 80, "appProtocol": "kubernetes.io/h2c"}),
        )
        .unwrap()]);
        let spec = route_spec(&deployment(&[]), &grpc, &defaults(), &policy("x.test"))
            .unwrap()
            .spec;
        assert_eq!(spec.settings.upstream_protocol, UpstreamProtocol::H2c);
        let d = deployment(&[("activator.dev/upstream-protocol", "http1")]);
        let spec = route_spec(&d, &grpc, &defaults(), &policy("x.test"))
            .unwrap()
            .spec;
        assert_eq!(spec.settings.upstream_protocol, UpstreamProtocol::Http1);
        let d = deployment(&[("activator.dev/port", "admin")]);
        let mut named = service();
        named.spec.as_mut().unwrap().ports.as_mut().unwrap()[1].name = Some("grpc-api".into());
        let d2 = deployment(&[("activator.dev/port", "grpc-api")]);
        let spec = route_spec(&d2, &named, &defaults(), &policy("x.test"))
            .unwrap()
            .spec;
        assert_eq!(spec.settings.upstream_protocol, UpstreamProtocol::H2c);
        let spec = route_spec(&d, &service(), &defaults(), &policy("x.test"))
            .unwrap()
            .spec;
        assert_eq!(spec.settings.upstream_protocol, UpstreamProtocol::Http1);
    }

    #[test]
    fn a_setting_above_the_operators_ceiling_is_clamped_and_reported() {
        let d = deployment(&[("activator.dev/max-queued", "4294967295")]);
        let routed = route_spec(&d, &service(), &defaults(), &policy("x.test")).unwrap();
        assert_eq!(routed.spec.settings.max_queued, 10_000);
        assert_eq!(routed.clamped[0].field, "max_queued");
    }

    #[test]
    fn the_route_is_named_after_the_service_not_the_deployment() {
        let spec = route_spec(
            &deployment(&[]),
            &service(),
            &defaults(),
            &policy("127.0.0.1.nip.io"),
        )
        .unwrap()
        .spec;
        assert_eq!(spec.id(), "default/helloworld");
        assert_eq!(spec.hosts[0], "helloworld.default.127.0.0.1.nip.io");
        let Workload::Kube(workload) = &spec.workload else {
            panic!("a kube workload")
        };
        assert_eq!(workload.deployment, "helloworld-00001-deployment");
        assert_eq!(workload.port_name, "http");
        assert_eq!(
            workload.probe,
            DirectProbe {
                path: Some("/healthz".into()),
                port: Some(80)
            }
        );
    }

    #[test]
    fn annotations_set_the_route() {
        let d = deployment(&[
            ("activator.dev/idle-timeout", "90s"),
            ("activator.dev/min-scale", "1"),
            ("activator.dev/max-scale", "4"),
            ("activator.dev/hosts", "hello.example.com, *.apps.test"),
            ("activator.dev/port", "9000"),
            ("activator.dev/container-concurrency", "2"),
        ]);
        let mut granted = policy("127.0.0.1.nip.io");
        granted.host_grants.push(HostGrant {
            namespace: "default".into(),
            hosts: vec!["hello.example.com".into(), "*.apps.test".into()],
        });
        let spec = route_spec(&d, &service(), &defaults(), &granted)
            .unwrap()
            .spec;
        assert_eq!(
            spec.settings.scaling.idle_timeout,
            std::time::Duration::from_secs(90)
        );
        assert_eq!(
            (
                spec.settings.scaling.min_scale,
                spec.settings.scaling.max_scale
            ),
            (1, 4)
        );
        assert_eq!(spec.settings.scaling.container_concurrency, 2);
        assert_eq!(&spec.hosts[1..], ["hello.example.com", "*.apps.test"]);
        let Workload::Kube(workload) = &spec.workload else {
            panic!("a kube workload")
        };
        assert_eq!(workload.port_name, "admin");
    }

    #[test]
    fn a_duration_beyond_a_day_and_too_many_hosts_are_invalid_annotations() {
        let d = deployment(&[("activator.dev/cold-start-timeout", "10000000000000000000s")]);
        let e = route_spec(&d, &service(), &defaults(), &policy("x.test")).unwrap_err();
        assert_eq!(e.key, "activator.dev/cold-start-timeout");
        assert!(e.expected.contains("at most a day"), "{e}");
        let hosts: Vec<String> = (0..1000).map(|i| format!("h{i}.test")).collect();
        let d = deployment(&[("activator.dev/hosts", &hosts.join(","))]);
        let e = route_spec(&d, &service(), &defaults(), &policy("x.test")).unwrap_err();
        assert_eq!(e.key, "activator.dev/hosts");
        assert!(e.expected.contains("at most 100 hosts"), "{e}");
        assert!(e.value.len() < 300, "the value is quoted in part: {e}");
    }

    #[test]
    fn an_invalid_value_names_the_annotation_and_what_is_expected() {
        let d = deployment(&[("activator.dev/idle-timeout", "soon")]);
        let e = route_spec(&d, &service(), &defaults(), &policy("x.test")).unwrap_err();
        assert_eq!(e.key, "activator.dev/idle-timeout");
        assert_eq!(e.value, "soon");
        let d = deployment(&[
            ("activator.dev/min-scale", "5"),
            ("activator.dev/max-scale", "2"),
        ]);
        let e = route_spec(&d, &service(), &defaults(), &policy("x.test")).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("activator.dev/min-scale", "5")
        );
        assert!(e.expected.contains("at most max_scale (2)"), "{e}");
        let d = deployment(&[("activator.dev/port", "8443")]);
        let e = route_spec(&d, &service(), &defaults(), &policy("x.test")).unwrap_err();
        assert!(e.to_string().contains("http (80), admin (9000)"), "{e}");
    }
}
