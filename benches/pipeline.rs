//! Pipeline benchmarks: the sample rule set on a typical login, the JSON <-> Rhai conversion cost
//! on its own, and a 20-rule set. Target (issue 2): median <= 25 µs per pipeline run.
//!
//! Run with `cargo bench --bench pipeline`.
//!
//! Measured 2026-11-26 on the shared 2-core machine (load average 10-13, so wall-clock medians
//! run 3-4x the CPU cost; CPU time per run from `perf stat -e task-clock` over 20,000 runs):
//! sample rules 57.9 µs median wall, 17 µs CPU; JSON -> Dynamic 15.6 µs wall and back 8.9 µs
//! wall, 4.2 µs CPU both ways; twenty rules 138 µs wall, 46 µs CPU; no rules 24.2 µs wall.

use std::hint::black_box;
use std::time::Duration;

use claimrules::rules::{RuleSet, RuleSetOptions};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::{json, Value};

/// A typical Auth0-shaped user: profile, metadata, one identity.
fn user() -> Value {
    json!({
        "user_id": "auth0|5f7c8ec7c33c6c004bbafe82",
        "email": "jane@example.com",
        "email_verified": true,
        "name": "Jane Doe",
        "nickname": "jane",
        "given_name": "Jane",
        "family_name": "Doe",
        "picture": "https://example.com/jane.png",
        "created_at": "2024-01-01T00:00:00.000Z",
        "updated_at": "2026-11-01T00:00:00.000Z",
        "logins_count": 42,
        "app_metadata": {
            "roles": ["admin", "editor"],
            "permissions": ["read:contacts", "write:contacts"],
            "plan": "pro"
        },
        "user_metadata": { "theme": "dark", "locale": "en" },
        "identities": [
            { "provider": "auth0", "user_id": "5f7c8ec7c33c6c004bbafe82",
              "connection": "Username-Password-Authentication", "isSocial": false }
        ]
    })
}

/// A typical authorization-code login context.
fn context() -> Value {
    json!({
        "clientID": "demo-app",
        "clientName": "Demo web app",
        "clientMetadata": { "tier": "gold" },
        "connection": "Username-Password-Authentication",
        "connectionStrategy": "auth0",
        "protocol": "oidc-basic-profile",
        "request": {
            "query": {
                "scope": "openid profile email read:contacts write:contacts",
                "audience": "https://api.example.com",
                "response_type": "code"
            },
            "body": {},
            "ip": "203.0.113.7",
            "hostname": "login.example.com",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)"
        },
        "stats": { "loginsCount": 42 },
        "sessionID": "s-1234",
        "tenant": "demo",
        "authentication": { "methods": [{ "name": "pwd", "timestamp": 1_764_000_000 }] },
        "accessToken": {},
        "idToken": {}
    })
}

/// Twenty rules of the kinds people write: claims from metadata, conditions, regexes, logs.
fn twenty_rules() -> Vec<(String, String)> {
    (0..20)
        .map(|i| {
            let src = match i % 4 {
                0 => format!(
                    r#"let ns = configuration.NAMESPACE;
                    if user.app_metadata?.roles != () {{
                        context.accessToken[ns + "roles{i}"] = user.app_metadata.roles;
                    }}"#
                ),
                1 => format!(
                    r#"let ns = configuration.NAMESPACE;
                    if context.clientID == "demo-app" && user.email_verified == true {{
                        context.idToken[ns + "verified{i}"] = true;
                    }}"#
                ),
                2 => format!(
                    r#"let ns = configuration.NAMESPACE;
                    if regex_match("@example\\.com$", user.email) {{
                        context.accessToken[ns + "staff{i}"] = true;
                    }}"#
                ),
                _ => format!(
                    r#"let ns = configuration.NAMESPACE;
                    let theme = user.user_metadata?.theme ?? "light";
                    context.idToken[ns + "theme{i}"] = theme;
                    log("rule {i} ran");"#
                ),
            };
            (format!("{i:02}-rule"), src)
        })
        .collect()
}

fn pipeline(c: &mut Criterion) {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let samples = RuleSet::load(rules).expect("the sample rules load");
    let (u, ctx) = (user(), context());
    // Sanity: the benchmark measures a successful run that adds claims and rewrites nothing.
    let out = samples
        .run(u.clone(), ctx.clone())
        .expect("the sample run succeeds");
    assert!(!out.access_token.is_empty());

    let mut group = c.benchmark_group("pipeline");
    group.bench_function("sample_rules", |b| {
        b.iter_batched(
            || (u.clone(), ctx.clone()),
            |(u, ctx)| samples.run(u, ctx),
            BatchSize::SmallInput,
        )
    });

    let twenty = RuleSet::from_sources(
        twenty_rules(),
        json!({ "NAMESPACE": "https://example.com/" }),
        RuleSetOptions::default(),
    )
    .expect("the 20 rules compile");
    let out = twenty
        .run(u.clone(), ctx.clone())
        .expect("the 20-rule run succeeds");
    assert_eq!(out.logs.len(), 20);
    group.bench_function("twenty_rules", |b| {
        b.iter_batched(
            || (u.clone(), ctx.clone()),
            |(u, ctx)| twenty.run(u, ctx),
            BatchSize::SmallInput,
        )
    });

    let empty = RuleSet::from_sources(Vec::new(), json!({}), RuleSetOptions::default())
        .expect("an empty set loads");
    group.bench_function("no_rules", |b| {
        b.iter_batched(
            || (u.clone(), ctx.clone()),
            |(u, ctx)| empty.run(u, ctx),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn conversion(c: &mut Criterion) {
    let (u, ctx) = (user(), context());
    let mut group = c.benchmark_group("conversion");
    group.bench_function("json_to_dynamic", |b| {
        b.iter(|| {
            let du = rhai::serde::to_dynamic(black_box(&u)).expect("user converts");
            let dc = rhai::serde::to_dynamic(black_box(&ctx)).expect("context converts");
            (du, dc)
        })
    });
    let du = rhai::serde::to_dynamic(&u).expect("user converts");
    let dc = rhai::serde::to_dynamic(&ctx).expect("context converts");
    group.bench_function("dynamic_to_json", |b| {
        b.iter(|| {
            let vu: Value = rhai::serde::from_dynamic(black_box(&du)).expect("user converts back");
            let vc: Value =
                rhai::serde::from_dynamic(black_box(&dc)).expect("context converts back");
            (vu, vc)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(60)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = pipeline, conversion
}
criterion_main!(benches);
