//! Outbound address policy for custom base URLs (server-side request
//! forgery guard).
//!
//! Configured providers are trusted: their base URLs come from the operator's
//! config file. An LLM config's *custom* base URL comes from an API client, so
//! a call to it may only reach what the operator allows
//! (`[security] base_url_allowlist`):
//!
//! - [`parse_host`] reads a host the way the WHATWG URL parser does (the
//!   `url` crate): every numeric IPv4 spelling it accepts — decimal
//!   `2852039166`, octal `0251.0376.0251.0376`, hex `0xa9fea9fe` or
//!   `0xa9.0xfe.0xa9.0xfe`, short forms `169.254.43518`, a trailing dot,
//!   percent-encoding, full-width digits — becomes the dotted address, and an
//!   IPv4-mapped IPv6 address (`::ffff:169.254.169.254`) becomes the IPv4
//!   address it reaches.
//! - [`always_denied`]: link-local and cloud metadata addresses
//!   (169.254.0.0/16 including 169.254.169.254, 100.100.100.200, fe80::/10,
//!   fd00:ec2::254) and the "this host" ranges (0.0.0.0/8, `::`) are refused
//!   whatever the allowlist says, also when embedded in an IPv6 address
//!   (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
//!   `64:ff9b::/96`, 6to4 `2002::/16`, Teredo `2001:0::/32`:
//!   [`embedded_ipv4`]); an embedded address must also pass the allowlist's
//!   CIDRs like the IPv4 address itself.
//! - [`AddressPolicy`]: the allowlist — host names (`models.internal`; a
//!   leading `*.` matches every subdomain, not the name itself) and CIDRs
//!   (`10.0.0.0/8`, `fd00::/8`, a bare address is a /32 or /128).
//!   [`AddressPolicy::check_url`] is the static check (scheme, no userinfo,
//!   no query, IP literal hosts); a host name that no host pattern names is
//!   only reachable at the addresses the CIDRs allow, which
//!   [`GuardedResolver`] enforces at connect time, after DNS resolution (so a
//!   name that resolves — or re-resolves — to a refused address is refused).
//!
//! URLs follow the URL standard: `http://evil@169.254.169.254/` has host
//! 169.254.169.254 (and userinfo, which is refused anyway), and
//! `http://169.254.169.254@good.example/` has host `good.example`.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

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

/// Why a URL, a host or an address is refused, or an allowlist entry is
/// invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// The text is not a URL.
    #[error("{url:?} is not a valid URL: {reason}")]
    InvalidUrl {
        /// The text (without userinfo or query when it parsed that far).
        url: String,
        /// Why.
        reason: String,
    },
    /// Only `http` and `https` are allowed.
    #[error("scheme {scheme:?} is not allowed (only http and https)")]
    Scheme {
        /// The URL's scheme.
        scheme: String,
    },
    /// `user@host` / `user:password@host`.
    #[error("the URL must not contain credentials (user@host); the host would be {host}")]
    Userinfo {
        /// The host the URL really names.
        host: String,
    },
    /// A query or fragment in a base URL.
    #[error("the URL must not have a query or fragment")]
    Query,
    /// No host (`http:///x` cannot be parsed, but `file:` URLs have none).
    #[error("the URL has no host")]
    NoHost,
    /// The host cannot be parsed.
    #[error("{host:?} is not a valid host: {reason}")]
    InvalidHost {
        /// The text.
        host: String,
        /// Why.
        reason: String,
    },
    /// A link-local, cloud metadata or "this host" address.
    #[error("{address} is {}", reason)]
    AlwaysDenied {
        /// The address (IPv4 when it was IPv4-mapped).
        address: IpAddr,
        /// What kind of address it is.
        reason: &'static str,
    },
    /// An IP address the allowlist's CIDRs do not contain.
    #[error("{address} is not in security.base_url_allowlist")]
    AddressNotAllowed {
        /// The address.
        address: IpAddr,
    },
    /// A host name no host pattern matches, and no CIDR could allow any of
    /// its addresses (the allowlist has no CIDRs).
    #[error(
        "host {host} is not in security.base_url_allowlist (no host pattern matches it and no \
         CIDR is allowed)"
    )]
    HostNotAllowed {
        /// The host name.
        host: String,
    },
    /// At connect time: every address the host resolved to is refused.
    #[error("{host} resolves only to refused addresses: {}", list_refused(refused))]
    Refused {
        /// The host name.
        host: String,
        /// Each refused address and why.
        refused: Vec<(IpAddr, String)>,
    },
    /// At connect time: the host resolved to nothing.
    #[error("{host} resolves to no address")]
    NoAddresses {
        /// The host name.
        host: String,
    },
    /// At connect time: resolution failed.
    #[error("cannot resolve {host}: {reason}")]
    Lookup {
        /// The host name.
        host: String,
        /// Why.
        reason: String,
    },
    /// An allowlist entry is neither a host pattern nor a CIDR.
    #[error("security.base_url_allowlist[{index}] {entry:?}: {reason}")]
    Allowlist {
        /// Position in the list.
        index: usize,
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
}

fn list_refused(refused: &[(IpAddr, String)]) -> String {
    refused
        .iter()
        .map(|(ip, why)| format!("{ip} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
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
fn host_spec<S: AsRef<str>>(host: &Host<S>) -> HostSpec {
    match host {
        Host::Ipv4(v4) => HostSpec::Ip(IpAddr::V4(*v4)),
        Host::Ipv6(v6) => HostSpec::Ip(normalize_ip(IpAddr::V6(*v6))),
        Host::Domain(name) => HostSpec::Name(normalize_name(name.as_ref())),
    }
}

fn normalize_name(name: &str) -> String {
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

const LINK_LOCAL: &str = "a link-local / cloud metadata address";
const THIS_HOST: &str = "an unspecified (\"this host\") address";
const METADATA: &str = "a cloud metadata address";

/// Why `ip` is always refused, or `None`.
fn denied_reason_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if o[0] == 169 && o[1] == 254 {
        Some(LINK_LOCAL)
    } else if o[0] == 0 {
        Some(THIS_HOST)
    } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
        Some(METADATA)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address reaches or names by construction, for
/// the forms that embed one (after [`normalize_ip`] has turned IPv4-mapped
/// `::ffff:a.b.c.d` into IPv4):
/// - IPv4-compatible `::a.b.c.d` (deprecated, still routed by some stacks;
///   `::` and `::1` are not),
/// - NAT64 well-known prefix `64:ff9b::/96` (RFC 6052): the last 32 bits,
/// - 6to4 `2002::/16` (RFC 3056): bits 16–47,
/// - Teredo `2001:0::/32` (RFC 4380): the client address, the last 32 bits
///   inverted.
///
/// The guard refuses such an address whenever it would refuse the embedded
/// IPv4 address. The numeric address is what counts, so every spelling
/// (compressed, expanded, dotted-quad tail, upper case, bracketed) is the
/// same here.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let pair = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6].iter().all(|&x| x == 0) && s[6] >> 8 != 0 {
        return Some(pair(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return Some(pair(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(pair(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(pair(!s[6], !s[7]));
    }
    None
}

/// Why `ip` is refused whatever the allowlist says, or `None`.
pub fn denied_reason(ip: IpAddr) -> Option<&'static str> {
    match normalize_ip(ip) {
        IpAddr::V4(v4) => denied_reason_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[0] & 0xffc0 == 0xfe80 {
                return Some(LINK_LOCAL);
            }
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                return Some(METADATA);
            }
            if v6.is_unspecified() {
                return Some(THIS_HOST);
            }
            embedded_ipv4(v6).and_then(denied_reason_v4)
        }
    }
}

/// Whether `ip` is refused whatever the allowlist says: link-local and
/// cloud metadata addresses (169.254.0.0/16 — 169.254.169.254 —,
/// 100.100.100.200, fe80::/10, fd00:ec2::254), 0.0.0.0/8 and `::`, also
/// IPv4-mapped, IPv4-compatible, NAT64-, 6to4- or Teredo-embedded in IPv6
/// ([`embedded_ipv4`]).
pub fn always_denied(ip: IpAddr) -> bool {
    denied_reason(ip).is_some()
}

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
    fn refusal(&self, host_allowed: bool, ip: IpAddr) -> Option<String> {
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
    /// checked at connect time by [`GuardedResolver`]).
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

/// Name resolution behind [`GuardedResolver`] (pluggable so tests can map
/// names to any address).
pub trait Lookup: Send + Sync {
    /// The addresses of `host` (a name, never bracketed).
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo`, through `tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A reqwest resolver that keeps only the addresses an [`AddressPolicy`]
/// allows: never [`always_denied`] ones; others when a host pattern names
/// the host or a CIDR contains the address. When none is left the connect
/// fails with [`SsrfError::Refused`] naming the host and every refused
/// address.
///
/// Reqwest does not resolve IP-literal hosts: those are checked statically
/// by [`AddressPolicy::check_url`] (and redirects must not be followed).
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// A resolver over the system resolver.
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self::with_lookup(policy, Arc::new(SystemLookup))
    }

    /// A resolver over `lookup`.
    pub fn with_lookup(policy: Arc<AddressPolicy>, lookup: Arc<dyn Lookup>) -> Self {
        Self { policy, lookup }
    }

    /// Its policy.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Resolves `host` and keeps the allowed addresses (deduplicated, in
    /// the resolver's order).
    ///
    /// # Errors
    /// [`SsrfError::Lookup`], [`SsrfError::NoAddresses`] or
    /// [`SsrfError::Refused`].
    pub async fn resolve_allowed(&self, host: &str) -> Result<Vec<IpAddr>, SsrfError> {
        let name = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host_allowed = self.policy.allows_host(name);
        let found = self
            .lookup
            .lookup(name)
            .await
            .map_err(|e| SsrfError::Lookup {
                host: name.to_owned(),
                reason: e.to_string(),
            })?;
        if found.is_empty() {
            return Err(SsrfError::NoAddresses {
                host: name.to_owned(),
            });
        }
        let mut allowed: Vec<IpAddr> = Vec::new();
        let mut refused: Vec<(IpAddr, String)> = Vec::new();
        for ip in found {
            match self.policy.refusal(host_allowed, ip) {
                None if !allowed.contains(&ip) => allowed.push(ip),
                None => {}
                // Reported as the address it reaches (IPv4-mapped as IPv4).
                Some(why) => {
                    let ip = normalize_ip(ip);
                    if !refused.iter().any(|(r, _)| *r == ip) {
                        refused.push((ip, why));
                    }
                }
            }
        }
        if !refused.is_empty() {
            tracing::warn!(
                host = name,
                refused = %list_refused(&refused),
                allowed = allowed.len(),
                "custom base URL: refused resolved addresses"
            );
        }
        if allowed.is_empty() {
            return Err(SsrfError::Refused {
                host: name.to_owned(),
                refused,
            });
        }
        Ok(allowed)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let allowed = this.resolve_allowed(&host).await?;
            let addrs: Addrs = Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const METADATA_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn policy(entries: &[&str]) -> AddressPolicy {
        AddressPolicy::new(entries).unwrap()
    }

    /// Every spelling of 169.254.169.254 the URL parser accepts.
    const METADATA_SPELLINGS: &[&str] = &[
        "169.254.169.254",
        "2852039166",
        "0251.0376.0251.0376",
        "0xa9fea9fe",
        "0xA9FEA9FE",
        "0xa9.0xfe.0xa9.0xfe",
        "169.254.43518",
        "169.16689662",
        "0251.0xfe.43518",
        "169.254.169.254.",
        "%31%36%39.254.169.254",
        "\u{ff11}\u{ff16}\u{ff19}.254.169.254",
        "[::ffff:169.254.169.254]",
        "[::ffff:a9fe:a9fe]",
        "::ffff:169.254.169.254",
    ];

    #[test]
    fn parse_host_normalizes_every_ipv4_spelling() {
        for spelling in METADATA_SPELLINGS {
            assert_eq!(
                parse_host(spelling),
                Ok(HostSpec::Ip(METADATA_V4)),
                "{spelling}"
            );
        }
        assert_eq!(parse_host("127.1"), Ok(HostSpec::Ip(ip("127.0.0.1"))));
        assert_eq!(parse_host("0x7f.1"), Ok(HostSpec::Ip(ip("127.0.0.1"))));
        assert_eq!(parse_host("0"), Ok(HostSpec::Ip(ip("0.0.0.0"))));
        assert_eq!(parse_host("[fe80::1]"), Ok(HostSpec::Ip(ip("fe80::1"))));
        assert_eq!(
            parse_host("Models.Example."),
            Ok(HostSpec::Name("models.example".into()))
        );
        for bad in [
            "",
            "999.1.1.1",
            "1.2.3.4.5",
            "foo.0x10",
            "a b",
            "[fe80::1%25eth0]",
        ] {
            assert!(
                matches!(parse_host(bad), Err(SsrfError::InvalidHost { .. })),
                "{bad:?}: {:?}",
                parse_host(bad)
            );
        }
    }

    #[test]
    fn urls_with_every_spelling_are_refused_as_metadata() {
        let open = policy(&["0.0.0.0/0", "::/0"]);
        for spelling in METADATA_SPELLINGS {
            let host = if spelling.starts_with("::") {
                format!("[{spelling}]")
            } else {
                (*spelling).to_owned()
            };
            let url = Url::parse(&format!("http://{host}/v1")).unwrap();
            let err = open.check_url(&url).unwrap_err();
            assert_eq!(
                err,
                SsrfError::AlwaysDenied {
                    address: METADATA_V4,
                    reason: LINK_LOCAL
                },
                "{url}"
            );
            assert_eq!(
                err.to_string(),
                "169.254.169.254 is a link-local / cloud metadata address"
            );
        }
    }

    #[test]
    fn always_denied_ranges() {
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "169.254.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "100.100.100.200",
            "fe80::1",
            "febf:ffff::1",
            "fd00:ec2::254",
            "::",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::169.254.169.254",
            "64:ff9b::169.254.169.254",
            "64:ff9b::100.100.100.200",
        ] {
            assert!(always_denied(ip(denied)), "{denied}");
        }
        for fine in [
            "127.0.0.1",
            "10.0.0.1",
            "169.253.255.255",
            "169.255.0.0",
            "100.100.100.201",
            "1.0.0.0",
            "::1",
            "fec0::1",
            "fd00:ec2::253",
            "fd00::254",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!always_denied(ip(fine)), "{fine}");
        }
    }

    /// 169.254.169.254 (metadata) and 127.0.0.1 / 10.1.2.3 embedded in the
    /// IPv6 transition forms, in several spellings each.
    const EMBEDDED_METADATA: &[&str] = &[
        // 6to4: 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD.
        "2002:a9fe:a9fe::",
        "2002:a9fe:a9fe::1",
        "2002:A9FE:A9FE:0:0:0:0:1",
        "2002:a9fe:a9fe:0000:0000:0000:0000:0000",
        "2002:a9fe:a9fe:ffff:1:2:3:4",
        // Teredo: 2001:0::/32, the client IPv4 is the last 32 bits inverted.
        "2001:0:4136:e378:8000:63bf:5601:5601",
        "2001::5601:5601",
        "2001:0000:0000:0000:0000:0000:5601:5601",
        "2001:0:0:0:0:0:86.1.86.1",
        // NAT64 well-known prefix: the last 32 bits.
        "64:ff9b::a9fe:a9fe",
        "64:FF9B::169.254.169.254",
        "0064:ff9b:0000:0000:0000:0000:a9fe:a9fe",
    ];

    #[test]
    fn ipv6_transition_forms_embedding_metadata_are_always_denied() {
        let open = policy(&["0.0.0.0/0", "::/0"]);
        for form in EMBEDDED_METADATA {
            assert_eq!(denied_reason(ip(form)), Some(LINK_LOCAL), "{form}");
            assert!(!open.allows(ip(form)), "{form}");
            // Bare, bracketed, and in a URL.
            assert!(always_denied_host(form), "{form}");
            let bracketed = format!("[{form}]");
            assert!(always_denied_host(&bracketed), "{bracketed}");
            let url = format!("http://[{form}]:8080/v1");
            assert!(
                matches!(
                    open.check_url_str(&url),
                    Err(SsrfError::AlwaysDenied {
                        reason: LINK_LOCAL,
                        ..
                    })
                ),
                "{url}: {:?}",
                open.check_url_str(&url)
            );
            // A zone index is no way around it: refused (not a valid URL host).
            let zoned = format!("http://[{form}%25eth0]/v1");
            assert!(open.check_url_str(&zoned).is_err(), "{zoned}");
            assert!(parse_host(&format!("{form}%eth0")).is_err(), "{form}%eth0");
        }
        // This host, embedded: 6to4 of 0.0.0.0, Teredo client 0.0.0.0.
        assert_eq!(denied_reason(ip("2002::1")), Some(THIS_HOST));
        assert_eq!(denied_reason(ip("2001::ffff:ffff")), Some(THIS_HOST));
        assert_eq!(
            denied_reason(ip("64:ff9b::100.100.100.200")),
            Some(METADATA)
        );
        assert_eq!(denied_reason(ip("2002:6464:64c8::")), Some(METADATA));
        // Public IPv4 embedded: not always denied.
        for fine in [
            "2002:0808:0808::1",
            "2001::f7f7:f7f7",
            "64:ff9b::8.8.8.8",
            "2001:db8::1",
        ] {
            assert_eq!(denied_reason(ip(fine)), None, "{fine}");
        }
    }

    fn always_denied_host(text: &str) -> bool {
        match parse_host(text) {
            Ok(HostSpec::Ip(address)) => always_denied(address),
            _ => false,
        }
    }

    #[test]
    fn ipv6_transition_forms_need_the_embedded_ipv4_allowed_too() {
        // Every IPv6 address allowed, IPv4 only 10/8: loopback and other
        // private IPv4 addresses stay unreachable through 6to4, Teredo, NAT64.
        let v6_open = policy(&["::/0", "10.0.0.0/8"]);
        for refused in [
            "2002:7f00:1::",
            "2002:7F00:0001:0:0:0:0:0",
            "2001::80ff:fffe",
            "2001:0:0:0:0:0:128.255.255.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::c0a8:101",
            "::127.0.0.1",
        ] {
            assert!(!v6_open.allows(ip(refused)), "{refused}");
            let url = format!("http://[{refused}]/v1");
            assert!(
                matches!(
                    v6_open.check_url_str(&url),
                    Err(SsrfError::AddressNotAllowed { .. })
                ),
                "{url}: {:?}",
                v6_open.check_url_str(&url)
            );
            assert!(
                v6_open.refusal(false, ip(refused)).is_some(),
                "{refused} at connect time"
            );
        }
        for allowed in [
            "2002:0a01:0203::1",
            "2001::f5fe:fdfc",
            "64:ff9b::10.1.2.3",
            "2001:db8::1",
        ] {
            assert!(v6_open.allows(ip(allowed)), "{allowed}");
        }
        // The embedded IPv4 allowed but not the IPv6 form: still refused.
        let v4_only = policy(&["127.0.0.0/8"]);
        assert!(v4_only.allows(ip("127.0.0.1")));
        assert!(!v4_only.allows(ip("64:ff9b::127.0.0.1")));
        assert!(!v4_only.allows(ip("2002:7f00:1::")));
        // A host pattern admits any address but the always-denied ones.
        assert_eq!(v4_only.refusal(true, ip("2002:7f00:1::")), None);
        assert_eq!(
            v4_only.refusal(true, ip("2002:a9fe:a9fe::")).as_deref(),
            Some(LINK_LOCAL)
        );
    }

    #[test]
    fn userinfo_tricks_follow_the_url_standard() {
        let p = policy(&["good.example", "127.0.0.0/8"]);
        // The host is 169.254.169.254: refused for the userinfo first, and
        // the message names the real host.
        let err = p
            .check_url(&Url::parse("http://evil@169.254.169.254/").unwrap())
            .unwrap_err();
        assert_eq!(
            err,
            SsrfError::Userinfo {
                host: "169.254.169.254".into()
            }
        );
        // The host is good.example, not 169.254.169.254.
        let url = Url::parse("http://169.254.169.254@good.example/").unwrap();
        assert_eq!(url.host_str(), Some("good.example"));
        assert_eq!(
            p.check_url(&url).unwrap_err(),
            SsrfError::Userinfo {
                host: "good.example".into()
            }
        );
        assert!(p
            .check_url(&Url::parse("http://user:pw@good.example/").unwrap())
            .is_err());
        assert!(p
            .check_url(&Url::parse("http://good.example/v1").unwrap())
            .is_ok());
    }

    #[test]
    fn static_checks() {
        let p = policy(&["127.0.0.0/8", "*.corp.example", "models.internal"]);
        let check = |u: &str| p.check_url_str(u).map(|_| ());
        assert_eq!(check("http://127.0.0.1:8080/v1"), Ok(()));
        assert_eq!(check("https://127.1/v1"), Ok(()));
        assert_eq!(check("http://[::ffff:127.0.0.1]/"), Ok(()));
        assert_eq!(check("https://a.corp.example/v1"), Ok(()));
        assert_eq!(check("http://models.internal:9000"), Ok(()));
        // Names are checked at connect time when CIDRs exist.
        assert_eq!(check("http://other.example/v1"), Ok(()));
        assert_eq!(
            check("ftp://127.0.0.1/"),
            Err(SsrfError::Scheme {
                scheme: "ftp".into()
            })
        );
        assert!(matches!(
            check("file:///etc/passwd"),
            Err(SsrfError::Scheme { .. })
        ));
        assert_eq!(check("http://127.0.0.1/?a=b"), Err(SsrfError::Query));
        assert_eq!(check("http://127.0.0.1/#x"), Err(SsrfError::Query));
        assert!(matches!(
            check("not a url"),
            Err(SsrfError::InvalidUrl { .. })
        ));
        assert_eq!(
            check("http://10.0.0.1/"),
            Err(SsrfError::AddressNotAllowed {
                address: ip("10.0.0.1")
            })
        );
        assert_eq!(
            check("http://0/"),
            Err(SsrfError::AlwaysDenied {
                address: ip("0.0.0.0"),
                reason: THIS_HOST
            })
        );
        assert_eq!(
            check("http://100.100.100.200/"),
            Err(SsrfError::AlwaysDenied {
                address: ip("100.100.100.200"),
                reason: METADATA
            })
        );
        assert!(matches!(
            check("http://[fd00:ec2::254]/"),
            Err(SsrfError::AlwaysDenied { .. })
        ));
        assert!(matches!(
            check("http://[fe80::1]/"),
            Err(SsrfError::AlwaysDenied { .. })
        ));

        // Without CIDRs a name must match a host pattern.
        let names_only = policy(&["*.corp.example"]);
        assert_eq!(
            names_only.check_url_str("http://evil.example/").map(|_| ()),
            Err(SsrfError::HostNotAllowed {
                host: "evil.example".into()
            })
        );
        // The empty policy allows nothing.
        let none = AddressPolicy::default();
        assert!(none.check_url_str("http://127.0.0.1/").is_err());
        assert!(none.check_url_str("http://localhost/").is_err());
    }

    #[test]
    fn allowlisted_cidrs_and_wildcard_hosts() {
        let p = policy(&["10.0.0.0/8", "fd00::/8", "192.168.1.7", "*.corp.example"]);
        assert!(p.allows(ip("10.1.2.3")));
        assert!(p.allows(ip("::ffff:10.1.2.3")));
        assert!(p.allows(ip("fd12::1")));
        assert!(p.allows(ip("192.168.1.7")));
        assert!(!p.allows(ip("192.168.1.8")));
        assert!(!p.allows(ip("11.0.0.1")));
        assert!(!p.allows(ip("fe80::1")));
        assert!(p.allows_host("a.corp.example"));
        assert!(p.allows_host("x.y.CORP.example."));
        assert!(!p.allows_host("corp.example"));
        assert!(!p.allows_host("evilcorp.example"));
        assert!(!p.allows_host("corp.example.evil"));
        // Even "everything" never allows metadata addresses.
        let all = policy(&["0.0.0.0/0", "::/0"]);
        assert!(all.allows(ip("8.8.8.8")));
        assert!(all.allows(ip("2001:db8::1")));
        assert!(!all.allows(METADATA_V4));
        assert!(!all.allows(ip("::ffff:169.254.169.254")));
        assert!(!all.allows(ip("fd00:ec2::254")));
        assert!(!all.allows(ip("0.0.0.0")));
    }

    #[test]
    fn allowlist_entries_are_validated() {
        for (entry, needle) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "prefix length"),
            ("fd00::/129", "prefix length"),
            ("10.0.0/8", "not an IP address"),
            ("*", "wildcard"),
            ("a.*.example", "wildcard"),
            ("", "empty"),
            ("0x7f000001", "non-standard spelling"),
            ("bad host", "not a valid host"),
        ] {
            let err = AddressPolicy::new(&["ok.example", entry]).unwrap_err();
            assert!(
                matches!(&err, SsrfError::Allowlist { index: 1, .. }),
                "{entry}: {err}"
            );
            assert!(err.to_string().contains(needle), "{entry}: {err}");
            assert!(
                err.to_string()
                    .starts_with("security.base_url_allowlist[1] "),
                "{err}"
            );
        }
        assert!(AddressPolicy::new(&["0.0.0.0/0", "::/0", "::1", "127.0.0.1"]).is_ok());
    }

    struct FakeLookup(HashMap<&'static str, Vec<IpAddr>>);

    impl Lookup for FakeLookup {
        fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
            Box::pin(async move {
                self.0
                    .get(host)
                    .cloned()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host (fake)"))
            })
        }
    }

    fn fake_resolver(entries: &[&str]) -> GuardedResolver {
        let mut map = HashMap::new();
        map.insert("metadata.test", vec![METADATA_V4]);
        map.insert("ok.test", vec![ip("127.0.0.1")]);
        map.insert(
            "mixed.test",
            vec![METADATA_V4, ip("10.0.0.1"), ip("127.0.0.2")],
        );
        map.insert("private.test", vec![ip("10.0.0.1")]);
        map.insert("mapped.test", vec![ip("::ffff:169.254.169.254")]);
        map.insert("empty.test", vec![]);
        GuardedResolver::with_lookup(Arc::new(policy(entries)), Arc::new(FakeLookup(map)))
    }

    #[tokio::test]
    async fn resolver_keeps_only_allowed_addresses() {
        let r = fake_resolver(&["127.0.0.0/8", "*.wild.test"]);
        assert_eq!(
            r.resolve_allowed("ok.test").await,
            Ok(vec![ip("127.0.0.1")])
        );
        assert_eq!(
            r.resolve_allowed("mixed.test").await,
            Ok(vec![ip("127.0.0.2")])
        );
        let err = r.resolve_allowed("metadata.test").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "metadata.test resolves only to refused addresses: 169.254.169.254 (a link-local / \
             cloud metadata address)"
        );
        let err = r.resolve_allowed("mapped.test").await.unwrap_err();
        assert!(
            err.to_string().ends_with(
                "refused addresses: 169.254.169.254 (a link-local / cloud metadata address)"
            ),
            "{err}"
        );
        let err = r.resolve_allowed("private.test").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "private.test resolves only to refused addresses: 10.0.0.1 (not in \
             security.base_url_allowlist)"
        );
        assert_eq!(
            r.resolve_allowed("empty.test").await,
            Err(SsrfError::NoAddresses {
                host: "empty.test".into()
            })
        );
        assert!(matches!(
            r.resolve_allowed("nowhere.test").await,
            Err(SsrfError::Lookup { .. })
        ));

        // A host pattern allows any address of that name, but never metadata.
        let named = fake_resolver(&["private.test", "metadata.test"]);
        assert_eq!(
            named.resolve_allowed("private.test").await,
            Ok(vec![ip("10.0.0.1")])
        );
        assert!(named.resolve_allowed("metadata.test").await.is_err());
        assert!(named.resolve_allowed("ok.test").await.is_err());
    }

    #[tokio::test]
    async fn resolve_trait_returns_socket_addrs_or_the_refusal() {
        let r = fake_resolver(&["127.0.0.0/8"]);
        let addrs: Vec<SocketAddr> = r
            .resolve("ok.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["127.0.0.1:0".parse().unwrap()]);
        let err = match r.resolve("metadata.test".parse().unwrap()).await {
            Ok(_) => panic!("metadata.test resolved"),
            Err(err) => err,
        };
        assert!(err.to_string().contains("metadata.test"), "{err}");
        assert!(err.to_string().contains("169.254.169.254"), "{err}");
    }
}
