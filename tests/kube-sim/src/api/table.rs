//! Server-side printing. A read whose `Accept` asks for `application/json;as=Table;v=v1;g=meta.k8s.io`
//! (or `v1beta1`), as `kubectl get` does when it prints for people, is answered with a
//! `meta.k8s.io` `Table`: the kind's column definitions and one row per object, each row
//! carrying the object as `PartialObjectMetadata` by default (`includeObject=Metadata`), whole
//! (`Object`) or not at all (`None`). On a watch each event's object is a one-row `Table`, and
//! only the first carries the column definitions, as the API server does. The columns of each
//! kind are in `columns`, the cells of each row in `cells`.

mod age;
mod cells;
mod columns;

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::request::Query;
use super::status::ApiError;
use super::{Body, convert, full};
use crate::resources::ResourceType;

/// What each row carries of its object (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// Nothing.
    None,
    /// Its metadata, as a `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// A request for `Table` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFormat {
    /// `v1` or `v1beta1` of `meta.k8s.io`.
    version: &'static str,
    /// What rows carry of their objects.
    include: Include,
}

/// The `meta.k8s.io` version of the first media type in `accept` that the server can answer,
/// when that is a `Table`; `None` when it is anything else (JSON, YAML, protobuf, `*/*`).
fn table_version(accept: &str) -> Option<&'static str> {
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let mime = parts.next().unwrap_or_default();
        let mut params = Map::new();
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                params.insert(key.trim().to_string(), json!(value.trim()));
            }
        }
        let table = params.get("as").and_then(Value::as_str) == Some("Table")
            && params.get("g").and_then(Value::as_str) == Some("meta.k8s.io");
        match (mime, params.get("v").and_then(Value::as_str)) {
            ("application/json", Some("v1")) if table => return Some("v1"),
            ("application/json", Some("v1beta1")) if table => return Some("v1beta1"),
            // A media type asking for another form (`as=…`) is not one the server offers.
            _ if params.contains_key("as") => continue,
            _ => return None,
        }
    }
    None
}

impl TableFormat {
    /// The format a read asks for: `Some` when `accept` prefers a `Table`.
    ///
    /// # Errors
    /// 400 for an `includeObject` other than `None`, `Metadata` or `Object`.
    pub fn negotiate(accept: &str, query: &Query) -> Result<Option<Self>, ApiError> {
        let Some(version) = table_version(accept) else {
            return Ok(None);
        };
        let include = match query.get("includeObject") {
            None | Some("" | "Metadata") => Include::Metadata,
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
                )));
            }
        };
        Ok(Some(Self { version, include }))
    }

    /// `meta.k8s.io/v1` (or `v1beta1`).
    fn api_version(self) -> String {
        format!("meta.k8s.io/{}", self.version)
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self.version {
            "v1beta1" => "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            _ => "application/json;as=Table;v=v1;g=meta.k8s.io",
        })
    }

    /// A `Table` of `objects` (in their stored form) of `resource` at `resource_version`, with
    /// the column definitions unless `headers` is false.
    pub fn table<'a>(
        self,
        resource: &'static ResourceType,
        objects: impl IntoIterator<Item = &'a Value>,
        resource_version: &str,
        headers: bool,
    ) -> Value {
        let rows: Vec<Value> = objects
            .into_iter()
            .map(|object| self.row(resource, object))
            .collect();
        // Without headers the field is null, as Go encodes the empty slice.
        let columns = if headers {
            columns::column_definitions(resource.kind)
        } else {
            Value::Null
        };
        json!({
            "kind": "Table",
            "apiVersion": self.api_version(),
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns,
            "rows": rows,
        })
    }

    fn row(self, resource: &'static ResourceType, stored: &Value) -> Value {
        let (cells, conditions) = cells::cells(resource.kind, stored);
        let object = match self.include {
            Include::None => Value::Null,
            Include::Object => convert::present(resource, stored).into_owned(),
            Include::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": self.api_version(),
                "metadata": stored.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }),
        };
        let mut row = json!({"cells": cells, "object": object});
        if let Some(conditions) = conditions {
            row["conditions"] = conditions;
        }
        row
    }

    /// A response holding `table`.
    pub fn response(self, table: &Value) -> Response<Body> {
        let mut response = Response::new(full(serde_json::to_vec(table).unwrap_or_default()));
        *response.status_mut() = StatusCode::OK;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, self.content_type());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_accept_header_prefers_a_v1_table() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(table_version(kubectl), Some("v1"));
        assert_eq!(
            table_version("application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json"),
            Some("v1beta1")
        );
        assert_eq!(table_version("application/json"), None);
        assert_eq!(
            table_version("application/json, application/json;as=Table;v=v1;g=meta.k8s.io"),
            None,
            "the first acceptable type wins"
        );
        assert_eq!(
            table_version(
                "application/json;as=Table;v=v2;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io"
            ),
            Some("v1"),
            "an unknown version is skipped"
        );
    }

    #[test]
    fn rows_carry_partial_object_metadata_unless_asked_otherwise() {
        let lease = crate::store::resource("coordination.k8s.io", "leases");
        let object =
            json!({"metadata": {"name": "a", "uid": "u"}, "spec": {"holderIdentity": "x"}});
        let format = |query: &str| {
            TableFormat::negotiate(
                "application/json;as=Table;v=v1;g=meta.k8s.io",
                &Query::parse(Some(query)),
            )
            .ok()
            .flatten()
            .expect("a table format")
        };
        let table = format("").table(lease, [&object], "7", true);
        assert_eq!(table["rows"][0]["cells"][1], "x");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(table["rows"][0]["object"]["metadata"]["uid"], "u");
        assert_eq!(table["columnDefinitions"][1]["name"], "Holder");
        let whole = format("includeObject=Object").table(lease, [&object], "7", false);
        assert_eq!(whole["rows"][0]["object"]["spec"]["holderIdentity"], "x");
        assert!(whole["columnDefinitions"].is_null());
        assert!(
            TableFormat::negotiate(
                "application/json;as=Table;v=v1;g=meta.k8s.io",
                &Query::parse(Some("includeObject=All"))
            )
            .is_err()
        );
    }
}
