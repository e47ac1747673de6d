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

/// The Kubernetes version the simulator claims to be: within kubectl 1.32's supported skew.
pub const VERSION: (&str, &str) = ("1", "33");

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
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
            "shortNames": r.short_names,
        });
        if !r.categories().is_empty() {
            entry["categories"] = json!(r.categories());
        }
        resources.push(entry);
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
pub fn document(
    context: &Context,
    route: &Route,
    _headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
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
        Route::OpenApiV3(None) => openapi_index(),
        Route::OpenApiV3(Some(group_version)) => {
            openapi_document(group_version).ok_or_else(ApiError::no_route)?
        }
        Route::Resource(_) => return Err(ApiError::no_route()),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Served group versions as OpenAPI v3 path keys (`api/v1`, `apis/apps/v1`) with their group
/// and version.
fn served_group_versions() -> impl Iterator<Item = (String, &'static str, &'static str)> {
    std::iter::once(("api/v1".to_string(), "", "v1")).chain(
        GROUPS
            .iter()
            .map(|(g, v)| (format!("apis/{g}/{v}"), *g, *v)),
    )
}

/// The OpenAPI v3 index: one entry per group version.
fn openapi_index() -> Value {
    let paths: serde_json::Map<String, Value> = served_group_versions()
        .map(|(key, _, _)| {
            let url = format!("/openapi/v3/{key}?hash=kube-sim");
            (key, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// A minimal OpenAPI v3 document for one group version. It carries no schemas: only each
/// object path's PATCH operation with its group-version-kind and the `fieldValidation`
/// parameter, which is what kubectl checks to choose server-side field validation (the
/// simulator accepts and ignores that parameter). Without it `kubectl create` needs
/// `--validate=false`.
fn openapi_document(group_version: &str) -> Option<Value> {
    let (_, group, version) = served_group_versions().find(|(key, _, _)| key == group_version)?;
    let mut paths = serde_json::Map::new();
    for r in ResourceType::in_group_version(group, version) {
        let path = if r.namespaced {
            format!(
                "/{group_version}/namespaces/{{namespace}}/{}/{{name}}",
                r.plural
            )
        } else {
            format!("/{group_version}/{}/{{name}}", r.plural)
        };
        let patch = json!({
            "operationId": format!("patch{}", r.kind),
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
        });
        paths.insert(path, json!({"patch": patch}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", VERSION.0, VERSION.1)},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
