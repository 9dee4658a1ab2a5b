//! Hosts as the URL standard reads them, normalized.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use url::Host;

use super::SsrfError;

/// A host as a URL names it, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostSpec {
    /// An IP address; IPv4-mapped IPv6 addresses are given as IPv4.
    Ip(IpAddr),
    /// A domain name: lower case (IDNA-mapped), without a trailing dot.
    Name(String),
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostSpec::Ip(ip) => write!(f, "{ip}"),
            HostSpec::Name(name) => f.write_str(name),
        }
    }
}

/// Parses a host the way the URL standard does for `http(s)` URLs and
/// normalizes it: numeric IPv4 spellings become the address, `[v6]` and bare
/// IPv6 become the address (IPv4-mapped ones the IPv4 address), names are
/// lower-cased (IDNA) without a trailing dot.
///
/// # Errors
/// [`SsrfError::InvalidHost`] when the URL parser refuses the host (an
/// invalid IPv4 number like `999.1.1.1`, forbidden characters) or it is
/// empty.
pub fn parse_host(text: &str) -> Result<HostSpec, SsrfError> {
    let invalid = |reason: String| SsrfError::InvalidHost {
        host: text.to_owned(),
        reason,
    };
    // Bare IPv6 (`::ffff:a9fe:a9fe`): the URL syntax wants brackets.
    if let Ok(v6) = text.parse::<Ipv6Addr>() {
        return Ok(HostSpec::Ip(normalize_ip(IpAddr::V6(v6))));
    }
    if text.is_empty() {
        return Err(invalid("empty host".into()));
    }
    match Host::parse(text) {
        Ok(host) => Ok(host_spec(&host)),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// The normalized form of a parsed URL host.
pub(super) fn host_spec<S: AsRef<str>>(host: &Host<S>) -> HostSpec {
    match host {
        Host::Ipv4(v4) => HostSpec::Ip(IpAddr::V4(*v4)),
        Host::Ipv6(v6) => HostSpec::Ip(normalize_ip(IpAddr::V6(*v6))),
        Host::Domain(name) => HostSpec::Name(normalize_name(name.as_ref())),
    }
}

pub(super) fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it
/// reaches; anything else unchanged.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}
