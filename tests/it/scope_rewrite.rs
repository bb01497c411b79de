//! Scope rewrite (DESIGN §4): `context.accessToken.scope` as an array of strings or one
//! whitespace-separated string replaces the access token's scope; anything else is a rule error
//! naming the rule.

use claimrules::rules::{RuleError, RuleSet, RunOptions};
use serde_json::json;

fn set(rules: &[(&str, &str)]) -> RuleSet {
    RuleSet::from_sources(
        rules
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect(),
        json!({}),
        Default::default(),
    )
    .expect("compiles")
}

fn run(rules: &[(&str, &str)]) -> Result<Option<Vec<String>>, RuleError> {
    set(rules)
        .run(json!({"user_id": "auth0|1"}), json!({"clientID": "app"}))
        .map(|o| o.scope)
}

#[test]
fn an_array_of_strings_replaces_the_scope() {
    let scope = run(&[(
        "r",
        r#"context.accessToken.scope = ["openid", "read:contacts"];"#,
    )])
    .expect("runs");
    assert_eq!(scope, Some(vec!["openid".into(), "read:contacts".into()]));
}

#[test]
fn a_string_is_split_on_runs_of_whitespace() {
    let scope = run(&[(
        "r",
        "context.accessToken.scope = \"  openid \\t read:contacts\\n\\nwrite:contacts \";",
    )])
    .expect("runs");
    assert_eq!(
        scope,
        Some(vec![
            "openid".into(),
            "read:contacts".into(),
            "write:contacts".into()
        ])
    );
}

#[test]
fn no_rewrite_leaves_the_scope_alone_and_scope_is_not_a_claim() {
    let out = set(&[("r", r#"context.accessToken["https://example.com/x"] = 1;"#)])
        .run(json!({"user_id": "auth0|1"}), json!({"clientID": "app"}))
        .expect("runs");
    assert_eq!(out.scope, None);
    let out = set(&[("r", r#"context.accessToken.scope = "a b";"#)])
        .run(json!({"user_id": "auth0|1"}), json!({"clientID": "app"}))
        .expect("runs");
    assert!(
        !out.access_token.contains_key("scope"),
        "the rewrite is reported as `scope`, never as a custom claim"
    );
    assert!(out.warnings.is_empty());
}

#[test]
fn a_later_rule_sees_and_can_change_or_remove_the_rewrite() {
    let scope = run(&[
        ("widen", r#"context.accessToken.scope = ["a", "b"];"#),
        (
            "narrow",
            r#"context.accessToken.scope = context.accessToken.scope.filter(|s| s != "b");"#,
        ),
    ])
    .expect("runs");
    assert_eq!(scope, Some(vec!["a".into()]));

    for undo in [
        r#"context.accessToken.remove("scope");"#,
        "context.accessToken.scope = ();",
    ] {
        let scope = run(&[
            ("widen", r#"context.accessToken.scope = ["a", "b"];"#),
            ("undo", undo),
        ])
        .expect("runs");
        assert_eq!(scope, None, "{undo}");
    }
}

#[test]
fn invalid_scopes_are_rule_errors_naming_the_rule() {
    let cases = [
        (r#"["read:a", ""]"#, "empty"),
        (r#"["read:a", "read:b write:b"]"#, "whitespace"),
        (r#"["read:a", " read:b"]"#, "whitespace"),
        (r#"["read:a", 42]"#, "not a string"),
        (r#"["read:a", ["nested"]]"#, "not a string"),
        (r#"["read:a", ()]"#, "not a string"),
        ("42", "array of strings or a string"),
        ("#{ read: true }", "array of strings or a string"),
        ("true", "array of strings or a string"),
    ];
    for (value, why) in cases {
        let trace = set(&[
            ("ok", "let fine = true;"),
            ("scoper", &format!("context.accessToken.scope = {value};")),
            ("later", r#"deny("must not run");"#),
        ])
        .run_with(
            json!({"user_id": "auth0|1"}),
            json!({"clientID": "app"}),
            &RunOptions::default(),
        );
        match trace.result {
            Err(RuleError::InvalidScope {
                ref rule,
                ref message,
            }) => {
                assert_eq!(rule, "scoper", "{value}");
                assert!(message.contains(why), "{value}: {message}");
                let shown = trace.result.as_ref().expect_err("error").to_string();
                assert!(shown.contains("\"scoper\""), "{shown}");
            }
            other => panic!("{value}: expected InvalidScope, got {other:?}"),
        }
        assert_eq!(
            trace.rules_run,
            ["ok", "scoper"],
            "{value}: later rules do not run"
        );
    }
}

#[test]
fn the_error_names_the_rule_that_broke_the_scope_not_the_one_that_set_it() {
    let err = run(&[
        ("sets", r#"context.accessToken.scope = ["a"];"#),
        ("breaks", r#"context.accessToken.scope.push("");"#),
    ])
    .expect_err("an empty item is invalid");
    assert!(matches!(err, RuleError::InvalidScope { rule, .. } if rule == "breaks"));
}
