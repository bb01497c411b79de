//! Run semantics, denials and errors: later rules see earlier changes, `()` claims are left out,
//! unknown fields pass through, logs per rule, `deny` (uncatchable), `throw` (a denial), other
//! errors with rule/line/column, and the helpers (`regex_*`, `now`, `is_namespaced`).

use claimrules::rules::{RuleError, RuleSet, RunOptions, Trace};
use serde_json::{json, Value};

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

fn user() -> Value {
    json!({
        "user_id": "auth0|1",
        "email": "jane@example.com",
        "app_metadata": {"roles": ["admin"]},
        "groups": ["staff"],
        "custom": {"anything": [1, 2, {"deep": true}]}
    })
}

fn context() -> Value {
    json!({
        "clientID": "app",
        "protocol": "oidc-basic-profile",
        "request": {"geoip": {"country_code": "NL", "city_name": "Utrecht"}},
        "authorization": {"roles": ["reader"]}
    })
}

fn trace(rules: &[(&str, &str)]) -> Trace {
    set(rules).run_with(user(), context(), &RunOptions::default())
}

#[test]
fn later_rules_see_changes_to_user_and_tokens() {
    let out = set(&[
        ("a", r#"user.app_metadata.plan = "gold"; context.accessToken["https://example.com/a"] = 1;"#),
        (
            "b",
            r#"context.idToken["https://example.com/plan"] = user.app_metadata.plan;
               context.idToken["https://example.com/saw-a"] = context.accessToken["https://example.com/a"];"#,
        ),
    ])
    .run(user(), context())
    .expect("runs");
    assert_eq!(out.id_token["https://example.com/plan"], json!("gold"));
    assert_eq!(out.id_token["https://example.com/saw-a"], json!(1));
    // The outcome's user is the user as the rules left it.
    assert_eq!(out.user["app_metadata"]["plan"], json!("gold"));
    assert_eq!(out.user["app_metadata"]["roles"], json!(["admin"]));
}

#[test]
fn unknown_input_fields_pass_through_untouched() {
    let out = set(&[(
        "r",
        r#"
        context.accessToken["https://example.com/country"] = context.request.geoip.country_code;
        context.accessToken["https://example.com/authz"] = context.authorization.roles;
        context.accessToken["https://example.com/groups"] = user.groups;
        context.accessToken["https://example.com/custom"] = user.custom;
        "#,
    )])
    .run(user(), context())
    .expect("runs");
    assert_eq!(out.access_token["https://example.com/country"], json!("NL"));
    assert_eq!(
        out.access_token["https://example.com/authz"],
        json!(["reader"])
    );
    assert_eq!(
        out.access_token["https://example.com/groups"],
        json!(["staff"])
    );
    assert_eq!(
        out.access_token["https://example.com/custom"],
        user()["custom"]
    );
    assert_eq!(
        out.user,
        user(),
        "a user no rule changed comes back unchanged"
    );
}

#[test]
fn missing_properties_read_as_unit_and_unit_claims_are_left_out() {
    let out = set(&[(
        "r",
        r#"
        context.accessToken["https://example.com/missing"] = user.no_such_field;
        context.accessToken["https://example.com/deeper"] = user.app_metadata?.nothing?.here;
        context.accessToken["https://example.com/fallback"] = user.nickname ?? "none";
        "#,
    )])
    .run(user(), context())
    .expect("runs");
    assert_eq!(
        out.access_token,
        json!({"https://example.com/fallback": "none"})
            .as_object()
            .cloned()
            .expect("map")
    );
}

#[test]
fn logs_and_print_are_captured_per_rule() {
    let out = set(&[
        (
            "one",
            r#"log("hello"); print("printed"); log("two", 2); log("three", 3, true);"#,
        ),
        ("quiet", "let x = 1;"),
        ("three", r#"log(#{a: 1}); log([1, "x"]);"#),
    ])
    .run(user(), context())
    .expect("runs");
    let logs: Vec<(&str, Vec<&str>)> = out
        .logs
        .iter()
        .map(|l| {
            (
                l.rule.as_str(),
                l.lines.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        logs,
        [
            ("one", vec!["hello", "printed", "two 2", "three 3 true"]),
            ("quiet", vec![]),
            ("three", vec!["#{\"a\": 1}", "[1, \"x\"]"]),
        ]
    );
}

#[test]
fn deny_ends_the_run_with_the_message_and_the_rule() {
    let t = trace(&[
        ("first", r#"log("before");"#),
        (
            "gate",
            r#"log("about to deny"); deny("please verify your email"); log("after");"#,
        ),
        ("never", r#"log("must not run");"#),
    ]);
    let err = t.result.expect_err("denied");
    assert_eq!(
        err,
        RuleError::Denied {
            rule: "gate".into(),
            message: "please verify your email".into()
        }
    );
    assert!(err.is_denial());
    assert_eq!(err.rule(), Some("gate"));
    assert_eq!(t.rules_run, ["first", "gate"]);
    // The failing rule's lines up to the denial are kept for the operator.
    assert_eq!(t.logs[1].lines, ["about to deny"]);
}

#[test]
fn deny_cannot_be_caught() {
    for (name, src) in [
        ("try", r#"try { deny("no") } catch (e) { log("caught"); }"#),
        (
            "function",
            r#"fn gate() { deny("no") } try { gate() } catch (e) { log("caught"); }"#,
        ),
        (
            "nested-try",
            r#"try { try { deny("no") } catch { log("inner"); } } catch { log("outer"); }"#,
        ),
        // rhai ignores errors raised inside a sort comparator; a denial must still end the rule.
        (
            "sort",
            r#"let a = [3, 1, 2]; a.sort(|x, y| { deny("no"); x - y }); log("sorted");"#,
        ),
        (
            "sort-then-nothing",
            r#"let a = [3, 1, 2]; a.sort(|x, y| { deny("no"); x - y });"#,
        ),
        (
            "map",
            r#"let a = [1].map(|x| { deny("no"); x }); log("mapped");"#,
        ),
    ] {
        let t = trace(&[(name, src), ("later", r#"log("must not run");"#)]);
        assert_eq!(
            t.result,
            Err(RuleError::Denied {
                rule: name.into(),
                message: "no".into()
            }),
            "{name}"
        );
        assert_eq!(t.rules_run, [name], "{name}");
        assert!(t.logs[0].lines.is_empty(), "{name}: {:?}", t.logs[0].lines);
    }
}

#[test]
fn a_thrown_value_is_a_denial_with_its_message() {
    for (src, message) in [
        (r#"throw "access revoked";"#, "access revoked"),
        (
            r#"throw #{ message: "blocked by policy", code: 7 };"#,
            "blocked by policy",
        ),
        (
            "fn check() { throw \"from a function\" } check();",
            "from a function",
        ),
        ("throw 42;", "42"),
    ] {
        let t = trace(&[("thrower", src), ("later", r#"log("must not run");"#)]);
        assert_eq!(
            t.result,
            Err(RuleError::Denied {
                rule: "thrower".into(),
                message: message.into()
            }),
            "{src}"
        );
        assert_eq!(t.rules_run, ["thrower"]);
    }
}

#[test]
fn a_rule_may_catch_its_own_throw() {
    let out = set(&[(
        "r",
        r#"try { throw "oops" } catch (e) { log("recovered from " + e); }
           context.accessToken["https://example.com/ok"] = true;"#,
    )])
    .run(user(), context())
    .expect("a caught throw does not deny");
    assert_eq!(out.logs[0].lines, ["recovered from oops"]);
    assert_eq!(out.access_token["https://example.com/ok"], json!(true));
}

#[test]
fn other_errors_carry_rule_line_and_column() {
    let cases = [
        // (source, line, column, words the message must contain)
        (
            "let n = 1;\nn.no_such_function();",
            2,
            3,
            "no_such_function",
        ),
        ("let a = [1];\nlet x = a[5];", 2, 11, "out of bounds"),
        ("let x = 1;\nlet y = x / 0;", 2, 11, "Division by zero"),
        ("let x = ();\n\nx.field = 1;", 3, 3, "field"),
        ("fn inner() {\n  let x = 1 + [];\n}\ninner();", 2, 13, "+"),
    ];
    for (src, line, column, words) in cases {
        let t = trace(&[("broken", src), ("later", r#"log("must not run");"#)]);
        match &t.result {
            Err(RuleError::Script {
                rule,
                line: l,
                column: c,
                message,
            }) => {
                assert_eq!(rule, "broken");
                assert_eq!((*l, *c), (line, column), "{src}: {message}");
                assert!(message.contains(words), "{src}: {message}");
                let shown = t.result.clone().expect_err("error").to_string();
                assert!(
                    shown.contains(&format!("line {line}, column {column}")),
                    "{shown}"
                );
            }
            other => panic!("{src}: expected a script error, got {other:?}"),
        }
        assert!(!t.result.as_ref().expect_err("error").is_denial());
        assert_eq!(t.rules_run, ["broken"], "later rules never run");
    }
}

#[test]
fn claim_values_without_a_json_form_are_errors_of_the_rule_that_set_them() {
    for src in [
        r#"context.accessToken["https://example.com/f"] = Fn("log");"#,
        r#"context.accessToken["https://example.com/f"] = |x| x + 1;"#,
        r#"context.idToken["https://example.com/t"] = timestamp();"#,
        r#"context.idToken["https://example.com/b"] = [blob(2)];"#,
        r#"context.idToken["https://example.com/r"] = 0..3;"#,
    ] {
        let t = trace(&[
            ("ok", "let fine = 1;"),
            ("bad", src),
            ("later", "let x = 1;"),
        ]);
        match t.result {
            Err(RuleError::Script { rule, message, .. }) => {
                assert_eq!(rule, "bad", "{src}");
                assert!(message.contains("no JSON form"), "{src}: {message}");
            }
            other => panic!("{src}: expected a script error, got {other:?}"),
        }
        assert_eq!(t.rules_run, ["ok", "bad"]);
    }
    // Nesting deeper than verifiers can parse is refused too.
    let t = trace(&[(
        "deep",
        r#"let v = 1; for i in 0..100 { v = [v]; } context.accessToken["https://example.com/d"] = v;"#,
    )]);
    assert!(
        matches!(&t.result, Err(RuleError::Script { rule, message, .. })
            if rule == "deep" && message.contains("nests too deeply")),
        "{:?}",
        t.result
    );
}

#[test]
fn a_user_left_without_a_json_form_is_a_clear_error() {
    let t = trace(&[
        ("a", "let fine = 1;"),
        ("b", r#"user.callback = Fn("log");"#),
    ]);
    match t.result {
        Err(RuleError::Script { rule, message, .. }) => {
            assert_eq!(rule, "b");
            assert!(
                message.contains("`user`") && message.contains("no JSON form"),
                "{message}"
            );
        }
        other => panic!("expected a script error, got {other:?}"),
    }
}

#[test]
fn replacing_context_or_a_token_map_is_an_error_of_that_rule() {
    for src in [
        "context = 1;",
        "context.accessToken = [];",
        "context.idToken = \"x\";",
    ] {
        let t = trace(&[("bad", src)]);
        assert!(
            matches!(&t.result, Err(RuleError::Script { rule, .. }) if rule == "bad"),
            "{src}: {:?}",
            t.result
        );
    }
}

#[test]
fn regex_match_and_captures() {
    let out = set(&[(
        "r",
        r#"
        log(regex_match("@example\\.com$", user.email));
        log(regex_match("^admin", user.email));
        let m = regex_captures("^([a-z]+)@(?:(corp)|([a-z]+))\\.com$", user.email);
        log(type_of(m));
        log(m.len());
        log(m[0]); log(m[1]); log(type_of(m[2])); log(m[3]);
        log(type_of(regex_captures("^(x)", user.email)));
        // The same pattern again comes from the cache and behaves the same.
        log(regex_match("@example\\.com$", "bob@example.com"));
        "#,
    )])
    .run(user(), context())
    .expect("runs");
    assert_eq!(
        out.logs[0].lines,
        [
            "true",
            "false",
            "array",
            "4",
            "jane@example.com",
            "jane",
            "()",
            "example",
            "()",
            "true"
        ]
    );
}

#[test]
fn an_invalid_regex_is_a_rule_error_at_the_call() {
    for src in [
        "let ok = 1;\nlet bad = regex_match(\"(unclosed\", user.email);",
        "let ok = 1;\nlet bad = regex_captures(\"[z-a]\", user.email);",
        // Not even a try/catch around a function call hides it.
        "fn f() { regex_match(\"(\", \"x\") }\ntry { f() } catch { log(\"caught\"); }",
    ] {
        let t = trace(&[("re", src), ("later", r#"log("must not run");"#)]);
        match &t.result {
            Err(RuleError::Script {
                rule,
                line,
                column,
                message,
            }) => {
                assert_eq!(rule, "re");
                assert!(*line >= 1 && *column > 0, "{src}: position {line}:{column}");
                assert!(message.contains("invalid regex"), "{message}");
            }
            other => panic!("{src}: expected a script error, got {other:?}"),
        }
        assert_eq!(t.rules_run, ["re"]);
        assert!(t.logs[0].lines.is_empty(), "{src}");
    }
    let t = trace(&[(
        "re",
        "let ok = 1;\nlet bad = regex_match(\"(unclosed\", user.email);",
    )]);
    assert!(
        matches!(
            t.result,
            Err(RuleError::Script {
                line: 2,
                column: 11,
                ..
            })
        ),
        "{:?}",
        t.result
    );
}

#[test]
fn now_can_be_pinned_and_defaults_to_the_clock() {
    let set = set(&[(
        "clock",
        r#"context.accessToken["https://example.com/now"] = now();"#,
    )]);
    let pinned = set.run_with(
        user(),
        context(),
        &RunOptions {
            now: Some(1_700_000_000),
            ..Default::default()
        },
    );
    assert_eq!(
        pinned.result.expect("runs").access_token["https://example.com/now"],
        json!(1_700_000_000)
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let live = set.run(user(), context()).expect("runs").access_token["https://example.com/now"]
        .as_u64()
        .expect("a number");
    assert!(live >= before && live <= before + 5, "{live} vs {before}");
}

#[test]
fn a_run_never_leaks_into_the_next() {
    // A failing run leaves nothing behind: not its logs, stop state, pinned clock or changes.
    let set = set(&[(
        "r",
        r#"
        log("run for " + user.user_id);
        context.accessToken["https://example.com/now"] = now();
        if user.deny == true { deny("no"); }
        "#,
    )]);
    let denied = set.run_with(
        json!({"user_id": "a", "deny": true}),
        context(),
        &RunOptions {
            now: Some(5),
            ..Default::default()
        },
    );
    assert!(denied.result.is_err());
    let out = set
        .run(json!({"user_id": "b"}), context())
        .expect("next run succeeds");
    assert_eq!(out.logs[0].lines, ["run for b"]);
    assert_ne!(out.access_token["https://example.com/now"], json!(5));
}
