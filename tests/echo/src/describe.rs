//! The echo's answer: a JSON description of the request in the shape `mendhak/http-https-echo`
//! answers with (`path`, `headers`, `method`, `body`, `json` when the body is JSON, `hostname`,
//! `ip`, `protocol`, `query`, `os.hostname`, and that image's fixed fields), plus the server's
//! `pid` and the request's HTTP `version`, which the activator's tests read.

use std::net::SocketAddr;

use http::HeaderMap;
use http::request::Parts;
use serde_json::{Map, Value, json};

/// Describes a request whose body was `body` and which came from `peer`.
pub(crate) fn describe(parts: &Parts, body: &[u8], peer: SocketAddr, hostname: &str) -> Value {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let mut out = json!({
        "path": parts.uri.path(),
        "headers": headers(&parts.headers),
        "method": parts.method.as_str(),
        "body": String::from_utf8_lossy(body),
        "cookies": {},
        "fresh": false,
        "hostname": host_name(host),
        "ip": peer.ip().to_string(),
        "ips": [],
        "protocol": "http",
        "query": query(parts.uri.query().unwrap_or_default()),
        "subdomains": [],
        "xhr": false,
        "os": {"hostname": hostname},
        "connection": {},
        "pid": std::process::id(),
        "version": format!("{:?}", parts.version),
    });
    if let Ok(parsed) = serde_json::from_slice::<Value>(body) {
        out["json"] = parsed;
    }
    out
}

/// A Host header's name without its port (`[::1]:80` → `[::1]`).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Headers by lower-case name; a header sent more than once is an array of its values.
fn headers(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        let value = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match map.get_mut(name.as_str()) {
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => *existing = Value::Array(vec![existing.take(), value]),
            None => {
                map.insert(name.as_str().to_owned(), value);
            }
        }
    }
    Value::Object(map)
}

/// Query parameters, percent-decoded; a parameter given more than once is an array.
fn query(raw: &str) -> Value {
    let mut map = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = Value::String(decode(value));
        match map.get_mut(&decode(key)) {
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => *existing = Value::Array(vec![existing.take(), value]),
            None => {
                map.insert(decode(key), value);
            }
        }
    }
    Value::Object(map)
}

/// Percent-decoding of a query component, with `+` as a space.
fn decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded_and_repeats_collected() {
        assert_eq!(
            query("from=test&q=a%20b+c&x=1&x=2&flag"),
            json!({"from": "test", "q": "a b c", "x": ["1", "2"], "flag": ""})
        );
        assert_eq!(decode("100%"), "100%");
    }

    #[test]
    fn the_hostname_is_the_host_without_its_port() {
        assert_eq!(host_name("hello.test:8080"), "hello.test");
        assert_eq!(host_name("hello.test"), "hello.test");
        assert_eq!(host_name("[::1]:80"), "[::1]");
    }

    #[test]
    fn a_repeated_header_is_an_array() {
        let mut map = HeaderMap::new();
        map.append("x-a", "1".parse().unwrap());
        map.append("x-a", "2".parse().unwrap());
        map.append("x-b", "3".parse().unwrap());
        assert_eq!(headers(&map), json!({"x-a": ["1", "2"], "x-b": "3"}));
    }
}
