//! Reads: get of one object (and its `status`, `scale` and `log` subresources) and list of a
//! collection filtered by label and field selectors, as JSON or, when asked, as a `Table`.

use std::sync::Arc;

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::request::{Query, Target};
use super::status::ApiError;
use super::table::TableFormat;
use super::{Body, Call, Context, convert, full, json_response, scale};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Key;

/// The store key of a named target.
pub fn key(target: &Target) -> Key {
    Key::new(
        target.resource,
        target.namespace.as_deref().unwrap_or_default(),
        target.name.as_deref().unwrap_or_default(),
    )
}

/// Label and field selectors of a list or watch, matched against stored objects.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
    namespace: Option<String>,
}

/// Fields each kind can be selected on, beyond `metadata.name` and `metadata.namespace`.
fn selectable_fields(resource: &ResourceType) -> &'static [&'static str] {
    match (resource.group, resource.kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", _) => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "Namespace") => &["status.phase"],
        _ => &[],
    }
}

impl Filter {
    /// The filter a request's path and query describe.
    ///
    /// # Errors
    /// 400 for selectors that do not parse or name unsupported fields.
    pub fn new(target: &Target, query: &Query) -> Result<Self, ApiError> {
        let mut supported = vec!["metadata.name", "metadata.namespace"];
        supported.extend_from_slice(selectable_fields(target.resource));
        let mut fields = query.str("fieldSelector").to_string();
        if let Some(name) = &target.name {
            // The deprecated watch of a single object by path.
            fields = if fields.is_empty() {
                format!("metadata.name={name}")
            } else {
                format!("{fields},metadata.name={name}")
            };
        }
        Ok(Self {
            labels: LabelSelector::parse(query.str("labelSelector"))?,
            fields: FieldSelector::parse(&fields, &supported)?
                .relabelled(|label| convert::field_label(target.resource, label)),
            namespace: target.namespace.clone(),
        })
    }

    /// Whether an object passes.
    pub fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| crate::meta::namespace(object) == ns)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// GET of one object or subresource.
pub fn get(context: &Context, call: &Call) -> Result<Response<Body>, ApiError> {
    let key = key(&call.target);
    let object = context
        .store
        .get(&key)
        .ok_or_else(|| crate::store::StoreError::NotFound(key.clone()))?;
    match call.target.subresource.as_deref() {
        Some("scale") => Ok(json_response(StatusCode::OK, &scale::to_scale(&object))),
        Some("log") => {
            let log = context.processes.log(&key.namespace, &key.name);
            let mut response = Response::new(full(log));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(response)
        }
        Some(_) => Ok(json_response(
            StatusCode::OK,
            &convert::present(call.target.resource, &object),
        )),
        None => match TableFormat::negotiate(&call.accept, &call.query)? {
            Some(format) => {
                let rv = crate::meta::str_at(&object, "/metadata/resourceVersion");
                let table = format.table(call.target.resource, [&*object], rv, true);
                Ok(format.response(&table))
            }
            None => Ok(json_response(
                StatusCode::OK,
                &convert::present(call.target.resource, &object),
            )),
        },
    }
}

/// The objects a list or watch of `target` starts from (as stored), and the version they are
/// at.
pub fn matching(context: &Context, call: &Call, filter: &Filter) -> (Vec<Arc<Value>>, u64) {
    let (items, rv) = context
        .store
        .list(call.target.resource, call.target.namespace.as_deref());
    (
        items.into_iter().filter(|o| filter.matches(o)).collect(),
        rv,
    )
}

/// GET of a collection.
pub fn list(context: &Context, call: &Call) -> Result<Response<Body>, ApiError> {
    let filter = Filter::new(&call.target, &call.query)?;
    let (items, rv) = matching(context, call, &filter);
    let resource = call.target.resource;
    if let Some(format) = TableFormat::negotiate(&call.accept, &call.query)? {
        let table = format.table(resource, items.iter().map(|o| &**o), &rv.to_string(), true);
        return Ok(format.response(&table));
    }
    let list = json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items
            .iter()
            .map(|o| convert::present(resource, o).into_owned())
            .collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, &list))
}
