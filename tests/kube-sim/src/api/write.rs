//! Writes: create (with `generateName` and 409 `AlreadyExists`), update (409 `Conflict` on a
//! stale `metadata.resourceVersion`), patch (every patch type), delete (graceful for pods,
//! finalizer-aware) and delete-collection, for objects and their `status` and `scale`
//! subresources.

use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::patch::{self, PatchKind};
use super::read::{Filter, key, matching};
use super::status::{self, ApiError};
use super::{Body, Call, Context, convert, defaults, json_response, scale};
use crate::lifecycle::{self, Deleted};
use crate::meta;
use crate::resources::ResourceType;
use crate::store::{Key, Store};

fn check_type(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let api_version = resource.api_version();
    for (field, expected) in [
        ("apiVersion", api_version.as_str()),
        ("kind", resource.kind),
    ] {
        match object.get(field).and_then(Value::as_str) {
            None | Some("") => object[field] = json!(expected),
            Some(sent) if sent == expected => {}
            Some(sent) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({sent}) does not match the expected API version ({expected})"
                )));
            }
        }
    }
    Ok(())
}

fn check_namespace(
    resource: &ResourceType,
    call: &Call,
    object: &mut Value,
) -> Result<(), ApiError> {
    if !resource.namespaced {
        return Ok(());
    }
    let path_ns = call.target.namespace.clone().unwrap_or_default();
    let sent = meta::namespace(object).to_string();
    if !sent.is_empty() && !path_ns.is_empty() && sent != path_ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let ns = if path_ns.is_empty() { sent } else { path_ns };
    meta::metadata_mut(object).insert("namespace".into(), json!(ns));
    Ok(())
}

fn conflict_on_stale(key: &Key, sent: &Value, current: &Value) -> Result<(), ApiError> {
    let sent = meta::str_at(sent, "/metadata/resourceVersion");
    if !sent.is_empty() && sent != meta::str_at(current, "/metadata/resourceVersion") {
        return Err(ApiError::conflict(key));
    }
    Ok(())
}

/// The object to store when `incoming` (as `resource` presents it) is written to `current` (as
/// stored) through `subresource`.
fn merge_write(
    resource: &'static ResourceType,
    subresource: Option<&str>,
    current: &Value,
    mut incoming: Value,
) -> Result<Value, ApiError> {
    match subresource {
        Some("scale") => scale::apply_scale(current, &incoming),
        Some("status") => {
            let mut next = current.clone();
            next["status"] = incoming.get("status").cloned().unwrap_or(json!({}));
            Ok(next)
        }
        _ => {
            check_type(resource, &mut incoming)?;
            let mut incoming = convert::to_storage(resource, incoming);
            let resource = resource.storage();
            if resource.subresource("status").is_some() {
                match current.get("status") {
                    Some(s) => incoming["status"] = s.clone(),
                    None => {
                        if let Some(map) = incoming.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            let md = meta::metadata_mut(&mut incoming);
            for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
                match current["metadata"].get(field) {
                    Some(v) => md.insert(field.into(), v.clone()),
                    None => md.remove(field),
                };
            }
            defaults::apply(resource, &mut incoming)?;
            Ok(incoming)
        }
    }
}

/// What a successful write answers with: the object as the request's API presents it, or its
/// `Scale` view.
fn written(call: &Call, code: StatusCode, object: &Value) -> Response<Body> {
    match call.target.subresource.as_deref() {
        Some("scale") => json_response(code, &scale::to_scale(object)),
        _ => json_response(code, &convert::present(call.target.resource, object)),
    }
}

/// Removes an object whose deletion was waiting only for finalizers that are now gone.
fn finish_if_finalized(store: &Store, key: &Key, object: &Value) {
    let finalizers_left = object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let waits_elsewhere = key.resource.graceful_delete || key.resource.kind == "Namespace";
    if meta::is_terminating(object) && !finalizers_left && !waits_elsewhere {
        let _ = store.remove(key);
    }
}

/// Validates, defaults and stores a new object, returning it as stored.
fn create_value(context: &Context, call: &Call, mut object: Value) -> Result<Value, ApiError> {
    let resource = call.target.resource;
    check_type(resource, &mut object)?;
    check_namespace(resource, call, &mut object)?;
    let mut object = convert::to_storage(resource, object);
    let resource = resource.storage();
    if resource.subresource("status").is_some()
        && resource.kind != "Namespace"
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    // As etcd3's store: a resourceVersion that parses to a non-zero number is refused with a
    // 500 (the message is not a Status), anything else is dropped.
    let sent = meta::str_at(&object, "/metadata/resourceVersion");
    if sent.parse::<u64>().is_ok_and(|rv| rv != 0) {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    meta::metadata_mut(&mut object).remove("resourceVersion");
    defaults::apply(resource, &mut object)?;
    Ok((*context.store.create(resource, object)?).clone())
}

fn create_object(
    context: &Context,
    call: &Call,
    object: Value,
) -> Result<Response<Body>, ApiError> {
    let created = create_value(context, call, object)?;
    Ok(written(call, StatusCode::CREATED, &created))
}

/// POST to a collection.
pub fn create(context: &Context, call: &Call) -> Result<Response<Body>, ApiError> {
    if call.target.subresource.is_some() {
        return Err(ApiError::method_not_allowed("POST", &call.resource_key()));
    }
    create_object(context, call, call.json_body()?)
}

/// PUT of an object or subresource.
pub fn update(context: &Context, call: &Call) -> Result<Response<Body>, ApiError> {
    let key = key(&call.target);
    let body = call.json_body()?;
    let sent_name = meta::name(&body);
    if !sent_name.is_empty() && sent_name != key.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({sent_name}) does not match the name on the URL ({})",
            key.name
        )));
    }
    let subresource = call.target.subresource.as_deref();
    let updated = context.store.modify(&key, |current| {
        conflict_on_stale(&key, &body, current)?;
        take_injected_conflict(context, &key)?;
        merge_write(call.target.resource, subresource, current, body.clone()).map(Some)
    })?;
    finish_if_finalized(&context.store, &key, &updated);
    Ok(written(call, StatusCode::OK, &updated))
}

fn take_injected_conflict(context: &Context, key: &Key) -> Result<(), ApiError> {
    if context
        .faults
        .take_conflict(key.resource.plural, &key.namespace, &key.name)
    {
        return Err(ApiError::conflict(key));
    }
    Ok(())
}

/// PATCH of an object or subresource.
pub fn patch(context: &Context, call: &Call) -> Result<Response<Body>, ApiError> {
    let kind = PatchKind::from_content_type(&call.content_type)?;
    let body = kind.parse_body(&call.body)?;
    let key = key(&call.target);
    let subresource = call.target.subresource.as_deref();
    if kind == PatchKind::Apply && subresource.is_none() && context.store.get(&key).is_none() {
        let mut object = body;
        meta::metadata_mut(&mut object).insert("name".into(), json!(key.name));
        return create_object(context, call, object);
    }
    let updated = context.store.modify(&key, |current| {
        let base = match subresource {
            Some("scale") => scale::to_scale(current),
            _ => convert::present(call.target.resource, current).into_owned(),
        };
        let patched = patch::apply(kind, &base, &body)?;
        conflict_on_stale(&key, &patched, &base)?;
        take_injected_conflict(context, &key)?;
        merge_write(call.target.resource, subresource, current, patched).map(Some)
    })?;
    finish_if_finalized(&context.store, &key, &updated);
    Ok(written(call, StatusCode::OK, &updated))
}

struct DeleteOptions {
    grace: Option<i64>,
    uid: String,
    resource_version: String,
}

impl DeleteOptions {
    fn new(call: &Call) -> Result<Self, ApiError> {
        let body = if call.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            call.json_body()?
        };
        let grace = call
            .query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| body.get("gracePeriodSeconds").and_then(Value::as_i64));
        Ok(Self {
            grace,
            uid: meta::str_at(&body, "/preconditions/uid").to_string(),
            resource_version: meta::str_at(&body, "/preconditions/resourceVersion").to_string(),
        })
    }
}

/// Deletes one object by the API server's rules; the response body is the object (graceful
/// or finalizer-held deletions) or a success `Status`.
fn delete_one(context: &Context, key: &Key, options: &DeleteOptions) -> Result<Value, ApiError> {
    let store = &context.store;
    let current = store
        .get(key)
        .ok_or_else(|| crate::store::StoreError::NotFound(key.clone()))?;
    let precondition_failed = |what: &str, sent: &str, actual: &str| {
        let mut error = ApiError::conflict(key);
        error.message = format!(
            "Precondition failed: {what} in precondition: {sent}, {what} in object meta: {actual}"
        );
        error
    };
    if !options.uid.is_empty() && options.uid != meta::uid(&current) {
        return Err(precondition_failed(
            "UID",
            &options.uid,
            meta::uid(&current),
        ));
    }
    let rv = meta::str_at(&current, "/metadata/resourceVersion");
    if !options.resource_version.is_empty() && options.resource_version != rv {
        return Err(precondition_failed(
            "ResourceVersion",
            &options.resource_version,
            rv,
        ));
    }
    match lifecycle::delete(store, key, options.grace)? {
        Deleted::Marked(object) => Ok((*object).clone()),
        Deleted::Removed(object) if key.resource.graceful_delete => Ok((*object).clone()),
        Deleted::Removed(object) => Ok(status::deleted(key, meta::uid(&object))),
    }
}

/// DELETE of one object.
pub fn delete(context: &Context, call: &Call) -> Result<Response<Body>, ApiError> {
    if call.target.subresource.is_some() {
        return Err(ApiError::method_not_allowed("DELETE", &call.resource_key()));
    }
    let options = DeleteOptions::new(call)?;
    let body = delete_one(context, &key(&call.target), &options)?;
    let body = match body["kind"].as_str() {
        Some("Status") => body,
        _ => convert::present(call.target.resource, &body).into_owned(),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// DELETE of a collection, filtered by the selectors.
pub fn delete_collection(context: &Context, call: &Call) -> Result<Response<Body>, ApiError> {
    let options = DeleteOptions::new(call)?;
    let filter = Filter::new(&call.target, &call.query)?;
    let (items, rv) = matching(context, call, &filter);
    let mut deleted = Vec::new();
    for item in items {
        let key = Key::new(
            call.target.resource,
            meta::namespace(&item),
            meta::name(&item),
        );
        match delete_one(context, &key, &options) {
            Ok(_) => deleted.push(convert::present(call.target.resource, &item).into_owned()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let resource = call.target.resource;
    let list = json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": deleted,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// Creates `object`, or replaces the existing object of that name (keeping its status), as
/// `kubectl apply` would for a whole manifest, returning it as stored. Namespaced objects
/// without a namespace go to `default`.
///
/// # Errors
/// 404 for kinds the simulator does not serve, or any error create or update would give.
pub fn apply(context: &Context, mut object: Value) -> Result<Value, ApiError> {
    let api_version = meta::str_at(&object, "/apiVersion").to_string();
    let kind = meta::str_at(&object, "/kind").to_string();
    let resource = ResourceType::by_kind(&api_version, &kind).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("no resource for {api_version} {kind}"),
        )
    })?;
    let namespace = match (resource.namespaced, meta::namespace(&object)) {
        (false, _) => None,
        (true, "") => Some("default".to_string()),
        (true, ns) => Some(ns.to_string()),
    };
    let name = meta::name(&object).to_string();
    if let Some(ns) = &namespace {
        meta::metadata_mut(&mut object).insert("namespace".into(), json!(ns));
    }
    let call = Call {
        target: super::request::Target {
            resource,
            namespace,
            name: (!name.is_empty()).then_some(name),
            subresource: None,
        },
        verb: super::request::Verb::Create,
        query: super::request::Query::default(),
        content_type: "application/json".into(),
        accept: "application/json".into(),
        body: bytes::Bytes::new(),
    };
    let key = key(&call.target);
    meta::metadata_mut(&mut object).remove("resourceVersion");
    if call.target.name.is_none() || context.store.get(&key).is_none() {
        return create_value(context, &call, object);
    }
    let updated = context.store.modify(&key, |current| {
        merge_write(resource, None, current, object.clone()).map(Some)
    })?;
    Ok((*updated).clone())
}
