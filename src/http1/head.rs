//! Request and response heads: parsed from the bytes read so far (without copying: the head's
//! bytes are frozen once and every value is a slice of them), a request's into `http`'s types
//! (but for the fields only its replica reads, [`super::passthrough`]), a response's fields kept
//! as they came ([`super::relayed`]), and written back out for the other peer.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version, request, response};

use super::names::Reader;
use super::passthrough::Passthrough;
use super::relayed::{Field, Kind, Relayed, Says};
use super::{Framing, MAX_HEADERS};

/// Why a head cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// The head runs past the size allowed (`size` bytes read so far).
    #[error("the head is larger than {max} bytes")]
    TooLarge {
        /// Bytes read without the head ending.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// More header fields than [`MAX_HEADERS`].
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// Not a well-formed HTTP/1.x head, or framed ambiguously.
    #[error("{0}")]
    Malformed(&'static str),
}

/// A request head, and what its fields say about the exchange.
#[derive(Debug)]
pub(crate) struct ParsedRequest {
    /// Method, target, version and fields.
    pub(crate) parts: request::Parts,
    /// How its body is delimited.
    pub(crate) framing: Framing,
    /// The client is willing to send another request on the connection afterwards.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`.
    pub(crate) expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` field.
    pub(crate) upgrade: bool,
    /// The head as it was read.
    pub(crate) raw: Bytes,
}

/// A response head, and what its fields say about the exchange.
#[derive(Debug)]
pub(crate) struct ParsedResponse {
    /// Status and version; no fields: they are in `relayed`.
    pub(crate) parts: response::Parts,
    /// The fields, as they came.
    pub(crate) relayed: Relayed,
    /// How its body is delimited (given the request it answers).
    pub(crate) framing: Framing,
    /// The replica will take another request on the connection afterwards.
    pub(crate) keep_alive: bool,
}

/// The special fields of a head, noted while its fields are taken.
#[derive(Default)]
struct Noted {
    content_length: Option<Result<u64, ()>>,
    transfer_encoding: bool,
    chunked_last: bool,
    /// Codings the `Transfer-Encoding` lines name, in all.
    codings: usize,
    close: bool,
    /// `Connection` names something besides `close`, `keep-alive` and `upgrade`.
    connection_names: bool,
    date: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade_field: bool,
    expect_continue: bool,
}

impl Noted {
    fn note(&mut self, kind: Kind, value: &[u8]) {
        match kind {
            Kind::ContentLength => {
                let this = parse_length(value);
                self.content_length = Some(match (self.content_length, this) {
                    (None, this) => this,
                    // Several lengths must all agree (RFC 9110 §8.6).
                    (Some(Ok(a)), Ok(b)) if a == b => Ok(a),
                    _ => Err(()),
                });
            }
            Kind::TransferEncoding => {
                self.transfer_encoding = true;
                // The last coding of the last line decides how the body ends.
                for coding in codings(value) {
                    self.codings += 1;
                    self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
            Kind::Connection => {
                for token in value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        self.upgrade_token = true;
                    } else if !token.is_empty() {
                        self.connection_names = true;
                    }
                }
            }
            Kind::Upgrade => self.upgrade_field = true,
            Kind::Expect => {
                self.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            Kind::Date => self.date = true,
            Kind::HopByHop | Kind::Other => {}
        }
    }

    /// The `Transfer-Encoding` lines name one coding in all, `chunked`.
    fn chunked_alone(&self) -> bool {
        self.codings == 1 && self.chunked_last
    }

    fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::HTTP_11 || self.keep_alive)
    }
}

/// A `Content-Length` value: digits only (a list of equal values allowed), at most 19 of them.
fn parse_length(value: &[u8]) -> Result<u64, ()> {
    let mut length = None;
    for item in value.split(|b| *b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = item
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    length.ok_or(())
}

thread_local! {
    /// Where each field of the head being parsed lies: name and value, as byte offsets.
    static FIELDS: RefCell<Vec<[usize; 4]>> = const { RefCell::new(Vec::new()) };
}

fn offset(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// The longest request target `http`'s `Uri` takes.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Takes the fields noted in `FIELDS` out of `head`: into a map, but for those only the replica
/// reads, which pass through as they came (none, if a `Connection` line names a field).
fn fields(head: &Bytes, noted: &mut Noted) -> Result<(HeaderMap, Vec<[u32; 4]>), HeadError> {
    FIELDS.with_borrow(|ranges| {
        // One slot spare: `HeaderMap::entry` and `insert` reserve one even for a name already
        // there, as the header rewriting looks up the forwarded fields and `Cookie` and sets
        // `Host`, and a full map would grow (copying every field) for it.
        let mut headers = HeaderMap::with_capacity(ranges.len() + 1);
        let mut passed = Vec::new();
        for &[name_start, name_end, value_start, value_end] in ranges {
            let name = &head[name_start..name_end];
            noted.note(Kind::of(name), &head[value_start..value_end]);
            let name = match super::names::common(name) {
                Some((_, Reader::Replica)) => {
                    debug_assert!(HeaderValue::from_bytes(&head[value_start..value_end]).is_ok());
                    // A head is at most `MAX_HEAD` long.
                    passed.push([name_start, name_end, value_start, value_end].map(|at| at as u32));
                    continue;
                }
                Some((name, Reader::Proxy)) => name,
                None => HeaderName::from_bytes(name)
                    .map_err(|_| HeadError::Malformed("a header field name is not valid"))?,
            };
            let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
                .map_err(|_| HeadError::Malformed("a header field value is not valid"))?;
            headers.append(name, value);
        }
        if noted.connection_names && !passed.is_empty() {
            // The field a `Connection` line names is removed from the map; it must be there.
            Passthrough::new(head.clone(), std::mem::take(&mut passed)).append_to(&mut headers);
        }
        Ok((headers, passed))
    })
}

fn parse_error(error: httparse::Error) -> HeadError {
    match error {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => HeadError::Malformed("the HTTP version is not 1.0 or 1.1"),
        httparse::Error::Token | httparse::Error::HeaderName => {
            HeadError::Malformed("a header field name or the method has a character not allowed")
        }
        _ => HeadError::Malformed("the head is not well-formed HTTP/1.1"),
    }
}

fn version(minor: Option<u8>) -> Version {
    if minor == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    }
}

/// The largest head taken whatever the configured bound: the fields that are not put in a map
/// (a response's, and a request's that pass through) are kept as 32-bit offsets into it.
const MAX_HEAD: usize = u32::MAX as usize;

/// Takes a complete request head off the front of `buf`, if it holds one; `Ok(None)` means more
/// bytes are needed. A head that has not ended within `max` bytes (at most [`MAX_HEAD`]) is
/// [`HeadError::TooLarge`].
pub(crate) fn parse_request(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<ParsedRequest>, HeadError> {
    let max = max.min(MAX_HEAD);
    let (len, method, target, minor) = {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut slots,
        );
        match parsed {
            Ok(httparse::Status::Complete(len)) => {
                let whole: &[u8] = buf;
                FIELDS.with_borrow_mut(|ranges| {
                    ranges.clear();
                    ranges.extend(request.headers.iter().map(|h| {
                        let name = offset(whole, h.name.as_bytes());
                        let value = offset(whole, h.value);
                        [name, name + h.name.len(), value, value + h.value.len()]
                    }));
                });
                let method = request.method.unwrap_or_default();
                let target = request.path.unwrap_or_default();
                let target = offset(whole, target.as_bytes())
                    ..offset(whole, target.as_bytes()) + target.len();
                (
                    len,
                    Method::from_bytes(method.as_bytes()),
                    target,
                    request.version,
                )
            }
            Ok(httparse::Status::Partial) if buf.len() > max => {
                return Err(HeadError::TooLarge {
                    size: buf.len(),
                    max,
                });
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(parse_error(error)),
        }
    };
    if len > max {
        return Err(HeadError::TooLarge { size: len, max });
    }
    let method = method.map_err(|_| HeadError::Malformed("the method is not a valid token"))?;
    if target.len() > MAX_TARGET {
        return Err(HeadError::Malformed(
            "the request target is longer than 65,534 bytes, the most a URI may have: shorten it \
             (data that large belongs in a body)",
        ));
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| HeadError::Malformed("the request target is not a valid URI"))?;
    if uri.scheme().is_none() && uri.authority().is_some() && method != Method::CONNECT {
        return Err(HeadError::Malformed(
            "the request target is a host alone, which only CONNECT may send: send a path",
        ));
    }
    let version = version(minor);
    let mut noted = Noted::default();
    let (headers, passed) = fields(&head, &mut noted)?;
    let framing = if noted.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed(
                "an HTTP/1.0 request cannot use Transfer-Encoding",
            ));
        }
        if noted.content_length.is_some() {
            return Err(HeadError::Malformed(
                "the request has both Transfer-Encoding and Content-Length",
            ));
        }
        if !noted.chunked_alone() {
            return Err(HeadError::Malformed(
                "the request's Transfer-Encoding names another coding than one chunked",
            ));
        }
        Framing::Chunked
    } else {
        match noted.content_length {
            Some(Ok(0)) | None => Framing::Empty,
            Some(Ok(n)) => Framing::Length(n),
            Some(Err(())) => {
                return Err(HeadError::Malformed(
                    "the request's Content-Length is not one number",
                ));
            }
        }
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    if !passed.is_empty() {
        parts
            .extensions
            .insert(Passthrough::new(head.clone(), passed));
    }
    Ok(Some(ParsedRequest {
        keep_alive: noted.keep_alive(version),
        expect_continue: noted.expect_continue && version == Version::HTTP_11,
        upgrade: noted.upgrade_token && noted.upgrade_field,
        framing,
        parts,
        raw: head,
    }))
}

/// Takes a complete response head (to a request with `method`) off the front of `buf`, if it
/// holds one; `Ok(None)` means more bytes are needed. Informational (1xx) heads are returned
/// too; the caller skips them. A head longer than `max` bytes (at most [`MAX_HEAD`]) is
/// [`HeadError::TooLarge`].
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    max: usize,
) -> Result<Option<ParsedResponse>, HeadError> {
    let max = max.min(MAX_HEAD);
    let (len, code, minor) = {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        match parsed {
            Ok(httparse::Status::Complete(len)) => {
                let whole: &[u8] = buf;
                FIELDS.with_borrow_mut(|ranges| {
                    ranges.clear();
                    ranges.extend(response.headers.iter().map(|h| {
                        let name = offset(whole, h.name.as_bytes());
                        let value = offset(whole, h.value);
                        [name, name + h.name.len(), value, value + h.value.len()]
                    }));
                });
                (len, response.code.unwrap_or_default(), response.version)
            }
            Ok(httparse::Status::Partial) if buf.len() > max => {
                return Err(HeadError::TooLarge {
                    size: buf.len(),
                    max,
                });
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(parse_error(error)),
        }
    };
    if len > max {
        return Err(HeadError::TooLarge { size: len, max });
    }
    let status = StatusCode::from_u16(code)
        .map_err(|_| HeadError::Malformed("the status code is not valid"))?;
    let head = buf.split_to(len).freeze();
    let version = version(minor);
    let mut noted = Noted::default();
    let fields = FIELDS.with_borrow(|ranges| {
        ranges
            .iter()
            .map(|&[name, name_end, value, value_end]| {
                // What `http` takes for a name, should the fields become a map.
                if name_end - name > usize::from(u16::MAX) {
                    return Err(HeadError::Malformed("a header field name is not valid"));
                }
                let kind = Kind::of(&head[name..name_end]);
                noted.note(kind, &head[value..value_end]);
                // A head is at most `MAX_HEAD` long.
                Ok(Field::new([name, name_end, value, value_end], kind))
            })
            .collect::<Result<Vec<Field>, HeadError>>()
    })?;
    let framing = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || method == Method::HEAD
    {
        Framing::Empty
    } else if noted.transfer_encoding {
        // A final coding other than chunked runs to the close (RFC 9112 §6.3); the proxy refuses
        // to relay such a response anyway.
        if noted.chunked_last {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match noted.content_length {
            Some(Ok(n)) => Framing::Length(n),
            Some(Err(())) => {
                return Err(HeadError::Malformed(
                    "the response's Content-Length is not one number",
                ));
            }
            None => Framing::Close,
        }
    };
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    let says = Says {
        date: noted.date,
        length: noted.content_length,
        transfer_encoding: noted.transfer_encoding,
        chunked_alone: noted.chunked_alone(),
        connection_names: noted.connection_names,
    };
    Ok(Some(ParsedResponse {
        keep_alive: noted.keep_alive(version) && framing != Framing::Close,
        framing,
        parts,
        relayed: Relayed::new(head, fields, says),
    }))
}

/// The codings a `Transfer-Encoding` line names, empty list elements left out (RFC 9110 §5.6.1).
fn codings(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
}

/// Whether the `Transfer-Encoding` of `headers` is `chunked` alone, the only one relayed: with
/// any other coding, the body would reach the other side decoded of its chunks and still in the
/// other codings, announced by nothing (nginx refuses them too).
pub(crate) fn chunked_alone(headers: &HeaderMap) -> bool {
    let mut all = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| codings(value.as_bytes()));
    all.next()
        .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"))
        && all.next().is_none()
}

/// Writes every field but `Content-Length`, which [`write_length`] writes from the framing: a
/// client's `Content-Length: 2, 2` or two equal lines, accepted as one length, reach the other
/// side as one line it cannot read two ways. Returns whether a `Content-Length` came.
fn write_fields(headers: &HeaderMap, out: &mut Vec<u8>) -> bool {
    let mut length = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            length = true;
        } else {
            write_field(name, value, out);
        }
    }
    length
}

fn write_field(name: &HeaderName, value: &HeaderValue, out: &mut Vec<u8>) {
    super::write_field_line(name.as_str().as_bytes(), value.as_bytes(), out);
}

/// Writes a request head for a replica: `method target HTTP/1.1`, the fields, and the field that
/// frames its body (`Transfer-Encoding: chunked` when its length is unknown; a known length
/// travels in its own `Content-Length`).
pub(crate) fn write_request_head<'a>(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    passed: Option<&Passthrough>,
    added: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: Framing,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    match uri.path_and_query() {
        Some(target) => out.extend_from_slice(target.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let length_stated = write_fields(headers, out);
    if let Some(passed) = passed {
        passed.write(out);
    }
    for (name, value) in added {
        write_field(name, value, out);
    }
    // An empty body the client announced with `Content-Length: 0` keeps it (a replica may want a
    // length on a POST).
    let stated = length_stated.then_some(&b"0"[..]);
    write_length(framing, stated, out);
    out.extend_from_slice(b"\r\n");
}

/// Writes the field that frames a body: `Transfer-Encoding: chunked`, or `Content-Length` with
/// the length, or (with no body to frame) `stated`, the length a head announces for a body it
/// does not carry (a response to `HEAD`, a 304). A body that runs to the close has neither.
fn write_length(framing: Framing, stated: Option<&[u8]>, out: &mut Vec<u8>) {
    match (framing, stated) {
        (Framing::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        (Framing::Length(n), _) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        (Framing::Empty, Some(stated)) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(stated);
            out.extend_from_slice(b"\r\n");
        }
        (Framing::Empty | Framing::Close, _) => {}
    }
}

/// How a response's head frames its body and the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseFraming {
    /// How the body follows.
    pub(crate) framing: Framing,
    /// The connection closes after this response.
    pub(crate) close: bool,
    /// The client spoke HTTP/1.0 and keeps the connection (it must be told so).
    pub(crate) keep_alive_10: bool,
}

/// Writes a response head for a client in `version`: the status line, the fields, the fields
/// that frame its body and the connection, and `Date` if the fields have none.
pub(crate) fn write_response_head(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    relayed: Option<&Relayed>,
    how: ResponseFraming,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(relayed) = relayed {
        relayed.write(out);
    }
    // The length is taken from `relayed` or the map below.
    let _ = write_fields(headers, out);
    // A 1xx or 204 has no body and must not announce one (RFC 9110 §8.6).
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT;
    // The length a bodiless answer states (to HEAD, a 304) goes out as one number if its lines
    // agree on one, else not at all.
    let stated = match relayed {
        Some(relayed) => relayed.says.length.and_then(Result::ok),
        None => {
            let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
            lengths.next().and_then(|first| {
                let n = parse_length(first.as_bytes()).ok()?;
                lengths
                    .all(|other| parse_length(other.as_bytes()) == Ok(n))
                    .then_some(n)
            })
        }
    }
    .filter(|_| !bodiless);
    let mut digits = itoa::Buffer::new();
    let stated = stated.map(|n| digits.format(n).as_bytes());
    write_length(how.framing, stated, out);
    if how.close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if how.keep_alive_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !relayed.is_some_and(Relayed::has_date) && !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|date| out.extend_from_slice(date.now()));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Date` value, formatted once a second per thread (as hyper and nginx cache it).
struct CachedDate {
    second: u64,
    text: [u8; 29],
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == self.text.len() {
                self.text.copy_from_slice(text.as_bytes());
                self.second = second;
            }
        }
        &self.text
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = const {
        RefCell::new(CachedDate { second: 0, text: *b"Thu, 01 Jan 1970 00:00:00 GMT" })
    };
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn request(text: &str) -> Result<Option<ParsedRequest>, HeadError> {
        parse_request(&mut BytesMut::from(text), 64 * 1024)
    }

    fn response(text: &str, method: &Method) -> Result<Option<ParsedResponse>, HeadError> {
        parse_response(&mut BytesMut::from(text), method, 64 * 1024)
    }

    /// The head a replica gets for `parsed`, with no fields added.
    pub(crate) fn written(parsed: &ParsedRequest) -> String {
        let mut out = Vec::new();
        let parts = &parsed.parts;
        write_request_head(
            &parts.method,
            &parts.uri,
            &parts.headers,
            parts.extensions.get(),
            std::iter::empty(),
            parsed.framing,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_request_head_becomes_parts_and_leaves_its_body_in_the_buffer() {
        let mut buf = BytesMut::from(
            "POST /a?b=1 HTTP/1.1\r\nHost: x.test\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc",
        );
        let parsed = parse_request(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(parsed.parts.method, Method::POST);
        assert_eq!(parsed.parts.uri, "/a?b=1");
        assert_eq!(parsed.parts.version, Version::HTTP_11);
        assert_eq!(parsed.parts.headers["host"], "x.test");
        assert_eq!(parsed.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(parsed.framing, Framing::Length(3));
        assert!(parsed.keep_alive);
        assert_eq!(&buf[..], b"abc");
    }

    #[test]
    fn a_whole_head_longer_than_the_bound_is_too_large_either_way() {
        let head = "HTTP/1.1 200 OK\r\nX-Pad: 0123456789\r\n\r\n";
        let mut buf = BytesMut::from(head);
        assert_eq!(
            parse_response(&mut buf, &Method::GET, head.len() - 1).unwrap_err(),
            HeadError::TooLarge {
                size: head.len(),
                max: head.len() - 1
            }
        );
        let head = "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: 0123456789\r\n\r\n";
        let mut buf = BytesMut::from(head);
        assert!(matches!(
            parse_request(&mut buf, head.len() - 1),
            Err(HeadError::TooLarge { .. })
        ));
        assert!(parse_request(&mut BytesMut::from(head), head.len()).is_ok());
    }

    #[test]
    fn the_rewritings_lookups_of_fields_present_do_not_grow_the_map() {
        let parsed = request(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.1\r\nCookie: c=1\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        let mut headers = parsed.parts.headers;
        let capacity = headers.capacity();
        let _ = headers.entry("x-forwarded-for");
        let _ = headers.entry(header::COOKIE);
        headers.insert(header::HOST, HeaderValue::from_static("b"));
        assert_eq!(headers.capacity(), capacity);
    }

    #[test]
    fn a_partial_head_asks_for_more_until_it_outgrows_the_bound() {
        assert!(request("GET / HTTP/1.1\r\nHost: a").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100));
        assert_eq!(
            parse_request(&mut BytesMut::from(long.as_str()), 50).unwrap_err(),
            HeadError::TooLarge {
                size: long.len(),
                max: 50
            }
        );
    }

    #[test]
    fn ambiguous_request_framing_is_refused() {
        for text in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            "GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
            "GET example.test HTTP/1.1\r\nHost: example.test\r\n\r\n",
            "GET example.test:80 HTTP/1.1\r\nHost: example.test\r\n\r\n",
        ] {
            assert!(
                matches!(request(text), Err(HeadError::Malformed(_))),
                "{text:?} was taken"
            );
        }
        let same = request("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\n");
        assert_eq!(same.unwrap().unwrap().framing, Framing::Length(3));
        for codings in ["Chunked", ", chunked", "chunked,"] {
            let text = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {codings}\r\n\r\n");
            let chunked = request(&text).unwrap().unwrap();
            assert_eq!(chunked.framing, Framing::Chunked, "{codings:?}");
        }
        for codings in [
            "gzip, chunked",
            "chunked, chunked",
            "gzip\r\nTransfer-Encoding: chunked",
        ] {
            let text = format!("POST / HTTP/1.1\r\nTransfer-Encoding: {codings}\r\n\r\n");
            assert!(
                matches!(request(&text), Err(HeadError::Malformed(_))),
                "{codings:?} was taken"
            );
        }
    }

    #[test]
    fn a_target_too_long_for_a_uri_is_refused_saying_so() {
        let request = |text: String| parse_request(&mut BytesMut::from(text.as_str()), 1 << 20);
        let target = format!("/{}", "a".repeat(MAX_TARGET));
        let error = request(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n")).unwrap_err();
        assert!(
            matches!(error, HeadError::Malformed(why) if why.contains("longer than 65,534")),
            "{error:?}"
        );
        let longest = &target[..MAX_TARGET];
        let parsed = request(format!("GET {longest} HTTP/1.1\r\nHost: a\r\n\r\n"))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.parts.uri.path().len(), MAX_TARGET);
    }

    #[test]
    fn more_than_a_hundred_fields_are_too_many() {
        let mut text = "GET / HTTP/1.1\r\n".to_owned();
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("x-{i}: 1\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(request(&text).unwrap_err(), HeadError::TooManyHeaders);
    }

    #[test]
    fn connection_fields_say_whether_the_client_keeps_the_connection() {
        let keeps = |text: &str| request(text).unwrap().unwrap().keep_alive;
        assert!(keeps("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.0\r\n\r\n"));
        assert!(keeps("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        let upgrade = request(
            "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(upgrade.unwrap().unwrap().upgrade);
        let expect = request("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(expect.unwrap().unwrap().expect_continue);
    }

    #[test]
    fn response_framing_follows_the_status_the_method_and_the_fields() {
        let framing =
            |text: &str, method: &Method| response(text, method).unwrap().unwrap().framing;
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &Method::GET),
            Framing::Length(5)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &Method::HEAD
            ),
            Framing::Empty
        );
        assert_eq!(
            framing(
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                &Method::GET
            ),
            Framing::Empty
        );
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\n\r\n", &Method::GET),
            Framing::Empty
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &Method::GET
            ),
            Framing::Chunked
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                &Method::GET
            ),
            Framing::Close
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\n\r\n", &Method::GET),
            Framing::Close
        );
        assert!(matches!(
            response(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &Method::GET
            ),
            Err(HeadError::Malformed(_))
        ));
        let kept = |text: &str| response(text, &Method::GET).unwrap().unwrap().keep_alive;
        assert!(kept("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!kept(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!kept("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(kept(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(
            !kept("HTTP/1.1 200 OK\r\n\r\n"),
            "a body to the close ends the connection"
        );
    }

    #[test]
    fn heads_are_written_with_their_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("a.test"));
        let mut out = Vec::new();
        let uri: Uri = "/p?q".parse().unwrap();
        write_request_head(
            &Method::PUT,
            &uri,
            &headers,
            None,
            std::iter::empty(),
            Framing::Chunked,
            &mut out,
        );
        assert_eq!(
            out,
            b"PUT /p?q HTTP/1.1\r\nhost: a.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        out.clear();
        headers.insert("date", HeaderValue::from_static("now"));
        let how = ResponseFraming {
            framing: Framing::Length(2),
            close: true,
            keep_alive_10: false,
        };
        write_response_head(
            Version::HTTP_11,
            StatusCode::NOT_FOUND,
            &headers,
            None,
            how,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nhost: a.test\r\ndate: now\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn a_length_stated_twice_or_in_a_list_goes_out_once_as_the_framing_says() {
        for stated in [
            "Content-Length: 2\r\nContent-Length: 2",
            "Content-Length: 2, 2",
            "Content-Length: 0002",
        ] {
            let parsed = request(&format!("POST / HTTP/1.1\r\nHost: a\r\n{stated}\r\n\r\n"))
                .unwrap()
                .unwrap();
            assert_eq!(
                written(&parsed),
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n",
                "{stated}"
            );
        }
        // A head announcing a body it does not carry keeps its length, once; a 204 has none.
        let mut headers = HeaderMap::new();
        headers.append("content-length", HeaderValue::from_static("5, 5"));
        headers.append("content-length", HeaderValue::from_static("05"));
        headers.insert("date", HeaderValue::from_static("now"));
        let how = ResponseFraming {
            framing: Framing::Empty,
            close: false,
            keep_alive_10: false,
        };
        for (status, expected) in [
            (
                StatusCode::OK,
                "HTTP/1.1 200 OK\r\ndate: now\r\ncontent-length: 5\r\n\r\n",
            ),
            (
                StatusCode::NO_CONTENT,
                "HTTP/1.1 204 No Content\r\ndate: now\r\n\r\n",
            ),
        ] {
            let mut out = Vec::new();
            write_response_head(Version::HTTP_11, status, &headers, None, how, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
        headers.append("content-length", HeaderValue::from_static("6"));
        let mut out = Vec::new();
        write_response_head(
            Version::HTTP_11,
            StatusCode::OK,
            &headers,
            None,
            how,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ndate: now\r\n\r\n",
            "lengths that disagree are not passed on"
        );
    }

    #[test]
    fn a_response_without_a_date_gets_one() {
        let mut out = Vec::new();
        let how = ResponseFraming {
            framing: Framing::Empty,
            close: false,
            keep_alive_10: true,
        };
        write_response_head(
            Version::HTTP_10,
            StatusCode::NO_CONTENT,
            &HeaderMap::new(),
            None,
            how,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.0 204 No Content\r\nconnection: keep-alive\r\ndate: "));
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
    }
}
