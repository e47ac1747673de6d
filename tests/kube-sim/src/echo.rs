//! An HTTP echo server that answers like `mendhak/http-https-echo`: a JSON description of the
//! request (`path`, `headers`, `method`, `body`, `hostname`, `ip`, `protocol`, `query`,
//! `os.hostname`). It stands in for that image's pods. Like the image it honours the request
//! headers `x-set-response-status-code` and `x-set-response-delay-ms`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

fn query_map(query: Option<&str>) -> Map<String, Value> {
    let parsed = crate::api::request::Query::parse(query);
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .filter(|k| !k.is_empty())
        .map(|k| (k.to_string(), json!(parsed.str(k))))
        .collect()
}

/// The JSON the echo server answers `request` with.
pub fn describe(
    request: &hyper::http::request::Parts,
    body: &[u8],
    peer: SocketAddr,
    hostname: &str,
) -> Value {
    let headers: Map<String, Value> = request
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                json!(v.to_str().unwrap_or_default()),
            )
        })
        .collect();
    let host = request
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let host_name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let text = String::from_utf8_lossy(body).into_owned();
    let mut out = json!({
        "path": request.uri.path(),
        "headers": headers,
        "method": request.method.as_str(),
        "body": text,
        "cookies": {},
        "fresh": false,
        "hostname": host_name,
        "ip": peer.ip().to_string(),
        "ips": [],
        "protocol": "http",
        "query": query_map(request.uri.query()),
        "subdomains": [],
        "xhr": false,
        "os": {"hostname": hostname},
        "connection": {},
    });
    if let Ok(parsed) = serde_json::from_slice::<Value>(body) {
        out["json"] = parsed;
    }
    out
}

async fn answer(
    request: Request<Incoming>,
    peer: SocketAddr,
    hostname: String,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(ms) = header("x-set-response-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = header("x-set-response-status-code")
        .and_then(|c| StatusCode::from_u16(u16::try_from(c).ok()?).ok())
        .unwrap_or(StatusCode::OK);
    let description = describe(&parts, &body, peer, &hostname);
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&description).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Serves HTTP/1.1 and h2c on `listener` forever, naming itself `hostname` in `os.hostname`.
pub async fn serve(listener: TcpListener, hostname: String) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let hostname = hostname.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let hostname = hostname.clone();
                async move { Ok::<_, Infallible>(answer(req, peer, hostname).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Sends `GET path` to an echo server (or any HTTP server) at `address` and returns the status
/// code and the body parsed as JSON (`Value::Null` when it is not JSON).
///
/// # Errors
/// When the connection or the exchange fails.
pub async fn get(address: SocketAddr, path: &str) -> std::io::Result<(u16, Value)> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, address.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}
