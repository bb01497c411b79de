//! The `[http] allow` list: entries parsed to host patterns, and the policy every URL (each
//! redirect hop included) is checked against.

use std::net::{IpAddr, Ipv6Addr};

use reqwest::Url;

use super::errors::Refusal;
use super::resolver::{is_private, private_detail};

/// One entry of `[http] allow`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AllowEntry {
    host: HostPattern,
    /// Only this port; any port when `None`.
    port: Option<u16>,
    /// Written with an `http://` prefix: plain http is allowed too.
    plain_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `api.example.com` (lower-case).
    Name(String),
    /// `*.corp.example`, kept as `.corp.example`: any name ending with it.
    Suffix(String),
    /// An IP address literal.
    Ip(IpAddr),
}

impl AllowEntry {
    /// Parses one entry; the error says what is wrong with it (the caller names the entry).
    pub(super) fn parse(entry: &str) -> Result<AllowEntry, &'static str> {
        if entry.trim().is_empty() {
            return Err("empty entry");
        }
        let lower = entry.to_ascii_lowercase();
        let (rest, plain_http) = if let Some(r) = lower.strip_prefix("http://") {
            (r, true)
        } else if let Some(r) = lower.strip_prefix("https://") {
            (r, false)
        } else if lower.contains("://") {
            return Err("only an http:// or https:// prefix is allowed");
        } else {
            (lower.as_str(), false)
        };
        if rest.contains('@') {
            return Err("userinfo is not allowed");
        }
        if rest.contains(['/', '?', '#']) {
            return Err("a path is not allowed (list hosts only)");
        }
        let (host, port) = split_port(rest)?;
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            HostPattern::Ip(IpAddr::V6(v6.parse().map_err(|_| "invalid IPv6 address")?))
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if host == "*" {
            return Err("`*` alone would allow every host");
        } else if let Some(suffix) = host.strip_prefix("*.") {
            valid_name(suffix)?;
            HostPattern::Suffix(format!(".{suffix}"))
        } else {
            valid_name(host)?;
            HostPattern::Name(host.to_owned())
        };
        Ok(AllowEntry {
            host,
            port,
            plain_http,
        })
    }

    pub(super) fn matches(&self, host: &url::Host<&str>, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Ip(ip), url::Host::Ipv4(a)) => *ip == IpAddr::V4(*a),
            (HostPattern::Ip(ip), url::Host::Ipv6(a)) => *ip == IpAddr::V6(*a),
            (HostPattern::Name(n), url::Host::Domain(d)) => n == &normalized(d),
            (HostPattern::Suffix(s), url::Host::Domain(d)) => {
                let d = normalized(d);
                d.len() > s.len() && d.ends_with(s.as_str())
            }
            _ => false,
        }
    }
}

/// A URL host compared with allow entries: lower-case, without a trailing dot.
fn normalized(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Splits `host[:port]` (`[v6]:port` for IPv6); a bare IPv6 address has no port.
fn split_port(rest: &str) -> Result<(&str, Option<u16>), &'static str> {
    let colon = if rest.starts_with('[') {
        match rest.find(']') {
            Some(end) if end + 1 == rest.len() => None,
            Some(end) if rest[end + 1..].starts_with(':') => Some(end + 1),
            _ => return Err("invalid IPv6 literal"),
        }
    } else if rest.parse::<Ipv6Addr>().is_ok() {
        None
    } else {
        rest.rfind(':')
    };
    let Some(i) = colon else {
        return Ok((rest, None));
    };
    let port = rest[i + 1..]
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or("invalid port")?;
    Ok((&rest[..i], Some(port)))
}

/// A DNS name as RFC 1123 §2.1 allows it: dot-separated labels of letters, digits and
/// hyphens, 1 to 63 characters, no hyphen first or last, 253 characters at most.
fn valid_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("invalid host name");
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err("invalid character or label in host name");
        }
    }
    Ok(())
}

/// The parsed allow list with the scheme and address rules.
#[derive(Debug)]
pub(super) struct Policy {
    pub(super) entries: Vec<AllowEntry>,
    pub(super) allow_private: bool,
}

impl Policy {
    /// The allow-list pattern that admits `url` (a bounded metrics label: never the URL itself).
    pub(super) fn label(&self, url: &Url) -> String {
        let (Some(host), port) = (url.host(), url.port_or_known_default()) else {
            return "?".into();
        };
        self.entries
            .iter()
            .find(|e| e.matches(&host, port))
            .map_or_else(
                || "?".into(),
                |e| match &e.host {
                    HostPattern::Name(n) => n.clone(),
                    HostPattern::Suffix(s) => format!("*{s}"),
                    HostPattern::Ip(ip) => ip.to_string(),
                },
            )
    }

    /// Whether a rule may call `url`: scheme, userinfo, allow list, IP-literal addresses (the
    /// resolver is not asked for those).
    pub(super) fn check(&self, url: &Url) -> Result<(), Refusal> {
        let host_str = url.host_str().unwrap_or("").to_owned();
        let refuse = |detail: String| Refusal {
            host: host_str.clone(),
            detail,
        };
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(refuse(format!(
                "{scheme} URLs are refused (https only, or http for hosts allowed with http://)"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "URLs with userinfo are refused (send credentials in a header)".into(),
            ));
        }
        let Some(host) = url.host() else {
            return Err(refuse("the URL has no host".into()));
        };
        let port = url.port_or_known_default();
        let mut matching = self.entries.iter().filter(|e| e.matches(&host, port));
        let Some(first) = matching.next() else {
            return Err(refuse("not in the [http] allow list".into()));
        };
        let plain_ok = first.plain_http || matching.any(|e| e.plain_http);
        if scheme == "http" && !plain_ok {
            return Err(refuse(format!(
                "plain http is refused (https only; an `http://{host_str}` entry in [http] allow permits it)"
            )));
        }
        let ip = match host {
            url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
            url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = ip.filter(|ip| !self.allow_private && is_private(*ip)) {
            return Err(refuse(private_detail(ip)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str], allow_private: bool) -> Policy {
        Policy {
            entries: entries
                .iter()
                .map(|e| AllowEntry::parse(e).expect(e))
                .collect(),
            allow_private,
        }
    }

    fn check(p: &Policy, url: &str) -> Result<(), String> {
        p.check(&Url::parse(url).expect(url))
            .map_err(|r| r.to_string())
    }

    #[test]
    fn entries_parse_to_host_port_and_scheme() {
        let e = AllowEntry::parse("HTTP://Api.Example.COM:8080").expect("parses");
        assert_eq!(e.host, HostPattern::Name("api.example.com".into()));
        assert_eq!(e.port, Some(8080));
        assert!(e.plain_http);
        let e = AllowEntry::parse("*.corp.example").expect("parses");
        assert_eq!(e.host, HostPattern::Suffix(".corp.example".into()));
        assert_eq!((e.port, e.plain_http), (None, false));
        let e = AllowEntry::parse("[::1]:443").expect("parses");
        assert_eq!(e.host, HostPattern::Ip("::1".parse().expect("ip")));
        assert_eq!(e.port, Some(443));
        let e = AllowEntry::parse("fe80::1").expect("parses");
        assert_eq!(e.host, HostPattern::Ip("fe80::1".parse().expect("ip")));
        assert_eq!(e.port, None);
        let e = AllowEntry::parse("https://10.1.2.3").expect("parses");
        assert_eq!(e.host, HostPattern::Ip("10.1.2.3".parse().expect("ip")));
        for bad in [
            "",
            "*",
            "*.",
            "a/b",
            "u@h",
            "h:",
            "h:x",
            "h:70000",
            "gopher://h",
            "a..b",
            "a_b.c",
            "*.*.c",
            "[::1",
            "[nope]",
        ] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcards_match_subdomains_case_insensitively() {
        let p = policy(&["*.corp.example", "api.example.com:8443"], true);
        assert!(check(&p, "https://a.corp.example/").is_ok());
        assert!(check(&p, "https://A.B.Corp.Example/x").is_ok());
        assert!(check(&p, "https://a.corp.example./").is_ok());
        assert!(check(&p, "https://corp.example/").is_err());
        assert!(check(&p, "https://xcorp.example/").is_err());
        assert!(check(&p, "https://API.example.com:8443/").is_ok());
        assert!(
            check(&p, "https://api.example.com/").is_err(),
            "port 443 is not 8443"
        );
        assert!(check(&p, "https://api.example.com:9443/").is_err());
    }

    #[test]
    fn schemes_userinfo_and_plain_http() {
        let p = policy(&["api.example.com", "http://legacy.example"], true);
        let err = check(&p, "http://api.example.com/").expect_err("plain http");
        assert!(err.contains("plain http is refused"), "{err}");
        assert!(check(&p, "http://legacy.example/").is_ok());
        assert!(check(&p, "https://legacy.example/").is_ok());
        let err = check(&p, "ftp://api.example.com/").expect_err("ftp");
        assert!(err.contains("ftp URLs are refused"), "{err}");
        let err = check(&p, "https://u:secret@api.example.com/").expect_err("userinfo");
        assert!(err.contains("userinfo") && !err.contains("secret"), "{err}");
        assert!(check(&p, "https://u@api.example.com/").is_err());
        // The same name twice: any entry allowing http is enough.
        let p = policy(&["h.example", "http://h.example"], true);
        assert!(check(&p, "http://h.example/").is_ok());
    }

    #[test]
    fn ip_literals_are_checked_unless_allow_private() {
        let p = policy(&["127.0.0.1", "[::1]", "10.0.0.1", "93.184.216.34"], false);
        for url in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://10.0.0.1/",
            "https://2130706433/",
        ] {
            let err = check(&p, url).expect_err(url);
            assert!(
                err.contains("loopback, private or link-local"),
                "{url}: {err}"
            );
        }
        assert!(check(&p, "https://93.184.216.34/").is_ok());
        let p = policy(&["127.0.0.1"], true);
        assert!(check(&p, "https://127.0.0.1:9/").is_ok());
    }
}
