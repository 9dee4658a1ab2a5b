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
//!
//! Files: `host.rs` (host parsing and normalization), `address.rs` (the
//! addresses always refused, embedded IPv4), `policy.rs` (the allowlist and
//! the static URL check), `resolver.rs` (the connect-time DNS guard).

use std::net::IpAddr;

mod address;
mod host;
mod policy;
mod resolver;

pub use address::{always_denied, denied_reason, embedded_ipv4};
pub use host::{normalize_ip, parse_host, HostSpec};
pub use policy::AddressPolicy;
pub use resolver::{GuardedResolver, Lookup, SystemLookup};

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

#[cfg(test)]
mod tests;
