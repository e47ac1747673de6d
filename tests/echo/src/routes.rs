//! What each request gets, by path. The test endpoints come first; every other path is echoed
//! (see `describe`):
//! - `/__stats`: connections, requests, in-flight and peak in-flight requests, pid, and when
//!   the process started and began to listen (JSON; see `startup`);
//! - `/status/CODE`: that status;
//! - `/exit/CODE`: exits the process at once with CODE, leaving the request unanswered;
//! - `/delay/MS`: the echo, after MS milliseconds;
//! - `/bytes/N`: N bytes of body;
//! - `/stream/N/MS`: N chunks, one every MS milliseconds;
//! - `/upload`: reads the body as it streams and answers its length, keeping nothing;
//! - `/trailers`: reads the body and answers with a trailer naming the request trailers it saw;
//! - `/ws`: a WebSocket that echoes every message;
//! - `/echo.Echo/METHOD`: a gRPC call (any method) answered with the request's messages, as
//!   they came, and `grpc-status: 0` in trailers (a fast gRPC server for the benchmarks).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};

use crate::server::{InFlight, Shared};

/// The one response body type.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Largest body the echo reads into its answer.
const MAX_ECHOED_BODY: usize = 16 << 20;

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A response with `status` and a plain-text body.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = text(status, value.to_string());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Answers one request.
pub(crate) async fn handle(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
) -> Response<Body> {
    let _in_flight = InFlight::new(&shared.stats);
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["__stats"] => stats(shared),
        ["status", code] => {
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            text(
                status.unwrap_or(StatusCode::BAD_REQUEST),
                format!("status {code}\n"),
            )
        }
        ["exit", code] => {
            // Dies mid-request, as a crashing replica does: the connection drops unanswered.
            std::process::exit(code.parse().unwrap_or(1));
        }
        ["delay", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            echo(request, peer, shared).await
        }
        ["bytes", n] => Response::new(full(vec![b'x'; n.parse().unwrap_or(0)])),
        ["stream", n, ms] => stream(n.parse().unwrap_or(1), ms.parse().unwrap_or(0)),
        ["upload"] => upload(request.into_body()).await,
        ["trailers"] => trailers(request.into_body()).await,
        ["ws"] => crate::websocket::accept(&mut request),
        ["echo.Echo", _] => grpc_echo(request.into_body()).await,
        _ => echo(request, peer, shared).await,
    }
}

fn stats(shared: &Shared) -> Response<Body> {
    let stats = &shared.stats;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "pid": std::process::id(),
            "connections": stats.connections.load(Ordering::SeqCst),
            "requests": stats.requests.load(Ordering::SeqCst),
            // Not counting this request.
            "in_flight": stats.in_flight.load(Ordering::SeqCst).saturating_sub(1),
            "max_in_flight": stats.max_in_flight.load(Ordering::SeqCst),
            "startup": shared.startup.to_json(),
        }),
    )
}

/// The echo: after `x-set-response-delay-ms`, the request described, with the status
/// `x-set-response-status-code` asks for.
async fn echo(request: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let number = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let body = match Limited::new(body, MAX_ECHOED_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body: {error}\n"),
            );
        }
    };
    if let Some(ms) = number("x-set-response-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = number("x-set-response-status-code")
        .and_then(|c| StatusCode::from_u16(u16::try_from(c).ok()?).ok())
        .unwrap_or(StatusCode::OK);
    let description = crate::describe::describe(&parts, &body, peer, &shared.hostname);
    json(status, &description)
}

fn stream(chunks: u64, every_ms: u64) -> Response<Body> {
    let frames = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
        }
        let chunk = Frame::data(Bytes::from(format!("chunk {i}\n")));
        Some((Ok::<_, Infallible>(chunk), i + 1))
    });
    Response::new(BodyExt::boxed(StreamBody::new(frames)))
}

async fn upload(mut body: Incoming) -> Response<Body> {
    let mut bytes = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    json(StatusCode::OK, &serde_json::json!({ "bytes": bytes }))
}

async fn trailers(mut body: Incoming) -> Response<Body> {
    let mut seen = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(trailers) = frame.trailers_ref() {
            seen.extend(trailers.keys().map(|k| k.as_str().to_owned()));
        }
    }
    let names = if seen.is_empty() {
        "none".to_owned()
    } else {
        seen.join(",")
    };
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "x-request-trailers",
        HeaderValue::from_str(&names).unwrap_or(HeaderValue::from_static("?")),
    );
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"body\n"))),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response
        .headers_mut()
        .insert("trailer", HeaderValue::from_static("x-request-trailers"));
    response
}

/// A gRPC call answered with its own messages (the body is already length-prefixed gRPC frames)
/// and a status of OK.
async fn grpc_echo(body: Incoming) -> Response<Body> {
    let messages = match Limited::new(body, MAX_ECHOED_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(messages)),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}
