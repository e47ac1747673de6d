//! API errors and their one rendering as a `metav1.Status` object with the HTTP code and
//! `reason` Kubernetes uses for each failure.

use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::selector::SelectorError;
use crate::store::{Key, StoreError};

/// A failed API request, rendered as a `Status`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code, also `Status.code`.
    pub code: u16,
    /// `Status.reason`, such as `NotFound` or `Conflict`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `Status.details`, when the failure concerns one object.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error without details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 404 NotFound for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(verb: &str, what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({verb} {what})"
            ),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// 409 Conflict: the object changed since the version the client sent.
    pub fn conflict(key: &Key) -> Self {
        Self::with_details(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
                key.resource.qualified(),
                key.name
            ),
            key.resource,
            &key.name,
        )
    }

    /// 500 with no reason: what the API server answers for a failure that is not a Status
    /// (its `StatusReasonUnknown`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    /// 422 Invalid.
    pub fn invalid(resource: &ResourceType, name: &str, message: impl Into<String>) -> Self {
        let message = format!(
            "{} {:?} is invalid: {}",
            resource.kind,
            name,
            message.into()
        );
        Self::with_details(422, "Invalid", message, resource, name)
    }

    /// 410 Expired, sent in a watch `ERROR` event when the requested version is too old.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    fn with_details(
        code: u16,
        reason: &'static str,
        message: String,
        resource: &ResourceType,
        name: &str,
    ) -> Self {
        Self {
            details: Some(json!({
                "name": name,
                "group": resource.group,
                "kind": resource.plural,
            })),
            ..Self::new(code, reason, message)
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty()
            && let Some(map) = status.as_object_mut()
        {
            // An unknown reason is empty, which Go leaves out.
            map.remove("reason");
        }
        let mut details = self.details.clone();
        if let Some(secs) = self.retry_after {
            let d = details.get_or_insert_with(|| json!({}));
            d["retryAfterSeconds"] = json!(secs);
        }
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::NotFound(key) => {
                Self::with_details(404, "NotFound", error.to_string(), key.resource, &key.name)
            }
            StoreError::AlreadyExists(key) => Self::with_details(
                409,
                "AlreadyExists",
                error.to_string(),
                key.resource,
                &key.name,
            ),
            StoreError::NamespaceNotFound(ns) => Self {
                details: Some(json!({"name": ns, "kind": "namespaces"})),
                ..Self::new(404, "NotFound", error.to_string())
            },
            StoreError::NameRequired => Self::new(
                422,
                "Invalid",
                "metadata.name: Required value: name or generateName is required",
            ),
            StoreError::Expired { .. } => Self::expired(error.to_string()),
        }
    }
}

impl From<SelectorError> for ApiError {
    fn from(error: SelectorError) -> Self {
        Self::bad_request(error.to_string())
    }
}

/// The `Status` a successful delete of a non-graceful object answers with.
pub fn deleted(key: &Key, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": key.name,
            "group": key.resource.group,
            "kind": key.resource.plural,
            "uid": uid,
        }
    })
}
