//! What a request asks for: the path parsed into a discovery document or a resource target,
//! the verb Kubernetes would name it by, and the query parameters. Nothing here reads the store.

use std::collections::HashMap;

use hyper::Method;

use super::status::ApiError;
use crate::resources::ResourceType;

/// A resource (or subresource) the request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource type.
    pub resource: &'static ResourceType,
    /// The namespace from the path; `None` means all namespaces (or a cluster-scoped type).
    pub namespace: Option<String>,
    /// The object name, absent for collection requests.
    pub name: Option<String>,
    /// The subresource, such as `scale` or `status`.
    pub subresource: Option<String>,
}

/// What the path names.
#[derive(Debug, Clone)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    Resources {
        /// API group; "" for core.
        group: String,
        /// Version.
        version: String,
    },
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/openapi/v3` (the index) or `/openapi/v3/{api/v1 | apis/group/version}`.
    OpenApiV3(Option<String>),
    /// An object or collection.
    Resource(Target),
}

/// The Kubernetes verb of a resource request (as audit logs and RBAC name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// The lower-case name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
        }
    }

    /// The verb of a request to `target`.
    pub fn of(method: &Method, target: &Target, query: &Query) -> Result<Self, ApiError> {
        let named = target.name.is_some();
        Ok(match (method.as_str(), named) {
            ("GET" | "HEAD", true) if query.is_watch() => Self::Watch,
            ("GET" | "HEAD", true) => Self::Get,
            ("GET" | "HEAD", false) if query.is_watch() => Self::Watch,
            ("GET" | "HEAD", false) => Self::List,
            ("POST", false) => Self::Create,
            ("PUT", true) => Self::Update,
            ("PATCH", true) => Self::Patch,
            ("DELETE", true) => Self::Delete,
            ("DELETE", false) => Self::DeleteCollection,
            (m, _) => return Err(ApiError::method_not_allowed(m, target.resource.plural)),
        })
    }
}

/// Decoded query parameters.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses a raw query string, percent-decoding keys and values.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(decode(k), decode(v));
        }
        Self(map)
    }

    /// A parameter, when present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A parameter, or "" when absent.
    pub fn str(&self, key: &str) -> &str {
        self.get(key).unwrap_or_default()
    }

    /// A boolean parameter (`1`, `true`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True"))
    }

    /// Whether `watch` is set.
    pub fn is_watch(&self) -> bool {
        self.flag("watch")
    }
}

fn decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Route {
    /// Parses a request path.
    ///
    /// # Errors
    /// 404 `NotFound` for paths and resource types the server does not serve.
    pub fn parse(path: &str) -> Result<Self, ApiError> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, rest) = match segments.as_slice() {
            ["version"] => return Ok(Self::Version),
            ["healthz" | "livez" | "readyz", ..] => return Ok(Self::Health),
            ["openapi", "v3"] => return Ok(Self::OpenApiV3(None)),
            ["openapi", "v3", rest @ ..] => return Ok(Self::OpenApiV3(Some(rest.join("/")))),
            ["api"] => return Ok(Self::CoreVersions),
            ["apis"] => return Ok(Self::Groups),
            ["apis", group] => return Ok(Self::Group((*group).to_string())),
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::no_route()),
        };
        let served = |plural: &str| {
            ResourceType::find(group, version, plural).ok_or_else(ApiError::no_route)
        };
        let target =
            |resource, namespace: Option<&str>, name: Option<&&str>, sub: Option<&&str>| Target {
                resource,
                namespace: namespace.map(str::to_string),
                name: name.map(|n| (*n).to_string()),
                subresource: sub.map(|s| (*s).to_string()),
            };
        let target = match rest {
            [] => {
                return Ok(Self::Resources {
                    group: group.to_string(),
                    version: version.to_string(),
                });
            }
            ["namespaces", ns, plural, more @ ..] if !matches!(*plural, "status" | "finalize") => {
                let resource = served(plural)?;
                if !resource.namespaced || more.len() > 2 {
                    return Err(ApiError::no_route());
                }
                target(resource, Some(ns), more.first(), more.get(1))
            }
            [plural, more @ ..] if more.len() <= 2 => {
                let resource = served(plural)?;
                if resource.namespaced && !more.is_empty() {
                    return Err(ApiError::no_route());
                }
                target(resource, None, more.first(), more.get(1))
            }
            _ => return Err(ApiError::no_route()),
        };
        if let Some(sub) = &target.subresource
            && target.resource.subresource(sub).is_none()
        {
            return Err(ApiError::no_route());
        }
        Ok(Self::Resource(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Option<Target> {
        match Route::parse(path) {
            Ok(Route::Resource(t)) => Some(t),
            _ => None,
        }
    }

    #[test]
    fn namespaced_subresource_paths_are_understood() {
        let t = target("/apis/apps/v1/namespaces/default/deployments/web/scale");
        let t = t.expect("a target");
        assert_eq!(t.resource.plural, "deployments");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("scale"));
    }

    #[test]
    fn a_namespace_and_its_status_are_cluster_scoped_paths() {
        let ns = target("/api/v1/namespaces/default").expect("a target");
        assert_eq!(ns.resource.plural, "namespaces");
        assert_eq!(ns.name.as_deref(), Some("default"));
        let status = target("/api/v1/namespaces/default/status").expect("a target");
        assert_eq!(status.subresource.as_deref(), Some("status"));
    }

    #[test]
    fn unknown_resources_are_not_found() {
        let err = Route::parse("/apis/apps/v1/namespaces/default/replicasets").err();
        assert_eq!(err.map(|e| e.code), Some(404));
        assert!(target("/apis/apps/v1/namespaces/default/deployments/web/bogus").is_none());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1"));
        assert_eq!(q.str("labelSelector"), "app=web,tier in (a)");
        assert!(q.is_watch());
    }
}
