//! The simulator's own control API under `/sim/`, outside the Kubernetes API: fault rules,
//! one-off faults (closing watches, expiring the history, crashing a pod) and the request
//! counters. These requests are not counted and not subject to faults. The paths are listed in
//! the crate README.

use hyper::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::status::ApiError;
use super::{Body, Context, error_response, json_response};
use crate::faults::{ConflictFault, ErrorFault, FaultRules, Latency};

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn ok() -> Value {
    json!({"ok": true})
}

/// Answers a `/sim/...` request.
pub async fn handle(context: &Context, method: &Method, path: &str, body: &[u8]) -> Response<Body> {
    match route(context, method, path, body) {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(error) => error_response(&error),
    }
}

fn route(context: &Context, method: &Method, path: &str, body: &[u8]) -> Result<Value, ApiError> {
    let faults = &context.faults;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), &segments[1..]) {
        ("GET", ["faults"]) => Ok(json!(faults.snapshot())),
        ("PUT", ["faults"]) => {
            faults.replace(parse::<FaultRules>(body)?);
            Ok(json!(faults.snapshot()))
        }
        ("DELETE", ["faults"]) => {
            faults.clear();
            Ok(ok())
        }
        ("POST", ["faults", "latency"]) => {
            faults.add_latency(parse::<Latency>(body)?);
            Ok(json!(faults.snapshot()))
        }
        ("POST", ["faults", "errors"]) => {
            faults.add_error(parse::<ErrorFault>(body)?);
            Ok(json!(faults.snapshot()))
        }
        ("POST", ["faults", "conflicts"]) => {
            faults.conflict_next_update(parse::<ConflictFault>(body)?);
            Ok(json!(faults.snapshot()))
        }
        ("PUT", ["faults", "never-ready"]) => {
            let enabled = parse::<Value>(body)?
                .get("enabled")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            faults.set_never_ready(enabled);
            Ok(json!(faults.snapshot()))
        }
        ("POST", ["faults", "close-watches"]) => {
            context.store.close_watches();
            Ok(ok())
        }
        ("POST", ["faults", "expire-history"]) => {
            context.store.expire_history();
            Ok(ok())
        }
        ("POST", ["pods", namespace, name, "crash"]) => {
            if context.processes.crash(namespace, name) {
                Ok(ok())
            } else {
                Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("pod {namespace}/{name} has no running process"),
                ))
            }
        }
        ("GET", ["counters"]) => Ok(json!(context.counters.snapshot())),
        ("DELETE", ["counters"]) => {
            context.counters.reset();
            Ok(ok())
        }
        _ => Err(ApiError::no_route()),
    }
}
