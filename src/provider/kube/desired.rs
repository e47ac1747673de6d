//! What the cluster asks for: a pure function from the watched Deployments, Services and
//! EndpointSlices to the routes to serve, each with its Deployment's replica count and its
//! endpoints, and the problems to report.
//!
//! Rules: a Deployment labelled `activator.dev/enabled=true` becomes a route named after its
//! Service; an invalid annotation keeps that route out (others are untouched); a host the
//! operator's [`Policy`] does not allow the namespace is left out of that route only
//! (`HostNotAllowed`), and a setting above the policy's ceiling is clamped (`AboveLimit`); when two
//! Deployments ask for one route, or one host, the older Deployment keeps it (ties broken by
//! name, so the outcome never depends on watch order) and the other is reported. A route whose
//! Service does not exist yet is left out without a problem: it appears once the Service does.
//! Endpoints come only from EndpointSlices the EndpointSlice controller manages, unless the
//! policy trusts hand-written ones in that namespace: anyone who can write a slice could
//! otherwise point a route at any address (CVE-2021-25740).
//!
//! Nothing here talks to the API or changes anything; [`super::discovery`] applies the result.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use super::annotations::{self, AnnotationError, Routed};
use super::readiness::Pending;
use crate::policy::{Policy, Refusal};
use crate::spec::{RouteSpec, Settings, Workload};

/// The label EndpointSlices carry naming their Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages an EndpointSlice, and the EndpointSlice controller's value.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const ENDPOINTSLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// Everything route discovery derives from the caches.
#[derive(Debug, Default)]
pub(crate) struct Desired {
    /// The routes to serve, by `namespace/name`.
    pub(crate) routes: BTreeMap<String, DesiredRoute>,
    /// Problems to report on the Deployments that have them.
    pub(crate) problems: Vec<Problem>,
}

/// One route to serve.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DesiredRoute {
    /// The route.
    pub(crate) spec: RouteSpec,
    /// Replicas the Deployment asks for now.
    pub(crate) replicas: u32,
    /// The Deployment's resourceVersion, to tell the activator's own writes from others'.
    pub(crate) resource_version: Option<String>,
    /// Endpoints the kubelet marked ready.
    pub(crate) ready: Vec<SocketAddr>,
    /// Endpoints neither ready nor terminating, to probe directly.
    pub(crate) pending: Vec<Pending>,
}

/// Something wrong with one Deployment's route.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    /// The Deployment.
    pub(crate) deployment: Arc<Deployment>,
    /// The Event reason (`InvalidAnnotation`, `HostConflict`, `HostNotAllowed`, `AboveLimit`).
    pub(crate) reason: &'static str,
    /// What a person should know.
    pub(crate) note: String,
    /// The annotation at fault, if one is (counted in `activator_config_errors_total`).
    pub(crate) annotation: Option<String>,
}

/// Where the derivation's inputs come from.
pub(crate) struct Inputs<'a> {
    /// Every Deployment labelled `activator.dev/enabled=true`.
    pub(crate) deployments: Vec<Arc<Deployment>>,
    /// Services by `(namespace, name)`.
    pub(crate) services: &'a dyn Fn(&str, &str) -> Option<Arc<Service>>,
    /// Every EndpointSlice labelled with its Service.
    pub(crate) slices: Vec<Arc<EndpointSlice>>,
    /// Route settings before annotations.
    pub(crate) defaults: &'a Settings,
    /// What tenants may claim and ask for.
    pub(crate) policy: &'a Policy,
}

/// The routes, replica counts, endpoints and problems `inputs` call for.
pub(crate) fn desired(inputs: Inputs<'_>) -> Desired {
    let Inputs {
        mut deployments,
        services,
        slices,
        defaults,
        policy,
    } = inputs;
    // Oldest first: on a conflict, the older Deployment keeps the route or host.
    deployments.sort_by(|a, b| {
        let key = |d: &Deployment| {
            (
                d.metadata.creation_timestamp.as_ref().map(|t| t.0),
                d.name_any(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut out = Desired::default();
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut claimed: HashMap<String, String> = HashMap::new();
    for deployment in deployments {
        if deployment.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let invalid = |error: AnnotationError| Problem {
            deployment: Arc::clone(&deployment),
            reason: "InvalidAnnotation",
            note: error.to_string(),
            annotation: Some(error.key),
        };
        let conflict = |note: String| Problem {
            deployment: Arc::clone(&deployment),
            reason: "HostConflict",
            note,
            annotation: None,
        };
        let namespace = deployment.namespace().unwrap_or_default();
        let service_name = match annotations::service_name(&deployment) {
            Ok(name) => name,
            Err(error) => {
                out.problems.push(invalid(error));
                continue;
            }
        };
        let Some(service) = services(&namespace, &service_name) else {
            tracing::debug!(deployment = %deployment.name_any(), service = %service_name, "waiting for the Service");
            continue;
        };
        let Routed {
            mut spec,
            clamped,
            refused,
        } = match annotations::route_spec(&deployment, &service, defaults, policy) {
            Ok(routed) => routed,
            Err(error) => {
                out.problems.push(invalid(error));
                continue;
            }
        };
        for clamp in clamped {
            let key = annotations::annotation_of(clamp.field);
            out.problems.push(Problem {
                deployment: Arc::clone(&deployment),
                reason: "AboveLimit",
                note: format!(
                    "annotation {key}={:?} is above the operator's limit; using {} (limits.{})",
                    clamp.asked, clamp.ceiling, clamp.field
                ),
                annotation: None,
            });
        }
        for (host, why) in refused {
            let because = match why {
                Refusal::OtherNamespace => {
                    "it lies in another namespace's part of the domain".to_owned()
                }
                Refusal::NotGranted => format!(
                    "hosts outside {namespace}.{} need a [[host_grants]] entry for namespace {namespace}",
                    policy.domain
                ),
            };
            out.problems.push(Problem {
                deployment: Arc::clone(&deployment),
                reason: "HostNotAllowed",
                note: format!("host {host:?} is not served for namespace {namespace}: {because}"),
                annotation: Some(annotations::HOSTS.to_owned()),
            });
        }
        let id = spec.id();
        if let Some(owner) = owners.get(&id) {
            out.problems.push(conflict(format!(
                "route {id} (Service {service_name}) is already served for Deployment {owner}; this Deployment is not routed"
            )));
            continue;
        }
        let mut lost = Vec::new();
        spec.hosts.retain(|host| match claimed.get(host) {
            Some(owner) if *owner != id => {
                lost.push(format!("{host} (kept by route {owner})"));
                false
            }
            _ => true,
        });
        if !lost.is_empty() {
            out.problems.push(conflict(format!(
                "hosts claimed by older routes are not served for route {id}: {}",
                lost.join(", ")
            )));
        }
        if spec.hosts.is_empty() {
            continue;
        }
        for host in &spec.hosts {
            claimed.insert(host.clone(), id.clone());
        }
        owners.insert(id.clone(), deployment.name_any());
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        out.routes.insert(
            id,
            DesiredRoute {
                spec,
                replicas: u32::try_from(replicas).unwrap_or(0),
                resource_version: deployment.metadata.resource_version.clone(),
                ready: Vec::new(),
                pending: Vec::new(),
            },
        );
    }
    attach_endpoints(&mut out.routes, &slices, policy);
    out
}

/// Fills each route's endpoints from its Service's EndpointSlices: ready ones take requests,
/// terminating ones none, and the rest are probed directly.
fn attach_endpoints(
    routes: &mut BTreeMap<String, DesiredRoute>,
    slices: &[Arc<EndpointSlice>],
    policy: &Policy,
) {
    let mut by_service: HashMap<(String, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let namespace = slice.namespace().unwrap_or_default();
        let managed = slice.labels().get(MANAGED_BY_LABEL).map(String::as_str)
            == Some(ENDPOINTSLICE_CONTROLLER);
        if !managed && !policy.unmanaged_slice_namespaces.contains(&namespace) {
            continue;
        }
        if let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) {
            by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    for route in routes.values_mut() {
        let Workload::Kube(workload) = &route.spec.workload else {
            continue;
        };
        let key = (route.spec.namespace.clone(), workload.service.as_str());
        for slice in by_service.get(&key).map_or(&[][..], Vec::as_slice) {
            let Some(port) = slice
                .ports
                .as_ref()
                .and_then(|ports| {
                    ports
                        .iter()
                        .find(|p| p.name.as_deref().unwrap_or_default() == workload.port_name)
                })
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                if conditions.and_then(|c| c.terminating).unwrap_or(false) {
                    continue;
                }
                let Some(ip) = endpoint
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                let serve = SocketAddr::new(ip, port);
                // A nil `ready` means unknown, which consumers should treat as ready.
                if conditions.and_then(|c| c.ready).unwrap_or(true) {
                    route.ready.push(serve);
                } else {
                    route.pending.push(Pending {
                        serve,
                        probe: SocketAddr::new(ip, workload.probe.port.unwrap_or(port)),
                        path: workload.probe.path.clone(),
                    });
                }
            }
        }
        route.ready.sort();
        route.ready.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::HostGrant;
    use serde_json::json;

    fn deployment(name: &str, created: &str, annotations: serde_json::Value) -> Arc<Deployment> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {
                    "name": name, "namespace": "default", "resourceVersion": "7",
                    "creationTimestamp": created,
                    "labels": {"app": name, "activator.dev/enabled": "true"},
                    "annotations": annotations,
                },
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"spec": {"containers": [{"name": "c", "image": "echo"}]}},
                },
            }))
            .unwrap(),
        )
    }

    fn service(name: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 80}]},
            }))
            .unwrap(),
        )
    }

    fn slice(service: &str, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{service}-x"), "namespace": "default",
                             "labels": {SERVICE_NAME_LABEL: service,
                                        MANAGED_BY_LABEL: ENDPOINTSLICE_CONTROLLER}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": endpoints,
            }))
            .unwrap(),
        )
    }

    fn derive(deployments: Vec<Arc<Deployment>>, slices: Vec<Arc<EndpointSlice>>) -> Desired {
        let policy = Policy {
            domain: "x.test".into(),
            host_grants: vec![HostGrant {
                namespace: "default".into(),
                hosts: vec!["shared.test".into()],
            }],
            ..Policy::default()
        };
        derive_with(deployments, slices, &policy)
    }

    fn derive_with(
        deployments: Vec<Arc<Deployment>>,
        slices: Vec<Arc<EndpointSlice>>,
        policy: &Policy,
    ) -> Desired {
        let services = |_: &str, name: &str| (name != "missing").then(|| service(name));
        desired(Inputs {
            deployments,
            services: &services,
            slices,
            defaults: &Settings::default(),
            policy,
        })
    }

    #[test]
    fn hand_written_endpoint_slices_are_ignored_unless_the_namespace_is_trusted() {
        let mut forged = (*slice("web", json!([{"addresses": ["10.9.9.9"]}]))).clone();
        forged
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(MANAGED_BY_LABEL);
        let forged = Arc::new(forged);
        let web = || vec![deployment("web", "2026-01-01T00:00:00Z", json!({}))];
        let out = derive(web(), vec![Arc::clone(&forged)]);
        assert!(out.routes["default/web"].ready.is_empty());
        let trusting = Policy {
            domain: "x.test".into(),
            unmanaged_slice_namespaces: ["default".to_owned()].into(),
            ..Policy::default()
        };
        let out = derive_with(web(), vec![forged], &trusting);
        assert_eq!(
            out.routes["default/web"].ready,
            ["10.9.9.9:8080".parse().unwrap()]
        );
    }

    #[test]
    fn a_host_claimed_from_another_namespace_is_refused_however_old_the_claimant() {
        let mut intruder = (*deployment(
            "web",
            "2020-01-01T00:00:00Z",
            json!({"activator.dev/hosts": "web.b.x.test, *.x.test"}),
        ))
        .clone();
        intruder.metadata.namespace = Some("a".into());
        let out = derive(vec![Arc::new(intruder)], Vec::new());
        assert_eq!(out.routes["a/web"].spec.hosts, ["web.a.x.test"]);
        let reasons: Vec<_> = out.problems.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["HostNotAllowed", "HostNotAllowed"]);
        assert!(
            out.problems[0].note.contains("another namespace"),
            "{}",
            out.problems[0].note
        );
    }

    #[test]
    fn a_labelled_deployment_becomes_a_route_with_its_replicas_and_endpoints() {
        let out = derive(
            vec![deployment("web", "2026-01-01T00:00:00Z", json!({}))],
            vec![slice(
                "web",
                json!([
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                    {"addresses": ["10.0.0.4"], "conditions": {"ready": false, "terminating": true}},
                ]),
            )],
        );
        assert!(out.problems.is_empty());
        let route = &out.routes["default/web"];
        assert_eq!(route.spec.hosts, ["web.default.x.test"]);
        assert_eq!(route.replicas, 0);
        assert_eq!(route.resource_version.as_deref(), Some("7"));
        assert_eq!(route.ready, ["10.0.0.2:8080".parse().unwrap()]);
        assert_eq!(route.pending.len(), 1);
        assert_eq!(route.pending[0].serve, "10.0.0.3:8080".parse().unwrap());
    }

    #[test]
    fn the_older_deployment_keeps_a_contested_host_whatever_the_watch_order() {
        let hosts = json!({"activator.dev/hosts": "shared.test"});
        let older = deployment("old", "2026-01-01T00:00:00Z", hosts.clone());
        let younger = deployment("new", "2026-02-01T00:00:00Z", hosts);
        for order in [
            vec![Arc::clone(&older), Arc::clone(&younger)],
            vec![Arc::clone(&younger), Arc::clone(&older)],
        ] {
            let out = derive(order, Vec::new());
            assert!(
                out.routes["default/old"]
                    .spec
                    .hosts
                    .contains(&"shared.test".into())
            );
            assert_eq!(out.routes["default/new"].spec.hosts, ["new.default.x.test"]);
            assert_eq!(out.problems.len(), 1);
            assert_eq!(out.problems[0].reason, "HostConflict");
            assert_eq!(out.problems[0].deployment.name_any(), "new");
        }
    }

    #[test]
    fn an_invalid_annotation_keeps_only_that_route_out_and_names_the_key() {
        let out = derive(
            vec![
                deployment("good", "2026-01-01T00:00:00Z", json!({})),
                deployment(
                    "bad",
                    "2026-01-01T00:00:00Z",
                    json!({"activator.dev/idle-timeout": "soon"}),
                ),
            ],
            Vec::new(),
        );
        assert_eq!(out.routes.keys().collect::<Vec<_>>(), ["default/good"]);
        assert_eq!(out.problems[0].reason, "InvalidAnnotation");
        assert_eq!(
            out.problems[0].annotation.as_deref(),
            Some("activator.dev/idle-timeout")
        );
    }

    #[test]
    fn two_deployments_behind_one_service_give_one_route_to_the_older() {
        let named = json!({"activator.dev/service": "web"});
        let out = derive(
            vec![
                deployment("web-00002", "2026-02-01T00:00:00Z", named.clone()),
                deployment("web-00001", "2026-01-01T00:00:00Z", named),
            ],
            Vec::new(),
        );
        let Workload::Kube(workload) = &out.routes["default/web"].spec.workload else {
            panic!("a Kubernetes route");
        };
        assert_eq!(workload.deployment, "web-00001");
        assert_eq!(out.problems[0].deployment.name_any(), "web-00002");
    }

    #[test]
    fn a_route_waits_for_its_service_without_a_problem() {
        let named = json!({"activator.dev/service": "missing"});
        let out = derive(
            vec![deployment("web", "2026-01-01T00:00:00Z", named)],
            Vec::new(),
        );
        assert!(out.routes.is_empty() && out.problems.is_empty());
    }
}
