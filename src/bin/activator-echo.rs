//! `activator-echo`: a small, fast HTTP backend for the demo, the tests and the benchmarks.
//!
//! Listens on `--bind` (default 127.0.0.1) at `--port` or `$PORT` (with `--term-delay-ms`, it
//! keeps serving that long after SIGTERM), and answers:
//! - `/__stats`: connections, requests, in-flight and peak in-flight requests, pid (JSON);
//! - `/status/CODE`: that status;
//! - `/exit/CODE`: exits the process at once with CODE, leaving the request unanswered;
//! - `/delay/MS`: the echo, after MS milliseconds;
//! - `/bytes/N`: N bytes of body;
//! - `/stream/N/MS`: N chunks, one every MS milliseconds;
//! - `/upload`: reads the body as it streams and answers its length, keeping nothing;
//! - `/trailers`: reads the body and answers with a trailer naming the request trailers it saw;
//! - `/ws`: a WebSocket that echoes every message;
//! - anything else: the request as JSON (pid, method, path, query, headers).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

struct InFlight(Arc<Stats>);

impl InFlight {
    fn new(stats: &Arc<Stats>) -> InFlight {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(stats))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json(value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let value =
            serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match map.get_mut(name.as_str()) {
            Some(serde_json::Value::Array(values)) => values.push(value),
            Some(existing) => *existing = serde_json::Value::Array(vec![existing.clone(), value]),
            None => {
                map.insert(name.as_str().to_owned(), value);
            }
        }
    }
    serde_json::Value::Object(map)
}

fn echo<B>(request: &Request<B>) -> Response<Body> {
    json(serde_json::json!({
        "pid": std::process::id(),
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query().unwrap_or(""),
        "version": format!("{:?}", request.version()),
        "headers": headers_json(request.headers()),
    }))
}

async fn handle(
    mut request: Request<Incoming>,
    stats: Arc<Stats>,
) -> Result<Response<Body>, Infallible> {
    let _in_flight = InFlight::new(&stats);
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let response = match segments.as_slice() {
        ["__stats"] => json(serde_json::json!({
            "pid": std::process::id(),
            "connections": stats.connections.load(Ordering::SeqCst),
            "requests": stats.requests.load(Ordering::SeqCst),
            "in_flight": stats.in_flight.load(Ordering::SeqCst) - 1,
            "max_in_flight": stats.max_in_flight.load(Ordering::SeqCst),
        })),
        ["status", code] => {
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            let mut response = Response::new(full(format!("status {code}\n")));
            *response.status_mut() = status.unwrap_or(StatusCode::BAD_REQUEST);
            response
        }
        ["exit", code] => {
            // Dies mid-request, as a crashing replica does: the connection drops unanswered.
            std::process::exit(code.parse().unwrap_or(1));
        }
        ["delay", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            echo(&request)
        }
        ["bytes", n] => {
            let n: usize = n.parse().unwrap_or(0);
            Response::new(full(vec![b'x'; n]))
        }
        ["stream", n, ms] => {
            let (n, ms): (u64, u64) = (n.parse().unwrap_or(1), ms.parse().unwrap_or(0));
            let chunks = futures_util::stream::unfold(0u64, move |i| async move {
                if i >= n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk {i}\n")))),
                    i + 1,
                ))
            });
            Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        }
        ["upload"] => {
            let mut body = request.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            json(serde_json::json!({ "bytes": bytes }))
        }
        ["trailers"] => {
            let mut body = request.into_body();
            let mut seen = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(trailers) = frame.trailers_ref() {
                    seen.extend(trailers.keys().map(|k| k.as_str().to_owned()));
                }
            }
            let mut trailers = HeaderMap::new();
            let names = if seen.is_empty() {
                "none".to_owned()
            } else {
                seen.join(",")
            };
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
        ["ws"] => {
            let Some(key) = request.headers().get("sec-websocket-key") else {
                return Ok(Response::builder()
                    .status(400)
                    .body(full("not a websocket handshake\n"))
                    .unwrap_or_default());
            };
            let accept = derive_accept_key(key.as_bytes());
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() || socket.send(message).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .header("sec-websocket-accept", accept)
                .body(full(""))
                .unwrap_or_default()
        }
        _ => echo(&request),
    };
    Ok(response)
}

/// Keeps serving for `delay` after SIGTERM, like a server finishing its work before it exits.
fn exit_after_sigterm(delay: Duration) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    tokio::spawn(async move {
        term.recv().await;
        tokio::time::sleep(delay).await;
        std::process::exit(0);
    });
}

#[tokio::main]
async fn main() {
    let mut port: Option<u16> = std::env::var("PORT").ok().and_then(|p| p.parse().ok());
    let mut bind = "127.0.0.1".to_owned();
    let mut startup_delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()),
            "--bind" => bind = args.next().unwrap_or(bind),
            "--term-delay-ms" => {
                let delay =
                    Duration::from_millis(args.next().and_then(|v| v.parse().ok()).unwrap_or(0));
                exit_after_sigterm(delay);
            }
            "--startup-delay-ms" => {
                startup_delay =
                    Duration::from_millis(args.next().and_then(|v| v.parse().ok()).unwrap_or(0));
            }
            other => {
                eprintln!(
                    "activator-echo: unknown argument {other:?}; usage: activator-echo [--port N] [--bind ADDR] [--startup-delay-ms MS] [--term-delay-ms MS]"
                );
                std::process::exit(2);
            }
        }
    }
    tokio::time::sleep(startup_delay).await;
    let addr: SocketAddr = match format!("{bind}:{}", port.unwrap_or(8080)).parse() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("activator-echo: bad address: {error}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("activator-echo: cannot listen on {addr}: {error}");
            std::process::exit(1);
        }
    };
    println!("activator-echo listening on {addr}");
    let stats = Arc::new(Stats::default());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, Arc::clone(&stats)));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
