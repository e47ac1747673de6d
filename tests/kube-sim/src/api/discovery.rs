//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/{group}`, `/api/v1` and
//! `/apis/{group}/{version}` (with subresources), in the legacy (unaggregated) form. Clients
//! asking for aggregated discovery get these plain documents, which kubectl and kube-rs accept
//! as the signal to fall back to per-group discovery.

use hyper::header::HeaderMap;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::request::Route;
use super::status::ApiError;
use super::{Body, Context, json_response};
use crate::resources::{GROUPS, ResourceType};

/// The Kubernetes version the simulator claims to be.
pub const VERSION: (&str, &str) = ("1", "34");

fn group_entry(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let served = group.is_empty() && version == "v1"
        || GROUPS.iter().any(|(g, v)| *g == group && *v == version);
    if !served {
        return None;
    }
    let mut resources = Vec::new();
    for r in ResourceType::in_group_version(group, version) {
        resources.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
            "shortNames": r.short_names,
        }));
        for sub in r.subresources {
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": if sub.kind.is_empty() { r.kind } else { sub.kind },
                "verbs": sub.verbs,
            });
            if let (Some(g), Some(v)) = (sub.group, sub.version) {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Answers a discovery path.
///
/// # Errors
/// 404 for groups and versions the simulator does not serve.
pub fn document(context: &Context, route: &Route, _headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let body = match route {
        Route::Version => json!({
            "major": VERSION.0,
            "minor": VERSION.1,
            "gitVersion": format!("v{}.{}.0-kube-sim", VERSION.0, VERSION.1),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }),
        Route::Health => {
            let mut ok = Response::new(super::full("ok"));
            *ok.status_mut() = StatusCode::OK;
            return Ok(ok);
        }
        Route::CoreVersions => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": context.address}],
        }),
        Route::Groups => json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": GROUPS.iter().map(|(g, v)| group_entry(g, v)).collect::<Vec<_>>(),
        }),
        Route::Group(name) => {
            let (g, v) = GROUPS
                .iter()
                .find(|(g, _)| g == name)
                .ok_or_else(ApiError::no_route)?;
            let mut entry = group_entry(g, v);
            entry["kind"] = json!("APIGroup");
            entry["apiVersion"] = json!("v1");
            entry
        }
        Route::Resources { group, version } => {
            resource_list(group, version).ok_or_else(ApiError::no_route)?
        }
        Route::Resource(_) => return Err(ApiError::no_route()),
    };
    Ok(json_response(StatusCode::OK, &body))
}
