//! Conversion between a resource's stored form and the form an API version presents, for the
//! one resource served through two APIs: an `events.k8s.io/v1` Event is a core `v1` Event
//! seen differently, as in Kubernetes (`pkg/apis/events/v1/conversion.go`). Every other
//! resource is presented as stored.
//!
//! Renamed fields, `events.k8s.io` ↔ core: `note` ↔ `message`, `regarding` ↔ `involvedObject`,
//! `reportingController` ↔ `reportingComponent`, `deprecatedSource` ↔ `source`,
//! `deprecatedFirstTimestamp` / `deprecatedLastTimestamp` ↔ `firstTimestamp` / `lastTimestamp`,
//! `deprecatedCount` ↔ `count`. `eventTime`, `series`, `related`, `reportingInstance`, `action`,
//! `reason`, `type` and `metadata` keep their names.

use std::borrow::Cow;

use serde_json::Value;

use crate::resources::ResourceType;

/// `(events.k8s.io name, core name)` of each renamed field.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// `(events.k8s.io label, core label)` of field selectors that differ, as Kubernetes converts
/// them (`AddFieldLabelConversionsForEvent`).
const EVENT_LABELS: &[(&str, &str)] = &[
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
];

fn is_event_view(resource: &ResourceType) -> bool {
    resource.group == "events.k8s.io" && resource.plural == "events"
}

/// Renames top-level fields `from` → `to` for each pair; a field already named like a target
/// is not a field of the source form and is dropped, as decoding would drop it.
fn rename(object: &mut Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let pairs: Vec<_> = pairs.collect();
    for (_, to) in &pairs {
        map.remove(*to);
    }
    for (from, to) in pairs {
        if let Some(value) = map.remove(from) {
            map.insert(to.to_string(), value);
        }
    }
}

/// A stored object as `resource` presents it.
pub fn present<'a>(resource: &'static ResourceType, stored: &'a Value) -> Cow<'a, Value> {
    if !is_event_view(resource) {
        return Cow::Borrowed(stored);
    }
    let mut view = stored.clone();
    rename(
        &mut view,
        EVENT_FIELDS.iter().map(|(view, core)| (*core, *view)),
    );
    view["apiVersion"] = Value::from(resource.api_version());
    view["kind"] = Value::from(resource.kind);
    Cow::Owned(view)
}

/// The stored form of an object written through `resource` (its `apiVersion` and `kind`
/// already checked).
pub fn to_storage(resource: &'static ResourceType, mut object: Value) -> Value {
    if !is_event_view(resource) {
        return object;
    }
    let storage = resource.storage();
    rename(&mut object, EVENT_FIELDS.iter().copied());
    object["apiVersion"] = Value::from(storage.api_version());
    object["kind"] = Value::from(storage.kind);
    object
}

/// The stored field a field selector label of `resource` selects on.
pub fn field_label<'a>(resource: &ResourceType, label: &'a str) -> &'a str {
    if is_event_view(resource) {
        if let Some((_, core)) = EVENT_LABELS.iter().find(|(view, _)| *view == label) {
            return core;
        }
    } else if resource.group.is_empty() && resource.kind == "Event" && label == "source" {
        // The core label `source` selects on the reporting component.
        return "source.component";
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view() -> &'static ResourceType {
        ResourceType::find("events.k8s.io", "v1", "events").expect("served")
    }

    #[test]
    fn an_events_k8s_io_event_round_trips_through_the_core_form() {
        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2025-01-01T00:00:00.000000Z",
            "note": "scaled", "reason": "Scaled", "type": "Normal", "action": "Scale",
            "regarding": {"kind": "Deployment", "name": "web"},
            "related": {"kind": "Pod", "name": "web-1"},
            "reportingController": "activator", "reportingInstance": "a-1",
            "series": {"count": 2, "lastObservedTime": "2025-01-01T00:00:01.000000Z"},
            "deprecatedCount": 2, "deprecatedSource": {"component": "activator"},
            "deprecatedFirstTimestamp": "2025-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2025-01-01T00:00:01Z",
        });
        let core = to_storage(view(), event.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["message"], "scaled");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["related"]["name"], "web-1");
        assert_eq!(core["reportingComponent"], "activator");
        assert_eq!(core["reportingInstance"], "a-1");
        assert_eq!(core["count"], 2);
        assert_eq!(core["series"]["count"], 2);
        assert_eq!(core["source"]["component"], "activator");
        assert_eq!(core["firstTimestamp"], "2025-01-01T00:00:00Z");
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        assert_eq!(*present(view(), &core), event);
    }

    #[test]
    fn event_field_selectors_select_on_the_stored_fields() {
        assert_eq!(field_label(view(), "regarding.name"), "involvedObject.name");
        assert_eq!(
            field_label(view(), "reportingController"),
            "reportingComponent"
        );
        assert_eq!(field_label(view(), "reason"), "reason");
        let core = view().storage();
        assert_eq!(field_label(core, "source"), "source.component");
        assert_eq!(
            field_label(core, "involvedObject.name"),
            "involvedObject.name"
        );
    }
}
