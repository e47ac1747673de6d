//! The column definitions of each kind's `Table`, as the API server's printers declare them
//! (`pkg/printers/internalversion/printers.go`): pods, deployments, services, EndpointSlices,
//! events, namespaces, leases, ConfigMaps and ServiceAccounts have their own; every other kind
//! gets `Name` and `Age`.

use serde_json::{Value, json};

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// A column: name, priority (1 = only with `-o wide`) and description. Every column these
/// kinds have is of type `string`; the `Name` columns have format `name`.
type Column = (&'static str, u8, &'static str);

const NAME: Column = ("Name", 0, NAME_DOC);
const AGE: Column = ("Age", 0, AGE_DOC);

// One column per line, as the printers declare them.
#[rustfmt::skip]
const POD: &[Column] = &[
    NAME,
    ("Ready", 0, "The aggregate readiness state of this pod for accepting traffic."),
    ("Status", 0, "The aggregate status of the containers in this pod."),
    ("Restarts", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    ("IP", 1, "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    ("Node", 1, "NodeName indicates in which node this pod is scheduled."),
    ("Nominated Node", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
    ("Readiness Gates", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
];

#[rustfmt::skip]
const DEPLOYMENT: &[Column] = &[
    NAME,
    ("Ready", 0, "Number of the pod with ready state"),
    ("Up-to-date", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    ("Available", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    ("Containers", 1, "Names of each container in the template."),
    ("Images", 1, "Images referenced by each container in the template."),
    ("Selector", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
];

#[rustfmt::skip]
const SERVICE: &[Column] = &[
    NAME,
    ("Type", 0, "type determines how the Service is exposed."),
    ("Cluster-IP", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
    ("External-IP", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    ("Port(s)", 0, "The list of ports that are exposed by this service."),
    AGE,
    ("Selector", 1, "Route service traffic to pods with label keys and values matching this selector."),
];

#[rustfmt::skip]
const ENDPOINT_SLICE: &[Column] = &[
    NAME,
    ("AddressType", 0, "addressType specifies the type of address carried by this EndpointSlice."),
    ("Ports", 0, "ports specifies the list of network ports exposed by each endpoint in this slice."),
    ("Endpoints", 0, "endpoints is a list of unique endpoints in this slice."),
    AGE,
];

#[rustfmt::skip]
const EVENT: &[Column] = &[
    ("Last Seen", 0, "The time at which the most recent occurrence of this event was recorded."),
    ("Type", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
    ("Reason", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    ("Object", 0, "The object that this event is about."),
    ("Subobject", 1, "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
    ("Source", 1, "The component reporting this event. Should be a short machine understandable string."),
    ("Message", 0, "A human-readable description of the status of this operation."),
    ("First Seen", 1, "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    ("Count", 1, "The number of times this event has occurred."),
    ("Name", 1, NAME_DOC),
];

#[rustfmt::skip]
const NAMESPACE: &[Column] = &[
    NAME,
    ("Status", 0, "The status of the namespace"),
    AGE,
];

#[rustfmt::skip]
const LEASE: &[Column] = &[
    NAME,
    ("Holder", 0, "holderIdentity contains the identity of the holder of a current lease."),
    AGE,
];

#[rustfmt::skip]
const CONFIG_MAP: &[Column] = &[
    NAME,
    ("Data", 0, "Data contains the configuration data."),
    AGE,
];

#[rustfmt::skip]
const SERVICE_ACCOUNT: &[Column] = &[
    NAME,
    ("Secrets", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
];

const DEFAULT: &[Column] = &[NAME, AGE];

fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => POD,
        "Deployment" => DEPLOYMENT,
        "Service" => SERVICE,
        "EndpointSlice" => ENDPOINT_SLICE,
        "Event" => EVENT,
        "Namespace" => NAMESPACE,
        "Lease" => LEASE,
        "ConfigMap" => CONFIG_MAP,
        "ServiceAccount" => SERVICE_ACCOUNT,
        _ => DEFAULT,
    }
}

/// The `columnDefinitions` of a kind's table.
pub(crate) fn column_definitions(kind: &str) -> Value {
    columns(kind)
        .iter()
        .map(|(name, priority, description)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
        })
        .collect()
}
