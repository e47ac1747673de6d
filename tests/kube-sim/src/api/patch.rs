//! Applying a PATCH body to an object: JSON merge patch, JSON patch, server-side apply (as a
//! merge) and the subset of strategic merge patch that kubectl and the built-in types need —
//! lists merged by their Kubernetes merge keys and the `$patch`, `$retainKeys`,
//! `$setElementOrder` and `$deleteFromPrimitiveList` directives.

use serde_json::{Map, Value};

use super::status::ApiError;

/// The patch formats the server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply, approximated by a merge).
    Apply,
}

impl PatchKind {
    /// The kind named by a `Content-Type` header.
    ///
    /// # Errors
    /// 415 for any other media type.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }

    /// Parses a body of this kind.
    ///
    /// # Errors
    /// 400 when the body does not parse.
    pub fn parse_body(self, body: &[u8]) -> Result<Value, ApiError> {
        let parsed = match self {
            Self::Apply => serde_yaml::from_slice(body).map_err(|e| e.to_string()),
            _ => serde_json::from_slice(body).map_err(|e| e.to_string()),
        };
        parsed.map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    }
}

/// Applies `patch` of `kind` to `base`.
///
/// # Errors
/// 422 when a JSON patch operation fails (as Kubernetes answers), 400 for a malformed patch.
pub fn apply(kind: PatchKind, base: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut target = base.clone();
    match kind {
        PatchKind::Merge | PatchKind::Apply => json_patch::merge(&mut target, patch),
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut target, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchKind::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be an object",
                ));
            }
            strategic_merge(&mut target, patch, "");
        }
    }
    Ok(target)
}

/// The merge key of a list field, as the Kubernetes types declare (`patchMergeKey`).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

/// Lists of scalars that merge as sets rather than being replaced.
fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

fn strategic_merge(target: &mut Value, patch: &Value, _field: &str) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = Value::Object(without_directives(patch_map));
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(keep)) = patch_map.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target_map.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch_map {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) =
                (target_map.get_mut(field), value)
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(slot, value, key);
                if slot.is_null() {
                    target_map.remove(key);
                }
            }
            Value::Array(items) => {
                let slot = target_map
                    .entry(key.clone())
                    .or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, key);
            }
            scalar => {
                target_map.insert(key.clone(), scalar.clone());
            }
        }
    }
}

fn without_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_list(target: &mut Value, items: &[Value], field: &str) {
    let replace = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace {
        let kept = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        *target = Value::Array(kept);
        return;
    }
    if merges_as_set(field) {
        let list = target.as_array_mut();
        if let Some(list) = list {
            for item in items {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
            return;
        }
    }
    let Some(key) = merge_key(field, items) else {
        *target = Value::Array(items.to_vec());
        return;
    };
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let Some(list) = target.as_array_mut() else {
        return;
    };
    for item in items {
        let id = item.get(key);
        let position = list.iter().position(|existing| existing.get(key) == id);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item, field),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item, field);
                list.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}}}})
    }

    #[test]
    fn strategic_patches_merge_containers_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "2"}]}
        ]}}}});
        let out = apply(PatchKind::Strategic, &deployment(), &patch).unwrap_or_default();
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().map(Vec::len), Some(2));
        assert_eq!(containers[0]["image"], "a:1");
        assert_eq!(containers[0]["env"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn strategic_delete_directives_remove_list_items() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "side", "$patch": "delete"}]
        }}}});
        let out = apply(PatchKind::Strategic, &deployment(), &patch).unwrap_or_default();
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn merge_patches_replace_lists_and_delete_nulls() {
        let patch = json!({"spec": {"replicas": null, "template": {"spec": {"containers": []}}}});
        let out = apply(PatchKind::Merge, &deployment(), &patch).unwrap_or_default();
        assert!(out["spec"].get("replicas").is_none());
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([]));
    }

    #[test]
    fn a_failing_json_patch_is_invalid() {
        let patch = json!([{"op": "test", "path": "/spec/replicas", "value": 5}]);
        let err = apply(PatchKind::Json, &deployment(), &patch).err();
        assert_eq!(err.map(|e| e.code), Some(422));
    }
}
