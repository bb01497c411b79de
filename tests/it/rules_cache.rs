//! The cache between logins: `cache_get` / `cache_set` keep JSON-shaped values per rule set and
//! process for their time to live, bounded by entries and bytes, emptied by a reload; values
//! that are not JSON-shaped and bad time-to-live values are rule errors the rule can catch.

use claimrules::rules::{cache::CacheConfig, RuleError, RuleSet, RuleSetOptions};
use serde_json::json;

fn set(src: &str, cache: Option<CacheConfig>) -> RuleSet {
    RuleSet::from_sources(
        vec![("r".into(), src.into())],
        json!({}),
        RuleSetOptions {
            cache,
            ..Default::default()
        },
    )
    .unwrap()
}

const COUNTER: &str = r#"
    let seen = cache_get("count") ?? 0;
    cache_set("count", seen + 1, 60);
    context.accessToken["https://example.com/seen"] = seen;
    let obj = cache_get("obj");
    if obj == () { cache_set("obj", #{ list: [1, "two", #{ three: 3.5 }], flag: true, none: () }, 60); }
    else { context.accessToken["https://example.com/obj"] = obj; }
"#;

#[test]
fn values_survive_between_runs_of_one_set_and_a_reload_empties_them() {
    let s = set(COUNTER, None);
    for expected in 0..3 {
        let out = s.run(json!({}), json!({})).unwrap();
        assert_eq!(
            out.access_token["https://example.com/seen"],
            json!(expected)
        );
    }
    let out = s.run(json!({}), json!({})).unwrap();
    assert_eq!(
        out.access_token["https://example.com/obj"],
        json!({"list": [1, "two", {"three": 3.5}], "flag": true, "none": null})
    );
    // A reload builds a new set: a fresh cache.
    let reloaded = set(COUNTER, None);
    let out = reloaded.run(json!({}), json!({})).unwrap();
    assert_eq!(out.access_token["https://example.com/seen"], json!(0));
}

#[test]
fn entries_expire_after_their_ttl() {
    let s = set(
        r#"
        if cache_get("k") == () { cache_set("k", "v", 1); context.accessToken["https://e.com/miss"] = true; }
        "#,
        None,
    );
    assert!(s
        .run(json!({}), json!({}))
        .unwrap()
        .access_token
        .contains_key("https://e.com/miss"));
    assert!(!s
        .run(json!({}), json!({}))
        .unwrap()
        .access_token
        .contains_key("https://e.com/miss"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(s
        .run(json!({}), json!({}))
        .unwrap()
        .access_token
        .contains_key("https://e.com/miss"));
}

#[test]
fn the_cache_is_bounded_by_entries_and_bytes() {
    let s = set(
        r#"for i in 0..50 { cache_set("k" + i, i, 60); }"#,
        Some(CacheConfig {
            max_entries: 10,
            max_bytes: 1 << 20,
        }),
    );
    s.run(json!({}), json!({})).unwrap();
    assert_eq!(s.cache().len(), 10);
    let s = set(
        r#"let v = ""; v.pad(100, 'x'); for i in 0..50 { cache_set("k" + i, v, 60); }"#,
        Some(CacheConfig {
            max_entries: 1000,
            max_bytes: 1000,
        }),
    );
    s.run(json!({}), json!({})).unwrap();
    assert!(
        s.cache().len() <= 9,
        "{} entries over 1000 bytes",
        s.cache().len()
    );
}

#[test]
fn bad_values_and_ttls_are_catchable_rule_errors() {
    for (src, want) in [
        (r#"cache_set("k", || 1, 60);"#, "has no JSON form"),
        (r#"cache_set("k", 1, 0);"#, "ttl_seconds must be positive"),
        (r#"cache_set("k", 1, -5);"#, "ttl_seconds must be positive"),
        (
            r#"cache_set("k", #{ t: timestamp() }, 60);"#,
            "has no JSON form",
        ),
    ] {
        match set(src, None).run(json!({}), json!({})).unwrap_err() {
            RuleError::Script { message, line, .. } => {
                assert!(message.contains(want), "{src}: {message}");
                assert!(message.starts_with("cache_set:"), "{message}");
                assert_eq!(line, 1);
            }
            other => panic!("{src}: {other:?}"),
        }
        let caught = format!(
            r#"try {{ {src} }} catch (e) {{ context.accessToken["https://e.com/e"] = e; }}"#
        );
        let out = set(&caught, None).run(json!({}), json!({})).unwrap();
        assert!(out.access_token["https://e.com/e"]
            .as_str()
            .unwrap()
            .contains(want));
    }
    let big = set(
        r#"let v = ""; v.pad(2000, 'x'); cache_set("k", v, 60);"#,
        Some(CacheConfig {
            max_entries: 10,
            max_bytes: 1000,
        }),
    );
    assert!(big
        .run(json!({}), json!({}))
        .unwrap_err()
        .to_string()
        .contains("over the cache's limit"));
}

#[test]
fn rules_toml_sets_the_cache_bounds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[cache]\nmax_entries = 3\n\n[[rule]]\nname = \"r\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("r.rhai"),
        r#"for i in 0..10 { cache_set("k" + i, i, 60); }"#,
    )
    .unwrap();
    let s = RuleSet::load(dir.path()).unwrap();
    s.run(json!({}), json!({})).unwrap();
    assert_eq!(s.cache().len(), 3);
    std::fs::write(
        dir.path().join("rules.toml"),
        "[cache]\nmax_entriez = 3\n\n[[rule]]\nname = \"r\"\n",
    )
    .unwrap();
    let err = RuleSet::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("max_entriez"), "{err}");
}
