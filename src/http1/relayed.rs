//! A replica's response fields, relayed to the client as they came: the head's bytes and where
//! each field lies in them, with what the proxy must know of them noted as they were parsed.
//!
//! Why not a `HeaderMap`: taking every field apart into names and values and hashing them into
//! a map, only to write them back out in the same order, was the largest part of the proxy's
//! own CPU time per request (BENCHMARKS.md, section 2). Written back ([`Relayed::write`]), the
//! fields lose what concerns only the connection they came on: the hop-by-hop fields (RFC 9110
//! §7.6.1), the fields the `Connection` field names, and the framing (`Content-Length`,
//! `Transfer-Encoding`), which the activator writes for its own connection. Whoever needs a map
//! (an HTTP/2 client's response, a `101` on its way to a tunnel) gets the same fields as one
//! ([`Relayed::append_to`]).

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

/// What a field's name says it is, as far as framing and forwarding go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    Date,
    /// Another field that concerns only one connection: `Keep-Alive`, `Proxy-Connection`,
    /// `Proxy-Authenticate`, `Proxy-Authorization`, `TE`.
    HopByHop,
    Other,
}

impl Kind {
    /// The kind of the field named `name`, in any case.
    pub(crate) fn of(name: &[u8]) -> Kind {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            2 if is("te") => Kind::HopByHop,
            4 if is("date") => Kind::Date,
            6 if is("expect") => Kind::Expect,
            7 if is("upgrade") => Kind::Upgrade,
            10 if is("connection") => Kind::Connection,
            10 if is("keep-alive") => Kind::HopByHop,
            14 if is("content-length") => Kind::ContentLength,
            16 if is("proxy-connection") => Kind::HopByHop,
            17 if is("transfer-encoding") => Kind::TransferEncoding,
            18 if is("proxy-authenticate") => Kind::HopByHop,
            19 if is("proxy-authorization") => Kind::HopByHop,
            _ => Kind::Other,
        }
    }

    /// Whether a field of this kind stays behind when a response is relayed.
    fn stays(self) -> bool {
        !matches!(self, Kind::Other | Kind::Date | Kind::Expect)
    }
}

/// Why a response framed so cannot be relayed, if it cannot: by `Transfer-Encoding` and
/// `Content-Length` both (RFC 9112 §6.3: a sign of request smuggling; nginx answers 502 too), or
/// by a `Transfer-Encoding` other than `chunked` alone (any other coding would reach the client
/// undone and unannounced, and a last coding other than chunked runs the body to the close;
/// nginx and Envoy refuse these too).
pub(crate) fn framing_fault(
    transfer_encoding: bool,
    content_length: bool,
    chunked_alone: bool,
) -> Option<&'static str> {
    if !transfer_encoding {
        None
    } else if content_length {
        Some("the response has both Transfer-Encoding and Content-Length")
    } else if !chunked_alone {
        Some("the response's Transfer-Encoding names another coding than one chunked")
    } else {
        None
    }
}

/// A response's fields as they came, and what they say.
#[derive(Debug, Clone)]
pub(crate) struct Relayed {
    /// The whole head, status line included.
    head: Bytes,
    /// Each field: where its name and its value start and end in `head`, and its kind.
    fields: Vec<Field>,
    /// What the fields say.
    pub(crate) says: Says,
}

/// Where one field lies in a head, and its kind, taken once as the head is parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    name: u32,
    name_end: u32,
    value: u32,
    value_end: u32,
    kind: Kind,
}

impl Field {
    /// The field whose name and value start and end at `at` in a head (shorter than 4 GiB).
    pub(crate) fn new(at: [usize; 4], kind: Kind) -> Field {
        let [name, name_end, value, value_end] = at.map(|at| at as u32);
        Field {
            name,
            name_end,
            value,
            value_end,
            kind,
        }
    }
}

/// What a response's fields say, noted as they were parsed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Says {
    /// A `Date` field came.
    pub(crate) date: bool,
    /// The `Content-Length` lines agree on this length, if any came.
    pub(crate) length: Option<Result<u64, ()>>,
    /// A `Transfer-Encoding` field came.
    pub(crate) transfer_encoding: bool,
    /// The `Transfer-Encoding` lines name one coding, `chunked`.
    pub(crate) chunked_alone: bool,
    /// `Connection` names a field besides its own options (`close`, `keep-alive`): that field
    /// stays behind too.
    pub(crate) connection_names: bool,
}

impl Relayed {
    /// The fields of `head` at `fields`, which say `says`.
    pub(crate) fn new(head: Bytes, fields: Vec<Field>, says: Says) -> Relayed {
        Relayed { head, fields, says }
    }

    /// Why the response cannot be relayed, if its framing is why ([`framing_fault`]).
    pub(crate) fn malformed(&self) -> Option<&'static str> {
        let says = &self.says;
        framing_fault(
            says.transfer_encoding,
            says.length.is_some(),
            says.chunked_alone,
        )
    }

    /// The fields that go on (every one, with `all`), as name and value, in the order they came.
    fn kept(&self, all: bool) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().filter_map(move |field| {
            let name = &self.head[field.name as usize..field.name_end as usize];
            if !all && (field.kind.stays() || (self.says.connection_names && self.named(name))) {
                return None;
            }
            Some((
                name,
                &self.head[field.value as usize..field.value_end as usize],
            ))
        })
    }

    /// Whether a `Connection` field names `name`.
    fn named(&self, name: &[u8]) -> bool {
        self.fields.iter().any(|field| {
            field.kind == Kind::Connection
                && self.head[field.value as usize..field.value_end as usize]
                    .split(|b| *b == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
        })
    }

    /// Whether a `Date` field goes on (one the `Connection` field names stays behind, and the
    /// activator then writes its own).
    pub(crate) fn has_date(&self) -> bool {
        self.says.date && !(self.says.connection_names && self.named(b"date"))
    }

    /// Writes the fields that go on, one `name: value` line each.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in self.kept(false) {
            super::write_field_line(name, value, out);
        }
    }

    /// Adds the fields that go on to `headers` for a response with `status` (their values share
    /// the head's bytes), and the length the fields state, as one value: a map goes to a client
    /// whose framing is not `Content-Length` (HTTP/2), which has no other way to learn the
    /// length of an answer to `HEAD`. None for a status that has no content (RFC 9110 §8.6).
    pub(crate) fn append_to(&self, headers: &mut HeaderMap, status: StatusCode) {
        self.append(headers, false);
        let contentless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        if let Some(Ok(length)) = self.says.length
            && !contentless
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
    }

    /// Adds every field to `headers`, those of the connection too (a `101`'s handshake).
    pub(crate) fn append_all_to(&self, headers: &mut HeaderMap) {
        self.append(headers, true);
    }

    fn append(&self, headers: &mut HeaderMap, all: bool) {
        super::append_fields(&self.head, self.kept(all), headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse_response;
    use bytes::BytesMut;
    use http::Method;

    fn relayed(head: &str) -> Relayed {
        parse_response(&mut BytesMut::from(head), &Method::GET, 64 * 1024)
            .unwrap()
            .unwrap()
            .relayed
    }

    fn written(relayed: &Relayed) -> String {
        let mut out = Vec::new();
        relayed.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_go_on_in_order_and_case_without_those_of_the_connection() {
        let relayed = relayed(
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive, X-Hop\r\n\
             Content-Length: 3\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nSet-Cookie: a=1\r\n\
             Proxy-Connection: x\r\nTE: trailers\r\nUpgrade: h2c\r\nSet-Cookie: b=2\r\n\r\n",
        );
        assert_eq!(
            written(&relayed),
            "Server: nginx\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        );
        let mut headers = HeaderMap::new();
        relayed.append_to(&mut headers, StatusCode::OK);
        assert_eq!(headers.len(), 4);
        assert_eq!(headers["content-length"], "3");
        assert_eq!(headers["server"], "nginx");
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
        assert!(relayed.malformed().is_none());
        assert!(!relayed.says.date);
    }

    #[test]
    fn a_chunked_body_is_framed_anew_and_a_date_is_noted() {
        let relayed = relayed(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: Sun, 06 Dec 2026 04:30:10 GMT\r\n\r\n",
        );
        assert_eq!(written(&relayed), "date: Sun, 06 Dec 2026 04:30:10 GMT\r\n");
        assert!(relayed.says.date);
        assert!(relayed.malformed().is_none());
    }

    #[test]
    fn framing_that_could_be_read_two_ways_is_malformed() {
        let both =
            relayed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert!(both.malformed().unwrap().contains("both"));
        let gzip = relayed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(gzip.malformed().unwrap().contains("another coding"));
        let twice = relayed(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(twice.malformed().is_some());
    }

    #[test]
    fn a_bodiless_answer_keeps_the_length_it_states_and_its_date() {
        use crate::http1::Framing;
        use crate::http1::head::{ResponseFraming, write_response_head};
        use http::{StatusCode, Version};
        let parsed = parse_response(
            &mut BytesMut::from(
                "HTTP/1.1 200 OK\r\nDate: Sun, 06 Dec 2026 04:30:10 GMT\r\nContent-Length: 5\r\n\r\n",
            ),
            &Method::HEAD,
            1024,
        )
        .unwrap()
        .unwrap();
        assert_eq!(parsed.framing, Framing::Empty);
        let mut added = HeaderMap::new();
        added.insert("server-timing", HeaderValue::from_static("activator;dur=1"));
        let mut out = Vec::new();
        let how = ResponseFraming {
            framing: Framing::Empty,
            close: false,
            keep_alive_10: false,
        };
        write_response_head(
            Version::HTTP_11,
            StatusCode::OK,
            &added,
            Some(&parsed.relayed),
            how,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nDate: Sun, 06 Dec 2026 04:30:10 GMT\r\n\
             server-timing: activator;dur=1\r\ncontent-length: 5\r\n\r\n"
        );
    }

    #[test]
    fn a_date_the_connection_names_is_replaced_by_the_activators() {
        use crate::http1::Framing;
        use crate::http1::head::{ResponseFraming, write_response_head};
        use http::Version;
        let relayed = relayed(
            "HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\nConnection: Date\r\n\
             Content-Length: 0\r\n\r\n",
        );
        assert!(!relayed.has_date());
        let mut out = Vec::new();
        let how = ResponseFraming {
            framing: Framing::Length(0),
            close: false,
            keep_alive_10: false,
        };
        write_response_head(
            Version::HTTP_11,
            StatusCode::OK,
            &HeaderMap::new(),
            Some(&relayed),
            how,
            &mut out,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("2001"), "{out}");
        assert_eq!(out.matches("date: ").count(), 1, "{out}");
    }

    #[test]
    fn a_map_carries_the_stated_length_once_where_a_status_allows_content() {
        let parsed = parse_response(
            &mut BytesMut::from(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            ),
            &Method::HEAD,
            1024,
        )
        .unwrap()
        .unwrap();
        let mut headers = HeaderMap::new();
        parsed.relayed.append_to(&mut headers, StatusCode::OK);
        assert_eq!(headers.get_all("content-length").iter().count(), 1);
        assert_eq!(headers["content-length"], "5");
        for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
            let mut headers = HeaderMap::new();
            parsed.relayed.append_to(&mut headers, status);
            assert!(!headers.contains_key("content-length"), "{status}");
        }
    }

    #[test]
    fn names_are_known_in_any_case() {
        assert_eq!(Kind::of(b"CONTENT-length"), Kind::ContentLength);
        assert_eq!(Kind::of(b"Transfer-Encoding"), Kind::TransferEncoding);
        assert_eq!(Kind::of(b"te"), Kind::HopByHop);
        assert_eq!(Kind::of(b"tE"), Kind::HopByHop);
        assert_eq!(Kind::of(b"Date"), Kind::Date);
        assert_eq!(Kind::of(b"content-lengths"), Kind::Other);
        assert_eq!(Kind::of(b"keep-alive"), Kind::HopByHop);
        assert_eq!(Kind::of(b"x-keepalive"), Kind::Other);
    }
}
