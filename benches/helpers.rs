//! Rule helper benchmarks (src/rules/helpers.rs): the cost of one call of each helper, measured
//! through a rule. Each sample runs a rule that calls the helper `CALLS` times in a loop and the
//! same loop with a plain variable in its place; the difference over `CALLS` is what criterion
//! reports, so the figures are µs per helper call with the pipeline and the loop taken out.
//!
//! Run with `cargo bench --bench helpers` (`-- --quick` for a short run).
//!
//! Medians of `cargo bench --bench helpers -- --quick` on the shared 2-core machine (other builds
//! running, so wall-clock figures run high), µs per call: see the README's "Rule helpers" table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use claimrules::rules::RuleSet;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

/// Helper calls per rule run.
const CALLS: u32 = 200;

/// Variables the calls use, so argument evaluation is one variable read each.
const PRELUDE: &str = r#"
let a = "The quick brown fox jumps over the lazy dog";
let k = "a-secret-key-of-32-bytes-length!";
let b = "VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==";
let bu = "VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw";
let e = "caf%C3%A9%20%26%20cr%C3%A8me%3Dbr%C3%BBl%C3%A9e";
let u = "https://login.example.com:8443/authorize?client_id=app&scope=openid%20profile#top";
let j = `{"sub":"auth0|1","roles":["admin","editor"],"meta":{"plan":"pro","n":42}}`;
let m = #{ sub: "auth0|1", roles: ["admin", "editor"], exp: 4102444800 };
let d = "2024-05-01T10:00:00.123+02:00";
let t = 1714557600;
let f = "%Y-%m-%dT%H:%M:%SZ";
let n = 16;
let ip = "2001:db8::1";
let c = "2001:db8::/32";
let arr = ["admin", "editor", 42, true];
let h = "HS256";
"#;

/// Each helper as it is called in the loop.
const CASES: &[(&str, &str)] = &[
    ("sha256", "sha256(a)"),
    ("hmac_sha256", "hmac_sha256(k, a)"),
    ("hmac_sha256_base64", "hmac_sha256_base64(k, a)"),
    ("base64_encode", "base64_encode(a)"),
    ("base64_decode", "base64_decode(b)"),
    ("base64url_encode", "base64url_encode(a)"),
    ("base64url_decode", "base64url_decode(bu)"),
    ("url_encode", "url_encode(a)"),
    ("url_decode", "url_decode(e)"),
    ("parse_url", "parse_url(u)"),
    ("parse_json", "parse_json(j)"),
    ("to_json", "to_json(m)"),
    ("parse_date", "parse_date(d)"),
    ("format_date", "format_date(t, f)"),
    ("uuid", "uuid()"),
    ("random_hex", "random_hex(n)"),
    ("jwt_sign", "jwt_sign(m, k, h)"),
    ("ip_in_range", "ip_in_range(ip, c)"),
    ("join", "arr.join(\", \")"),
];

fn rule_set(call: &str) -> RuleSet {
    let source = format!("{PRELUDE}\nfor i in 0..{CALLS} {{ let r = {call}; }}");
    match RuleSet::from_sources(
        vec![("bench".into(), source)],
        json!({}),
        Default::default(),
    ) {
        Ok(set) => set,
        Err(e) => panic!("{call}: {e}"),
    }
}

fn run(set: &RuleSet) -> Duration {
    let start = Instant::now();
    let out = set.run(json!({"user_id": "auth0|1"}), json!({"clientID": "app"}));
    let took = start.elapsed();
    if let Err(e) = black_box(out) {
        panic!("{e}");
    }
    took
}

fn helpers(c: &mut Criterion) {
    let baseline = rule_set("a");
    let mut group = c.benchmark_group("helper_call");
    for (name, call) in CASES {
        let set = rule_set(call);
        group.bench_function(*name, |bench| {
            bench.iter_custom(|iters| {
                let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
                for _ in 0..iters {
                    with += run(&set);
                    without += run(&baseline);
                }
                with.saturating_sub(without) / CALLS
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = helpers
}
criterion_main!(benches);
