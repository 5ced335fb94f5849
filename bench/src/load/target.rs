//! The homeserver URL guard: the load tool only ever sends traffic to this machine.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::Url;

/// The reason a homeserver URL was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    Invalid(String),
    UnsupportedScheme(String),
    NotLoopback(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(reason) => write!(f, "invalid URL: {reason}"),
            Self::UnsupportedScheme(scheme) => write!(
                f,
                "unsupported scheme {scheme:?}: the load tool speaks plain HTTP only, \
                 so use an http:// URL"
            ),
            Self::NotLoopback(host) => write!(
                f,
                "host {host:?} is not a loopback address: the load tool only targets this \
                 machine (127.0.0.0/8, [::1] or localhost)"
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// A homeserver base URL whose host is a loopback address, and the socket address it reaches.
#[derive(Debug, Clone)]
pub struct LoopbackTarget {
    pub url: Url,
    /// The address that the name `localhost` resolves to. The client uses it instead of the
    /// system resolver, so a changed hosts file cannot send the load elsewhere.
    pub localhost_address: Option<(String, SocketAddr)>,
}

/// Parses `input` as an `http://` URL and accepts it only if its host is in 127.0.0.0/8, is
/// `::1`, or is the name `localhost` (which is then pinned to 127.0.0.1).
///
/// Other names, including subdomains of `localhost`, IPv4-mapped IPv6 addresses and the
/// unspecified addresses, are rejected even where they would reach this machine.
pub fn parse_loopback_url(input: &str) -> Result<LoopbackTarget, TargetError> {
    let url =
        Url::parse(input).map_err(|error| TargetError::Invalid(format!("{input:?}: {error}")))?;
    if url.scheme() != "http" {
        return Err(TargetError::UnsupportedScheme(url.scheme().to_owned()));
    }
    let Some(host) = url.host_str() else {
        return Err(TargetError::Invalid(format!("{input:?} has no host")));
    };
    let Some(port) = url.port_or_known_default() else {
        return Err(TargetError::Invalid(format!("{input:?} has no port")));
    };
    // The URL parser has already normalised IP addresses, and puts IPv6 ones in brackets.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let localhost_address = match bare_host.parse::<IpAddr>() {
        Ok(address) if address.is_loopback() => None,
        Ok(_) => return Err(TargetError::NotLoopback(host.to_owned())),
        Err(_) if host.eq_ignore_ascii_case("localhost") => {
            let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            Some((host.to_owned(), address))
        }
        Err(_) => return Err(TargetError::NotLoopback(host.to_owned())),
    };
    Ok(LoopbackTarget { url, localhost_address })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        for input in [
            "http://127.0.0.1:8008",
            "http://127.0.0.1:8008/",
            "http://127.45.6.7:18448",
            "http://[::1]:8008",
            "http://localhost:8008",
            "http://LocalHost:8008/prefix/",
            "http://127.0.0.1",
        ] {
            let target = parse_loopback_url(input);
            assert!(target.is_ok(), "{input} was rejected: {:?}", target.err());
        }
    }

    #[test]
    fn localhost_is_pinned_to_loopback() {
        let target = parse_loopback_url("http://localhost:18448").expect("localhost is accepted");
        let (name, address) = target.localhost_address.expect("localhost gets a fixed address");
        assert_eq!(name, "localhost");
        assert_eq!(address, "127.0.0.1:18448".parse::<SocketAddr>().unwrap());

        let target = parse_loopback_url("http://127.0.0.1:8008").unwrap();
        assert!(target.localhost_address.is_none());
    }

    #[test]
    fn other_hosts_are_rejected() {
        // Only names and addresses that can never reach another machine appear here: reserved
        // `.invalid` names (RFC 2606) and unspecified or mapped forms of local addresses.
        for input in [
            "http://homeserver.invalid:8008",
            "http://127.0.0.1.invalid:8008",
            "http://127.0.0.1@homeserver.invalid:8008",
            "http://db.localhost:8008",
            "http://localhost.:8008",
            "http://0.0.0.0:8008",
            "http://[::]:8008",
            "http://[::ffff:127.0.0.1]:8008",
        ] {
            let result = parse_loopback_url(input);
            assert!(
                matches!(result, Err(TargetError::NotLoopback(_))),
                "{input} was not rejected as non-loopback: {result:?}"
            );
        }
    }

    #[test]
    fn https_and_malformed_urls_are_rejected() {
        assert_eq!(
            parse_loopback_url("https://127.0.0.1:8448").unwrap_err(),
            TargetError::UnsupportedScheme("https".to_owned())
        );
        assert!(matches!(
            parse_loopback_url("127.0.0.1:8008"),
            Err(TargetError::Invalid(_)) | Err(TargetError::UnsupportedScheme(_))
        ));
        assert!(matches!(parse_loopback_url("not a url"), Err(TargetError::Invalid(_))));
        assert!(matches!(
            parse_loopback_url("file:///tmp/x"),
            Err(TargetError::UnsupportedScheme(_))
        ));
    }
}
