//! What a request must be before it is routed: not `CONNECT`, headers within the limit, and one
//! unambiguous host. A request whose target names one host and whose Host header another would
//! be routed by one and served as the other, so it is refused; so are several Host headers, and an
//! HTTP/2 `:authority` that disagrees with a `host` header (RFC 9113 §8.3.1).

use http::header::HOST;
use http::{Method, Request};

use super::respond::ProxyError;
use crate::http1::passthrough::Passthrough;
use crate::routing::{normalise_host, split_port};

/// Header fields a request may have: hyper's HTTP/1 parser refuses more on its own (with a bare
/// 431), and Envoy's `max_headers_count` has the same default; HTTP/2 requests get the same bound
/// here, with the activator's own answer.
pub(crate) const MAX_HEADERS: usize = 100;

/// Checks `request` and returns the authority it is routed by, as the client wrote it.
pub(crate) fn routed_authority<B>(
    request: &Request<B>,
    max_header_bytes: usize,
) -> Result<&str, ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let passed = request.extensions().get::<Passthrough>();
    let passing = passed.map_or(0, Passthrough::len);
    // Counted only when there may be too many: most requests have a dozen fields.
    if request.headers().len() + passing > MAX_HEADERS {
        let count = header_fields(request.headers()) + passing;
        if count > MAX_HEADERS {
            return Err(ProxyError::TooManyHeaders {
                count,
                max: MAX_HEADERS,
            });
        }
    }
    let size = header_bytes(request) + passed.map_or(0, Passthrough::bytes);
    if size > max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size,
            max: max_header_bytes,
        });
    }
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::HostMismatch {
            detail: "it has more than one Host header".to_owned(),
        });
    }
    let host = match host {
        Some(value) => Some(value.to_str().map_err(|_| ProxyError::HostMismatch {
            detail: "its Host header is not a valid host".to_owned(),
        })?),
        None => None,
    };
    let authority = match (request.uri().authority(), host) {
        (Some(target), Some(host)) => {
            if normalise_host(target.as_str()) != normalise_host(host) {
                return Err(ProxyError::HostMismatch {
                    detail: format!(
                        "its target names host \"{}\" but its Host header \"{host}\"",
                        target.as_str()
                    ),
                });
            }
            Ok(target.as_str())
        }
        // HTTP/1.1 requires Host even beside an absolute-form target (RFC 9112 §3.2); HTTP/2's
        // `:authority` stands alone.
        (Some(_), None) if request.version() == http::Version::HTTP_11 => {
            Err(ProxyError::MissingHost)
        }
        (Some(target), None) => Ok(target.as_str()),
        (None, Some(host)) if !host.is_empty() => Ok(host),
        (None, _) => Err(ProxyError::MissingHost),
    }?;
    // A host is a name or address and a port (RFC 9110 §4.2.3): a path, a query or user
    // information in it would be read differently by whoever parses it next. Most requests are
    // routed by their Host header itself, which is then looked at once.
    let host = host.filter(|host| !std::ptr::eq(*host, authority));
    if let Some(bad) = [authority, host.unwrap_or_default()]
        .into_iter()
        .find(|host| {
            host.bytes()
                .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\'))
        })
    {
        return Err(ProxyError::HostMismatch {
            detail: format!("its host \"{bad}\" has a character a host cannot have"),
        });
    }
    if !has_valid_port(authority) {
        return Err(ProxyError::HostMismatch {
            detail: format!("its host \"{authority}\" has a port that is not a number up to 65535"),
        });
    }
    if let Some(host) = host
        && !has_valid_port(host)
    {
        return Err(ProxyError::HostMismatch {
            detail: format!(
                "its Host header \"{host}\" has a port that is not a number up to 65535"
            ),
        });
    }
    Ok(authority)
}

/// Header fields in the map as the client sent them, an HTTP/2 client's cookie crumbs counting as
/// the one `Cookie` line they become (the fields the activator adds are not in the map, nor those
/// that pass through).
fn header_fields(headers: &http::HeaderMap) -> usize {
    let crumbs = headers.get_all(http::header::COOKIE).iter().count();
    headers.len() - crumbs.saturating_sub(1)
}

/// Whether `authority`'s port, if it has one, is digits only (RFC 9110 §4.2.3: `port = *DIGIT`)
/// and a TCP port.
fn has_valid_port(authority: &str) -> bool {
    split_port(authority).1.is_none_or(|port| {
        port.bytes().all(|b| b.is_ascii_digit())
            && port.bytes().fold(0u32, |n, digit| {
                n.saturating_mul(10).saturating_add(u32::from(digit - b'0'))
            }) <= u32::from(u16::MAX)
    })
}

/// The size of the fields in the request's map as HTTP/1.1 sends them: each name, value, and
/// the four bytes of `: ` and CRLF.
fn header_bytes<B>(request: &Request<B>) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(request: http::request::Builder) -> Result<String, &'static str> {
        let request = request.body(()).unwrap();
        routed_authority(&request, 1024)
            .map(str::to_owned)
            .map_err(|e| e.reason())
    }

    #[test]
    fn fields_that_pass_through_count_toward_the_limits() {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: {}\r\n\r\n",
            "u".repeat(600)
        );
        let parsed = crate::http1::head::parse_request(&mut head.as_str().into(), 64 * 1024)
            .unwrap()
            .unwrap();
        let request = Request::from_parts(parsed.parts, ());
        assert!(request.extensions().get::<Passthrough>().is_some());
        // Host is 14 bytes as sent, User-Agent 614.
        assert_eq!(
            routed_authority(&request, 628).map_err(|e| e.reason()),
            Ok("a.test")
        );
        assert_eq!(
            routed_authority(&request, 627).map_err(|e| e.reason()),
            Err("headers_too_large")
        );
    }

    #[test]
    fn the_host_header_routes_an_origin_form_request() {
        assert_eq!(
            check(Request::get("/x").header("host", "a.test:8080")),
            Ok("a.test:8080".into())
        );
        assert_eq!(check(Request::get("/x")), Err("missing_host"));
    }

    #[test]
    fn an_absolute_form_target_needs_a_host_header_over_http_1_1_only() {
        assert_eq!(check(Request::get("http://a.test/")), Err("missing_host"));
        let http10 = Request::get("http://a.test/").version(http::Version::HTTP_10);
        assert_eq!(check(http10), Ok("a.test".into()));
        let http2 = Request::get("http://a.test/").version(http::Version::HTTP_2);
        assert_eq!(check(http2), Ok("a.test".into()));
    }

    #[test]
    fn a_target_and_a_host_that_disagree_are_refused() {
        let request = Request::get("http://b.test/").header("host", "a.test");
        assert_eq!(check(request), Err("host_mismatch"));
        let agreeing = Request::get("http://A.test/").header("host", "a.test:80");
        assert_eq!(check(agreeing), Ok("A.test".into()));
    }

    #[test]
    fn a_host_whose_port_is_not_a_number_is_refused() {
        assert_eq!(
            check(Request::get("/").header("host", "a.test:abc")),
            Err("host_mismatch")
        );
        assert_eq!(
            check(Request::get("/").header("host", "[::1]:x")),
            Err("host_mismatch")
        );
        assert_eq!(
            check(Request::get("/").header("host", "[::1]:8080")),
            Ok("[::1]:8080".into())
        );
        assert_eq!(
            check(Request::get("/").header("host", "a.test:")),
            Ok("a.test:".into())
        );
        assert_eq!(
            check(Request::get("/").header("host", "a.test:99999")),
            Err("host_mismatch")
        );
        for (host, valid) in [
            ("a.test:65535", true),
            ("a.test:65536", false),
            ("a.test:0000000080", true),
            ("a.test:99999999999999999999", false),
            ("a.test:+80", false),
            ("[::1]", true),
            ("[::1]:65536", false),
        ] {
            let expected = if valid {
                Ok(host.into())
            } else {
                Err("host_mismatch")
            };
            assert_eq!(
                check(Request::get("/").header("host", host)),
                expected,
                "{host}"
            );
        }
        assert_eq!(
            check(Request::get("http://a.test:abc/").header("host", "a.test:abc")),
            Err("host_mismatch")
        );
        assert_eq!(
            check(Request::get("http://a.test:abc/").version(http::Version::HTTP_2)),
            Err("host_mismatch")
        );
    }

    #[test]
    fn a_host_with_a_path_or_user_information_is_refused() {
        for host in ["a.test/x", "u@a.test", "a.test?q", "a.test#f", "a.test\\x"] {
            assert_eq!(
                check(Request::get("/").header("host", host)),
                Err("host_mismatch"),
                "{host}"
            );
        }
    }

    #[test]
    fn two_host_headers_are_refused() {
        let request = Request::get("/")
            .header("host", "a.test")
            .header("host", "b.test");
        assert_eq!(check(request), Err("host_mismatch"));
    }

    #[test]
    fn connect_and_oversized_heads_are_refused() {
        assert_eq!(
            check(Request::connect("a.test:443").header("host", "a.test:443")),
            Err("method_not_allowed")
        );
        let big = Request::get("/")
            .header("host", "a.test")
            .header("cookie", "x".repeat(2000));
        assert_eq!(check(big), Err("headers_too_large"));
        let mut many = Request::get("/").header("host", "a.test");
        for i in 0..MAX_HEADERS {
            many = many.header(format!("x-{i}"), "1");
        }
        assert_eq!(check(many), Err("headers_too_large"));
        // A hundred fields, the client's request id among them, and cookie crumbs that make one.
        let mut at_the_limit = Request::get("/")
            .header("host", "a.test")
            .header("x-request-id", "1");
        for i in 0..MAX_HEADERS - 3 {
            at_the_limit = at_the_limit.header(format!("x-{i}"), "1");
        }
        for i in 0..5 {
            at_the_limit = at_the_limit.header("cookie", format!("c{i}=1"));
        }
        assert_eq!(check(at_the_limit), Ok("a.test".into()));
        // The client's request ids count like any field, however many lines it sent.
        let mut ids = Request::get("/").header("host", "a.test");
        for i in 0..MAX_HEADERS {
            ids = ids.header("x-request-id", i.to_string());
        }
        assert_eq!(check(ids), Err("headers_too_large"));
    }
}
