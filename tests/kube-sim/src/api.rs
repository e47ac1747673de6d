//! The HTTP API server: accepts connections, counts and fault-checks each request, routes it to
//! discovery, the resource handlers or the simulator's control API, and is the one place that
//! turns an [`ApiError`] into an HTTP response.

pub mod control;
pub mod convert;
pub mod defaults;
pub mod discovery;
pub mod patch;
pub mod protobuf;
pub mod read;
pub mod request;
pub mod scale;
pub mod status;
pub mod table;
pub mod watch;
pub mod write;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

use self::request::{Query, Route, Target, Verb};
use self::status::ApiError;
use crate::counters::Counters;
use crate::faults::Faults;
use crate::kubelet::ProcessTable;
use crate::store::Store;

/// The one response body type.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 8 << 20;

/// Everything a request handler may touch.
pub struct Context {
    /// The object store.
    pub store: Arc<Store>,
    /// Fault rules.
    pub faults: Arc<Faults>,
    /// Request counters.
    pub counters: Arc<Counters>,
    /// The kubelet's processes, for pod logs and crash injection.
    pub processes: Arc<ProcessTable>,
    /// The address clients reach the server on, for `/api`.
    pub address: String,
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON response.
pub fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The response for a failed request: a `Status` body, its code, and `Retry-After` if set.
pub fn error_response(error: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(code, &error.status());
    if let Some(secs) = error.retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Serves connections from `listener` until `shutdown` turns true.
pub async fn run(
    listener: TcpListener,
    context: Arc<Context>,
    mut shutdown: signal::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let context = context.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let context = context.clone();
                async move { Ok::<_, Infallible>(handle(&context, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

/// Parsed request parts the handlers need.
pub struct Call {
    /// The addressed resource.
    pub target: Target,
    /// The verb.
    pub verb: Verb,
    /// Query parameters.
    pub query: Query,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// `Accept` of the request: a `Table` is printed for kubectl when it asks for one.
    pub accept: String,
    /// The request body.
    pub body: Bytes,
}

impl Call {
    /// The body parsed as JSON (YAML and Kubernetes' protobuf are accepted too, as the API
    /// server does).
    ///
    /// # Errors
    /// 400 when it does not parse; 415 for protobuf the simulator cannot decode.
    pub fn json_body(&self) -> Result<Value, ApiError> {
        if protobuf::is_protobuf(&self.content_type) {
            return protobuf::decode(&self.body);
        }
        if self.content_type.contains("yaml") {
            return serde_yaml::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
    }

    /// The counter key: plural name plus `/subresource`.
    pub fn resource_key(&self) -> String {
        match &self.target.subresource {
            Some(sub) => format!("{}/{sub}", self.target.resource.plural),
            None => self.target.resource.plural.to_string(),
        }
    }
}

async fn handle(context: &Context, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path.starts_with("/sim/") {
        let (parts, body) = req.into_parts();
        let body = read_body(body).await.unwrap_or_default();
        return control::handle(context, &parts.method, &path, &body).await;
    }
    match serve(context, req, &path).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let collected = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
    Ok(collected.to_bytes())
}

async fn serve(
    context: &Context,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let target = match Route::parse(path)? {
        Route::Resource(target) => target,
        other => return discovery::document(context, &other, req.headers()),
    };
    let query = Query::parse(req.uri().query());
    let verb = Verb::of(req.method(), &target, &query)?;
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, accept) = (header(CONTENT_TYPE), header(ACCEPT));
    let call = Call {
        target,
        verb,
        query,
        content_type,
        accept,
        body: read_body(req.into_body()).await?,
    };
    let resource = call.resource_key();
    context.counters.record(verb.as_str(), &resource);
    let delay = context.faults.delay(verb.as_str(), &resource);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(error) = context.faults.error(verb.as_str(), &resource) {
        return Err(error);
    }
    match verb {
        Verb::Get => read::get(context, &call),
        Verb::List => read::list(context, &call),
        Verb::Watch => watch::start(context, &call),
        Verb::Create => write::create(context, &call),
        Verb::Update => write::update(context, &call),
        Verb::Patch => write::patch(context, &call),
        Verb::Delete => write::delete(context, &call),
        Verb::DeleteCollection => write::delete_collection(context, &call),
    }
}
