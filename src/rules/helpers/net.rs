//! URLs and IP addresses: `parse_url` and `ip_in_range`.

use std::net::IpAddr;

use rhai::{Dynamic, Engine, Map, NativeCallContext};

use super::bounds::Budget;
use super::{fail, quote, Res};

/// An address or range as a 128-bit IPv6 value: IPv4 is taken as its IPv4-mapped IPv6 form
/// `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2), so one comparison covers both families.
fn as_v6(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Whether `ip` is in `cidr` (`addr/prefix`, or one address for just that address).
fn ip_in_range(ip: &str, cidr: &str) -> Result<bool, String> {
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| format!("{} is not an IP address", quote(ip)))?;
    let (net, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
    let net: IpAddr = net
        .parse()
        .map_err(|_| format!("{} is not a CIDR range", quote(cidr)))?;
    let width: u32 = if net.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = if cidr.contains('/') {
        // Digits only: `str::parse` would also take a leading `+`.
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{} is not a CIDR range", quote(cidr)));
        }
        prefix
            .parse()
            .ok()
            .filter(|p| *p <= width)
            .ok_or_else(|| format!("{}: the prefix length must be at most {width}", quote(cidr)))?
    } else {
        width
    };
    // The mapped IPv4 range sits under the 96-bit prefix `::ffff:0:0/96`.
    let prefix = prefix + (128 - width);
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    Ok(as_v6(addr) & mask == as_v6(net) & mask)
}

/// Builds the `parse_url` map.
fn parse_url(engine: &Engine, text: &str) -> Result<Dynamic, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{}: {e}", quote(text)))?;
    let text_or_unit = |s: Option<&str>| s.map_or(Dynamic::UNIT, |s| Dynamic::from(s.to_owned()));
    let mut query = Map::new();
    for (name, value) in url.query_pairs() {
        query.insert(name.as_ref().into(), Dynamic::from(value.into_owned()));
    }
    let port = url
        .port_or_known_default()
        .map_or(Dynamic::UNIT, |p| Dynamic::from_int(i64::from(p)));
    let mut out = Map::new();
    out.insert("scheme".into(), Dynamic::from(url.scheme().to_owned()));
    out.insert("host".into(), text_or_unit(url.host_str()));
    out.insert("port".into(), port);
    out.insert("path".into(), Dynamic::from(url.path().to_owned()));
    out.insert("query".into(), Dynamic::from_map(query));
    out.insert("fragment".into(), text_or_unit(url.fragment()));
    // What was built is bounded by the text (a few times its length at most); count it as rhai
    // would before handing it over.
    let mut budget = Budget::of(engine);
    for value in out.values() {
        budget.entry()?;
        budget.count(value)?;
    }
    Ok(Dynamic::from_map(out))
}

/// Registers `parse_url` and `ip_in_range`.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "parse_url",
        |ctx: NativeCallContext, text: &str| -> Res<Dynamic> {
            parse_url(ctx.engine(), text).map_err(|e| fail(&ctx, "parse_url", e))
        },
    );
    engine.register_fn(
        "ip_in_range",
        |ctx: NativeCallContext, ip: &str, cidr: &str| -> Res<bool> {
            ip_in_range(ip, cidr).map_err(|e| fail(&ctx, "ip_in_range", e))
        },
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{assert_errors, eval};

    #[test]
    fn parse_url_fields() {
        let url = eval(
            r#"parse_url("https://user@Example.COM:8443/a/b%20c?x=1&y=a+b&x=2&e=%C3%A9&flag#frag")"#,
        );
        assert_eq!(
            url,
            json!({
                "scheme": "https", "host": "example.com", "port": 8443, "path": "/a/b%20c",
                "query": {"x": "2", "y": "a b", "e": "é", "flag": ""}, "fragment": "frag"
            })
        );
        // Defaults: the scheme's port, `()` for what is absent, an empty query map.
        let plain = eval(
            r#"{ let u = parse_url("https://example.com"); [u.port, u.path, u.query, u.fragment == (), u.host] }"#,
        );
        assert_eq!(plain, json!([443, "/", {}, true, "example.com"]));
        let mail = eval(
            r#"{ let u = parse_url("mailto:jane@example.com"); [u.scheme, u.host == (), u.port == (), u.path] }"#,
        );
        assert_eq!(mail, json!(["mailto", true, true, "jane@example.com"]));
        assert_eq!(eval(r#"parse_url("http://[::1]/").host"#), "[::1]");
        assert_eq!(eval(r#"parse_url("http://h.example/").port"#), 80);
        assert_errors(
            "parse_url",
            &[
                r#"parse_url("not a url")"#,
                r#"parse_url("/relative/path")"#,
                r#"parse_url("https://exa mple.com/")"#,
                r#"parse_url("http://h:99999/")"#,
            ],
        );
    }

    #[test]
    fn ip_ranges() {
        let cases = [
            ("10.1.2.3", "10.0.0.0/8", true),
            ("11.1.2.3", "10.0.0.0/8", false),
            ("192.168.1.255", "192.168.1.0/24", true),
            ("192.168.2.0", "192.168.1.0/24", false),
            ("1.2.3.4", "0.0.0.0/0", true),
            ("1.2.3.4", "1.2.3.4/32", true),
            ("1.2.3.5", "1.2.3.4/32", false),
            ("1.2.3.4", "1.2.3.4", true),
            ("10.1.2.3", "10.200.0.1/8", true),
            ("2001:db8::1", "2001:db8::/32", true),
            ("2001:db9::1", "2001:db8::/32", false),
            ("2001:DB8:0:0:0:0:0:ffff", "2001:db8::/64", true),
            ("::1", "::1/128", true),
            ("fe80::1", "fe80::/10", true),
            ("febf::1", "fe80::/10", true),
            ("fec0::1", "fe80::/10", false),
            ("2001:db8::1", "::/0", true),
            // Across families: IPv4 is compared as its IPv4-mapped IPv6 form.
            ("10.1.2.3", "2001:db8::/32", false),
            ("10.1.2.3", "::ffff:0:0/96", true),
            ("10.1.2.3", "::ffff:10.0.0.0/104", true),
            ("::ffff:10.1.2.3", "10.0.0.0/8", true),
            ("::ffff:11.1.2.3", "10.0.0.0/8", false),
            ("2001:db8::1", "10.0.0.0/8", false),
            ("2001:db8::1", "0.0.0.0/0", false),
            ("::a01:203", "10.0.0.0/8", false),
        ];
        for (ip, cidr, expected) in cases {
            assert_eq!(
                eval(&format!("ip_in_range({ip:?}, {cidr:?})")),
                expected,
                "{ip} in {cidr}"
            );
        }
        assert_errors(
            "ip_in_range",
            &[
                r#"ip_in_range("10.0.0.256", "10.0.0.0/8")"#,
                r#"ip_in_range("", "10.0.0.0/8")"#,
                r#"ip_in_range("fe80::1%eth0", "fe80::/10")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0.0/33")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0.0/")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0.0/+8")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0.0/8/8")"#,
                r#"ip_in_range("::1", "::/129")"#,
                r#"ip_in_range("10.0.0.1", "nonsense")"#,
                r#"ip_in_range("10.0.0.1", "10.0.0/8")"#,
            ],
        );
    }
}
