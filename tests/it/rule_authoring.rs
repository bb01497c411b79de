//! Issue 16, for rule authors coming from Auth0: `claimrules check` finds what can only fail at
//! run time (JavaScript names, unknown functions, variables a `fn` cannot see, platform fields),
//! JavaScript-looking input gets "rules are Rhai, not JavaScript" with the hint, every error has
//! a position, platform fields fail closed, one default context for `run`, `test` and the
//! server, deep merge, `[defaults]`, `expect.user`, coverage by position with an lcov file, and
//! `claimrules new`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use claimrules::rules::{RuleError, RuleSet, RuleSetOptions};
use claimrules::testing::{Case, TestSuite};
use serde_json::{json, Value};

use crate::common::{self, TestServer, ALICE};

fn claimrules(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run claimrules")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A rules folder in a fresh temporary folder: `(name, source)` rule files plus other files.
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn set(source: &str) -> RuleSet {
    RuleSet::from_sources(
        vec![("r".into(), source.into())],
        json!({"NS": "https://n.example/"}),
        Default::default(),
    )
    .expect("compiles")
}

#[test]
fn check_names_javascript_methods_with_their_rhai_equivalent() {
    let dir = folder(&[(
        "10-js.rhai",
        "let e = user.email ?? \"\";\n\
         if e.indexOf(\"@\") > 0 && e.includes(\".\") {\n\
         \x20   log(e.toLowerCase() + e.endsWith(\"x\"));\n\
         }\n\
         let n = e.length;\n\
         let i = parseInt(\"1\");\n\
         e.forEach(|c| c);\n",
    )]);
    let out = claimrules(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for line in [
        "error: ./10-js.rhai:2:6: unknown function `indexOf`: `indexOf` is JavaScript; use `index_of` (-1 when absent)",
        "error: ./10-js.rhai:2:28: unknown function `includes`: `includes` is JavaScript; use `contains`",
        "error: ./10-js.rhai:3:11: unknown function `toLowerCase`: `toLowerCase` is JavaScript; use `to_lower`",
        "error: ./10-js.rhai:3:29: unknown function `endsWith`: `endsWith` is JavaScript; use `ends_with`",
        "error: ./10-js.rhai:5:11: no property `.length` on strings, arrays or maps: `.length` is JavaScript; use `.len()`",
        "error: ./10-js.rhai:6:9: unknown function `parseInt`: `parseInt` is JavaScript; use `parse_int(text)`",
        "error: ./10-js.rhai:7:3: unknown function `forEach`: `forEach` is JavaScript; use `for item in array { … }`",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(
        err.ends_with("1 of 1 rules failed the static checks (each would fail at run time)\n"),
        "{err}"
    );
}

#[test]
fn check_knows_every_registered_helper_and_suggests_near_names() {
    let dir = folder(&[
        (
            "10-helpers.rhai",
            "let h = sha256(\"a\") + hmac_sha256(\"k\", \"a\") + base64url_encode(\"x\");\n\
             let j = parse_json(\"{}\"); let t = to_json(j); let u = uuid();\n\
             let d = format_date(now(), \"%Y\"); let p = parse_url(\"https://a.example/\");\n\
             let c = cache_get(\"k\"); cache_set(\"k\", 1, 60);\n\
             update_app_metadata(#{ a: 1 }); update_user_metadata(#{ b: 2 });\n\
             let joined = [\"a\", \"b\"].join(\",\"); let also = join([\"a\"], \"-\");\n\
             if false { let r = http_get(\"https://a.example/\"); }\n\
             let f = |x| x + 1; let g = f.call(1); let same = type_of(g);\n\
             fn mine(x) { x.trim(); x }\n\
             let m = mine(\" a \"); let ok = is_namespaced(\"https://a.example/x\");\n\
             let s = \"abc\".sub_string(0, 1).to_upper(); let k = #{a: 1}.keys();\n",
        ),
        (
            "20-typo.rhai",
            "let s = \"abc\";\nif s.starts_wth(\"a\") { log(s); }\n",
        ),
    ]);
    let out = claimrules(dir.path(), &["check", "."]);
    let err = stderr(&out);
    assert!(!err.contains("10-helpers.rhai"), "{err}");
    assert!(
        err.contains(
            "error: ./20-typo.rhai:2:6: unknown function `starts_wth`: did you mean `starts_with`?"
        ),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_script_function_sees_configuration_but_check_flags_user_and_context() {
    let dir = folder(&[
        (
            "rules.toml",
            "[configuration]\nNS = \"https://n.example/\"\n\n[[rule]]\nname = \"10-fn\"\n",
        ),
        (
            "10-fn.rhai",
            "fn claim(name) { configuration.NS + name }\n\
             context.idToken[claim(\"x\")] = 1;\n",
        ),
    ]);
    let out = claimrules(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1 rules ok\n");
    std::fs::write(dir.path().join("u.json"), r#"{"user_id": "auth0|1"}"#).expect("write");
    let out = claimrules(dir.path(), &["run", "--user", "u.json", "."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["id_token"]["https://n.example/x"], json!(1));

    // Read-only inside the function too.
    let err = set("fn f() { configuration.NS = 1; }\nf();")
        .run(json!({"user_id": "a"}), json!({}))
        .expect_err("constant");
    assert!(err.to_string().contains("constant"), "{err}");

    std::fs::write(
        dir.path().join("10-fn.rhai"),
        "fn claim(name) { configuration.NS + name + user.user_id }\n\
         fn tag() { context.clientID }\n\
         context.idToken[claim(\"x\")] = tag();\n",
    )
    .expect("write");
    let out = claimrules(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error: ./10-fn.rhai:1:44: function `claim` reads `user`, which it does not declare: a script function sees only its arguments (and `configuration`); pass it in: `fn claim(user, …)` called as `claim(user, …)`"), "{err}");
    assert!(
        err.contains("error: ./10-fn.rhai:2:12: function `tag` reads `context`"),
        "{err}"
    );
    // At run time the same mistake carries the hint too.
    let err = set("fn f() { user.user_id }\nlet x = f();")
        .run(json!({"user_id": "a"}), json!({}))
        .expect_err("no user in a fn");
    assert!(
        err.to_string().contains(
            "a script function sees only its arguments (and `configuration`): pass `user` in"
        ),
        "{err}"
    );
}

#[test]
fn calls_into_lib_modules_are_checked_against_the_module() {
    let dir = folder(&[
        ("lib/util.rhai", "fn shout(s) { s.to_upper() }\nprivate fn hidden() { 1 }\n"),
        (
            "10-use.rhai",
            "import \"lib/util\" as u;\nlet a = u::shout(\"a\");\nlet b = u::whisper(\"a\");\nlet c = u::hidden();\n",
        ),
    ]);
    let out = claimrules(dir.path(), &["check", "."]);
    let err = stderr(&out);
    assert!(!err.contains(":2:"), "{err}");
    assert!(
        err.contains("./10-use.rhai:3:12: unknown function `u::whisper`: module \"lib/util\" has no public `fn whisper`"),
        "{err}"
    );
    assert!(
        err.contains("./10-use.rhai:4:12: unknown function `u::hidden`"),
        "{err}"
    );
}

#[test]
fn javascript_parse_errors_say_rules_are_rhai_with_the_hint() {
    for (source, position, hint) in [
        (
            "function rule(user, context, callback) {\n  return callback(null, user, context);\n}\n",
            "1:1",
            "Undefined variable: function (rules are Rhai, not JavaScript: declare a function with `fn name(a, b) { … }`; the body of an Auth0 rule goes at the top level of the file, without the `function (user, context, callback) { … }` wrapper)",
        ),
        (
            "let url = 'https://example.com';\n",
            "1:11",
            "Invalid character: 'https://example.com' (rules are Rhai, not JavaScript: strings are written in double quotes, \"…\" ('…' is a single character))",
        ),
        (
            "if user.email === \"a\" { }\n",
            "1:15",
            "'===' is not an operator (rules are Rhai, not JavaScript: write `==` (Rhai never converts types when comparing))",
        ),
        (
            "let roles = (user.roles ?? []).map(r => r + \"!\");\n",
            "1:36",
            "(rules are Rhai, not JavaScript: closures are written `|x| x * 2` (or `|x| { … }`), not `x => …`)",
        ),
        (
            "let o = { plan: \"pro\" };\n",
            "1:11",
            "(rules are Rhai, not JavaScript: map literals are written `#{ key: value }`, not `{ key: value }`)",
        ),
        (
            "var plan = \"pro\";\n",
            "1:1",
            "'var' is a reserved keyword (rules are Rhai, not JavaScript: declare variables with `let` (or `const`))",
        ),
    ] {
        let dir = folder(&[("10-js.rhai", source)]);
        let out = claimrules(dir.path(), &["check", "."]);
        assert_eq!(out.status.code(), Some(1), "{source}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("error: ./10-js.rhai:{position}: ")) && err.contains(hint),
            "{source}: want {position} {hint:?} in:\n{err}"
        );
    }
}

#[test]
fn not_on_a_missing_field_says_to_compare_with_true() {
    let err = set("if !user.email_verified { deny(\"verify\"); }")
        .run(json!({"user_id": "a"}), json!({}))
        .expect_err("! on ()");
    assert_eq!(
        err,
        RuleError::Script {
            rule: "r".into(),
            line: 1,
            column: 4,
            message: "Function not found: ! (()) (`!` takes a bool, and this value is `()` (a missing field?): write `x != true` (true when missing or false))".into(),
        }
    );
    let err = set("let i = user.name.indexOf(\"a\");")
        .run(json!({"user_id": "a", "name": "ada"}), json!({}))
        .expect_err("indexOf");
    assert!(
        err.to_string()
            .contains("(`indexOf` is JavaScript; use `index_of` (-1 when absent))"),
        "{err}"
    );
}

#[test]
fn check_warns_of_not_on_a_field_that_may_be_missing() {
    let dir = folder(&[(
        "10-not.rhai",
        "if !user.email_verified { deny(\"verify\"); }\n\
         if !user.app_metadata.roles.contains(\"a\") { log(1); }\n\
         let ok = true;\nif !ok { log(2); }\n",
    )]);
    let out = claimrules(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert_eq!(
        err,
        "warning: ./10-not.rhai:1:4: `!user.email_verified` fails at run time when the field is missing or not a bool (`!` takes a bool, a missing field is `()`): write `user.email_verified != true` for a flag, `(user.email_verified ?? \"\") == \"\"` for a missing or empty string\n"
    );
    assert_eq!(stdout(&out), "1 rules ok, 1 warning\n");
}

#[test]
fn a_claim_without_a_json_form_names_the_rule_and_the_line_of_the_assignment() {
    let err = set("let ns = configuration.NS;\n\
         let ok = 1;\n\
         context.accessToken[ns + \"ok\"] = ok;\n\
         context.idToken[\"https://n.example/f\"] = |x| x;\n")
    .run(json!({"user_id": "a"}), json!({}))
    .expect_err("closure");
    assert_eq!(
        err,
        RuleError::Script {
            rule: "r".into(),
            line: 4,
            column: 1,
            message: "context.idToken[\"https://n.example/f\"] holds a value of type `Fn`, which has no JSON form".into(),
        }
    );
    let err = set("let x = 1;\ncontext.accessToken[configuration.NS + \"t\"] = timestamp();\n")
        .run(json!({"user_id": "a"}), json!({}))
        .expect_err("timestamp");
    assert!(
        matches!(
            err,
            RuleError::Script {
                line: 2,
                column: 1,
                ..
            }
        ),
        "{err:?}"
    );
    let err = set("let x = 1;\nuser.f = || 1;\n")
        .run(json!({"user_id": "a"}), json!({}))
        .expect_err("user closure");
    assert!(
        matches!(err, RuleError::Script { line: 2, column: 1, ref message, .. } if message.contains("`user`")),
        "{err:?}"
    );
}

#[test]
fn a_platform_field_fails_the_login_closed_unless_rules_toml_ignores_it() {
    let mfa = "if user.app_metadata?.mfa == true {\n    context.multifactor = #{ provider: \"any\", allowRememberBrowser: false };\n}\ncontext.idToken[\"https://n.example/x\"] = 1;\n";
    let dir = folder(&[("10-mfa.rhai", mfa)]);
    let set = RuleSet::load(dir.path()).expect("loads");
    let user = json!({"user_id": "a", "app_metadata": {"mfa": true}});
    let err = set.run(user.clone(), json!({})).expect_err("fails closed");
    assert_eq!(
        err,
        RuleError::Script {
            rule: "10-mfa".into(),
            line: 2,
            column: 5,
            message: "context.multifactor is an Auth0 platform field that claimrules does not implement (on Auth0 it makes the login ask for a second factor (MFA)), so the login fails rather than go on without it; if the rule set does not need it, add `ignore_platform_fields = [\"multifactor\"]` to rules.toml".into(),
        }
    );
    assert!(!err.is_denial(), "a rule error: server_error, no token");
    // A login that does not set it is not affected, nor is a field the input already had.
    set.run(json!({"user_id": "b"}), json!({}))
        .expect("no MFA asked");
    set.run(
        json!({"user_id": "b"}),
        json!({"sso": {"with_auth0": false}}),
    )
    .expect("input field kept as is");
    for field in ["redirect", "samlConfiguration", "sso", "primaryUser"] {
        let rule = format!("context[\"{field}\"] = #{{ url: \"https://a.example/\" }};");
        let err = RuleSet::from_sources(vec![("r".into(), rule)], json!({}), Default::default())
            .expect("compiles")
            .run(json!({"user_id": "a"}), json!({}))
            .expect_err(field);
        assert!(
            err.to_string()
                .contains(&format!("context.{field} is an Auth0 platform field")),
            "{err}"
        );
    }

    // `check` warns where it sees the assignment, and passes.
    let out = claimrules(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out)
            .contains("warning: ./10-mfa.rhai:2:5: context.multifactor is an Auth0 platform field"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "1 rules ok, 1 warning\n");

    // Opting in: the assignment is ignored, the login goes on, `check` is quiet.
    std::fs::write(
        dir.path().join("rules.toml"),
        "ignore_platform_fields = [\"multifactor\"]\n\n[[rule]]\nname = \"10-mfa\"\n",
    )
    .expect("write");
    let out = RuleSet::load(dir.path())
        .expect("loads")
        .run(user, json!({}))
        .expect("ignored");
    assert_eq!(out.id_token["https://n.example/x"], json!(1));
    let out = claimrules(dir.path(), &["check", "."]);
    assert_eq!(stdout(&out), "1 rules ok\n", "{}", stderr(&out));

    // A name that is not a platform field is refused, naming it.
    std::fs::write(
        dir.path().join("rules.toml"),
        "ignore_platform_fields = [\"mfa\"]\n\n[[rule]]\nname = \"10-mfa\"\n",
    )
    .expect("write");
    let err = RuleSet::load(dir.path()).expect_err("unknown field");
    assert!(
        err.to_string().contains("ignore_platform_fields: \"mfa\" is not a platform field (known: multifactor, redirect, samlConfiguration, sso, primaryUser)"),
        "{err}"
    );
    let out = claimrules(dir.path(), &["check", "."]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("\"mfa\" is not a platform field"));
}

/// A rule that shows the context it got: its top-level keys, and `request`.
const SHOW_CONTEXT: &str = "let keys = context.keys();\nkeys.sort();\n\
    context.idToken[\"https://n.example/keys\"] = keys;\n\
    context.idToken[\"https://n.example/request_keys\"] = context.request.keys();\n\
    context.idToken[\"https://n.example/client\"] = context.clientName;\n\
    context.idToken[\"https://n.example/roles\"] = context.authorization.roles;\n";

#[tokio::test]
async fn run_test_and_the_server_start_from_the_same_default_context() {
    let dir = folder(&[
        ("rules/10-show.rhai", SHOW_CONTEXT),
        ("u.json", r#"{"user_id": "auth0|1"}"#),
    ]);
    let rules = dir.path().join("rules");
    let out = claimrules(dir.path(), &["run", "--user", "u.json", "rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let run_keys = run["id_token"]["https://n.example/keys"].clone();
    let mut want: Vec<String> = claimrules::testing::default_context()
        .keys()
        .cloned()
        .collect();
    want.sort();
    assert_eq!(run_keys, json!(want));
    assert_eq!(
        run["id_token"]["https://n.example/client"],
        json!("Test client")
    );

    // The test runner: the same keys.
    let case = Case::new("default context")
        .user(json!({"user_id": "auth0|1"}))
        .run(&RuleSet::load(&rules).expect("loads"));
    let test_keys = case.outcome.expect("ran").id_token["https://n.example/keys"].clone();
    assert_eq!(test_keys, run_keys);

    // The server: a real login sees the same fields (plus those it knows, such as sessionID).
    common::write_config(dir.path(), Some(&rules), "");
    let server = TestServer::start(dir.path()).await;
    let code = common::get_code(&server, "openid", ALICE).await;
    let res = common::exchange(&server, &code).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let claims = common::payload(body["id_token"].as_str().expect("id token"));
    let server_keys: Vec<String> =
        serde_json::from_value(claims["https://n.example/keys"].clone()).expect("keys");
    for key in &want {
        assert!(
            server_keys.contains(key),
            "server context lacks {key}: {server_keys:?}"
        );
    }
    server.stop();
}

#[test]
fn case_context_and_user_merge_deeply_over_the_defaults() {
    let dir = folder(&[
        (
            "10-see.rhai",
            "context.idToken[\"https://n.example/request\"] = context.request;\n\
             context.idToken[\"https://n.example/meta\"] = user.app_metadata;\n\
             context.idToken[\"https://n.example/groups\"] = user.groups;\n",
        ),
        (
            "tests/merge.toml",
            r#"[defaults]
user = { user_id = "auth0|1", groups = ["a", "b"], app_metadata = { plan = "pro", roles = ["admin"] } }
context = { request = { query = { scope = "openid" } } }

[[case]]
name = "objects merge, arrays and scalars replace"
user = { groups = ["c"], app_metadata = { plan = "free" } }
context = { request = { ip = "203.0.113.7" } }
[case.expect]
id_token = { "https://n.example/request" = { ip = "203.0.113.7", query = { scope = "openid" }, body = {} }, "https://n.example/meta" = { plan = "free", roles = ["admin"] }, "https://n.example/groups" = ["c"] }
scope = "openid"
"#,
        ),
    ]);
    let out = claimrules(dir.path(), &["test", "."]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn defaults_apply_to_every_case_and_denied_false_overrides_them() {
    let dir = folder(&[
        (
            "10-a.rhai",
            "context.idToken[\"https://n.example/a\"] = 1;\n",
        ),
        (
            "20-gate.rhai",
            "if user.app_metadata?.blocked == true { deny(\"blocked\"); }\n",
        ),
        (
            "tests/gate.toml",
            r#"[defaults]
rules = ["20-gate"]
user = { user_id = "auth0|1", app_metadata = { blocked = true } }
configuration = { X = 1 }
now = 1700000000
[defaults.expect]
denied = "blocked"

[[case]]
name = "blocked by default"

[[case]]
name = "unblocked"
user = { app_metadata = { blocked = false } }
[case.expect]
denied = false

[[case]]
name = "both rules"
rules = ["10-a", "20-gate"]
user = { app_metadata = { blocked = false } }
[case.expect]
denied = false
id_token = { "https://n.example/a" = 1 }
"#,
        ),
    ]);
    let suite = TestSuite::load(dir.path()).expect("loads");
    let cases = suite.cases();
    assert_eq!(cases.len(), 3);
    assert_eq!(cases[0].rules, Some(vec!["20-gate".to_string()]));
    assert_eq!(cases[1].now, Some(1_700_000_000));
    assert_eq!(
        cases[1].configuration,
        Some(json!({"X": 1}).as_object().cloned().unwrap_or_default())
    );
    assert_eq!(cases[1].expect.denied, None);
    assert_eq!(
        cases[2].rules,
        Some(vec!["10-a".to_string(), "20-gate".to_string()])
    );
    let report = suite.run();
    assert!(
        report.success(),
        "{}",
        claimrules::testing::render_text(&report, false)
    );

    // A name in [defaults] is refused with file, line and key.
    std::fs::write(
        dir.path().join("tests/gate.toml"),
        "[defaults]\nname = \"x\"\n\n[[case]]\nname = \"a\"\nuser = { user_id = \"a\" }\n",
    )
    .expect("write");
    let out = claimrules(dir.path(), &["test", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("tests/gate.toml:2:1: key `defaults.name`: unknown field `name`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn expect_user_checks_dotted_paths_and_tables_and_shows_the_final_user() {
    let rule =
        "user.app_metadata.plan = \"pro\";\nuser.nickname = \"ada\";\nuser.tags = [\"x\"];\n";
    let dir = folder(&[
        ("10-user.rhai", rule),
        (
            "tests/user.toml",
            r#"[defaults]
user = { user_id = "auth0|1", app_metadata = { plan = "free", roles = ["admin"] } }

[[case]]
name = "dotted paths"
[case.expect]
user = { "app_metadata.plan" = "pro", nickname = "ada", tags = ["x"] }

[[case]]
name = "a table lists the fields it checks"
[case.expect]
user = { app_metadata = { plan = "pro" }, user_id = "auth0|1" }

[[case]]
name = "fields that must be absent"
[case.expect]
user_absent = ["given_name", "app_metadata.legacy"]

[[case]]
name = "a wrong value fails"
[case.expect]
user = { "app_metadata.plan" = "free", "app_metadata.missing" = 1 }
"#,
        ),
    ]);
    let out = claimrules(dir.path(), &["test", "."]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("PASS  user.toml: dotted paths"), "{text}");
    assert!(
        text.contains("PASS  user.toml: a table lists the fields it checks"),
        "{text}"
    );
    assert!(
        text.contains("PASS  user.toml: fields that must be absent"),
        "{text}"
    );
    assert!(
        text.contains(
            "    user field \"app_metadata.plan\":\n      - expected: \"free\"\n      + actual:   \"pro\"\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("    user field \"app_metadata.missing\":\n      - expected: 1\n      + actual:   (absent)\n"),
        "{text}"
    );

    let out = claimrules(dir.path(), &["test", ".", "--format", "json"]);
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        v["cases"][0]["outcome"]["user"],
        json!({"user_id": "auth0|1", "nickname": "ada", "tags": ["x"],
               "app_metadata": {"plan": "pro", "roles": ["admin"]}})
    );
    assert_eq!(v["cases"][3]["failures"][0]["kind"], json!("user"));

    std::fs::write(
        dir.path().join("u.json"),
        r#"{"user_id": "auth0|1", "app_metadata": {}}"#,
    )
    .expect("write");
    let out = claimrules(dir.path(), &["run", "--user", "u.json", "."]);
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["user"]["nickname"], json!("ada"));
    assert_eq!(v["user"]["app_metadata"]["plan"], json!("pro"));

    // The builder has it too; a failed run cannot be checked.
    let set = RuleSet::load(dir.path()).expect("loads");
    Case::new("builder")
        .user(json!({"user_id": "a", "app_metadata": {}}))
        .expect_user("app_metadata.plan", json!("pro"))
        .expect_user("user_metadata", Value::Null)
        .run(&set)
        .assert_passed();
    std::fs::write(
        dir.path().join("tests/user.toml"),
        "[[case]]\nname = \"x\"\nuser = { user_id = \"a\" }\n[case.expect]\ndenied = true\nuser = { a = 1 }\n",
    )
    .expect("write");
    let out = claimrules(dir.path(), &["test", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("key `case[0].user`: `expect.user` cannot be checked"),
        "{}",
        stderr(&out)
    );
}

/// One lcov record: SF, the DA (line, hits) pairs, LF and LH.
type LcovRecord = (String, Vec<(usize, u64)>, usize, usize);

/// Parses an lcov tracefile into its records.
fn parse_lcov(text: &str) -> Vec<LcovRecord> {
    let mut records = Vec::new();
    let (mut sf, mut da, mut lf, mut lh) = (String::new(), Vec::new(), 0, 0);
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            sf = path.to_owned();
        } else if let Some(rest) = line.strip_prefix("DA:") {
            let (l, h) = rest.split_once(',').expect("DA:line,hits");
            da.push((l.parse().expect("line"), h.parse().expect("hits")));
        } else if let Some(n) = line.strip_prefix("LF:") {
            lf = n.parse().expect("LF");
        } else if let Some(n) = line.strip_prefix("LH:") {
            lh = n.parse().expect("LH");
        } else if line == "end_of_record" {
            records.push((std::mem::take(&mut sf), std::mem::take(&mut da), lf, lh));
        } else {
            assert!(line.starts_with("TN:"), "unexpected lcov line {line:?}");
        }
    }
    records
}

#[test]
fn coverage_is_by_position_with_a_line_table_and_an_lcov_file() {
    let dir = folder(&[
        (
            "10-comment.rhai",
            "// This rule never throws and never calls deny; it only says so in comments.\nlet x = \"throw deny\";\ncontext.idToken[\"https://n.example/x\"] = x;\n",
        ),
        (
            "20-two.rhai",
            "if user.a == true {\n    deny(\"a\");\n}\nif user.b == true {\n    throw \"b\";\n}\n",
        ),
        (
            "tests/cov.toml",
            "[[case]]\nname = \"plain\"\nuser = { user_id = \"x\" }\n\n[[case]]\nname = \"a\"\nuser = { user_id = \"x\", a = true }\n[case.expect]\ndenied = \"a\"\n",
        ),
    ]);
    let out = claimrules(dir.path(), &["test", ".", "--coverage", "cov.info"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "coverage hint: no case triggered the deny/throw of rule(s): 20-two (line 5)\n"
        ),
        "{text}"
    );
    assert!(!text.contains("10-comment"), "{text}");

    let lcov = std::fs::read_to_string(dir.path().join("cov.info")).expect("lcov written");
    let records = parse_lcov(&lcov);
    assert_eq!(records.len(), 2, "{lcov}");
    let (sf, da, lf, lh) = &records[1];
    assert!(sf.ends_with("20-two.rhai"), "{sf}");
    assert_eq!(da, &vec![(1, 2), (2, 1), (4, 1), (5, 0)], "{lcov}");
    assert_eq!((*lf, *lh), (4, 3));
    let (sf, da, _, lh) = &records[0];
    assert!(sf.ends_with("10-comment.rhai"));
    assert_eq!(da, &vec![(2, 2), (3, 2)]);
    assert_eq!(*lh, 2);

    let out = claimrules(dir.path(), &["test", ".", "--format", "json"]);
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let rules = &v["coverage"]["rules"];
    assert_eq!(rules[0]["rule"], json!("10-comment"));
    assert_eq!(rules[0]["sites"], json!([]));
    assert_eq!(rules[1]["cases"], json!(2));
    assert_eq!(
        rules[1]["sites"],
        json!([
            {"line": 2, "column": 5, "kind": "deny", "fired": true},
            {"line": 5, "column": 5, "kind": "throw", "fired": false},
        ])
    );
    assert_eq!(rules[1]["lines"][0], json!({"line": 1, "hits": 2}));

    // A loop body's line counts once per pass.
    let loop_dir = folder(&[
        (
            "10-loop.rhai",
            "let parts = [];\nlet q = #{a: 1, b: 2, c: 3};\nfor k in q.keys() {\n    parts.push(k + \"=\" + q[k]);\n}\n",
        ),
        ("tests/loop.toml", "[[case]]\nname = \"loop\"\nuser = { user_id = \"x\" }\n"),
    ]);
    let out = claimrules(loop_dir.path(), &["test", ".", "--coverage", "cov.info"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let lcov = std::fs::read_to_string(loop_dir.path().join("cov.info")).expect("lcov written");
    assert_eq!(
        parse_lcov(&lcov)[0].1,
        vec![(1, 1), (2, 1), (3, 1), (4, 3)],
        "{lcov}"
    );
    assert_eq!(v["coverage"]["denial_untested"], json!(["20-two"]));

    // A set built without coverage falls back to "the rule denied in some case".
    let set = RuleSet::load_with(dir.path(), RuleSetOptions::default()).expect("loads");
    let report = TestSuite::with_rules(set, &dir.path().join("tests"))
        .expect("cases")
        .run();
    assert!(report.coverage.denial_untested.is_empty());
    assert!(report.coverage.rules[1].lines.is_empty());
}

#[test]
fn new_writes_a_rule_and_cases_that_pass_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = claimrules(dir.path(), &["new", "60-first", "--rules", "my-rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(dir.path().join("my-rules/60-first.rhai").is_file());
    assert!(dir.path().join("my-rules/tests/60-first.toml").is_file());
    assert_eq!(
        stdout(&out),
        "wrote my-rules/60-first.rhai\nwrote my-rules/tests/60-first.toml\nnext: claimrules test my-rules\n"
    );
    let out = claimrules(dir.path(), &["test", "my-rules"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).ends_with("3 passed, 0 failed\n"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("coverage hint"), "{}", stdout(&out));
    let out = claimrules(dir.path(), &["check", "my-rules"]);
    assert_eq!(stdout(&out), "1 rules ok\n", "{}", stderr(&out));

    // Twice: refused, nothing overwritten.
    let out = claimrules(dir.path(), &["new", "60-first", "--rules", "my-rules"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("60-first.rhai exists already"),
        "{}",
        stderr(&out)
    );
    let out = claimrules(dir.path(), &["new", "../x", "--rules", "my-rules"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\"../x\" is not a rule name"));
}

#[test]
fn new_lists_the_rule_in_rules_toml_and_passes_next_to_the_sample_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
        &rules,
    );
    let out = claimrules(dir.path(), &["new", "60-extra"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("listed 60-extra last in rules/rules.toml"));
    let manifest = std::fs::read_to_string(rules.join("rules.toml")).expect("manifest");
    assert!(
        manifest.ends_with("\n[[rule]]\nname = \"60-extra\"\n"),
        "{manifest}"
    );
    let set = RuleSet::load(&rules).expect("loads");
    assert_eq!(set.names().last().map(String::as_str), Some("60-extra"));
    let out = claimrules(dir.path(), &["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = claimrules(dir.path(), &["new", "10-add-roles"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("10-add-roles.rhai exists already"),
        "{}",
        stderr(&out)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}
