//! Outbound safety: a server name is chosen by whoever sends us an id, so
//! our requests must not become a way into the network we sit in. Every
//! address we connect to is checked after DNS resolution (which also covers
//! a name that resolves to a public address once and to a private one
//! later), and IP literals are checked before the request is made.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use parking_lot::RwLock;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is one we refuse to reach unless private addresses are
/// allowed: loopback, private, link-local, unique-local, carrier-grade
/// NAT, unspecified, multicast, broadcast and documentation ranges, and
/// IPv4 written as IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
}

/// Where SRV records sent a host name: the target's addresses and port.
/// The URL keeps the server's own name (for the Host header and the
/// certificate check) while the connection goes to the SRV target.
pub type SrvTargets = Arc<RwLock<HashMap<String, (String, u16)>>>;

/// The DNS resolver of our federation HTTP clients: the system's resolver
/// (so `/etc/hosts` applies), then the internal-address check.
#[derive(Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
    pub srv_targets: SrvTargets,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let target = self.srv_targets.read().get(name.as_str()).cloned();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0 lets the URL's port apply; an SRV port is kept because
            // the URL of an SRV-resolved server carries no port.
            let (lookup, port) = target.unwrap_or((host.clone(), 0));
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup.as_str(), port))
                .await?
                .filter(|addr| allow_private || !is_internal(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} has no address this server may connect to \
                     (internal addresses need --federation-allow-private)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Refuses an IP literal host when private addresses are not allowed (the
/// resolver never sees literals).
pub fn check_literal(host: &str, allow_private: bool) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) if !allow_private && is_internal(ip) => Err(format!(
            "{host} is an internal address (allowed only with --federation-allow-private)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_and_public_ones_pass() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
        assert!(check_literal("[::1]", false).is_err());
        assert!(check_literal("127.0.0.1", true).is_ok());
        assert!(check_literal("example.org", false).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_loopback_unless_allowed() {
        let guarded = GuardedResolver {
            allow_private: false,
            srv_targets: SrvTargets::default(),
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(guarded.resolve(name).await.is_err());

        let allowed = GuardedResolver {
            allow_private: true,
            ..guarded
        };
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = allowed.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
