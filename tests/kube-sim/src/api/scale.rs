//! The `scale` subresource: the autoscaling/v1 `Scale` view of a Deployment, and writing a
//! `Scale` back into the Deployment's `spec.replicas`.

use serde_json::{Value, json};

use super::status::ApiError;

/// The `Scale` view of a deployment.
pub fn to_scale(deployment: &Value) -> Value {
    let md = &deployment["metadata"];
    let selector = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md["name"],
            "namespace": md["namespace"],
            "uid": md["uid"],
            "resourceVersion": md["resourceVersion"],
            "creationTimestamp": md["creationTimestamp"],
        },
        "spec": {"replicas": deployment.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": deployment.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The deployment with `spec.replicas` taken from `scale`.
///
/// # Errors
/// 422 when the replica count is missing or negative.
pub fn apply_scale(deployment: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::new(
                422,
                "Invalid",
                format!(
                    "Scale.autoscaling {:?} is invalid: spec.replicas: Invalid value: must be greater than or equal to 0",
                    crate::meta::name(deployment)
                ),
            )
        })?;
    let mut next = deployment.clone();
    next["spec"]["replicas"] = json!(replicas);
    Ok(next)
}
