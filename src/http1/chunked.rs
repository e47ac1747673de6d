//! The chunked transfer coding (RFC 9112 §7.1), read incrementally: data is handed on as it
//! arrives, without waiting for a chunk's end, and trailer fields are returned as a map.
//!
//! Strict about what could make two parsers disagree on where a body ends: a chunk size is 1 to
//! 16 hex digits, every line ends in CRLF (a bare LF is refused), and chunk extensions and the
//! trailer section are bounded.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Bytes of chunk extensions a whole body may carry (hyper's bound).
const MAX_EXTENSION_BYTES: usize = 16 * 1024;
/// Bytes the trailer section may take.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// What the next bytes of a chunked body gave.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    /// Body data (part of a chunk).
    Data(Bytes),
    /// The trailer fields, just before the end.
    Trailers(HeaderMap),
    /// The body ended; nothing of it is left in the buffer.
    End,
}

/// Why a chunked body cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub(crate) struct ChunkError(&'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size (`digits` read so far).
    Size { digits: u8 },
    /// Whitespace after the size, before an extension's `;` or the CR.
    SizeSpace,
    /// A chunk extension, after its `;`, until CR.
    Extension,
    /// The LF ending the size line.
    SizeLf,
    /// Chunk data.
    Data,
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// The trailer section, until an empty line.
    Trailers,
    /// Done.
    End,
}

/// The state of one chunked body being read.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// Data bytes left in the current chunk.
    remaining: u64,
    extension_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            extension_bytes: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Takes what it can from the front of `buf`: some data, the trailers, or the end; `None`
    /// when more bytes are needed.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ChunkError> {
        loop {
            match self.state {
                State::End => return Ok(Some(Decoded::End)),
                State::Data => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Some(Decoded::Data(buf.split_to(take).freeze())));
                }
                State::Trailers => return self.trailers(buf),
                _ => {
                    let Some(&byte) = buf.first() else {
                        return Ok(None);
                    };
                    let _ = buf.split_to(1);
                    self.step(byte)?;
                }
            }
        }
    }

    /// One byte of a size line or of the CRLF after data.
    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        self.state = match (self.state, byte) {
            (State::Size { digits }, _) if byte.is_ascii_hexdigit() => {
                if digits == 16 {
                    return Err(ChunkError("a chunk size has more than 16 hex digits"));
                }
                let value = u64::from(char::from(byte).to_digit(16).unwrap_or(0));
                self.remaining = self.remaining << 4 | value;
                State::Size { digits: digits + 1 }
            }
            (State::Size { digits: 0 }, _) => {
                return Err(ChunkError("a chunk does not start with its size"));
            }
            (State::Size { .. } | State::SizeSpace | State::Extension, b'\r') => State::SizeLf,
            (State::Size { .. } | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::Size { .. } | State::SizeSpace, b';') => State::Extension,
            (State::Extension, _) if byte != b'\n' && byte != 0 => {
                self.extension_bytes += 1;
                if self.extension_bytes > MAX_EXTENSION_BYTES {
                    return Err(ChunkError("chunk extensions are too long"));
                }
                State::Extension
            }
            (State::Size { .. } | State::SizeSpace | State::Extension, _) => {
                return Err(ChunkError("a chunk size line has an invalid byte"));
            }
            (State::SizeLf, b'\n') if self.remaining == 0 => State::Trailers,
            (State::SizeLf, b'\n') => State::Data,
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => {
                self.remaining = 0;
                State::Size { digits: 0 }
            }
            (State::SizeLf | State::DataCr | State::DataLf, _) => {
                return Err(ChunkError("a chunk line does not end in CRLF"));
            }
            (State::Data | State::Trailers | State::End, _) => self.state,
        };
        Ok(())
    }

    /// The trailer section: an empty line alone, or fields ending in an empty line.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ChunkError> {
        if buf.starts_with(b"\r\n") {
            let _ = buf.split_to(2);
            self.state = State::End;
            return Ok(Some(Decoded::End));
        }
        // Every line ends in CRLF: a bare LF could end the section (or a field) early for another
        // parser, so it is refused wherever it is, not only where the section ends.
        let mut end = None;
        for (at, &byte) in buf.iter().enumerate().take(MAX_TRAILER_BYTES + 4) {
            if byte != b'\n' {
                continue;
            }
            if at == 0 || buf[at - 1] != b'\r' {
                return Err(ChunkError("a trailer line does not end in CRLF"));
            }
            if at >= 3 && buf[at - 3..=at] == *b"\r\n\r\n" {
                end = Some(at + 1);
                break;
            }
        }
        let Some(end) = end else {
            if buf.len() > MAX_TRAILER_BYTES {
                return Err(ChunkError("the trailer section is too long"));
            }
            return Ok(None);
        };
        let section = buf.split_to(end);
        let mut fields = [httparse::EMPTY_HEADER; super::MAX_HEADERS];
        let parsed = httparse::parse_headers(&section, &mut fields)
            .map_err(|_| ChunkError("the trailer section is not well-formed"))?;
        let httparse::Status::Complete((read, fields)) = parsed else {
            return Err(ChunkError("the trailer section is not well-formed"));
        };
        if read != section.len() {
            return Err(ChunkError("the trailer section is not well-formed"));
        }
        let mut trailers = HeaderMap::with_capacity(fields.len());
        for field in fields {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ChunkError("a trailer field name is not valid"))?;
            let value = HeaderValue::from_bytes(field.value)
                .map_err(|_| ChunkError("a trailer field value is not valid"))?;
            if !forbidden_in_trailers(&name) {
                trailers.append(name, value);
            }
        }
        self.state = State::End;
        Ok(Some(Decoded::Trailers(trailers)))
    }
}

/// Fields a trailer section must not carry (RFC 9110 §6.5.1): framing, routing, request
/// modifiers and authentication, which a recipient could mistake for the head's. Dropped, as
/// hyper's encoder drops them.
fn forbidden_in_trailers(name: &HeaderName) -> bool {
    use http::header::*;
    [
        AUTHORIZATION,
        CACHE_CONTROL,
        CONNECTION,
        CONTENT_ENCODING,
        CONTENT_LENGTH,
        CONTENT_RANGE,
        CONTENT_TYPE,
        EXPECT,
        HOST,
        MAX_FORWARDS,
        PRAGMA,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        RANGE,
        SET_COOKIE,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        WWW_AUTHENTICATE,
    ]
    .contains(name)
}

/// The size line that starts a chunk of `len` bytes (`len` > 0).
pub(crate) fn chunk_head(len: usize) -> ChunkHead {
    let mut head = ChunkHead {
        bytes: [0; 18],
        len: 0,
    };
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut count = 0;
    loop {
        digits[count] = b"0123456789abcdef"[n & 0xf];
        count += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        head.bytes[i] = digits[count - 1 - i];
    }
    head.bytes[count..count + 2].copy_from_slice(b"\r\n");
    head.len = count + 2;
    head
}

/// A chunk's size line, on the stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkHead {
    bytes: [u8; 18],
    len: usize,
}

impl AsRef<[u8]> for ChunkHead {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The last chunk and the trailer section: `0`, the trailer fields if any, an empty line.
pub(crate) fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        super::write_field_line(name.as_str().as_bytes(), value.as_bytes(), out);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data, the trailers and what is left after the body.
    type DecodedWire = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Decodes `wire` fed `step` bytes at a time.
    fn decode(wire: &[u8], step: usize) -> Result<DecodedWire, ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        for (i, piece) in wire.chunks(step).enumerate() {
            buf.extend_from_slice(piece);
            while let Some(decoded) = decoder.decode(&mut buf)? {
                match decoded {
                    Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                    Decoded::Trailers(map) => trailers = Some(map),
                    Decoded::End => {
                        let unfed = wire.get((i + 1) * step..).unwrap_or_default();
                        let rest = [&buf[..], unfed].concat();
                        return Ok((data, trailers, rest));
                    }
                }
            }
        }
        Err(ChunkError("ran out"))
    }

    #[test]
    fn chunks_decode_whole_or_byte_by_byte_and_leave_what_follows() {
        let wire =
            b"5;name=value\r\nhello\r\n1A \t;x\r\nabcdefghijklmnopqrstuvwxyz\r\n0 \r\n\r\nNEXT";
        for step in [1, 3, wire.len()] {
            let (data, trailers, rest) = decode(wire, step).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
            assert!(trailers.is_none());
            assert_eq!(rest, b"NEXT");
        }
    }

    #[test]
    fn trailers_are_returned_before_the_end() {
        let wire = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n";
        for step in [1, wire.len()] {
            let (data, trailers, rest) = decode(wire, step).unwrap();
            assert_eq!(data, b"abc");
            let trailers = trailers.unwrap();
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x-t"], "1");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn trailers_leave_what_follows_and_drop_fields_that_belong_in_the_head() {
        let wire = b"0\r\ncontent-length: 5\r\nx-t: 1\r\nHost: b\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        for step in [1, wire.len()] {
            let (_, trailers, rest) = decode(wire, step).unwrap();
            let trailers = trailers.unwrap();
            assert_eq!(trailers.len(), 1, "{trailers:?}");
            assert_eq!(trailers["x-t"], "1");
            assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        }
    }

    #[test]
    fn framing_two_parsers_could_read_differently_is_refused() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n0\r\n\r\n",
            b"g\r\n",
            b"11111111111111111\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5\r\x00\nhello\r\n",
            // After the size, only whitespace and then `;` may start an extension.
            b"5 xyz\r\nhello\r\n0\r\n\r\n",
            // A bare LF ending the trailer section, or a field in it, with a request after it.
            b"0\r\n\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
            b"0\r\nx-t: 1\n\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
            b"0\r\nx-t: 1\nx-u: 2\r\n\r\n",
        ] {
            assert!(
                decode(wire, 1).is_err(),
                "{:?} was taken",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn size_lines_are_written_in_hex() {
        assert_eq!(chunk_head(1).as_ref(), b"1\r\n");
        assert_eq!(chunk_head(0x1a2b).as_ref(), b"1a2b\r\n");
        assert_eq!(chunk_head(usize::MAX).as_ref().len(), 18);
        let mut out = Vec::new();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        last_chunk(Some(&trailers), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\n\r\n");
    }
}
