//! The addresses refused whatever the allowlist says, and the IPv4 address
//! an IPv6 address embeds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::host::normalize_ip;

pub(super) const LINK_LOCAL: &str = "a link-local / cloud metadata address";
pub(super) const THIS_HOST: &str = "an unspecified (\"this host\") address";
pub(super) const METADATA: &str = "a cloud metadata address";

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
