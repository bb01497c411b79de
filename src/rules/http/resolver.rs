//! The addresses rules may not reach, and the DNS resolver that drops them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::errors::Refusal;

/// Addresses a rule may not reach unless `allow_private`: loopback and "this network"
/// (RFC 1122 §3.2.1.3), private (RFC 1918), shared (RFC 6598), link-local (RFC 3927,
/// RFC 4291 §2.5.6), unique local (RFC 4193), the deprecated site-local range (RFC 3879),
/// broadcast and unspecified; IPv4-mapped (RFC 4291 §2.5.5.2) and NAT64 (RFC 6052)
/// addresses are judged by the IPv4 address they carry.
pub(super) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let seg = v6.segments();
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return is_private_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
        }
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
}

pub(super) fn private_detail(ip: IpAddr) -> String {
    format!(
        "{ip} is a loopback, private or link-local address (refused unless [http] allow_private = true)"
    )
}

/// Resolves names with the system resolver and drops the addresses rules may not reach.
pub(super) struct GuardedResolver {
    pub(super) allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let refuse = |detail: String| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(Refusal {
                    host: host.clone(),
                    detail,
                })
            };
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| refuse(format!("cannot resolve the name: {e}")))?
                .collect();
            let usable: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            match (usable.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(usable.into_iter()) as reqwest::dns::Addrs),
                (true, Some(a)) => Err(refuse(format!("resolves to {}", private_detail(a.ip())))),
                (true, None) => Err(refuse("the name has no address".into())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_private(ip.parse().expect(ip)), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip.parse().expect(ip)), "{ip}");
        }
    }
}
