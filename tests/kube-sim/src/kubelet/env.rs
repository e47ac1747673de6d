//! The environment of a container process, as the kubelet builds it: the container's `env` in
//! order, literal values and downward-API `fieldRef`s, with `$(VAR)` references to the
//! variables before them expanded (as Kubernetes also expands `command` and `args`); on top of
//! what kube-sim adds in place of what a node provides: `POD_IP`, `POD_NAME`, `POD_NAMESPACE`,
//! `HOSTNAME`, and `KUBECONFIG`, a kubeconfig for the simulator standing in for the in-cluster
//! service-account configuration. Values from ConfigMaps and Secrets are not resolved.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::Value;

use super::NODE_NAME;
use crate::meta;

/// Variables by name, in the order they were defined; a later definition wins.
pub(crate) type Vars = Vec<(String, String)>;

/// What kube-sim sets in every container of `pod` at `ip`, with the kubeconfig at `kubeconfig`,
/// before the container's own `env`.
pub(crate) fn node_env(pod: &Value, ip: Ipv4Addr, kubeconfig: &Path) -> Vars {
    let name = meta::name(pod).to_string();
    vec![
        ("POD_IP".into(), ip.to_string()),
        ("POD_NAME".into(), name.clone()),
        ("POD_NAMESPACE".into(), meta::namespace(pod).to_string()),
        ("HOSTNAME".into(), name),
        ("KUBECONFIG".into(), kubeconfig.display().to_string()),
    ]
}

/// The variables `container` of `pod` at `ip` defines, in order. These (and not what kube-sim
/// adds) are what `$(VAR)` in its `env`, `command` and `args` may refer to.
pub(crate) fn container_env(pod: &Value, container: &Value, ip: Ipv4Addr) -> Vars {
    let mut defined: Vars = Vec::new();
    for var in container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let value = match var
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            Some(path) => field(pod, path, ip).unwrap_or_default(),
            None => expand(meta::str_at(var, "/value"), &defined),
        };
        defined.push((meta::str_at(var, "/name").to_string(), value));
    }
    defined
}

/// The value of a downward-API field of `pod` at `ip`; `None` for a path Kubernetes does not
/// offer.
fn field(pod: &Value, path: &str, ip: Ipv4Addr) -> Option<String> {
    let keyed = |prefix: &str, map: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            meta::str_at(
                &pod["metadata"][map],
                &format!("/{}", key.replace('~', "~0").replace('/', "~1")),
            )
            .to_string(),
        )
    };
    Some(match path {
        "metadata.name" => meta::name(pod).to_string(),
        "metadata.namespace" => meta::namespace(pod).to_string(),
        "metadata.uid" => meta::uid(pod).to_string(),
        "spec.nodeName" => NODE_NAME.to_string(),
        "spec.serviceAccountName" => match meta::str_at(pod, "/spec/serviceAccountName") {
            "" => "default".to_string(),
            account => account.to_string(),
        },
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_string(),
        "status.podIP" | "status.podIPs" => ip.to_string(),
        _ => {
            return keyed("metadata.labels['", "labels")
                .or_else(|| keyed("metadata.annotations['", "annotations"));
        }
    })
}

/// Expands `$(NAME)` references to `vars`, as Kubernetes does in `command`, `args` and `env`
/// values: `$$` is a literal `$`, and a reference to an undefined variable stays as written.
pub(crate) fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
            && let Some((_, value)) = vars.iter().rev().find(|(n, _)| n == name)
        {
            out.push_str(value);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_expand_to_defined_variables_only() {
        let vars = vec![("POD_IP".to_string(), "127.0.0.5".to_string())];
        assert_eq!(
            expand("--listen=$(POD_IP):8080", &vars),
            "--listen=127.0.0.5:8080"
        );
        assert_eq!(expand("$(NOPE) $$(POD_IP) $", &vars), "$(NOPE) $(POD_IP) $");
    }

    #[test]
    fn the_downward_api_and_earlier_variables_fill_the_environment() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {},
        });
        let container = json!({"env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/name']"}}},
            {"name": "ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "LISTEN", "value": "$(NAME).$(POD_NAMESPACE):80"},
        ]});
        let ip = Ipv4Addr::new(127, 0, 0, 5);
        let mut vars = node_env(&pod, ip, Path::new("/tmp/kubeconfig"));
        vars.extend(container_env(&pod, &container, ip));
        let get = |name: &str| {
            vars.iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("NAME"), Some("web-1"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("ACCOUNT"), Some("default"));
        assert_eq!(
            get("LISTEN"),
            Some("web-1.$(POD_NAMESPACE):80"),
            "only the container's own earlier variables can be referred to"
        );
        assert_eq!(get("KUBECONFIG"), Some("/tmp/kubeconfig"));
    }
}
