//! The namespace rule (DESIGN §4): which custom claim keys survive, the drop and reject
//! policies naming rule and key, reserved hosts, OIDC profile claims, and the size cap.

use claimrules::claims::{is_namespaced, NamespaceConfig, NamespacePolicy, Refusal, TokenKind};
use claimrules::rules::{RuleError, RuleSet, RuleSetOptions, RunOptions, Warning};
use serde_json::{json, Value};

fn options(policy: NamespacePolicy, reserved: &[&str]) -> RuleSetOptions {
    RuleSetOptions {
        namespace: NamespaceConfig {
            policy,
            reserved_hosts: reserved.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A set whose one rule, `setter`, sets `key` to "v" on both tokens.
fn setter(key: &str, opts: RuleSetOptions) -> RuleSet {
    let src = format!(
        "context.accessToken[{key:?}] = \"v\";\ncontext.idToken[{key:?}] = \"v\";\n",
        key = key
    );
    RuleSet::from_sources(vec![("setter".into(), src)], json!({}), opts).expect("compiles")
}

fn login() -> (Value, Value) {
    (
        json!({"user_id": "auth0|1", "name": "From User"}),
        json!({"clientID": "app"}),
    )
}

/// Runs `setter(key)` under the drop policy; returns (access kept?, id kept?, warnings).
fn drop_outcome(key: &str, reserved: &[&str]) -> (bool, bool, Vec<Warning>) {
    let (user, context) = login();
    let out = setter(key, options(NamespacePolicy::Drop, reserved))
        .run(user, context)
        .expect("drop never fails the run");
    (
        out.access_token.get(key) == Some(&json!("v")),
        out.id_token.get(key) == Some(&json!("v")),
        out.warnings,
    )
}

#[test]
fn namespaced_url_keys_are_kept_on_both_tokens() {
    for key in [
        "https://example.com/roles",
        "http://example.com/roles",
        "https://example.com",
        "https://sub.example.com:8443/a/b?c=d",
    ] {
        let (access, id, warnings) = drop_outcome(key, &[]);
        assert!(access && id, "{key} must be kept");
        assert!(warnings.is_empty(), "{key}: {warnings:?}");
    }
}

#[test]
fn keys_that_break_the_rule_are_dropped_with_a_warning_naming_rule_and_key() {
    let cases: &[(&str, Refusal)] = &[
        ("roles", Refusal::NotNamespaced),
        ("ftp://x/y", Refusal::NotNamespaced),
        ("https://", Refusal::NotNamespaced),
        ("https:///roles", Refusal::NotNamespaced),
        ("urn:example:roles", Refusal::NotNamespaced),
        (" https://example.com/roles", Refusal::NotNamespaced),
        ("https://example.com/roles ", Refusal::NotNamespaced),
        ("https://exa mple.com/roles", Refusal::NotNamespaced),
        ("sub", Refusal::Registered),
        ("iss", Refusal::Registered),
        ("aud", Refusal::Registered),
        ("exp", Refusal::Registered),
        ("client_id", Refusal::Registered),
    ];
    for (key, reason) in cases {
        let (access, id, warnings) = drop_outcome(key, &[]);
        assert!(!access && !id, "{key:?} must be dropped from both tokens");
        assert_eq!(
            warnings,
            vec![
                Warning {
                    rule: "setter".into(),
                    token: TokenKind::AccessToken,
                    key: key.to_string(),
                    reason: *reason,
                },
                Warning {
                    rule: "setter".into(),
                    token: TokenKind::IdToken,
                    key: key.to_string(),
                    reason: *reason,
                },
            ],
            "{key:?}"
        );
        // The display form a log line gets names both.
        let line = warnings[0].to_string();
        assert!(
            line.contains("\"setter\"") && line.contains(&format!("{key:?}")),
            "{line}"
        );
    }
}

#[test]
fn scope_on_the_id_token_is_refused_as_a_registered_claim() {
    let set = RuleSet::from_sources(
        vec![(
            "setter".into(),
            r#"context.idToken.scope = "admin";"#.into(),
        )],
        json!({}),
        Default::default(),
    )
    .expect("compiles");
    let (user, context) = login();
    let out = set.run(user, context).expect("runs");
    assert!(!out.id_token.contains_key("scope"));
    assert_eq!(
        out.scope, None,
        "the ID token's scope is not a scope rewrite"
    );
    assert_eq!(
        out.warnings,
        [Warning {
            rule: "setter".into(),
            token: TokenKind::IdToken,
            key: "scope".into(),
            reason: Refusal::Registered,
        }]
    );
}

#[test]
fn uppercase_scheme_and_host_are_namespaced_and_the_key_is_kept_as_written() {
    // RFC 3986 §3.1/§3.2.2: scheme and host are case-insensitive, so this is an http(s) URL
    // with a host. The key is not normalised: the app reads back exactly what the rule wrote.
    let key = "HTTPS://Example.com/x";
    let (access, id, warnings) = drop_outcome(key, &[]);
    assert!(access && id, "{key} is kept");
    assert!(warnings.is_empty());
    assert!(is_namespaced(key, &[]));
}

#[test]
fn reserved_hosts_are_refused_case_insensitively_subdomains_included() {
    let reserved = ["auth.example.org"];
    for key in [
        "https://auth.example.org/roles",
        "HTTPS://AUTH.Example.ORG/roles",
        "http://auth.example.org./roles",
        "https://eu.auth.example.org/roles",
    ] {
        let (access, id, warnings) = drop_outcome(key, &reserved);
        assert!(!access && !id, "{key} must be dropped");
        assert_eq!(warnings.len(), 2, "{key}");
        assert!(warnings
            .iter()
            .all(|w| w.reason == Refusal::ReservedHost && w.key == key && w.rule == "setter"));
    }
    // A host that merely ends with the same letters is not a subdomain.
    let (access, id, _) = drop_outcome("https://notauth.example.org/roles", &reserved);
    assert!(access && id);
}

#[test]
fn oidc_profile_claims_are_allowed_on_the_id_token_only() {
    for key in [
        "name",
        "email",
        "email_verified",
        "picture",
        "locale",
        "updated_at",
    ] {
        let (access, id, warnings) = drop_outcome(key, &[]);
        assert!(id, "{key} is allowed on the ID token");
        assert!(!access, "{key} is not namespaced on the access token");
        assert_eq!(
            warnings,
            [Warning {
                rule: "setter".into(),
                token: TokenKind::AccessToken,
                key: key.to_string(),
                reason: Refusal::NotNamespaced,
            }],
            "{key}"
        );
    }
}

#[test]
fn reject_policy_fails_the_run_naming_rule_and_key() {
    for (key, token, reason) in [
        ("roles", TokenKind::AccessToken, Refusal::NotNamespaced),
        ("sub", TokenKind::AccessToken, Refusal::Registered),
        (
            "https://auth.example.org/x",
            TokenKind::AccessToken,
            Refusal::ReservedHost,
        ),
    ] {
        let set = RuleSet::from_sources(
            vec![
                ("first".into(), "let nothing = 0;".into()),
                (
                    "offender".into(),
                    format!("context.accessToken[{key:?}] = 1;"),
                ),
                ("never".into(), r#"deny("must not run");"#.into()),
            ],
            json!({}),
            options(NamespacePolicy::Reject, &["auth.example.org"]),
        )
        .expect("compiles");
        let (user, context) = login();
        let trace = set.run_with(user, context, &RunOptions::default());
        let err = trace.result.expect_err("reject fails the run");
        assert_eq!(
            err,
            RuleError::Namespace {
                rule: "offender".into(),
                key: key.into(),
                token,
                reason,
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("\"offender\"") && msg.contains(&format!("{key:?}")),
            "{msg}"
        );
        assert_eq!(
            trace.rules_run,
            ["first", "offender"],
            "later rules do not run"
        );
    }
    // The OIDC profile exception holds under reject too.
    let set = setter("name", options(NamespacePolicy::Reject, &[]));
    let (user, context) = login();
    assert!(matches!(
        set.run(user, context),
        Err(RuleError::Namespace { rule, key, token: TokenKind::AccessToken, .. })
            if rule == "setter" && key == "name"
    ));
}

#[test]
fn the_policy_can_be_overridden_per_run() {
    let set = setter("roles", options(NamespacePolicy::Drop, &[]));
    let (user, context) = login();
    let trace = set.run_with(
        user,
        context,
        &RunOptions {
            namespace_policy: Some(NamespacePolicy::Reject),
            ..Default::default()
        },
    );
    assert!(matches!(trace.result, Err(RuleError::Namespace { .. })));
}

#[test]
fn the_warning_names_the_rule_that_set_the_key() {
    let set = RuleSet::from_sources(
        vec![
            (
                "clean".into(),
                r#"context.accessToken["https://example.com/a"] = 1;"#.into(),
            ),
            (
                "sloppy".into(),
                r#"context.accessToken.plan = "pro";"#.into(),
            ),
            (
                "after".into(),
                r#"context.accessToken.plan = "gold";"#.into(),
            ),
        ],
        json!({}),
        Default::default(),
    )
    .expect("compiles");
    let (user, context) = login();
    let out = set.run(user, context).expect("runs");
    assert_eq!(out.access_token.len(), 1);
    assert_eq!(out.warnings.len(), 1);
    assert_eq!(out.warnings[0].rule, "sloppy");
    assert_eq!(out.warnings[0].key, "plan");
}

#[test]
fn unit_claims_are_left_out_without_warnings() {
    let set = RuleSet::from_sources(
        vec![(
            "r".into(),
            r#"
            context.accessToken["https://example.com/gone"] = ();
            context.accessToken["https://example.com/null-from-json"] = user.missing;
            context.accessToken.roles = ();
            context.idToken["https://example.com/kept"] = [1, (), 3];
            "#
            .into(),
        )],
        json!({}),
        Default::default(),
    )
    .expect("compiles");
    let (user, context) = login();
    let out = set.run(user, context).expect("runs");
    assert!(out.access_token.is_empty(), "{:?}", out.access_token);
    assert!(
        out.warnings.is_empty(),
        "a unit claim is not a refused claim"
    );
    // Inside a value, unit is JSON null.
    assert_eq!(
        out.id_token["https://example.com/kept"],
        json!([1, null, 3])
    );
}

#[test]
fn claims_over_the_size_cap_fail_the_run() {
    // 4 x 30,000 bytes of strings: about 120 KB of JSON, over the 100 KB default.
    let src = r#"
        let s = "0123456789"; s.pad(30000, "x");
        for i in 0..4 { context.accessToken[`https://example.com/big${i}`] = s; }
    "#;
    let set = RuleSet::from_sources(
        vec![("big".into(), src.into())],
        json!({}),
        Default::default(),
    )
    .expect("compiles");
    let (user, context) = login();
    match set.run(user.clone(), context.clone()) {
        Err(RuleError::ClaimsTooLarge { token, size, limit }) => {
            assert_eq!(token, TokenKind::AccessToken);
            assert_eq!(limit, 100 * 1024);
            assert!(size > limit && size < 130_000, "{size}");
        }
        other => panic!("expected ClaimsTooLarge, got {other:?}"),
    }
    // Just under the cap passes; the cap is configurable.
    let under = r#"
        let s = "0123456789"; s.pad(30000, "x");
        for i in 0..3 { context.idToken[`https://example.com/big${i}`] = s; }
    "#;
    let set = RuleSet::from_sources(
        vec![("under".into(), under.into())],
        json!({}),
        Default::default(),
    )
    .expect("compiles");
    assert_eq!(
        set.run(user.clone(), context.clone())
            .expect("under the cap")
            .id_token
            .len(),
        3
    );
    let mut tight = RuleSetOptions::default();
    tight.namespace.max_claims_bytes = 50_000;
    let set = RuleSet::from_sources(vec![("under".into(), under.into())], json!({}), tight)
        .expect("compiles");
    assert!(matches!(
        set.run(user, context),
        Err(RuleError::ClaimsTooLarge {
            token: TokenKind::IdToken,
            limit: 50_000,
            ..
        })
    ));
}

#[test]
fn is_namespaced_helper_matches_the_namespace_rule_and_sees_reserved_hosts() {
    let set = RuleSet::from_sources(
        vec![(
            "r".into(),
            r#"
            for key in ["https://example.com/a", "roles", "ftp://x/y", "https://", "HTTPS://Example.com/x", "https://auth.example.org/x"] {
                log(`${key} ${is_namespaced(key)}`);
            }
            "#
            .into(),
        )],
        json!({}),
        options(NamespacePolicy::Drop, &["auth.example.org"]),
    )
    .expect("compiles");
    let (user, context) = login();
    let out = set.run(user, context).expect("runs");
    assert_eq!(
        out.logs[0].lines,
        [
            "https://example.com/a true",
            "roles false",
            "ftp://x/y false",
            "https:// false",
            "HTTPS://Example.com/x true",
            "https://auth.example.org/x false",
        ]
    );
}
