//! [`AddressPolicy`]: the allowlist of custom base URLs and the static
//! check of a URL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

use super::address::{always_denied, denied_reason, embedded_ipv4};
use super::host::{host_spec, normalize_ip, normalize_name, parse_host, HostSpec};
use super::SsrfError;

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Result<Self, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!(
                "{addr_text:?} is not an IP address (write IPv4 as a.b.c.d, IPv6 as in RFC 5952)"
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix =
            match prefix_text {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|&n| n <= max).ok_or_else(|| {
                    format!("prefix length {p:?} must be a number from 0 to {max}")
                })?,
            };
        let cidr = Cidr { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(format!(
                "{addr} has bits set beyond the /{prefix} prefix; did you mean {network}/{prefix}?"
            ));
        }
        Ok(cidr)
    }

    fn mask(bits: u32, prefix: u8) -> u128 {
        if prefix == 0 {
            0
        } else {
            (!0u128 << (bits - u32::from(prefix))) & (!0u128 >> (128 - bits))
        }
    }

    fn network(self) -> IpAddr {
        match self.addr {
            IpAddr::V4(v4) => {
                let m = Self::mask(32, self.prefix) as u32;
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
            }
            IpAddr::V6(v6) => {
                let m = Self::mask(128, self.prefix);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
            }
        }
    }

    fn contains(self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = Self::mask(32, self.prefix) as u32;
                u32::from(ip) & m == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = Self::mask(128, self.prefix);
                u128::from(ip) & m == u128::from(net)
            }
            _ => false,
        }
    }
}

/// A host pattern: an exact name, or `*.suffix` (subdomains of `suffix`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// Stored with its leading dot: `.corp.example`.
    Subdomains(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

/// The allowlist of custom base URLs (`[security] base_url_allowlist`):
/// host patterns and CIDRs, on top of [`always_denied`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    hosts: Vec<HostPattern>,
    cidrs: Vec<Cidr>,
}

impl AddressPolicy {
    /// Builds the policy from allowlist entries: a CIDR (`10.0.0.0/8`,
    /// `fd00::/8`) or an address (a /32 or /128), a host name
    /// (`models.internal`), or `*.` and a name (`*.corp.example`: every
    /// subdomain of corp.example, not corp.example itself).
    ///
    /// # Errors
    /// [`SsrfError::Allowlist`] naming the first invalid entry.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, SsrfError> {
        let mut policy = AddressPolicy::default();
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref();
            let bad = |reason: String| SsrfError::Allowlist {
                index,
                entry: entry.to_owned(),
                reason,
            };
            let text = entry.trim();
            if text.is_empty() {
                return Err(bad("empty entry".into()));
            }
            let looks_numeric = text.contains(':')
                || text.contains('/')
                || text.parse::<IpAddr>().is_ok()
                || text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if looks_numeric {
                policy.cidrs.push(Cidr::parse(text).map_err(bad)?);
                continue;
            }
            let (wildcard, name) = match text.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            if name.contains('*') {
                return Err(bad(
                    "a wildcard is only allowed as a leading `*.` (as in *.corp.example)".into(),
                ));
            }
            let name = match parse_host(name).map_err(|e| bad(e.to_string()))? {
                HostSpec::Name(name) if !name.is_empty() => name,
                HostSpec::Name(_) => return Err(bad("empty host name".into())),
                HostSpec::Ip(ip) => {
                    return Err(bad(format!(
                        "is the address {ip} in a non-standard spelling; write it as {ip} or a CIDR"
                    )))
                }
            };
            policy.hosts.push(if wildcard {
                HostPattern::Subdomains(format!(".{name}"))
            } else {
                HostPattern::Exact(name)
            });
        }
        Ok(policy)
    }

    /// Whether a connection to `ip` is allowed: not [`always_denied`] and in
    /// one of the allowlist's CIDRs (IPv4-mapped IPv6 checked as IPv4).
    ///
    /// An IPv6 address that embeds an IPv4 address ([`embedded_ipv4`]: NAT64,
    /// 6to4, Teredo, IPv4-compatible) needs both itself and the embedded
    /// address in the CIDRs: allowing `::/0` does not open 127.0.0.1 through
    /// `64:ff9b::7f00:1` or `2002:7f00:1::`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = normalize_ip(ip);
        !always_denied(ip) && self.cidrs_contain(ip)
    }

    fn cidrs_contain(&self, ip: IpAddr) -> bool {
        let contained = |ip: IpAddr| self.cidrs.iter().any(|c| c.contains(ip));
        contained(ip)
            && match ip {
                IpAddr::V6(v6) => embedded_ipv4(v6).is_none_or(|v4| contained(IpAddr::V4(v4))),
                IpAddr::V4(_) => true,
            }
    }

    /// Whether a host pattern names `host` (then any address it resolves to
    /// is allowed, except [`always_denied`] ones).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalize_name(host);
        self.hosts.iter().any(|p| p.matches(&host))
    }

    /// Whether any CIDR is allowed (without one, only host patterns reach
    /// anything).
    pub fn has_cidrs(&self) -> bool {
        !self.cidrs.is_empty()
    }

    /// Why a connection to `ip` for host `host` (a name, already matched or
    /// not by a host pattern) is refused, or `None` when it is allowed.
    pub(super) fn refusal(&self, host_allowed: bool, ip: IpAddr) -> Option<String> {
        let ip = normalize_ip(ip);
        if let Some(reason) = denied_reason(ip) {
            return Some(reason.to_owned());
        }
        if host_allowed || self.cidrs_contain(ip) {
            None
        } else {
            Some("not in security.base_url_allowlist".to_owned())
        }
    }

    /// The static checks of a custom base URL: scheme `http` or `https`, no
    /// userinfo, no query or fragment, and its host: an IP address must be
    /// allowed ([`Self::allows`]); a host name passes when a host pattern
    /// names it, or when the allowlist has CIDRs (its addresses are then
    /// checked at connect time by [`GuardedResolver`](super::GuardedResolver)).
    ///
    /// # Errors
    /// The [`SsrfError`] saying what is refused.
    pub fn check_url(&self, url: &Url) -> Result<(), SsrfError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SsrfError::Scheme {
                scheme: url.scheme().to_owned(),
            });
        }
        let host = url.host().map(|h| host_spec(&h)).ok_or(SsrfError::NoHost)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SsrfError::Userinfo {
                host: host.to_string(),
            });
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(SsrfError::Query);
        }
        match host {
            HostSpec::Ip(address) => {
                if let Some(reason) = denied_reason(address) {
                    return Err(SsrfError::AlwaysDenied { address, reason });
                }
                if !self.allows(address) {
                    return Err(SsrfError::AddressNotAllowed { address });
                }
                Ok(())
            }
            HostSpec::Name(name) => {
                if self.allows_host(&name) || self.has_cidrs() {
                    Ok(())
                } else {
                    Err(SsrfError::HostNotAllowed { host: name })
                }
            }
        }
    }

    /// Parses `text` as a URL and runs [`Self::check_url`].
    ///
    /// # Errors
    /// [`SsrfError::InvalidUrl`] or what [`Self::check_url`] refuses.
    pub fn check_url_str(&self, text: &str) -> Result<Url, SsrfError> {
        let url = Url::parse(text.trim()).map_err(|e| SsrfError::InvalidUrl {
            url: text.to_owned(),
            reason: e.to_string(),
        })?;
        self.check_url(&url)?;
        Ok(url)
    }
}
