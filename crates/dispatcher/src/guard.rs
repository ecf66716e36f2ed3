//! The SSRF guard: destinations are resolved and refused when they are
//! loopback, private, link-local (cloud metadata), CGNAT, multicast or
//! otherwise not public, v4 or v6, unless an operator CIDR allows them. A v6
//! address that embeds a v4 one (IPv4-mapped `::ffff:0:0/96`, -compatible
//! `::/96`, -translated `::ffff:0:0:0/96`, NAT64 `64:ff9b::/96` and 6to4
//! `2002::/16`) is judged by the v4 address it reaches; the local-use NAT64
//! prefix `64:ff9b:1::/48` and Teredo `2001::/32`, whose v4 end cannot be
//! told, are refused. Checked when a subscription is saved and again at
//! every connection, since DNS can change.
//!
//! Resolution and dialing are injectable: tests resolve names to forbidden
//! addresses and record, instead of connect, whatever gets past the guard.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;

/// Marker of a refused destination in error chains.
pub const BLOCKED: &str = "destination blocked";

type Resolving = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// Turns a host name into addresses.
pub trait Resolver: Send + Sync + 'static {
    fn resolve(&self, host: String) -> Resolving;
}

/// The system resolver.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: String) -> Resolving {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Chooses the address actually connected to, once the guard allowed one.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, addr: SocketAddr) -> SocketAddr;
}

/// Connects where the guard allowed.
pub struct DirectDialer;

impl Dialer for DirectDialer {
    fn dial(&self, addr: SocketAddr) -> SocketAddr {
        addr
    }
}

/// Which addresses deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// Parses the operator's allow-list (`127.0.0.0/8`, `::1/128`, ...).
    pub fn new(allow: &[String]) -> Result<Self, String> {
        let allow = allow
            .iter()
            .map(|cidr| {
                cidr.parse::<IpNet>()
                    .map_err(|e| format!("{cidr:?} is not a CIDR: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allow })
    }

    /// Why `ip` may not be reached, if it may not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        // An IPv4-mapped address is the v4 one, named as such.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let reached = reached(ip);
        if self.allow.iter().any(|net| net.contains(&reached)) {
            return Ok(());
        }
        match forbidden(reached) {
            Some(kind) if reached != ip => Err(format!(
                "{BLOCKED}: {ip} reaches {reached}, a {kind} address"
            )),
            Some(kind) => Err(format!("{BLOCKED}: {ip} is a {kind} address")),
            None => Ok(()),
        }
    }
}

/// The address a connection to `ip` ends up at: the v4 address a v6 one
/// embeds (compatible, translated, NAT64, 6to4; mapped ones are read as v4
/// before), else `ip`.
fn reached(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // `::1` and `::` are v6 loopback and unspecified, not embeddings.
    let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    let translated = s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0;
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || translated || nat64 {
        return IpAddr::V4(low);
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    ip
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata)")
            } else if in_v4(v4, [100, 64, 0, 0], 10) {
                Some("CGNAT")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("multicast or broadcast")
            } else if v4.is_unspecified() || in_v4(v4, [0, 0, 0, 0], 8) {
                Some("unspecified")
            } else if in_v4(v4, [192, 0, 0, 0], 24)
                || in_v4(v4, [198, 18, 0, 0], 15)
                || in_v4(v4, [240, 0, 0, 0], 4)
            {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (first & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if (first & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("cloud metadata")
            } else if v6.segments()[..3] == [0x64, 0xff9b, 1] {
                Some("local-use NAT64 (its IPv4 end cannot be told)")
            } else if v6.segments()[..2] == [0x2001, 0] {
                Some("Teredo (its IPv4 end cannot be told)")
            } else if v6.segments()[..2] == [0x2001, 0xdb8] {
                Some("documentation")
            } else if v6.segments()[..4] == [0x100, 0, 0, 0] {
                Some("discard-only")
            } else {
                None
            }
        }
    }
}

/// The policy with its resolver and dialer.
#[derive(Clone)]
pub struct Guard {
    pub policy: AddressPolicy,
    resolver: Arc<dyn Resolver>,
    dialer: Arc<dyn Dialer>,
}

impl Guard {
    pub fn new(
        policy: AddressPolicy,
        resolver: Arc<dyn Resolver>,
        dialer: Arc<dyn Dialer>,
    ) -> Self {
        Self {
            policy,
            resolver,
            dialer,
        }
    }

    /// The system resolver and direct connections.
    pub fn system(policy: AddressPolicy) -> Self {
        Self::new(policy, Arc::new(SystemResolver), Arc::new(DirectDialer))
    }

    /// Resolves `host` and keeps the allowed addresses; an error names what
    /// was refused.
    pub async fn allowed(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return self.policy.check(ip).map(|_| vec![ip]);
        }
        let addrs = self
            .resolver
            .resolve(host.to_owned())
            .await
            .map_err(|e| format!("{host} does not resolve: {e}"))?;
        let mut refused = None;
        let allowed: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|ip| match self.policy.check(*ip) {
                Ok(()) => true,
                Err(reason) => {
                    refused.get_or_insert(reason);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(reason)) => Err(format!("{host} resolves to a refused address: {reason}")),
            (true, None) => Err(format!("{host} does not resolve to any address")),
            (false, _) => Ok(allowed),
        }
    }

    /// The address to connect to for an allowed one.
    pub fn dial(&self, addr: SocketAddr) -> SocketAddr {
        self.dialer.dial(addr)
    }

    /// Checks a URL's host as a delivery would.
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        let url = url::Url::parse(url).map_err(|e| e.to_string())?;
        let host = url.host_str().ok_or("the URL has no host")?;
        self.allowed(host).await.map(drop)
    }
}

/// Name standing for an IP-literal destination, so connections to it go
/// through the guard and the dialer like any other.
pub fn literal_name(ip: IpAddr) -> String {
    let text = match ip {
        IpAddr::V4(v4) => format!("ip4-{}", v4.to_string().replace('.', "-")),
        IpAddr::V6(v6) => format!(
            "ip6-{}",
            v6.octets()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    };
    format!("{text}.literal.hookrelay.invalid")
}

fn literal_ip(name: &str) -> Option<IpAddr> {
    let text = name.strip_suffix(".literal.hookrelay.invalid")?;
    if let Some(v4) = text.strip_prefix("ip4-") {
        return v4
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4);
    }
    let hex = text.strip_prefix("ip6-")?;
    if hex.len() != 32 {
        return None;
    }
    let mut octets = [0u8; 16];
    for (i, octet) in octets.iter_mut().enumerate() {
        *octet = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let allowed = match literal_ip(&host) {
                Some(ip) => guard.policy.check(ip).map(|_| vec![ip]),
                None => guard.allowed(&host).await,
            };
            let ips = allowed
                .map_err(|reason| -> Box<dyn std::error::Error + Send + Sync> { reason.into() })?;
            let addrs: Vec<SocketAddr> = ips
                .into_iter()
                .map(|ip| guard.dial(SocketAddr::new(ip, 0)))
                .collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges_v4_and_v6() {
        let policy = AddressPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "fd00:ec2::254",
            "ff02::1",
            // Embedded v4: NAT64, 6to4, compatible, translated.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::",
            "::a9fe:a9fe",
            "::7f00:1",
            "::ffff:0:a9fe:a9fe",
            "2001::1",
            "2001:db8::1",
            "100::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(policy.check(ip).is_err(), "{bad} should be refused");
        }
        for good in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
            // Embedding a public v4 address is a way to reach it, not past it.
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(policy.check(good.parse().unwrap()).is_ok(), "{good}");
        }
    }

    #[test]
    fn an_embedded_address_is_named_in_the_refusal() {
        let policy = AddressPolicy::default();
        let reason = policy
            .check("64:ff9b::a9fe:a9fe".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            reason,
            "destination blocked: 64:ff9b::a9fe:a9fe reaches 169.254.169.254, a link-local (cloud metadata) address"
        );
    }

    #[test]
    fn the_allow_list_opens_exceptions() {
        let policy = AddressPolicy::new(&["127.0.0.0/8".into()]).unwrap();
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(AddressPolicy::new(&["nope".into()]).is_err());
    }

    #[test]
    fn literal_names_round_trip() {
        for ip in ["169.254.169.254", "::ffff:7f00:1", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(literal_ip(&literal_name(ip)), Some(ip));
        }
    }
}
