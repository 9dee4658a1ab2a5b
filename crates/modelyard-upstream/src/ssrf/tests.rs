use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use reqwest::dns::Resolve;
use url::Url;

use super::address::{LINK_LOCAL, METADATA, THIS_HOST};
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
