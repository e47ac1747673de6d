//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send: `kubectl create namespace`, `create deployment`,
//! `create service`. A body is the magic `k8s\0` and a `runtime.Unknown` whose `typeMeta` names
//! the kind and whose `raw` holds the object's message; it is decoded into the JSON the rest of
//! the server works on.
//!
//! The decoder is driven by a table of the kinds the simulator serves, with the field numbers of
//! Kubernetes' `generated.proto`. Only the fields the simulator's resources use are in the table;
//! an unknown field holding its zero value (gogo-protobuf writes every non-pointer field, set or
//! not) is skipped, and one holding data is refused with 415 rather than silently dropped. As in
//! the JSON encoding, empty strings, zero numbers and `false` are left out unless the Go field is
//! a pointer (`replicas: 0` is kept); nested messages are kept even when empty.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::status::ApiError;
use crate::meta;

/// The media type of the protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// What a field holds.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    /// `metav1.Time` (`seconds`, `nanos`), an RFC 3339 string in JSON.
    Time,
    /// `intstr.IntOrString` (`type`, `intVal`, `strVal`), a number or a string in JSON.
    IntStr,
    /// `resource.Quantity` (`string`), a string in JSON.
    Quantity,
    Msg(&'static [Field]),
}

/// How many values a field holds.
#[derive(Clone, Copy)]
enum Card {
    /// One value, left out when zero (a Go value field with `omitempty`).
    One,
    /// One value, kept even when zero (a Go pointer field).
    Ptr,
    /// A repeated field: a JSON array.
    Rep,
    /// A `map<string, T>`: a JSON object.
    Map,
}

struct Field {
    tag: u64,
    name: &'static str,
    ty: Ty,
    card: Card,
}

const fn f(tag: u64, name: &'static str, ty: Ty, card: Card) -> Field {
    Field {
        tag,
        name,
        ty,
        card,
    }
}

use Card::{Map as M, One, Ptr, Rep};
use Ty::{Bool, Int, IntStr, Msg, Quantity, Str, Time};

const TYPE_META: &[Field] = &[f(1, "apiVersion", Str, One), f(2, "kind", Str, One)];
const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Str, One),
    f(3, "name", Str, One),
    f(4, "uid", Str, One),
    f(5, "apiVersion", Str, One),
    f(6, "controller", Bool, Ptr),
    f(7, "blockOwnerDeletion", Bool, Ptr),
];
const OBJECT_META: &[Field] = &[
    f(1, "name", Str, One),
    f(2, "generateName", Str, One),
    f(3, "namespace", Str, One),
    f(4, "selfLink", Str, One),
    f(5, "uid", Str, One),
    f(6, "resourceVersion", Str, One),
    f(7, "generation", Int, One),
    f(8, "creationTimestamp", Time, One),
    f(9, "deletionTimestamp", Time, One),
    f(10, "deletionGracePeriodSeconds", Int, Ptr),
    f(11, "labels", Str, M),
    f(12, "annotations", Str, M),
    f(13, "ownerReferences", Msg(OWNER_REFERENCE), Rep),
    f(14, "finalizers", Str, Rep),
];
const NAMESPACE: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META), One),
    f(2, "spec", Msg(&[f(1, "finalizers", Str, Rep)]), One),
    f(3, "status", Msg(&[f(1, "phase", Str, One)]), One),
];
const SERVICE_PORT: &[Field] = &[
    f(1, "name", Str, One),
    f(2, "protocol", Str, One),
    f(3, "port", Int, One),
    f(4, "targetPort", IntStr, One),
    f(5, "nodePort", Int, One),
    f(6, "appProtocol", Str, Ptr),
];
const SERVICE: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META), One),
    f(
        2,
        "spec",
        Msg(&[
            f(1, "ports", Msg(SERVICE_PORT), Rep),
            f(2, "selector", Str, M),
            f(3, "clusterIP", Str, One),
            f(4, "type", Str, One),
            f(5, "externalIPs", Str, Rep),
            f(7, "sessionAffinity", Str, One),
            f(10, "externalName", Str, One),
            f(11, "externalTrafficPolicy", Str, One),
            f(13, "publishNotReadyAddresses", Bool, One),
            f(17, "ipFamilyPolicy", Str, Ptr),
            f(18, "clusterIPs", Str, Rep),
            f(19, "ipFamilies", Str, Rep),
            f(20, "allocateLoadBalancerNodePorts", Bool, Ptr),
            f(22, "internalTrafficPolicy", Str, Ptr),
        ]),
        One,
    ),
    f(3, "status", Msg(&[]), One),
];
const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Str, M),
    f(
        2,
        "matchExpressions",
        Msg(&[
            f(1, "key", Str, One),
            f(2, "operator", Str, One),
            f(3, "values", Str, Rep),
        ]),
        Rep,
    ),
];
const CONTAINER: &[Field] = &[
    f(1, "name", Str, One),
    f(2, "image", Str, One),
    f(3, "command", Str, Rep),
    f(4, "args", Str, Rep),
    f(5, "workingDir", Str, One),
    f(
        6,
        "ports",
        Msg(&[
            f(1, "name", Str, One),
            f(2, "hostPort", Int, One),
            f(3, "containerPort", Int, One),
            f(4, "protocol", Str, One),
            f(5, "hostIP", Str, One),
        ]),
        Rep,
    ),
    f(
        7,
        "env",
        Msg(&[
            f(1, "name", Str, One),
            f(2, "value", Str, One),
            f(
                3,
                "valueFrom",
                Msg(&[f(
                    1,
                    "fieldRef",
                    Msg(&[f(1, "apiVersion", Str, One), f(2, "fieldPath", Str, One)]),
                    One,
                )]),
                One,
            ),
        ]),
        Rep,
    ),
    f(
        8,
        "resources",
        Msg(&[f(1, "limits", Quantity, M), f(2, "requests", Quantity, M)]),
        One,
    ),
    f(13, "terminationMessagePath", Str, One),
    f(14, "imagePullPolicy", Str, One),
    f(20, "terminationMessagePolicy", Str, One),
];
const POD_SPEC: &[Field] = &[
    f(2, "containers", Msg(CONTAINER), Rep),
    f(3, "restartPolicy", Str, One),
    f(4, "terminationGracePeriodSeconds", Int, Ptr),
    f(6, "dnsPolicy", Str, One),
    f(7, "nodeSelector", Str, M),
    f(8, "serviceAccountName", Str, One),
    f(10, "nodeName", Str, One),
    f(16, "hostname", Str, One),
    f(19, "schedulerName", Str, One),
];
const POD_TEMPLATE: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META), One),
    f(2, "spec", Msg(POD_SPEC), One),
];
const DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META), One),
    f(
        2,
        "spec",
        Msg(&[
            f(1, "replicas", Int, Ptr),
            f(2, "selector", Msg(LABEL_SELECTOR), One),
            f(3, "template", Msg(POD_TEMPLATE), One),
            f(
                4,
                "strategy",
                Msg(&[
                    f(1, "type", Str, One),
                    f(
                        2,
                        "rollingUpdate",
                        Msg(&[
                            f(1, "maxUnavailable", IntStr, One),
                            f(2, "maxSurge", IntStr, One),
                        ]),
                        One,
                    ),
                ]),
                One,
            ),
            f(5, "minReadySeconds", Int, One),
            f(6, "revisionHistoryLimit", Int, Ptr),
            f(7, "paused", Bool, One),
            f(9, "progressDeadlineSeconds", Int, Ptr),
        ]),
        One,
    ),
    // Status is the server's; a client's is dropped on create, so only its zero form is read.
    f(3, "status", Msg(&[]), One),
];
const POD: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META), One),
    f(2, "spec", Msg(POD_SPEC), One),
    f(3, "status", Msg(&[]), One),
];
const LEASE: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META), One),
    f(
        2,
        "spec",
        Msg(&[
            f(1, "holderIdentity", Str, Ptr),
            f(2, "leaseDurationSeconds", Int, Ptr),
            f(3, "acquireTime", Time, One),
            f(4, "renewTime", Time, One),
            f(5, "leaseTransitions", Int, Ptr),
        ]),
        One,
    ),
];
const DELETE_OPTIONS: &[Field] = &[
    f(1, "gracePeriodSeconds", Int, Ptr),
    f(
        2,
        "preconditions",
        Msg(&[f(1, "uid", Str, Ptr), f(2, "resourceVersion", Str, Ptr)]),
        One,
    ),
    f(3, "orphanDependents", Bool, Ptr),
    f(4, "propagationPolicy", Str, Ptr),
    f(5, "dryRun", Str, Rep),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META), One),
    f(2, "data", Str, M),
    f(4, "immutable", Bool, Ptr),
];
const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Msg(OBJECT_META), One),
    f(4, "automountServiceAccountToken", Bool, Ptr),
];

/// The message of each kind that can arrive in protobuf.
fn schema(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "Namespace" => NAMESPACE,
        "Service" => SERVICE,
        "Deployment" => DEPLOYMENT,
        "Pod" => POD,
        "Lease" => LEASE,
        "ConfigMap" => CONFIG_MAP,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "DeleteOptions" => DELETE_OPTIONS,
        _ => return None,
    })
}

/// A wire value.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed(&'a [u8]),
}

impl Wire<'_> {
    fn is_zero(&self) -> bool {
        match self {
            Self::Varint(v) => *v == 0,
            Self::Bytes(b) => b.is_empty(),
            Self::Fixed(b) => b.iter().all(|x| *x == 0),
        }
    }
}

fn truncated() -> ApiError {
    ApiError::bad_request("error decoding body: truncated or malformed protobuf")
}

/// Splits a message into its `(field number, value)` pairs.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    fn varint(buf: &mut &[u8]) -> Result<u64, ApiError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first().ok_or_else(truncated)?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(truncated())
    }
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], ApiError> {
        if buf.len() < n {
            return Err(truncated());
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut buf)?),
            1 => Wire::Fixed(take(&mut buf, 8)?),
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| truncated())?;
                Wire::Bytes(take(&mut buf, len)?)
            }
            5 => Wire::Fixed(take(&mut buf, 4)?),
            _ => return Err(truncated()),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn string(wire: &Wire<'_>) -> Result<String, ApiError> {
    match wire {
        Wire::Bytes(b) => String::from_utf8(b.to_vec())
            .map_err(|_| ApiError::bad_request("error decoding body: a string is not UTF-8")),
        _ => Err(truncated()),
    }
}

fn varint_of(wire: &Wire<'_>) -> Result<u64, ApiError> {
    match wire {
        Wire::Varint(v) => Ok(*v),
        _ => Err(truncated()),
    }
}

/// One value of type `ty`, or `None` for its zero value where JSON would leave it out.
fn value(ty: Ty, wire: &Wire<'_>, context: &str) -> Result<Option<Value>, ApiError> {
    Ok(match ty {
        Str => Some(Value::from(string(wire)?)).filter(|v| v != ""),
        // int32 and int64 alike: a negative int32 is sign-extended to ten bytes on the wire.
        Int => Some(Value::from(varint_of(wire)? as i64)).filter(|v| v != 0),
        Bool => Some(Value::from(varint_of(wire)? != 0)).filter(|v| v != false),
        Msg(schema) => Some(message(bytes(wire)?, schema, context)?),
        Time => {
            let time = message(bytes(wire)?, &[f(1, "seconds", Int, One)], context)?;
            let seconds = time["seconds"].as_u64().unwrap_or(0);
            (seconds > 0)
                .then(|| Value::from(meta::rfc3339(UNIX_EPOCH + Duration::from_secs(seconds))))
        }
        IntStr => {
            let parts = message(
                bytes(wire)?,
                &[
                    f(1, "type", Int, One),
                    f(2, "intVal", Int, One),
                    f(3, "strVal", Str, One),
                ],
                context,
            )?;
            Some(match parts["type"].as_i64() {
                Some(1) => parts.get("strVal").cloned().unwrap_or(Value::from("")),
                _ => parts.get("intVal").cloned().unwrap_or(Value::from(0)),
            })
        }
        Quantity => {
            let parts = message(bytes(wire)?, &[f(1, "string", Str, One)], context)?;
            parts.get("string").cloned()
        }
    })
}

fn bytes<'a>(wire: &Wire<'a>) -> Result<&'a [u8], ApiError> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        _ => Err(truncated()),
    }
}

/// Decodes a message by its table into a JSON object.
fn message(buf: &[u8], schema: &[Field], context: &str) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (tag, wire) in fields(buf)? {
        let Some(field) = schema.iter().find(|f| f.tag == tag) else {
            if wire.is_zero() {
                continue;
            }
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the simulator does not decode field {tag} of {context} in protobuf; send JSON"
                ),
            ));
        };
        let context = format!("{context}.{}", field.name);
        match field.card {
            Card::One => {
                if let Some(v) = value(field.ty, &wire, &context)? {
                    out.insert(field.name.into(), v);
                }
            }
            Card::Ptr => {
                let v = value(field.ty, &wire, &context)?;
                let zero = match field.ty {
                    Str => Value::from(""),
                    Bool => Value::from(false),
                    _ => Value::from(0),
                };
                out.insert(field.name.into(), v.unwrap_or(zero));
            }
            Card::Rep => {
                let v = value(field.ty, &wire, &context)?.unwrap_or(match field.ty {
                    Str => Value::from(""),
                    _ => Value::from(0),
                });
                let list = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.push(v);
                }
            }
            Card::Map => {
                let entry = message(
                    bytes(&wire)?,
                    &[f(1, "key", Str, Ptr), f(2, "value", field.ty, Ptr)],
                    &context,
                )?;
                let map = out
                    .entry(field.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let (Value::Object(map), Some(key)) = (map, entry["key"].as_str()) {
                    map.insert(key.to_string(), entry["value"].clone());
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Whether a `Content-Type` names the protobuf encoding.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim() == MEDIA_TYPE
}

/// Decodes a protobuf request body into the object's JSON form.
///
/// # Errors
/// 400 for a body that is not a `k8s\0` envelope or does not parse; 415 for a kind the
/// simulator has no table for, or a field it does not decode.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let raw = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request("error decoding body: protobuf without the k8s\\0 prefix")
    })?;
    // runtime.Unknown: typeMeta 1, raw 2, contentEncoding 3, contentType 4.
    let mut type_meta = Value::Null;
    let mut object: &[u8] = &[];
    for (tag, wire) in fields(raw)? {
        match tag {
            1 => type_meta = message(bytes(&wire)?, TYPE_META, "TypeMeta")?,
            2 => object = bytes(&wire)?,
            3 | 4 if !wire.is_zero() => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the simulator does not decode encoded protobuf bodies",
                ));
            }
            _ => {}
        }
    }
    let kind = meta::str_at(&type_meta, "/kind");
    let schema = schema(kind).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the simulator does not decode {kind:?} in protobuf; send JSON"),
        )
    })?;
    let mut decoded = message(object, schema, kind)?;
    for field in ["kind", "apiVersion"] {
        if let Some(v) = type_meta.get(field) {
            decoded[field] = v.clone();
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `kubectl create namespace x` sends (kubectl 1.32, `-v=9`).
    const CREATE_NAMESPACE: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x19\x0a\x11\x0a\x01x\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";

    #[test]
    fn kubectl_create_namespace_decodes_to_its_json_form() {
        let decoded = decode(CREATE_NAMESPACE).expect("decodes");
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"},
                   "spec": {}, "status": {}})
        );
    }

    #[test]
    fn a_body_without_the_envelope_is_a_bad_request() {
        assert_eq!(decode(b"{}").err().map(|e| e.code), Some(400));
        assert_eq!(decode(b"k8s\x00\x0a").err().map(|e| e.code), Some(400));
    }
}
