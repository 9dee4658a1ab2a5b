//! [`GuardedResolver`]: the connect-time guard that filters DNS answers by
//! the [`AddressPolicy`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::host::normalize_ip;
use super::policy::AddressPolicy;
use super::{list_refused, SsrfError};

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
/// allows: never [`always_denied`](super::always_denied) ones; others when a host pattern names
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
