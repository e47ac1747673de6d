//! Header rewriting between client and replica.
//!
//! Requests: hop-by-hop headers are removed (RFC 9110 §7.6.1: `Connection` and every header it
//! names, plus `Keep-Alive`, `Proxy-Connection`, `TE` except `trailers`, `Transfer-Encoding`,
//! `Upgrade`, and the proxy authentication pair), except the `Upgrade` handshake of an HTTP/1.1
//! upgrade to an allowed protocol, which must reach the replica. `Host` is the authority the
//! request was routed by (HTTP/2 clients' `:authority`).
//!
//! `Connection` cannot name a header the activator itself sets or routes by (`Host`, the
//! forwarded headers, `X-Request-Id`) or one that frames the body (`Content-Length`): RFC 9110
//! §7.6.1 lets an intermediary keep fields it needs, and nginx ignores such names altogether.
//!
//! Forwarded headers are believed only from trusted proxies (`trusted_proxies`), as Envoy's
//! `xff_num_trusted_hops` and nginx's `set_real_ip_from` do: from a trusted peer,
//! `X-Forwarded-For` gets the peer appended (all its lines joined into one list first, RFC 9110
//! §5.3: HAProxy adds a line of its own), `Forwarded` gets a `for=` element appended, and
//! `X-Forwarded-Proto`/`-Host` are kept if present; from anyone else they are replaced:
//! `X-Forwarded-For` starts at the peer, `X-Forwarded-Proto` is `http`, `X-Forwarded-Host` is the
//! routed host, and the rest of the family (`Forwarded`, `X-Real-IP`, the other
//! `X-Forwarded-*`, `X-Envoy-*`...) is removed. An HTTP/2 client's cookie crumbs become one
//! `Cookie` line (RFC 9113 §8.2.3).
//!
//! Responses lose their hop-by-hop headers too, except on `101`. `Trailer` is end-to-end
//! (RFC 9110 §6.6.2) and is kept: HTTP/1.1 peers only send the trailer fields it names.

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

/// Headers a client's `Connection` cannot remove: the activator sets them or needs them.
fn is_protected(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == crate::proxy::REQUEST_ID
        || is_forwarding(name)
}

/// Whether `name` carries forwarding information: the `X-Forwarded-` family, `Forwarded`, the
/// client-address headers of CDNs and load balancers, and Envoy's `x-envoy-*` (which Envoy
/// strips from external clients too).
fn is_forwarding(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-forwarded-")
        || name.starts_with("x-envoy-")
        || matches!(
            name,
            "forwarded"
                | "x-real-ip"
                | "true-client-ip"
                | "x-client-ip"
                | "x-original-forwarded-for"
        )
}

/// Forwarding information only a trusted proxy may send: all of it but the three
/// `X-Forwarded-*` the activator sets itself.
fn is_untrusted_forwarding(name: &HeaderName) -> bool {
    is_forwarding(name)
        && name != X_FORWARDED_FOR
        && name != X_FORWARDED_PROTO
        && name != X_FORWARDED_HOST
}

/// Who sent a request, as the forwarded headers see it.
#[derive(Debug)]
pub(crate) struct Client {
    /// The peer's address, ready to append to `X-Forwarded-For`.
    pub(crate) ip: HeaderValue,
    /// The peer is a trusted proxy: its forwarded headers are kept.
    pub(crate) trusted: bool,
}

/// Whether the request asks for an HTTP/1.1 protocol upgrade (WebSocket and the like) to one of
/// the `allowed` protocols. Protocols not allowed are dropped from its `Upgrade` header; with
/// none left, it is an ordinary request (a server may ignore an upgrade, RFC 9110 §7.8).
pub(crate) fn is_allowed_upgrade(parts: &mut request::Parts, allowed: &[String]) -> bool {
    if !(parts.version == Version::HTTP_11
        && parts.method == Method::GET
        && parts.headers.contains_key(header::UPGRADE)
        && has_token(&parts.headers, "upgrade"))
    {
        return false;
    }
    let offered: Vec<&str> = parts
        .headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|protocol| {
            let name = protocol.split('/').next().unwrap_or_default();
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .collect();
    match HeaderValue::from_str(&offered.join(", ")) {
        Ok(value) if !offered.is_empty() => {
            parts.headers.insert(header::UPGRADE, value);
            true
        }
        _ => false,
    }
}

fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// [`hop_by_hop_index`] of `Upgrade`.
const UPGRADE_INDEX: usize = 6;

/// Which hop-by-hop field `name` is, as an index into [`HOP_BY_HOP`], `TE` being
/// [`HOP_BY_HOP.len()`].
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "transfer-encoding" => Some(5),
        "upgrade" => Some(6),
        "te" => Some(7),
        _ => None,
    }
}

/// Removes hop-by-hop headers; with `keep_upgrade`, the upgrade handshake stays. One pass over
/// the names finds which are present, so a message with none costs no more, and one with only
/// `Connection: keep-alive` (most HTTP/1.1 responses) loses that line without a lookup per name.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(index) = hop_by_hop_index(name) {
            present |= 1 << index;
        }
    }
    strip_present(headers, keep_upgrade, present);
}

/// [`strip_hop_by_hop`] of the hop-by-hop fields `present` says are there (a bit per
/// [`hop_by_hop_index`]); true if it removed fields a `Connection` line named.
fn strip_present(headers: &mut HeaderMap, keep_upgrade: bool, present: u8) -> bool {
    if present == 0 {
        return false;
    }
    let mut removed_named = false;
    if present & 1 != 0 {
        // Byte-wise: one odd byte elsewhere in the line must not hide the names it lists.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            // Connection options that name no field, and fields removed below anyway.
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"close"))
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .filter(|name| hop_by_hop_index(name).is_none())
            .collect();
        for name in named {
            if !is_protected(&name) {
                removed_named |= headers.remove(&name).is_some();
            }
        }
    }
    let upgrade = if keep_upgrade && present & (1 << UPGRADE_INDEX) != 0 {
        headers.remove(header::UPGRADE)
    } else {
        None
    };
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
    if present & (1 << HOP_BY_HOP.len()) != 0
        && let Some(te) = headers.remove(header::TE)
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
    removed_named
}

/// Rewrites a client request for a replica (always HTTP/1.1 upstream); `authority` is what the
/// request was routed by, and becomes its `Host`; `request_id` is an `X-Request-Id` to add, in
/// place of any the request carries; `carried` is what [`Carried::of`] its fields said. The
/// fields it adds that the request did not carry are returned rather than put in its map.
pub(crate) fn prepare_request(
    parts: &mut request::Parts,
    client: &Client,
    authority: Option<HeaderValue>,
    upgrade: bool,
    request_id: Option<HeaderValue>,
    mut carried: Carried,
) -> Added {
    if strip_present(&mut parts.headers, upgrade, carried.hop_by_hop) {
        // A field a `Connection` line named may have been one of those looked at below.
        carried = Carried::of(&parts.headers);
    }
    let headers = &mut parts.headers;
    if let Some(authority) = authority {
        headers.insert(header::HOST, authority);
    }
    if request_id.is_some() && carried.request_id {
        // The client's lines give way to the id the activator gives the request.
        headers.remove(&crate::proxy::REQUEST_ID);
    }
    let mut added = Added {
        request_id,
        ..Added::default()
    };
    // The map is looked in only when the pass above saw the field.
    match carried
        .forwarded_for
        .then(|| headers.entry(&X_FORWARDED_FOR))
    {
        Some(Entry::Occupied(mut existing)) if client.trusted => {
            let mut joined = lines_then(existing.iter());
            joined.extend_from_slice(client.ip.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                // Replaces every earlier X-Forwarded-For line with the one joined value.
                existing.insert(value);
            }
        }
        Some(Entry::Occupied(mut existing)) => {
            existing.insert(client.ip.clone());
        }
        _ => added.forwarded_for = Some(client.ip.clone()),
    }
    if client.trusted {
        if carried.forwarded {
            append_forwarded_for(headers, &client.ip);
        }
    } else if carried.untrusted_forwarding {
        let untrusted: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_untrusted_forwarding(name))
            .cloned()
            .collect();
        for name in untrusted {
            headers.remove(name);
        }
    }
    if carried.cookie {
        join_cookies(headers);
    }
    match (carried.forwarded_proto, client.trusted) {
        (true, true) => {}
        (true, false) => {
            headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        (false, _) => added.forwarded_proto = true,
    }
    match (carried.forwarded_host, client.trusted) {
        (true, true) => {}
        (true, false) => match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(&X_FORWARDED_HOST, host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        },
        (false, _) => added.forwarded_host = headers.get(header::HOST).cloned(),
    }
    parts.version = Version::HTTP_11;
    added
}

/// Which of the fields the proxy reads or rewrites a request carries, from one pass over its
/// names: most requests carry few of them, and looking up a name that is absent still hashes
/// it, so the proxy looks only for what this says is there.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Carried {
    /// The hop-by-hop fields, a bit per [`hop_by_hop_index`].
    hop_by_hop: u8,
    forwarded_for: bool,
    forwarded_proto: bool,
    forwarded_host: bool,
    forwarded: bool,
    cookie: bool,
    /// `X-Request-Id`.
    pub(crate) request_id: bool,
    /// `Content-Type`.
    pub(crate) content_type: bool,
    /// `Accept`.
    pub(crate) accept: bool,
    untrusted_forwarding: bool,
}

impl Carried {
    /// What `headers` carry.
    pub(crate) fn of(headers: &HeaderMap) -> Carried {
        let mut carried = Carried::default();
        for name in headers.keys() {
            if let Some(index) = hop_by_hop_index(name) {
                carried.hop_by_hop |= 1 << index;
                continue;
            }
            match name.as_str() {
                "x-forwarded-for" => carried.forwarded_for = true,
                "x-forwarded-proto" => carried.forwarded_proto = true,
                "x-forwarded-host" => carried.forwarded_host = true,
                "forwarded" => carried.forwarded = true,
                "cookie" => carried.cookie = true,
                "x-request-id" => carried.request_id = true,
                "content-type" => carried.content_type = true,
                "accept" => carried.accept = true,
                _ => {}
            }
            carried.untrusted_forwarding |= is_untrusted_forwarding(name);
        }
        carried
    }

    /// An `Upgrade` field came.
    pub(crate) fn upgrade(&self) -> bool {
        self.hop_by_hop & (1 << UPGRADE_INDEX) != 0
    }
}

/// The fields the activator adds to a request that did not carry them (`X-Request-Id` and the
/// `X-Forwarded-*` it sets), kept beside the request's map rather than inserted into it: an
/// HTTP/1.1 head gets them written after the request's own fields, an HTTP/2 request's map gets
/// them appended.
#[derive(Debug, Default, Clone)]
pub(crate) struct Added {
    request_id: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: bool,
    forwarded_host: Option<HeaderValue>,
}

impl Added {
    /// Each field, as a name and a value, in the order they are written.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        static HTTP: HeaderValue = HeaderValue::from_static("http");
        let fields: [(&HeaderName, Option<&HeaderValue>); 4] = [
            (&crate::proxy::REQUEST_ID, self.request_id.as_ref()),
            (&X_FORWARDED_FOR, self.forwarded_for.as_ref()),
            (&X_FORWARDED_PROTO, self.forwarded_proto.then_some(&HTTP)),
            (&X_FORWARDED_HOST, self.forwarded_host.as_ref()),
        ];
        fields
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
    }

    /// Appends the fields to `headers`.
    pub(crate) fn append_to(&self, headers: &mut HeaderMap) {
        for (name, value) in self.fields() {
            headers.append(name, value.clone());
        }
    }
}

/// A header's lines, in order, as one list (RFC 9110 §5.3) ready for one more element; empty
/// lines add nothing.
fn lines_then<'a>(lines: impl Iterator<Item = &'a HeaderValue>) -> Vec<u8> {
    let mut joined = Vec::with_capacity(64);
    for line in lines {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            joined.extend_from_slice(line);
            joined.extend_from_slice(b", ");
        }
    }
    joined
}

/// HTTP/2 clients may split `Cookie` into one field per cookie; an HTTP/1.1 message carries one
/// `Cookie` line, so they are joined with `"; "` (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let Entry::Occupied(mut cookies) = headers.entry(header::COOKIE) else {
        return;
    };
    if cookies.iter().nth(1).is_none() {
        return;
    }
    let joined = cookies
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        cookies.insert(value);
    }
}

/// Appends a `for=` element for `ip` to a trusted peer's `Forwarded` (RFC 7239 §4), if it sent
/// one; IPv6 addresses are quoted and bracketed as the RFC's grammar requires.
fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    let Entry::Occupied(mut existing) = headers.entry(header::FORWARDED) else {
        return;
    };
    let ip = ip.as_bytes();
    let mut joined = lines_then(existing.iter());
    if ip.contains(&b':') {
        joined.extend_from_slice(b"for=\"[");
        joined.extend_from_slice(ip);
        joined.extend_from_slice(b"]\"");
    } else {
        joined.extend_from_slice(b"for=");
        joined.extend_from_slice(ip);
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        existing.insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    /// Rewrites `p` as [`prepare_request`] does, with the fields it adds put in the map, as
    /// the replica gets them.
    fn prepare(
        p: &mut request::Parts,
        client: &Client,
        authority: Option<HeaderValue>,
        upgrade: bool,
    ) {
        let carried = Carried::of(&p.headers);
        prepare_request(p, client, authority, upgrade, None, carried).append_to(&mut p.headers);
    }

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
        prepare(&mut p, &untrusted(), None, false);
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

    fn untrusted() -> Client {
        Client {
            ip: HeaderValue::from_static("10.0.0.1"),
            trusted: false,
        }
    }

    fn trusted() -> Client {
        Client {
            trusted: true,
            ..untrusted()
        }
    }

    #[test]
    fn te_trailers_survives() {
        let mut p = parts(|b| b.header("te", "trailers, deflate"));
        prepare(&mut p, &untrusted(), None, false);
        assert_eq!(p.headers["te"], "trailers");
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_kept_and_appended() {
        let mut p = parts(|b| {
            b.header("host", "a.test")
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-proto", "https")
        });
        prepare(&mut p, &trusted(), None, false);
        assert_eq!(p.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
        assert_eq!(p.headers["x-forwarded-proto"], "https");
        assert_eq!(p.headers["x-forwarded-host"], "a.test");
    }

    #[test]
    fn forwarded_headers_from_anyone_else_are_replaced() {
        let mut p = parts(|b| {
            b.header("host", "a.test")
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "evil.test")
        });
        prepare(&mut p, &untrusted(), None, false);
        assert_eq!(p.headers["x-forwarded-for"], "10.0.0.1");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
        assert_eq!(p.headers["x-forwarded-host"], "a.test");
    }

    #[test]
    fn every_x_forwarded_for_line_of_a_trusted_proxy_is_kept_in_order() {
        // HAProxy's `option forwardfor` adds a line of its own after the client's.
        let mut p = parts(|b| {
            b.header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-for", "127.0.0.2")
        });
        prepare(&mut p, &trusted(), None, false);
        let lines: Vec<_> = p.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(lines, ["6.6.6.6, 127.0.0.2, 10.0.0.1"]);
    }

    #[test]
    fn forwarded_is_appended_for_a_trusted_proxy_and_dropped_for_anyone_else() {
        let mut p = parts(|b| {
            b.header("forwarded", "for=1.2.3.4;proto=https")
                .header("x-real-ip", "1.2.3.4")
        });
        prepare(&mut p, &trusted(), None, false);
        assert_eq!(
            p.headers["forwarded"],
            "for=1.2.3.4;proto=https, for=10.0.0.1"
        );
        assert_eq!(p.headers["x-real-ip"], "1.2.3.4");

        let v6 = Client {
            ip: HeaderValue::from_static("::1"),
            trusted: true,
        };
        let mut p = parts(|b| b.header("forwarded", "for=1.2.3.4"));
        prepare(&mut p, &v6, None, false);
        assert_eq!(p.headers["forwarded"], "for=1.2.3.4, for=\"[::1]\"");

        let mut p = parts(|b| {
            b.header("forwarded", "for=6.6.6.6;host=admin.internal")
                .header("x-real-ip", "6.6.6.6")
        });
        prepare(&mut p, &untrusted(), None, false);
        assert!(!p.headers.contains_key("forwarded"));
        assert!(!p.headers.contains_key("x-real-ip"));
    }

    #[test]
    fn te_trailers_named_in_connection_as_rfc_9110_asks_survives() {
        let mut p = parts(|b| b.header("connection", "TE").header("te", "trailers"));
        prepare(&mut p, &untrusted(), None, false);
        assert_eq!(p.headers["te"], "trailers");
    }

    #[test]
    fn a_connection_line_with_an_odd_byte_still_removes_what_it_names() {
        let mut p = parts(|b| {
            b.header(
                "connection",
                HeaderValue::from_bytes(b"x-secret, caf\xe9").unwrap(),
            )
            .header("x-secret", "1")
        });
        prepare(&mut p, &untrusted(), None, false);
        assert!(!p.headers.contains_key("x-secret"));
    }

    #[test]
    fn an_empty_x_forwarded_for_line_adds_no_empty_element() {
        let mut p = parts(|b| {
            b.header("x-forwarded-for", "")
                .header("x-forwarded-for", "1.2.3.4")
        });
        prepare(&mut p, &trusted(), None, false);
        assert_eq!(p.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.1");
    }

    #[test]
    fn other_forwarding_headers_are_believed_only_from_a_trusted_proxy() {
        let family = [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-client-cert",
            "x-envoy-retry-on",
            "true-client-ip",
        ];
        let with_family =
            |b: http::request::Builder| family.iter().fold(b, |b, name| b.header(*name, "spoofed"));
        let mut p = parts(with_family);
        prepare(&mut p, &untrusted(), None, false);
        for name in family {
            assert!(
                !p.headers.contains_key(name),
                "{name} from an untrusted peer"
            );
        }
        let mut p = parts(with_family);
        prepare(&mut p, &trusted(), None, false);
        for name in family {
            assert_eq!(p.headers[name], "spoofed", "{name} from a trusted proxy");
        }
    }

    #[test]
    fn cookie_crumbs_become_one_cookie_line() {
        let mut p = parts(|b| b.header("cookie", "a=1").header("cookie", "b=2"));
        prepare(&mut p, &untrusted(), None, false);
        let lines: Vec<_> = p.headers.get_all("cookie").iter().collect();
        assert_eq!(lines, ["a=1; b=2"]);
    }

    #[test]
    fn connection_cannot_remove_what_the_activator_sets_or_routes_by() {
        let mut p = parts(|b| {
            b.header(
                "connection",
                "host, x-request-id, content-length, x-forwarded-host, x-other",
            )
            .header("host", "a.test")
            .header("x-request-id", "abc")
            .header("content-length", "0")
            .header("x-other", "1")
        });
        prepare(&mut p, &untrusted(), None, false);
        assert_eq!(p.headers["host"], "a.test");
        assert_eq!(p.headers["x-request-id"], "abc");
        assert_eq!(p.headers["content-length"], "0");
        assert_eq!(p.headers["x-forwarded-host"], "a.test");
        assert!(!p.headers.contains_key("x-other"));
    }

    #[test]
    fn an_allowed_upgrade_keeps_its_handshake_and_others_are_dropped() {
        let allowed = ["websocket".to_owned()];
        let mut p = parts(|b| {
            b.header("connection", "Upgrade")
                .header("upgrade", "websocket")
        });
        assert!(is_allowed_upgrade(&mut p, &allowed));
        prepare(&mut p, &untrusted(), None, true);
        assert_eq!(p.headers["upgrade"], "websocket");
        assert_eq!(p.headers["connection"], "upgrade");

        let mut p = parts(|b| {
            b.header("connection", "Upgrade, HTTP2-Settings")
                .header("upgrade", "h2c")
        });
        assert!(!is_allowed_upgrade(&mut p, &allowed));
        prepare(&mut p, &untrusted(), None, false);
        assert!(!p.headers.contains_key("upgrade"));
        assert!(!p.headers.contains_key("http2-settings"));
    }

    #[test]
    fn the_routed_authority_becomes_the_host_header() {
        let mut p = Request::builder()
            .uri("http://b.test:8080/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        prepare(
            &mut p,
            &untrusted(),
            Some(HeaderValue::from_static("b.test:8080")),
            false,
        );
        assert_eq!(p.headers["host"], "b.test:8080");
        assert_eq!(p.headers["x-forwarded-host"], "b.test:8080");
        assert_eq!(p.version, Version::HTTP_11);
    }

    #[test]
    fn fields_a_request_lacks_are_kept_beside_its_map_and_written_after_its_own() {
        let mut p = parts(|b| b.header("host", "a.test").header("accept", "*/*"));
        let id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
        let carried = Carried::of(&p.headers);
        let added = prepare_request(&mut p, &untrusted(), None, false, Some(id), carried);
        assert_eq!(
            p.headers.len(),
            2,
            "the map keeps only the request's own fields"
        );
        let mut head = Vec::new();
        crate::http1::write_request_head(
            &p.method,
            &p.uri,
            &p.headers,
            None,
            added.fields(),
            crate::http1::Framing::Empty,
            &mut head,
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /x HTTP/1.1\r\nhost: a.test\r\naccept: */*\r\n\
             x-request-id: 0123456789abcdef0123456789abcdef\r\nx-forwarded-for: 10.0.0.1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: a.test\r\n\r\n"
        );
    }

    #[test]
    fn no_field_the_proxy_reads_passes_it_by() {
        // Fields the parser lets pass through untouched are never in the map this module reads:
        // none may be one it strips, rewrites, protects or looks for.
        use crate::http1::names::{Reader, all};
        let replica_only: Vec<&HeaderName> = all()
            .into_iter()
            .filter(|(.., reader)| *reader == Reader::Replica)
            .map(|(_, name, _)| name)
            .collect();
        assert!(replica_only.len() > 20, "{replica_only:?}");
        for name in replica_only {
            assert!(hop_by_hop_index(name).is_none(), "{name}");
            assert!(!is_protected(name) && !is_forwarding(name), "{name}");
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("x"));
            assert_eq!(
                format!("{:?}", Carried::of(&headers)),
                format!("{:?}", Carried::default()),
                "{name}"
            );
            // Read elsewhere: the gRPC deadline, the expectation, the cookie crumbs.
            for read in ["grpc-timeout", "expect", "cookie", "accept", "content-type"] {
                assert_ne!(name.as_str(), read);
            }
        }
    }
}
