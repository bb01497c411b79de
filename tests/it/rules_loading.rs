//! Loading a rule set: `rules.toml` order, `enabled`, `file`, file-name order without a
//! manifest, `[configuration]` (visible, read-only), and compile errors that stop a set loading.

use std::path::{Path, PathBuf};

use claimrules::rules::{read_folder, LoadError, RuleError, RuleSet, RunOptions};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rules")
        .join(name)
}

fn login() -> (Value, Value) {
    (
        json!({"user_id": "auth0|1", "email": "a@example.com"}),
        json!({"clientID": "app", "protocol": "oidc-basic-profile"}),
    )
}

#[test]
fn manifest_order_wins_over_file_names_and_disabled_rules_do_not_run() {
    let set = RuleSet::load(fixture("ordered")).expect("fixture loads");
    // Listed rules only, in manifest order; the disabled one is part of the set but never runs.
    assert_eq!(set.names(), ["second", "first", "off", "renamed"]);
    assert!(!set.rules()[2].enabled());
    assert!(!set.names().iter().any(|n| n == "unlisted"));

    let (user, context) = login();
    let trace = set.run_with(user, context, &RunOptions::default());
    assert_eq!(trace.rules_run, ["second", "first", "renamed"]);
    let out = trace.result.expect("run succeeds");
    assert_eq!(
        out.access_token["https://example.com/order"],
        json!(["second", "first", "renamed"])
    );
    let logged: Vec<(&str, Vec<String>)> = out
        .logs
        .iter()
        .map(|l| (l.rule.as_str(), l.lines.clone()))
        .collect();
    assert_eq!(
        logged,
        [
            ("second", vec!["second ran".to_string()]),
            ("first", vec!["first ran".to_string()]),
            ("renamed", vec![]),
        ]
    );
}

#[test]
fn file_key_points_a_rule_at_another_file() {
    let set = RuleSet::load(fixture("ordered")).expect("fixture loads");
    let renamed = &set.rules()[3];
    assert_eq!(renamed.name(), "renamed");
    assert_eq!(
        renamed.path().file_name().and_then(|f| f.to_str()),
        Some("custom-file.rhai")
    );
    assert!(renamed.source().contains("Loaded as rule \"renamed\""));
}

#[test]
fn without_manifest_every_rhai_file_runs_in_file_name_order() {
    let set = RuleSet::load(fixture("by_name")).expect("fixture loads");
    // Plain byte order of the file names: "10-" < "20-" < "9-" (README.txt is ignored).
    assert_eq!(set.names(), ["10-first", "20-second", "9-last"]);
    let (user, context) = login();
    let out = set.run(user, context).expect("run succeeds");
    assert_eq!(
        out.access_token["https://example.com/order"],
        json!(["10-first", "20-second", "9-last"])
    );
}

#[test]
fn configuration_is_visible_to_rules() {
    let set = RuleSet::load(fixture("ordered")).expect("fixture loads");
    assert_eq!(
        set.configuration()["API_BASE"],
        json!("https://api.example.com")
    );
    let (user, context) = login();
    let out = set.run(user, context).expect("run succeeds");
    assert_eq!(
        out.access_token["https://example.com/api"],
        json!("https://api.example.com")
    );
    assert_eq!(out.access_token["https://example.com/max"], json!(3));
}

#[test]
fn configuration_is_read_only() {
    let attempts = [
        (
            "assign-key",
            r#"configuration.API_BASE = "https://evil.example";"#,
        ),
        ("assign-nested", "configuration.LIMITS.max = 100;"),
        ("replace", "configuration = #{};"),
        ("clear", "configuration.clear();"),
        ("clear-nested", "configuration.LIMITS.names.clear();"),
    ];
    for (name, src) in attempts {
        let set = RuleSet::from_sources(
            vec![
                (name.to_string(), src.to_string()),
                (
                    "reader".into(),
                    r#"context.accessToken["https://example.com/api"] = configuration.API_BASE;"#
                        .into(),
                ),
            ],
            json!({"API_BASE": "https://api.example.com", "LIMITS": {"max": 3, "names": ["a"]}}),
            Default::default(),
        )
        .expect("compiles");
        let (user, context) = login();
        let err = set.run(user, context).expect_err(name);
        match &err {
            RuleError::Script {
                rule,
                line,
                message,
                ..
            } => {
                assert_eq!(rule, name);
                assert_eq!(*line, 1, "{name}: {err}");
                assert!(
                    message.contains("constant"),
                    "{name}: message should say configuration is constant: {message}"
                );
            }
            other => panic!("{name}: expected a script error, got {other:?}"),
        }
    }
    // A copy is a plain map the rule may change; the shared configuration stays as loaded.
    let set = RuleSet::from_sources(
        vec![
            (
                "copy".into(),
                r#"let c = configuration; c.API_BASE = "changed"; log(c.API_BASE);"#.into(),
            ),
            (
                "reader".into(),
                r#"context.accessToken["https://example.com/api"] = configuration.API_BASE;"#
                    .into(),
            ),
        ],
        json!({"API_BASE": "https://api.example.com"}),
        Default::default(),
    )
    .expect("compiles");
    let (user, context) = login();
    let out = set
        .run(user.clone(), context.clone())
        .expect("run succeeds");
    assert_eq!(out.logs[0].lines, ["changed"]);
    assert_eq!(
        out.access_token["https://example.com/api"],
        json!("https://api.example.com")
    );
    // And it is the same on the next run.
    let again = set.run(user, context).expect("run succeeds");
    assert_eq!(again.access_token, out.access_token);
}

#[test]
fn run_options_override_configuration_and_select_rules() {
    let set = RuleSet::load(fixture("ordered")).expect("fixture loads");
    let mut extra = serde_json::Map::new();
    extra.insert("API_BASE".into(), json!("https://staging.example.com"));
    let (user, context) = login();
    let trace = set.run_with(
        user,
        context,
        &RunOptions {
            configuration: Some(extra),
            only: Some(vec!["renamed".into(), "second".into()]),
            ..Default::default()
        },
    );
    // `only` keeps set order.
    assert_eq!(trace.rules_run, ["second", "renamed"]);
    let out = trace.result.expect("run succeeds");
    assert_eq!(
        out.access_token["https://example.com/api"],
        json!("https://staging.example.com")
    );
    // Keys not overridden keep their loaded values.
    assert_eq!(out.access_token["https://example.com/max"], json!(3));
}

/// The error rhai's own parser gives for `src`, to prove the load error carries it unchanged.
fn parser_error(src: &str) -> (usize, usize, String) {
    let mut engine = rhai::Engine::new_raw();
    engine.set_strict_variables(true);
    let mut scope = rhai::Scope::new();
    for name in ["user", "context", "configuration"] {
        scope.push_dynamic(name, rhai::Dynamic::UNIT);
    }
    let err = engine
        .compile_with_scope(&scope, src)
        .expect_err("source must not compile");
    let pos = err.position();
    (
        pos.line().expect("line"),
        pos.position().expect("column"),
        err.0.to_string(),
    )
}

#[test]
fn one_bad_rule_stops_the_whole_set_from_loading() {
    let dir = fixture("one_bad");
    let err = RuleSet::load(&dir).expect_err("a set with a bad rule must not load");
    let src = std::fs::read_to_string(dir.join("20-bad.rhai")).expect("fixture readable");
    let (line, column, message) = parser_error(&src);
    match &err {
        LoadError::Compile {
            rule,
            path,
            line: l,
            column: c,
            message: m,
        } => {
            assert_eq!(rule, "20-bad");
            assert_eq!(path, &dir.join("20-bad.rhai"));
            assert_eq!((*l, *c), (line, column));
            assert_eq!(*l, 3, "the missing ')' is on line 3");
            assert_eq!(m, &message);
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    // The display form is what editors understand: path:line:column: message.
    assert_eq!(
        err.to_string(),
        format!(
            "{}:{line}:{column}: {message}",
            dir.join("20-bad.rhai").display()
        )
    );
}

#[test]
fn check_reports_every_compile_error_with_position() {
    let dir = fixture("two_bad");
    let contents = read_folder(&dir).expect("folder reads");
    let errors = RuleSet::check(&contents, &Default::default());
    assert_eq!(errors.len(), 2, "{errors:?}");
    let got: Vec<(String, usize, usize, String)> = errors
        .iter()
        .map(|e| match e {
            LoadError::Compile {
                rule,
                line,
                column,
                message,
                ..
            } => (rule.clone(), *line, *column, message.clone()),
            other => panic!("expected compile errors, got {other:?}"),
        })
        .collect();
    for (rule, file) in [("10-syntax", "10-syntax.rhai"), ("20-typo", "20-typo.rhai")] {
        let src = std::fs::read_to_string(dir.join(file)).expect("fixture readable");
        let (line, column, message) = parser_error(&src);
        assert!(
            got.contains(&(rule.to_string(), line, column, message.clone())),
            "{rule}: expected {line}:{column} {message:?} in {got:?}"
        );
    }
    assert_eq!(got[1].1, 3, "the typo `usr` is on line 3");
    assert!(got[1].3.contains("usr"), "{}", got[1].3);
    // load() refuses the set, naming the first bad rule.
    assert!(matches!(
        RuleSet::load(&dir),
        Err(LoadError::Compile { rule, .. }) if rule == "10-syntax"
    ));
}

#[test]
fn disabled_rules_are_not_compiled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("rules.toml"),
        "[[rule]]\nname = \"ok\"\n\n[[rule]]\nname = \"broken\"\nenabled = false\n",
    )
    .expect("write manifest");
    std::fs::write(
        tmp.path().join("ok.rhai"),
        "context.accessToken[\"https://example.com/ok\"] = 1;",
    )
    .expect("write rule");
    std::fs::write(tmp.path().join("broken.rhai"), "let = ;").expect("write rule");
    let set = RuleSet::load(tmp.path()).expect("a disabled broken rule does not block loading");
    let (user, context) = login();
    assert_eq!(
        set.run(user, context).expect("runs").access_token["https://example.com/ok"],
        json!(1)
    );
}

#[test]
fn manifest_and_folder_errors_are_clear() {
    // Not a folder.
    let missing = fixture("no-such-folder");
    assert!(matches!(RuleSet::load(&missing), Err(LoadError::NotAFolder(p)) if p == missing));

    // Unknown keys in rules.toml are errors, with the position toml reports.
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("rules.toml"),
        "[[rule]]\nname = \"a\"\nenabeld = false\n",
    )
    .expect("write manifest");
    std::fs::write(tmp.path().join("a.rhai"), "").expect("write rule");
    match RuleSet::load(tmp.path()) {
        Err(LoadError::Manifest { path, message }) => {
            assert_eq!(path, tmp.path().join("rules.toml"));
            assert!(message.contains("enabeld"), "{message}");
            assert!(message.contains("line 3"), "{message}");
        }
        other => panic!("expected a manifest error, got {other:?}"),
    }

    // A listed rule whose file is missing.
    std::fs::write(
        tmp.path().join("rules.toml"),
        "[[rule]]\nname = \"ghost\"\n",
    )
    .expect("write manifest");
    match RuleSet::load(tmp.path()) {
        Err(LoadError::Io { path, .. }) => assert_eq!(path, tmp.path().join("ghost.rhai")),
        other => panic!("expected an I/O error, got {other:?}"),
    }

    // The same rule listed twice.
    std::fs::write(
        tmp.path().join("rules.toml"),
        "[[rule]]\nname = \"a\"\n[[rule]]\nname = \"a\"\n",
    )
    .expect("write manifest");
    match RuleSet::load(tmp.path()) {
        Err(LoadError::Manifest { message, .. }) => assert!(message.contains("twice"), "{message}"),
        other => panic!("expected a manifest error, got {other:?}"),
    }
}

#[test]
fn each_rule_starts_with_a_clean_scope() {
    // A top-level `let` of one rule is not visible to the next one (strict variables refuse the
    // name at load time), and shadowing `user` inside a rule does not leak either.
    let err = RuleSet::from_sources(
        vec![
            ("a".into(), "let leaked = 1;".into()),
            ("b".into(), "log(leaked);".into()),
        ],
        json!({}),
        Default::default(),
    )
    .expect_err("b cannot see a's variable");
    assert!(
        matches!(&err, LoadError::Compile { rule, .. } if rule == "b"),
        "{err:?}"
    );

    let set = RuleSet::from_sources(
        vec![
            (
                "shadow".into(),
                r#"let user = #{ user_id: "fake" };"#.into(),
            ),
            (
                "reader".into(),
                r#"context.accessToken["https://example.com/id"] = user.user_id;"#.into(),
            ),
        ],
        json!({}),
        Default::default(),
    )
    .expect("compiles");
    let (user, context) = login();
    let out = set.run(user, context).expect("runs");
    assert_eq!(out.access_token["https://example.com/id"], json!("auth0|1"));
}

#[test]
fn keys_a_rule_adds_to_configuration_never_reach_later_rules_or_runs() {
    // rhai refuses changes to the constant's existing keys but lets a script add new ones; the
    // engine hands every rule a fresh copy so such additions stay inside the rule.
    let set = RuleSet::from_sources(
        vec![
            (
                "adder".into(),
                r#"configuration.INJECTED = "x"; configuration.LIMITS.extra = 1; log(configuration.INJECTED);"#
                    .into(),
            ),
            (
                "reader".into(),
                r#"log(type_of(configuration.INJECTED)); log(type_of(configuration.LIMITS.extra));"#
                    .into(),
            ),
        ],
        json!({"LIMITS": {"max": 3}}),
        Default::default(),
    )
    .expect("compiles");
    for _ in 0..2 {
        let (user, context) = login();
        let out = set.run(user, context).expect("runs");
        assert_eq!(out.logs[0].lines, ["x"]);
        assert_eq!(out.logs[1].lines, ["()", "()"]);
    }
    assert_eq!(set.configuration().len(), 1);
}
