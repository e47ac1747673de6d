//! Header rewriting between client and replica.
//!
//! Requests: hop-by-hop headers are removed (RFC 9110 §7.6.1: `Connection` and every header it
//! names, plus `Keep-Alive`, `Proxy-Connection`, `TE` except `trailers`, `Transfer-Encoding`,
//! `Upgrade`, and the proxy authentication pair), except the `Upgrade`
//! handshake of an HTTP/1.1 upgrade request, which must reach the replica. `Host` is kept (and
//! made from `:authority` for HTTP/2 clients); `X-Forwarded-For` gets the client address
//! appended; `X-Forwarded-Proto` and `X-Forwarded-Host` are set unless an ingress in front
//! already set them. Responses lose their hop-by-hop headers too, except on `101`. `Trailer` is
//! end-to-end (RFC 9110 §6.6.2) and is kept: HTTP/1.1 peers only send the trailer fields it names.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version, request};

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether the request asks for an HTTP/1.1 protocol upgrade (WebSocket and the like).
pub(crate) fn is_upgrade(parts: &request::Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.method == Method::GET
        && parts.headers.contains_key(header::UPGRADE)
        && has_token(&parts.headers, "upgrade")
}

fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether any hop-by-hop header is present. One pass comparing names, with no hashing: most
/// messages carry none, and then stripping costs nothing more.
fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name == header::TE || HOP_BY_HOP.contains(name))
}

/// Removes hop-by-hop headers; with `keep_upgrade`, the upgrade handshake stays.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if !has_hop_by_hop(headers) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    let upgrade = if keep_upgrade {
        headers.remove(header::UPGRADE)
    } else {
        None
    };
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(te) = headers.remove(header::TE)
        && te.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Rewrites a client request for a replica (always HTTP/1.1 upstream).
pub(crate) fn prepare_request(parts: &mut request::Parts, client_ip: &HeaderValue, upgrade: bool) {
    strip_hop_by_hop(&mut parts.headers, upgrade);
    let headers = &mut parts.headers;
    if !headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    // One map lookup per header through `entry`, instead of a look then an insert.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Occupied(mut existing) => {
            let first = existing.get().as_bytes();
            let mut joined = Vec::with_capacity(first.len() + 2 + client_ip.len());
            joined.extend_from_slice(first);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                // Replaces every earlier X-Forwarded-For line with the one joined value.
                existing.insert(value);
            }
        }
        Entry::Vacant(slot) => {
            slot.insert(client_ip.clone());
        }
    }
    headers
        .entry(&X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static("http"));
    if let Some(host) = headers.get(header::HOST).cloned()
        && let Entry::Vacant(slot) = headers.entry(&X_FORWARDED_HOST)
    {
        slot.insert(host);
    }
    parts.version = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(
        build: impl FnOnce(http::request::Builder) -> http::request::Builder,
    ) -> request::Parts {
        build(Request::builder().uri("/x"))
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut p = parts(|b| {
            b.header("connection", "keep-alive, x-secret")
                .header("keep-alive", "timeout=5")
                .header("x-secret", "1")
                .header("transfer-encoding", "chunked")
                .header("te", "gzip")
                .header("proxy-authorization", "Basic x")
                .header("host", "a.test")
                .header("x-kept", "yes")
        });
        prepare_request(&mut p, &HeaderValue::from_static("10.0.0.1"), false);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "transfer-encoding",
            "te",
            "proxy-authorization",
        ] {
            assert!(!p.headers.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(p.headers["x-kept"], "yes");
        assert_eq!(p.headers["host"], "a.test");
    }

    #[test]
    fn te_trailers_survives() {
        let mut p = parts(|b| b.header("te", "trailers, deflate"));
        prepare_request(&mut p, &HeaderValue::from_static("10.0.0.1"), false);
        assert_eq!(p.headers["te"], "trailers");
    }

    #[test]
    fn forwarded_headers_are_appended_or_set() {
        let mut p = parts(|b| {
            b.header("host", "a.test")
                .header("x-forwarded-for", "1.2.3.4")
        });
        prepare_request(&mut p, &HeaderValue::from_static("10.0.0.1"), false);
        assert_eq!(p.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
        assert_eq!(p.headers["x-forwarded-host"], "a.test");

        let mut p = parts(|b| {
            b.header("host", "a.test")
                .header("x-forwarded-proto", "https")
        });
        prepare_request(&mut p, &HeaderValue::from_static("10.0.0.1"), false);
        assert_eq!(p.headers["x-forwarded-proto"], "https");
    }

    #[test]
    fn an_upgrade_keeps_its_handshake() {
        let mut p = parts(|b| {
            b.header("connection", "Upgrade")
                .header("upgrade", "websocket")
        });
        assert!(is_upgrade(&p));
        prepare_request(&mut p, &HeaderValue::from_static("10.0.0.1"), true);
        assert_eq!(p.headers["upgrade"], "websocket");
        assert_eq!(p.headers["connection"], "upgrade");
    }

    #[test]
    fn http2_authority_becomes_the_host_header() {
        let mut p = Request::builder()
            .uri("http://b.test:8080/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        prepare_request(&mut p, &HeaderValue::from_static("10.0.0.1"), false);
        assert_eq!(p.headers["host"], "b.test:8080");
        assert_eq!(p.version, Version::HTTP_11);
    }
}
