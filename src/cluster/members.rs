//! The other activator replicas: the endpoints of the peer Service's EndpointSlices, on the port
//! named `admin`.
//!
//! Every endpoint that is ready, serving or terminating counts (a replica in its lame-duck time
//! still holds requests); one that is none of these is starting and has no traffic yet. As the
//! EndpointSlice API says, a condition left out means ready (and serving as ready), so slices an
//! operator writes by hand for a selectorless Service work too. This replica is left out by its
//! identity (the endpoint's `targetRef.name`, else its `hostname`) or by its admin address.
//!
//! Unlike a workload route's endpoints, hand-written slices are believed here without a trust
//! setting: this Service lives in the activator's own namespace, and what a listed peer can do is
//! keep workloads up (a peer that does not answer counts as busy), never point traffic anywhere.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::config::ObjectName;

/// The port name peers serve their reports on.
pub(crate) const ADMIN_PORT: &str = "admin";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Another replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its name (the pod's), or its address when the endpoint names nothing.
    pub(crate) identity: String,
    /// Where its admin listener answers.
    pub(crate) admin: SocketAddr,
    /// It is shutting down (still holding requests, and still counted).
    pub(crate) terminating: bool,
}

/// The other replicas as last seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct Members {
    /// Everyone listed but this replica, by address.
    pub(crate) others: Arc<Vec<Member>>,
    /// The slices have been read at least once (or could not be: then there is nobody else).
    pub(crate) known: bool,
}

impl Members {
    /// Whether `ip` is a listed replica's address.
    pub(crate) fn lists(&self, ip: IpAddr) -> bool {
        self.others.iter().any(|m| m.admin.ip() == ip)
    }
}

/// How this replica recognises itself in the slices.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    /// Its identity.
    pub(crate) identity: String,
    /// Its admin listener's address.
    pub(crate) admin: SocketAddr,
}

/// The other replicas the slices list.
pub(crate) fn members(slices: &[Arc<EndpointSlice>], me: &Me) -> Vec<Member> {
    let mut found: BTreeMap<SocketAddr, Member> = BTreeMap::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(ADMIN_PORT))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            if !(ready || serving || terminating) {
                continue;
            }
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let admin = SocketAddr::new(ip, port);
            let identity = endpoint
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .or_else(|| endpoint.hostname.clone())
                .unwrap_or_else(|| admin.to_string());
            if identity == me.identity || admin == me.admin {
                continue;
            }
            found.insert(
                admin,
                Member {
                    identity,
                    admin,
                    terminating,
                },
            );
        }
    }
    found.into_values().collect()
}

/// Watches the slices of `service` until `shutdown` completes, publishing the other replicas.
pub(crate) async fn watch(
    client: kube::Client,
    service: ObjectName,
    me: Me,
    members: watch::Sender<Members>,
    shutdown: impl Future<Output = ()>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &service.namespace);
    let (store, writer): (Store<EndpointSlice>, _) = reflector::store();
    let config =
        watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", service.name));
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::pin!(stream);
    tokio::pin!(shutdown);
    let mut complained = false;
    loop {
        let event = tokio::select! {
            () = &mut shutdown => return,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
            Some(Ok(_)) => {
                complained = false;
                let others = self::members(&store.state(), &me);
                members.send_if_modified(|current| {
                    let changed = !current.known || *current.others != others;
                    if changed {
                        tracing::info!(
                            service = %service,
                            peers = ?others.iter().map(|m| m.identity.as_str()).collect::<Vec<_>>(),
                            "activator replicas"
                        );
                        *current = Members {
                            others: Arc::new(others),
                            known: true,
                        };
                    }
                    changed
                });
            }
            Some(Err(error)) => {
                if !complained {
                    tracing::warn!(service = %service, %error, "cannot read the peer Service's EndpointSlices; retrying with backoff");
                    complained = true;
                }
                // Never read: nobody else is known, so this replica decides alone meanwhile.
                members.send_if_modified(|current| !std::mem::replace(&mut current.known, true));
            }
            None => return (&mut shutdown).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn endpoint(ip: &str, pod: Option<&str>, conditions: Option<(bool, bool, bool)>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: conditions.map(|(ready, serving, terminating)| EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            target_ref: pod.map(|name| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(name.into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    fn slice(port: Option<(&str, i32)>, endpoints: Vec<Endpoint>) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(
                port.into_iter()
                    .map(|(name, port)| EndpointPort {
                        name: Some(name.into()),
                        port: Some(port),
                        ..EndpointPort::default()
                    })
                    .chain([EndpointPort {
                        name: Some("http".into()),
                        port: Some(8080),
                        ..EndpointPort::default()
                    }])
                    .collect(),
            ),
            ..EndpointSlice::default()
        })
    }

    fn me() -> Me {
        Me {
            identity: "activator-a".into(),
            admin: "10.0.0.1:9090".parse().unwrap(),
        }
    }

    #[test]
    fn ready_serving_and_terminating_peers_count_and_starting_ones_do_not() {
        let slices = [slice(
            Some(("admin", 9090)),
            vec![
                endpoint("10.0.0.1", Some("activator-a"), Some((true, true, false))),
                endpoint("10.0.0.2", Some("activator-b"), Some((true, true, false))),
                endpoint("10.0.0.3", Some("activator-c"), Some((false, false, true))),
                endpoint("10.0.0.4", Some("activator-d"), Some((false, false, false))),
            ],
        )];
        let found = members(&slices, &me());
        let names: Vec<_> = found.iter().map(|m| m.identity.as_str()).collect();
        assert_eq!(names, ["activator-b", "activator-c"]);
        assert_eq!(found[0].admin, "10.0.0.2:9090".parse().unwrap());
        assert!(found[1].terminating);
    }

    #[test]
    fn hand_written_slices_without_conditions_or_names_count_as_ready() {
        let slices = [
            slice(
                Some(("admin", 9091)),
                vec![endpoint("127.0.0.2", None, None)],
            ),
            slice(
                Some(("admin", 9090)),
                vec![endpoint("10.0.0.1", None, None)],
            ),
            slice(None, vec![endpoint("127.0.0.9", None, None)]),
        ];
        let found = members(&slices, &me());
        assert_eq!(
            found.len(),
            1,
            "itself by address, and no admin port: {found:?}"
        );
        assert_eq!(found[0].identity, "127.0.0.2:9091");
    }
}
