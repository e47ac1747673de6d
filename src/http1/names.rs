//! The field names most requests carry, recognised by length and a case-blind compare instead of
//! `http`'s `HeaderName::from_bytes`, which copies every name through a lower-casing table and
//! allocates each one it has no constant for (`sec-fetch-mode`, `upgrade-insecure-requests`...).
//! A browser's request carries a dozen fields; naming them was the largest part of what one
//! costs to take in. Each known name also says who reads its fields: most of a browser's are
//! read by the replica alone, and pass through without being named at all
//! ([`super::passthrough`]).

use http::HeaderName;
use http::header;

use Reader::{Proxy, Replica};

/// Who reads the fields of a known name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reader {
    /// The activator: it routes, frames, strips, rewrites or answers by them (`Host`,
    /// `Content-Length`, the hop-by-hop and forwarding fields, `Cookie`, `X-Request-Id`,
    /// `Accept`, `Content-Type`, `grpc-timeout`...), so they go into the request's map.
    Proxy,
    /// The replica alone: nothing in the activator looks at them.
    Replica,
}

/// A known name: as it is written in lower case, the name itself, and who reads it.
type Known = (&'static [u8], HeaderName, Reader);

static LEN_2: [Known; 1] = [(b"te", header::TE, Proxy)];
static LEN_3: [Known; 1] = [(b"dnt", header::DNT, Replica)];
static LEN_4: [Known; 1] = [(b"host", header::HOST, Proxy)];
static LEN_5: [Known; 1] = [(b"range", header::RANGE, Replica)];
static LEN_6: [Known; 4] = [
    (b"accept", header::ACCEPT, Proxy),
    (b"cookie", header::COOKIE, Proxy),
    (b"origin", header::ORIGIN, Replica),
    (b"pragma", header::PRAGMA, Replica),
];
static LEN_7: [Known; 2] = [
    (b"referer", header::REFERER, Replica),
    (b"upgrade", header::UPGRADE, Proxy),
];
static LEN_8: [Known; 1] = [(b"priority", HeaderName::from_static("priority"), Replica)];
static LEN_9: [Known; 2] = [
    (b"sec-ch-ua", HeaderName::from_static("sec-ch-ua"), Replica),
    (b"x-real-ip", HeaderName::from_static("x-real-ip"), Proxy),
];
static LEN_10: [Known; 3] = [
    (b"user-agent", header::USER_AGENT, Replica),
    (b"connection", header::CONNECTION, Proxy),
    (b"keep-alive", HeaderName::from_static("keep-alive"), Proxy),
];
static LEN_12: [Known; 3] = [
    (b"content-type", header::CONTENT_TYPE, Proxy),
    (
        b"x-request-id",
        HeaderName::from_static("x-request-id"),
        Proxy,
    ),
    (
        b"grpc-timeout",
        HeaderName::from_static("grpc-timeout"),
        Proxy,
    ),
];
static LEN_13: [Known; 3] = [
    (b"cache-control", header::CACHE_CONTROL, Replica),
    (b"authorization", header::AUTHORIZATION, Replica),
    (b"if-none-match", header::IF_NONE_MATCH, Replica),
];
static LEN_14: [Known; 5] = [
    (b"content-length", header::CONTENT_LENGTH, Proxy),
    (
        b"sec-fetch-mode",
        HeaderName::from_static("sec-fetch-mode"),
        Replica,
    ),
    (
        b"sec-fetch-site",
        HeaderName::from_static("sec-fetch-site"),
        Replica,
    ),
    (
        b"sec-fetch-dest",
        HeaderName::from_static("sec-fetch-dest"),
        Replica,
    ),
    (
        b"sec-fetch-user",
        HeaderName::from_static("sec-fetch-user"),
        Replica,
    ),
];
static LEN_15: [Known; 3] = [
    (b"accept-encoding", header::ACCEPT_ENCODING, Replica),
    (b"accept-language", header::ACCEPT_LANGUAGE, Replica),
    (
        b"x-forwarded-for",
        HeaderName::from_static("x-forwarded-for"),
        Proxy,
    ),
];
static LEN_16: [Known; 2] = [
    (
        b"sec-ch-ua-mobile",
        HeaderName::from_static("sec-ch-ua-mobile"),
        Replica,
    ),
    (
        b"x-forwarded-host",
        HeaderName::from_static("x-forwarded-host"),
        Proxy,
    ),
];
static LEN_17: [Known; 3] = [
    (b"if-modified-since", header::IF_MODIFIED_SINCE, Replica),
    (b"transfer-encoding", header::TRANSFER_ENCODING, Proxy),
    (
        b"x-forwarded-proto",
        HeaderName::from_static("x-forwarded-proto"),
        Proxy,
    ),
];
static LEN_18: [Known; 1] = [(
    b"sec-ch-ua-platform",
    HeaderName::from_static("sec-ch-ua-platform"),
    Replica,
)];
static LEN_25: [Known; 1] = [(
    b"upgrade-insecure-requests",
    header::UPGRADE_INSECURE_REQUESTS,
    Replica,
)];

/// The known name `raw` spells, in any case, and who reads it; `None` for any other name. `raw`
/// must be a token (RFC 9110 §5.6.2), as httparse has checked every name it returns to be: the
/// compare then lowers case by setting one bit, which maps no other token byte onto a letter,
/// digit or `-`.
#[inline]
pub(crate) fn common(raw: &[u8]) -> Option<(HeaderName, Reader)> {
    debug_assert!(
        raw.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b)),
        "a field name that is not a token: {raw:?}"
    );
    let known: &[Known] = match raw.len() {
        2 => &LEN_2,
        3 => &LEN_3,
        4 => &LEN_4,
        5 => &LEN_5,
        6 => &LEN_6,
        7 => &LEN_7,
        8 => &LEN_8,
        9 => &LEN_9,
        10 => &LEN_10,
        12 => &LEN_12,
        13 => &LEN_13,
        14 => &LEN_14,
        15 => &LEN_15,
        16 => &LEN_16,
        17 => &LEN_17,
        18 => &LEN_18,
        25 => &LEN_25,
        _ => return None,
    };
    known
        .iter()
        .find(|(lower, ..)| spells(raw, lower))
        .map(|(_, name, reader)| (name.clone(), *reader))
}

/// Whether the token `raw` is `lower` in any case.
#[inline]
fn spells(raw: &[u8], lower: &[u8]) -> bool {
    raw.len() == lower.len() && raw.iter().zip(lower).all(|(r, l)| r | 0x20 == *l)
}

/// Every known name, for tests elsewhere to check who reads it.
#[cfg(test)]
pub(crate) fn all() -> Vec<&'static Known> {
    let lists: [&'static [Known]; 17] = [
        &LEN_2, &LEN_3, &LEN_4, &LEN_5, &LEN_6, &LEN_7, &LEN_8, &LEN_9, &LEN_10, &LEN_12, &LEN_13,
        &LEN_14, &LEN_15, &LEN_16, &LEN_17, &LEN_18, &LEN_25,
    ];
    lists.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_is_what_http_makes_of_it_in_any_case() {
        for (lower, name, _) in all() {
            assert_eq!(name.as_str().as_bytes(), *lower, "spelt as its name");
            let upper = lower.to_ascii_uppercase();
            // Every other letter upper case, starting with the first, then with the second.
            let mixed: Vec<Vec<u8>> = (0..2)
                .map(|start| {
                    lower
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            if i % 2 == start {
                                b.to_ascii_uppercase()
                            } else {
                                *b
                            }
                        })
                        .collect()
                })
                .collect();
            for raw in [lower.to_vec(), upper, mixed[0].clone(), mixed[1].clone()] {
                let expected = HeaderName::from_bytes(&raw).unwrap();
                assert_eq!(
                    common(&raw).map(|(name, _)| name),
                    Some(expected),
                    "{}",
                    String::from_utf8_lossy(&raw)
                );
            }
        }
    }

    #[test]
    fn a_token_one_byte_off_a_known_name_is_not_taken_for_it() {
        // Every token byte in every place of every known name: a name found must be the one
        // `http` makes of the bytes, and one not found must not be a known name.
        let tokens: Vec<u8> = (0u8..=127)
            .filter(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
            .collect();
        for (lower, ..) in all() {
            for place in 0..lower.len() {
                for &b in &tokens {
                    let mut raw = lower.to_vec();
                    raw[place] = b;
                    let made = HeaderName::from_bytes(&raw).unwrap();
                    match common(&raw) {
                        Some((found, _)) => assert_eq!(found, made),
                        None => assert!(
                            all().iter().all(|(_, known, _)| *known != made),
                            "{made} is known but was not found"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn other_lengths_and_names_are_left_to_http() {
        for raw in [
            &b"x"[..],
            b"x-custom-field",
            b"accept-charset",
            b"x-forwarded-port",
        ] {
            assert_eq!(common(raw), None, "{}", String::from_utf8_lossy(raw));
        }
    }
}
