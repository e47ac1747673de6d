//! Listen addresses as people write them: `HOST:PORT` (a name or an IP), `:PORT` for every
//! interface, `[IPv6]:PORT`. A name is resolved once, at start-up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// What an address should look like, in error messages.
pub(crate) const EXPECTED: &str = "HOST:PORT, :PORT for every interface, or [IPv6]:PORT, e.g. \"127.0.0.1:8080\", \"localhost:8080\", \":8080\" or \"[::1]:8080\"";

/// Parses a listen address; the error says what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if text.parse::<IpAddr>().is_ok() {
        return Err(format!("{EXPECTED}; the port is missing"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{EXPECTED}; the port is missing"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{EXPECTED}; {port:?} is not a port (0-65535)"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match (host, port).to_socket_addrs() {
        // Prefer IPv4, as `localhost` means to most people.
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| format!("{EXPECTED}; {host:?} has no address"))
        }
        Err(error) => Err(format!("{EXPECTED}; cannot resolve {host:?}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_accepted_as_people_write_them() {
        assert_eq!(
            parse("127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(parse(":8080").unwrap(), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(parse("[::1]:8080").unwrap(), "[::1]:8080".parse().unwrap());
        assert_eq!(
            parse("localhost:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
    }

    #[test]
    fn a_bad_address_says_what_is_missing_and_what_is_expected() {
        let error = parse("127.0.0.1").unwrap_err();
        assert!(
            error.contains("the port is missing") && error.contains(":8080"),
            "{error}"
        );
        let error = parse("localhost:http").unwrap_err();
        assert!(error.contains("\"http\" is not a port"), "{error}");
    }
}
