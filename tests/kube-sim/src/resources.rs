//! The catalogue of API resources the simulator serves: group, version, plural name, kind, scope,
//! verbs and subresources. Routing, discovery and the store all read this one table; it does not
//! hold any objects.

/// One API resource type, such as `deployments` in `apps/v1`.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core (legacy) group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name used in URLs.
    pub plural: &'static str,
    /// Object kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts.
    pub short_names: &'static [&'static str],
    /// Subresources served, such as `scale` and `status`.
    pub subresources: &'static [Subresource],
    /// Whether deleting an object is graceful (a deletion timestamp first, removal later).
    pub graceful_delete: bool,
}

/// A subresource of a [`ResourceType`].
#[derive(Debug, PartialEq, Eq)]
pub struct Subresource {
    /// Name in the URL after the object name.
    pub name: &'static str,
    /// Kind of the object the subresource speaks.
    pub kind: &'static str,
    /// Group of that kind, when it differs from the parent's.
    pub group: Option<&'static str>,
    /// Version of that kind, when it differs from the parent's.
    pub version: Option<&'static str>,
    /// Verbs the subresource accepts.
    pub verbs: &'static [&'static str],
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS: Subresource = Subresource {
    name: "status",
    kind: "",
    group: None,
    version: None,
    verbs: &["get", "patch", "update"],
};

/// Every resource type the simulator serves.
pub static RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        subresources: &[STATUS],
        graceful_delete: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        subresources: &[STATUS],
        graceful_delete: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        subresources: &[
            STATUS,
            Subresource {
                name: "log",
                kind: "Pod",
                group: None,
                version: None,
                verbs: &["get"],
            },
        ],
        graceful_delete: true,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        graceful_delete: false,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        subresources: &[
            STATUS,
            Subresource {
                name: "scale",
                kind: "Scale",
                group: Some("autoscaling"),
                version: Some("v1"),
                verbs: &["get", "patch", "update"],
            },
        ],
        graceful_delete: false,
    },
    ResourceType {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        graceful_delete: false,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        subresources: &[],
        graceful_delete: false,
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        subresources: &[],
        graceful_delete: false,
    },
    // Kinds that are stored and served, so that manifests using them apply, but that nothing
    // in the simulator acts on: no RBAC is enforced, no autoscaler or disruption budget runs, no
    // network policy filters traffic, and ConfigMaps reach no pod.
    ResourceType::stored("", "serviceaccounts", "ServiceAccount", true, &["sa"]),
    ResourceType::stored("", "configmaps", "ConfigMap", true, &["cm"]),
    ResourceType::stored(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
    ),
    ResourceType::stored(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
    ),
    ResourceType::stored("rbac.authorization.k8s.io", "roles", "Role", true, &[]),
    ResourceType::stored(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
    ),
    ResourceType::stored(
        "networking.k8s.io",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
    ),
    ResourceType {
        subresources: &[STATUS],
        ..ResourceType::stored(
            "policy",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
        )
    },
    ResourceType {
        version: "v2",
        subresources: &[STATUS],
        ..ResourceType::stored(
            "autoscaling",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            true,
            &["hpa"],
        )
    },
];

/// Groups listed by `/apis`, with the version served. `autoscaling` is listed at `v2`, where
/// HorizontalPodAutoscalers are; its `v1`, whose `Scale` kind `deployments/scale` speaks, is not
/// listed, since a group version with no resources makes kubectl's discovery fail.
pub static GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("autoscaling", "v2"),
    ("coordination.k8s.io", "v1"),
    ("discovery.k8s.io", "v1"),
    ("events.k8s.io", "v1"),
    ("networking.k8s.io", "v1"),
    ("policy", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
];

impl ResourceType {
    /// A kind that is only stored: at `v1` of `group`, no subresources, deleted at once.
    const fn stored(
        group: &'static str,
        plural: &'static str,
        kind: &'static str,
        namespaced: bool,
        short_names: &'static [&'static str],
    ) -> Self {
        Self {
            group,
            version: "v1",
            plural,
            kind,
            namespaced,
            short_names,
            subresources: &[],
            graceful_delete: false,
        }
    }

    /// Finds a resource by group, version and plural name.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Finds a resource by kind and `apiVersion` (`v1` or `group/version`).
    pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
    }

    /// The `apiVersion` field of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource name qualified by its group, as Kubernetes names it in error messages
    /// (`deployments.apps`, `pods`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The resource whose stored objects this one serves: itself, except for `events.k8s.io`
    /// Events, which are a second view of the core Events (one stored object, two APIs, as in
    /// Kubernetes, converted on the way in and out by [`crate::api::convert`]).
    pub fn storage(&'static self) -> &'static ResourceType {
        if self.group == "events.k8s.io" && self.plural == "events" {
            return Self::find("", "v1", "events").unwrap_or(self);
        }
        self
    }

    /// Whether objects are stored under this resource (rather than under another it is a
    /// view of).
    pub fn is_stored(&'static self) -> bool {
        std::ptr::eq(self.storage(), self)
    }

    /// The singular resource name, which for every built-in kind is the kind in lower case.
    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    /// Looks up a subresource by name.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// The categories discovery lists, which `kubectl get all` expands: `all` for the
    /// workload kinds that Kubernetes puts in it.
    pub fn categories(&self) -> &'static [&'static str] {
        match (self.group, self.plural) {
            ("", "pods" | "services")
            | ("apps", "deployments")
            | ("autoscaling", "horizontalpodautoscalers") => &["all"],
            _ => &[],
        }
    }

    /// Verbs of the resource itself.
    pub fn verbs(&self) -> &'static [&'static str] {
        ALL_VERBS
    }

    /// Resource types served for a group and version.
    pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static Self> {
        let (group, version) = (group.to_string(), version.to_string());
        RESOURCES
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_are_found_by_kind_and_by_path() {
        let by_path = ResourceType::find("apps", "v1", "deployments");
        let by_kind = ResourceType::by_kind("apps/v1", "Deployment");
        assert!(by_path.is_some());
        assert_eq!(by_path, by_kind);
        assert_eq!(
            by_path.map(ResourceType::qualified).as_deref(),
            Some("deployments.apps")
        );
    }

    #[test]
    fn both_event_apis_share_the_core_storage() {
        let core = ResourceType::find("", "v1", "events").expect("core events");
        let view = ResourceType::find("events.k8s.io", "v1", "events").expect("events.k8s.io");
        assert!(std::ptr::eq(view.storage(), core));
        assert!(core.is_stored());
        assert!(!view.is_stored());
    }
}
