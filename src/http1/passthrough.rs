//! A request's fields that only its replica reads: `User-Agent`, `Accept-Encoding`,
//! `Accept-Language`, `Referer`, the `Sec-Fetch-*` and `Sec-CH-UA*` families, the conditional
//! fields and the rest that [`super::names`] marks [`Reader::Replica`](super::names::Reader).
//! Nothing in the activator routes, frames, rewrites or answers by them, so they are not taken
//! into the request's `HeaderMap` (naming, checking and hashing each cost about 300 instructions,
//! and a browser sends a dozen); they stay slices of the head they came in, and go out to an
//! HTTP/1.1 replica as they came, after the map's fields. A name keeps the client's case (field
//! names are case-blind, RFC 9110 §5.1; nginx relays them so too).
//!
//! The parser keeps none when a `Connection` line names a field other than its own options:
//! such a field must be removed, and only the map is looked in for it.

use bytes::Bytes;
use http::header::HeaderMap;

/// The fields of one request head that pass through to its replica untouched. Carried in the
/// request's extensions from the parser to the replica's connection.
#[derive(Debug, Clone)]
pub(crate) struct Passthrough {
    /// The whole head the fields lie in.
    head: Bytes,
    /// Each field: where its name and its value start and end in `head`.
    fields: Vec<[u32; 4]>,
}

impl Passthrough {
    /// Fields of `head`, at the offsets each of `fields` gives (a head is at most 4 GiB long,
    /// as the parser takes it). Their names and values are as `httparse` took them: tokens, and values of the
    /// bytes `http`'s `HeaderValue` takes too.
    pub(crate) fn new(head: Bytes, fields: Vec<[u32; 4]>) -> Passthrough {
        Passthrough { head, fields }
    }

    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|&[name, name_end, value, value_end]| {
                let at = |from: u32, to: u32| &self.head[from as usize..to as usize];
                (at(name, name_end), at(value, value_end))
            })
    }

    /// How many fields there are.
    pub(crate) fn len(&self) -> usize {
        self.fields.len()
    }

    /// Their size as HTTP/1.1 sends them: each name and value, and the four bytes of `: ` and
    /// CRLF.
    pub(crate) fn bytes(&self) -> usize {
        self.each()
            .map(|(name, value)| name.len() + value.len() + 4)
            .sum()
    }

    /// Writes each field as an HTTP/1.1 header line.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in self.each() {
            super::write_field_line(name, value, out);
        }
    }

    /// Appends each field to `headers` (for an HTTP/2 replica, whose fields are a map's).
    pub(crate) fn append_to(&self, headers: &mut HeaderMap) {
        super::append_fields(&self.head, self.each(), headers);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use http::HeaderValue;

    use super::*;
    use crate::http1::head::tests::written;
    use crate::http1::head::{ParsedRequest, parse_request};

    fn parse(head: &str) -> ParsedRequest {
        parse_request(&mut BytesMut::from(head), 64 * 1024)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn fields_only_the_replica_reads_stay_out_of_the_map_and_go_out_after_it() {
        let parsed = parse(
            "GET / HTTP/1.1\r\nUSER-AGENT: a\r\nHost: x.test\r\nAccept-Language: da\r\n\
             X-Other: 1\r\naccept-language: en\r\nAccept: */*\r\n\r\n",
        );
        let names: Vec<&str> = parsed.parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "x-other", "accept"]);
        assert_eq!(
            parsed.parts.extensions.get::<Passthrough>().unwrap().len(),
            3
        );
        assert_eq!(
            written(&parsed),
            "GET / HTTP/1.1\r\nhost: x.test\r\nx-other: 1\r\naccept: */*\r\n\
             USER-AGENT: a\r\nAccept-Language: da\r\naccept-language: en\r\n\r\n"
        );
    }

    #[test]
    fn a_request_without_such_fields_carries_nothing_beside_its_map() {
        let parsed = parse("GET / HTTP/1.1\r\nHost: x.test\r\nX-Other: 1\r\n\r\n");
        assert!(parsed.parts.extensions.get::<Passthrough>().is_none());
        assert_eq!(parsed.parts.headers.len(), 2);
    }

    #[test]
    fn a_connection_line_naming_a_field_puts_every_field_in_the_map() {
        let parsed = parse(
            "GET / HTTP/1.1\r\nHost: x.test\r\nUser-Agent: a\r\nDNT: 1\r\n\
             Connection: keep-alive, dnt\r\n\r\n",
        );
        assert!(parsed.parts.extensions.get::<Passthrough>().is_none());
        assert_eq!(parsed.parts.headers["user-agent"], "a");
        assert_eq!(parsed.parts.headers["dnt"], "1");
        // Its own options name no field: the fields pass through.
        let parsed = parse(
            "GET / HTTP/1.1\r\nHost: x.test\r\nUser-Agent: a\r\nConnection: keep-alive\r\n\r\n",
        );
        assert!(parsed.parts.extensions.get::<Passthrough>().is_some());
    }

    #[test]
    fn every_value_byte_httparse_takes_is_one_a_header_value_takes() {
        // Values passing through are never checked by `HeaderValue`: whatever the parser lets
        // into one, on its scalar path and its vectored one (a long value), `http` must take too.
        let mut taken_values = 0;
        for byte in 0..=255u8 {
            for (before, after) in [(1, 1), (40, 40)] {
                let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: ".to_vec();
                let mut value = vec![b'v'; before];
                value.push(byte);
                value.extend(std::iter::repeat_n(b'v', after));
                head.extend_from_slice(&value);
                head.extend_from_slice(b"\r\n\r\n");
                let Ok(Some(parsed)) = parse_request(&mut BytesMut::from(&head[..]), 1024) else {
                    continue;
                };
                let passed = parsed.parts.extensions.get::<Passthrough>().unwrap();
                let (_, taken) = passed.each().next().unwrap();
                assert!(
                    HeaderValue::from_bytes(taken).is_ok(),
                    "byte {byte:#04x} was let into a value"
                );
                taken_values += 1;
            }
        }
        // Tab, space to `~`, and obs-text (RFC 9110 §5.5), in both places.
        assert_eq!(taken_values, 2 * (1 + 95 + 128));
    }

    fn passthrough() -> Passthrough {
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nUser-Agent: curl/8\r\nDNT: 1\r\n\r\n");
        Passthrough::new(head, vec![[16, 26, 28, 34], [36, 39, 41, 42]])
    }

    #[test]
    fn fields_go_out_as_they_came_in_the_clients_case() {
        let mut out = Vec::new();
        passthrough().write(&mut out);
        assert_eq!(out, b"User-Agent: curl/8\r\nDNT: 1\r\n");
        assert_eq!(passthrough().bytes(), out.len());
        assert_eq!(passthrough().len(), 2);
    }

    #[test]
    fn fields_appended_to_a_map_are_named_as_http_names_them() {
        let mut headers = HeaderMap::new();
        passthrough().append_to(&mut headers);
        assert_eq!(headers["user-agent"], "curl/8");
        assert_eq!(headers["dnt"], "1");
        assert_eq!(headers.len(), 2);
    }
}
