//! `claimrules test`, the rule unit-test runner: the CLI on fixture folders (exit codes, summary
//! line, diffs, JUnit XML, JSON, filter, strict namespace mode, coverage hint, every invalid-input
//! error, watch) and the Rust API (`TestSuite`, the `Case` builder).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use claimrules::rules::RuleSet;
use claimrules::testing::{Case, Failure, NamespaceMode, SuiteOptions, TestSuite};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/test_runner").join(name)
}

fn claimrules(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .args(args)
        .current_dir(root())
        .env_remove("NO_COLOR")
        .output()
        .expect("run claimrules")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn last_line(o: &Output) -> String {
    stdout(o).lines().last().unwrap_or_default().to_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn the_sample_rules_suite_passes() {
    let out = claimrules(&["test", "rules"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let passes = text.lines().filter(|l| l.starts_with("PASS  ")).count();
    assert!(
        passes >= 15,
        "the sample suite is meant to be full:\n{text}"
    );
    assert_eq!(last_line(&out), format!("{passes} passed, 0 failed"));
    // Every sample rule is exercised and the deny of 30-require-verified-email is tested.
    assert!(!text.contains("coverage hint"), "{text}");
}

#[test]
fn a_passing_folder_exits_zero_with_one_line_per_case() {
    let out = claimrules(&["test", path_str(&fixture("passing"))]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert_eq!(last_line(&out), "8 passed, 0 failed");
    for name in [
        "claims.toml: roles reach both tokens (",
        "claims.toml: a reader's scope is rewritten (",
        "claims.toml: the namespace comes from the configuration (",
        "claims.toml: a rule error is expected (",
        "gate.yaml: a blocked user is denied (",
        "gate.yaml: the gated client throws for unverified emails (",
        "gate.yaml: the gated client admits verified emails with the requested scope (",
        "legacy.json: the legacy claim is dropped, as expected (",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name:?} in\n{text}"));
        assert!(line.starts_with("PASS  "), "{line}");
        assert!(line.ends_with(" ms)"), "the line shows the time: {line}");
    }
}

#[test]
fn failures_show_a_plain_diff_the_logs_and_the_error_location() {
    let out = claimrules(&["test", path_str(&fixture("failing"))]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert_eq!(last_line(&out), "1 passed, 4 failed");
    assert!(
        !text.contains('\x1b'),
        "no color when not on a terminal:\n{text}"
    );
    let expected_diff = [
        "FAIL  cases.toml: wrong role (",
        "    access token claim \"https://fixture.example/plan\":",
        "      - expected: \"pro\"",
        "      + actual:   (missing)",
        "    access token claim \"https://fixture.example/roles\":",
        "      - expected: [\"admin\"]",
        "      + actual:   [\"editor\"]",
        "    logs:",
        "      [10-roles] roles set for auth0|1",
    ];
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with(expected_diff[0]));
    assert!(lines.next().is_some(), "{text}");
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest[0].starts_with("    at ") && rest[0].ends_with("cases.toml:2"),
        "{text}"
    );
    assert_eq!(&rest[1..expected_diff.len()], &expected_diff[1..], "{text}");

    // An unexpected denial names the rule and its message.
    assert!(
        text.contains("    expected success, but the run was denied\n"),
        "{text}"
    );
    assert!(text.contains("    denied: rule \"10-roles\" denied access: user is blocked\n"));
    // A script error names rule, line and column, and quotes the line.
    assert!(
        text.contains("    error: rule \"20-crash\" failed at line 4, column 13: Function not found: undefined_helper"),
        "{text}"
    );
    assert!(
        text.contains("      4 |     n = n + undefined_helper();\n"),
        "{text}"
    );
    // A denial with the wrong message, and a missing log line.
    assert!(text.contains(
        "      - expected: containing \"suspended\"\n      + actual:   \"user is blocked\"\n"
    ));
    assert!(text.contains("    no log line contains \"never logged\"\n"));
    assert!(text.contains("PASS  cases.toml: passes <&\"'> ("));
}

#[test]
fn the_failing_example_shows_the_diff_of_the_readme() {
    let out = claimrules(&["test", "examples/failing-tests"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert_eq!(last_line(&out), "0 passed, 1 failed");
    assert!(text.contains("FAIL  editor.toml: editors keep write scopes ("));
    assert!(text.contains(
        "    scope:\n      - expected: openid read:contacts write:contacts\n      + actual:   openid read:contacts\n"
    ), "{text}");
    assert!(text.contains("      [20-scope-by-role] non-admin: write scopes removed\n"));
}

#[test]
fn junit_xml_parses_back_with_failures_logs_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    let xml_path = dir.path().join("report.xml");
    let out = claimrules(&[
        "test",
        path_str(&fixture("failing")),
        "--junit",
        path_str(&xml_path),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("valid XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("5"));
    assert_eq!(root.attribute("failures"), Some("4"));
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1);
    assert_eq!(suites[0].attribute("name"), Some("cases.toml"));
    let cases: Vec<_> = suites[0]
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let names: Vec<_> = cases.iter().filter_map(|c| c.attribute("name")).collect();
    assert_eq!(
        names,
        [
            "wrong role",
            "unexpected denial",
            "script error",
            "missing log and wrong denial text",
            "passes <&\"'>"
        ]
    );
    let wrong = cases[0];
    assert_eq!(wrong.attribute("classname"), Some("cases"));
    let failure = wrong
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert!(failure
        .attribute("message")
        .unwrap()
        .contains("https://fixture.example/plan"));
    assert!(failure.text().unwrap().contains("+ actual:   [\"editor\"]"));
    let out_text = wrong
        .children()
        .find(|n| n.has_tag_name("system-out"))
        .and_then(|n| n.text())
        .unwrap();
    assert_eq!(out_text, "[10-roles] roles set for auth0|1");
    assert!(cases[4].children().all(|n| !n.has_tag_name("failure")));
    let time: f64 = cases[0].attribute("time").unwrap().parse().unwrap();
    assert!(time >= 0.0);

    // With a filter, the left-out cases are reported as skipped.
    let out = claimrules(&[
        "test",
        path_str(&fixture("passing")),
        "--filter",
        "gate",
        "--junit",
        path_str(&xml_path),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("valid XML");
    assert_eq!(doc.root_element().attribute("skipped"), Some("5"));
    let skipped = doc
        .descendants()
        .filter(|n| n.has_tag_name("skipped"))
        .count();
    assert_eq!(skipped, 5);
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("testsuite"))
            .count(),
        3
    );
}

#[test]
fn json_output_carries_results_failures_and_errors() {
    let out = claimrules(&["test", path_str(&fixture("failing")), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(doc["summary"]["passed"], 1);
    assert_eq!(doc["summary"]["failed"], 4);
    assert_eq!(doc["summary"]["line"], "1 passed, 4 failed");
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    assert_eq!(cases[0]["name"], "wrong role");
    assert_eq!(cases[0]["status"], "fail");
    assert_eq!(cases[0]["failures"][1]["kind"], "claim");
    assert_eq!(cases[0]["failures"][1]["expected"], json!(["admin"]));
    assert_eq!(cases[0]["failures"][1]["actual"], json!(["editor"]));
    assert_eq!(cases[0]["failures"][0]["actual"], Value::Null);
    assert_eq!(cases[2]["error"]["rule"], "20-crash");
    assert_eq!(
        cases[2]["error"]["source"],
        "4 |     n = n + undefined_helper();"
    );
    assert_eq!(cases[1]["error"]["denied"], true);
    // Every failure kind serializes with its fields and a one-line message.
    assert_eq!(cases[1]["failures"][0]["kind"], "unexpected");
    assert_eq!(
        cases[1]["failures"][0]["error"],
        "rule \"10-roles\" denied access: user is blocked"
    );
    assert_eq!(cases[3]["failures"][0]["kind"], "denial_message");
    assert_eq!(cases[3]["failures"][1]["kind"], "missing_log");
    assert_eq!(cases[3]["failures"][1]["expected"], "never logged");
    for case in cases {
        for f in case["failures"].as_array().unwrap() {
            assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
        }
    }
    assert_eq!(cases[4]["status"], "pass");
    assert_eq!(
        cases[4]["outcome"]["access_token"]["https://fixture.example/roles"],
        json!([])
    );
}

#[test]
fn a_filter_runs_matching_cases_and_counts_the_rest_as_skipped() {
    let out = claimrules(&[
        "test",
        path_str(&fixture("passing")),
        "--filter",
        "gated client",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert_eq!(last_line(&out), "2 passed, 0 failed, 6 skipped");
    assert_eq!(text.lines().filter(|l| l.starts_with("PASS")).count(), 2);
    assert!(text.lines().all(|l| !l.contains("roles reach both tokens")));
    // A file name matches too.
    let out = claimrules(&[
        "test",
        path_str(&fixture("passing")),
        "--filter",
        "legacy.json",
    ]);
    assert_eq!(last_line(&out), "1 passed, 0 failed, 7 skipped");
}

#[test]
fn strict_mode_fails_a_dropped_claim_naming_rule_and_key() {
    let dir = fixture("namespace");
    let out = claimrules(&["test", path_str(&dir)]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL  ns.toml: only checks the namespaced claim ("),
        "{text}"
    );
    assert!(
        text.contains("rule \"10-sloppy\" set claim \"roles\" on the access token, which the namespace rule drops"),
        "{text}"
    );
    // A case that expects the warning passes even in strict mode.
    assert!(text.contains("PASS  ns.toml: expects the drop ("));
    assert_eq!(last_line(&out), "1 passed, 1 failed");

    let out = claimrules(&["test", path_str(&dir), "--namespace-policy", "drop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(last_line(&out), "2 passed, 0 failed");
}

#[test]
fn the_coverage_hint_names_unexercised_rules_and_untested_denials() {
    let out = claimrules(&["test", path_str(&fixture("coverage"))]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("coverage hint: no case ran rule(s): 20-deny\n"),
        "{text}"
    );
    assert!(text.contains(
        "coverage hint: no case triggered the deny/throw of rule(s): 20-deny (line 1), 30-throw (line 1)\n"
    ), "{text}");
    assert_eq!(last_line(&out), "2 passed, 0 failed");
}

#[test]
fn rules_that_do_not_load_and_missing_tests_exit_two() {
    let out = claimrules(&["test", path_str(&fixture("broken-rule"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("10-broken.rhai:3:"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());

    let out = claimrules(&["test", path_str(&fixture("no-tests"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no test cases"), "{}", stderr(&out));

    let out = claimrules(&["test", "does/not/exist"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does/not/exist: not a folder"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_two() {
    for args in [
        &["test", "rules", "--format", "xml"][..],
        &["test", "rules", "--namespace-policy", "reject"][..],
        &["test", "rules", "--bogus"][..],
    ] {
        let out = claimrules(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = claimrules(&[
        "test",
        "rules",
        "--junit",
        path_str(&dir.path().join("missing/dir/report.xml")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot write"));
}

/// One invalid case file: its name, its text, and what the error must name.
struct Invalid {
    file: &'static str,
    text: &'static str,
    line: usize,
    key: &'static str,
    message: &'static str,
}

#[test]
fn every_invalid_case_file_error_names_file_line_and_key() {
    let cases = [
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = { user_id = \"x\" }\n\n[case.expect]\nacess_token = { a = 1 }\n",
            line: 6,
            key: "case[0].expect.acess_token",
            message: "unknown field `acess_token`",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = { user_id = \"x\" }\nnow = \"yesterday\"\n",
            line: 4,
            key: "case[0].now",
            message: "invalid type: string \"yesterday\"",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = { user_id = \"x\" }\n[case.expect]\ndenied = 3\n",
            line: 5,
            key: "case[0].expect.denied",
            message: "`true`, `false` or a substring of the denial message",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nuser = { user_id = \"x\" }\n",
            line: 1,
            key: "case[0].name",
            message: "missing field `name`",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = { user_id = \"x\"\n",
            line: 3,
            key: "",
            message: "syntax error",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = { user_id = \"x\" }\n\n[[case]]\nname = \"one\"\nuser = { user_id = \"y\" }\n",
            line: 6,
            key: "case[1].name",
            message: "already named \"one\"",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = { user_id = \"x\" }\nuser_file = \"u.json\"\n",
            line: 4,
            key: "case[0].user_file",
            message: "not both",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser_file = \"fixtures/none.json\"\n",
            line: 3,
            key: "case[0].user_file",
            message: "cannot read fixture",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = { user_id = \"x\" }\ncontext_file = \"fixtures/list.json\"\n",
            line: 4,
            key: "case[0].context_file",
            message: "must hold an object, not an array",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nnow = 1\n",
            line: 2,
            key: "case[0].user",
            message: "no input user",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = {}\ncontext = {}\ncontext_file = \"fixtures/list.json\"\n",
            line: 5,
            key: "case[0].context_file",
            message: "not both",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = {}\n[case.expect]\ndenied = true\nerror = \"x\"\n",
            line: 6,
            key: "case[0].error",
            message: "not both",
        },
        Invalid {
            file: "a.toml",
            text: "[[case]]\nname = \"one\"\nuser = {}\n[case.expect]\ndenied = true\naccess_token = { a = 1 }\n",
            line: 6,
            key: "case[0].access_token",
            message: "issues no token",
        },
        Invalid {
            file: "a.toml",
            text: "# nothing here\n",
            line: 1,
            key: "case",
            message: "holds no cases",
        },
        Invalid {
            file: "a.json",
            text: "{\"case\": [\n  {\"name\": \"one\", \"user\": {\"user_id\": \"x\"},\n   \"expect\": {\"scope\": 5}}\n]}\n",
            line: 3,
            key: "case[0].expect.scope",
            message: "scope string or an array of scope strings",
        },
        Invalid {
            file: "a.json",
            text: "{\"case\": [\n  {\"name\": \"one\", \"user\": {\"user_id\": \"x\"},\n   \"expect\": {\"absnt\": [\"a\"]}}\n]}\n",
            line: 3,
            key: "case[0].expect.absnt",
            message: "unknown field `absnt`",
        },
        Invalid {
            file: "a.json",
            text: "{\"case\": [\n  {\"name\": \"one\",\n   \"user\": {},}\n]}\n",
            line: 3,
            key: "case[0]",
            message: "trailing comma",
        },
        Invalid {
            file: "a.yaml",
            text: "case:\n  - name: one\n    user: {user_id: x}\n    expect:\n      logs: nope\n",
            line: 5,
            key: "case[0].expect.logs",
            message: "invalid type: string \"nope\", expected a sequence",
        },
        Invalid {
            file: "a.yaml",
            text: "case:\n  - name: one\n    user: {user_id: x}\n    rules: [10-a, 20-b]\n",
            line: 4,
            key: "case[0].rules",
            message: "no enabled rule is named \"20-b\"",
        },
        Invalid {
            file: "a.yml",
            text: "case:\n  - name: one\n    user: {user_id: x}\n    extra: 1\n",
            line: 4,
            key: "case[0].extra",
            message: "unknown field `extra`",
        },
    ];
    for c in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-a.rhai"),
            "context.accessToken[\"https://x.example/a\"] = 1;\n",
        )
        .unwrap();
        let tests = dir.path().join("tests");
        std::fs::create_dir_all(tests.join("fixtures")).unwrap();
        std::fs::write(tests.join("fixtures/list.json"), "[1, 2]").unwrap();
        std::fs::write(tests.join(c.file), c.text).unwrap();
        let out = claimrules(&["test", path_str(dir.path())]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", c.text);
        let file = tests.join(c.file);
        let prefix = format!("error: {}:{}:", file.display(), c.line);
        assert!(err.starts_with(&prefix), "want {prefix:?}, got {err:?}");
        if c.key.is_empty() {
            assert!(err.contains(": syntax error: "), "{err}");
        } else {
            assert!(
                err.contains(&format!(" key `{}`: ", c.key)),
                "want key {:?}: {err}",
                c.key
            );
        }
        assert!(err.contains(c.message), "want {:?}: {err}", c.message);
        assert!(stdout(&out).is_empty(), "no case runs");
    }
}

/// Waits (bounded) for a stdout line that satisfies `want`.
fn wait_for_line(
    rx: &mpsc::Receiver<String>,
    want: impl Fn(&str) -> bool,
    seen: &mut Vec<String>,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = want(&line);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn watch_reruns_after_a_rule_changes() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("10-a.rhai");
    std::fs::write(&rule, "context.accessToken[\"https://x.example/a\"] = 1;\n").unwrap();
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/a.toml"),
        "[[case]]\nname = \"a is one\"\nuser = {}\n[case.expect]\naccess_token = { \"https://x.example/a\" = 1 }\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .args(["test", path_str(dir.path()), "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let first = wait_for_line(&rx, |l| l == "1 passed, 0 failed", &mut seen);
    // Edit the rule so the case fails; the rerun's summary must show it.
    std::fs::write(&rule, "context.accessToken[\"https://x.example/a\"] = 2;\n").unwrap();
    let second = first && wait_for_line(&rx, |l| l == "0 passed, 1 failed", &mut seen);
    // A case file change is picked up too.
    std::fs::write(
        dir.path().join("tests/a.toml"),
        "[[case]]\nname = \"a is two\"\nuser = {}\n[case.expect]\naccess_token = { \"https://x.example/a\" = 2 }\n",
    )
    .unwrap();
    let third = second && wait_for_line(&rx, |l| l == "1 passed, 0 failed", &mut seen);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first && second && third,
        "output so far:\n{}",
        seen.join("\n")
    );
    assert!(seen.iter().any(|l| l.contains("+ actual:   2")), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.starts_with("PASS  a.toml: a is two")),
        "{seen:?}"
    );
}

#[test]
fn the_rust_api_loads_and_runs_a_folder() {
    let suite = TestSuite::load(fixture("passing")).unwrap();
    assert_eq!(suite.cases().len(), 8);
    let report = suite.run();
    assert_eq!(report.results.len(), 8);
    assert!(
        report.success(),
        "{}",
        claimrules::testing::render_text(&report, false)
    );
    assert_eq!(report.summary(), "8 passed, 0 failed");
    assert!(report.results.iter().all(|r| r.duration > Duration::ZERO));
    let blocked = report
        .results
        .iter()
        .find(|r| r.name == "a blocked user is denied")
        .unwrap();
    assert!(blocked.error.as_ref().unwrap().is_denial());
    assert_eq!(blocked.rules_run, ["10-claims", "20-gate"]);

    let report = suite.run_with(&SuiteOptions {
        filter: Some("reader".into()),
        namespace: NamespaceMode::Strict,
    });
    assert_eq!(report.summary(), "1 passed, 0 failed, 7 skipped");

    let failing = TestSuite::load(fixture("failing")).unwrap().run();
    assert_eq!(failing.failed(), 4);
    assert!(matches!(
        &failing.results[0].failures[1],
        Failure::Claim { key, actual: Some(a), .. }
            if key == "https://fixture.example/roles" && a == &json!(["editor"])
    ));
}

fn small_set() -> RuleSet {
    RuleSet::from_sources(
        vec![(
            "tag".into(),
            r#"
                context.accessToken["https://t.example/tier"] = configuration.TIER ?? "free";
                context.idToken["nickname"] = user.name;
                context.accessToken["tier"] = "oops";
                if user.banned == true { deny("banned user"); }
                log("tagged at " + now());
            "#
            .into(),
        )],
        json!({ "TIER": "gold" }),
        Default::default(),
    )
    .unwrap()
}

#[test]
fn the_builder_reads_like_a_case_file() {
    let set = small_set();
    Case::new("gold tier")
        .user(json!({ "name": "Ann" }))
        .now(42)
        .expect_access_claim("https://t.example/tier", json!("gold"))
        .expect_id_claim("nickname", json!("Ann"))
        .expect_warning("\"tier\"")
        .expect_log("tagged at 42")
        .expect_exact()
        .run(&set)
        .assert_passed();
    Case::new("configuration override")
        .user(json!({}))
        .configuration(json!({ "TIER": "silver" }))
        .expect_access_claim("https://t.example/tier", json!("silver"))
        .expect_absent("tier")
        .run_with(&set, NamespaceMode::Drop)
        .assert_passed();
    Case::new("banned")
        .user(json!({ "banned": true }))
        .expect_denied_with("banned")
        .run(&set)
        .assert_passed();

    // Strict mode: the unexpected drop of "tier" fails the case and names rule and key.
    let result = Case::new("strict")
        .user(json!({ "name": "Ann" }))
        .rules(["tag"])
        .run(&set);
    assert!(!result.passed());
    assert!(
        matches!(&result.failures[..], [Failure::DroppedClaim(w)] if w.rule == "tag" && w.key == "tier")
    );
    let text = result.render(false);
    assert!(text.contains("rule \"tag\" set claim \"tier\""), "{text}");
    assert!(result.render(true).contains("\x1b["), "colored rendering");
}

#[test]
#[should_panic(expected = "+ actual:   \"gold\"")]
fn assert_passed_panics_with_the_diff() {
    Case::new("wrong tier")
        .user(json!({}))
        .expect_access_claim("https://t.example/tier", json!("platinum"))
        .run_with(&small_set(), NamespaceMode::Drop)
        .assert_passed();
}

/// The example of the README's "Testing your rules", kept honest.
#[test]
fn the_documented_rust_example_holds() {
    let report = TestSuite::load(root().join("rules")).unwrap().run();
    assert!(
        report.success(),
        "{}",
        claimrules::testing::render_text(&report, false)
    );
    let set = claimrules::RuleSet::load(root().join("rules")).unwrap();
    Case::new("admins get their roles")
        .user(json!({"user_id": "auth0|1", "email_verified": true,
                     "app_metadata": {"roles": ["admin"]}}))
        .context(json!({"clientID": "demo-app"}))
        .expect_access_claim("https://example.com/roles", json!(["admin"]))
        .expect_absent("https://example.com/permissions")
        .run(&set)
        .assert_passed();
}

/// A rules folder whose rule persists metadata, reads a secret from `configuration_env`, and
/// denies after counting; its case file asserts the updates with `expect.app_metadata` /
/// `expect.user_metadata`.
fn metadata_suite(cases: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "configuration_env = { API_KEY = \"CLAIMRULES_TEST_META_KEY\" }\n\n[[rule]]\nname = \"count\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("count.rhai"),
        r#"
        let n = user.app_metadata.logins ?? 0;
        update_app_metadata(#{ logins: n + 1, key_len: configuration.API_KEY.len() });
        if user.blocked == true { deny("blocked"); }
        update_user_metadata(#{ welcomed: true });
        "#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/meta.toml"), cases).unwrap();
    dir
}

fn run_suite(dir: &Path, key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_claimrules"));
    cmd.arg("test").arg(dir).env("NO_COLOR", "1");
    match key {
        Some(k) => cmd.env("CLAIMRULES_TEST_META_KEY", k),
        None => cmd.env_remove("CLAIMRULES_TEST_META_KEY"),
    };
    cmd.output().unwrap()
}

#[test]
fn cases_assert_metadata_updates_including_before_a_denial() {
    let dir = metadata_suite(
        r#"
[[case]]
name = "a login counts and welcomes"
user = { user_id = "u1", app_metadata = { logins = 2 } }
[case.expect]
app_metadata = { logins = 3, key_len = 6 }
user_metadata = { welcomed = true }

[[case]]
name = "a denial still counts"
user = { user_id = "u1", blocked = true, app_metadata = {} }
[case.expect]
denied = "blocked"
app_metadata = { logins = 1 }
user_metadata = {}
"#,
    );
    let out = run_suite(dir.path(), Some("secret"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("2 passed"), "{}", stdout(&out));

    let failing = metadata_suite(
        r#"
[[case]]
name = "wrong count"
user = { user_id = "u1", app_metadata = {} }
[case.expect]
exact = true
app_metadata = { logins = 5 }
"#,
    );
    let out = run_suite(failing.path(), Some("secret"));
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(text.contains("app_metadata update \"logins\""), "{text}");
    assert!(
        text.contains("app_metadata update has a key the case does not list"),
        "{text}"
    );
}

#[test]
fn a_missing_configuration_env_variable_fails_the_load_by_name() {
    let dir = metadata_suite("");
    let out = run_suite(dir.path(), None);
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("configuration_env.API_KEY") && text.contains("CLAIMRULES_TEST_META_KEY"),
        "{text}"
    );
}
