//! The `claimrules run` and `claimrules check` commands: output, messages and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/rules").join(name)
}

fn claimrules(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write input");
    path.to_string_lossy().into_owned()
}

#[test]
fn run_prints_the_outcome_as_pretty_json_and_exits_0() {
    let out = claimrules(&[
        "run",
        "--user",
        "examples/user.json",
        "--context",
        "examples/context.json",
        "rules",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("\n  \"access_token\": {"),
        "pretty-printed: {stdout}"
    );
    let v: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(
        v["access_token"]["https://example.com/roles"],
        json!(["admin"])
    );
    assert_eq!(v["access_token"]["https://example.com/plan"], json!("pro"));
    assert_eq!(v["id_token"]["https://example.com/theme"], json!("dark"));
    assert_eq!(v["id_token"]["https://example.com/logins_count"], json!(3));
    assert_eq!(
        v["scope"],
        Value::Null,
        "an admin keeps the requested scope"
    );
    assert_eq!(v["warnings"], json!([]));
    let rules: Vec<&str> = v["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| l["rule"].as_str().expect("rule name"))
        .collect();
    assert_eq!(
        rules,
        [
            "10-add-roles",
            "20-scope-by-role",
            "30-require-verified-email",
            "40-user-preferences",
            "50-protocol"
        ]
    );
}

#[test]
fn run_shows_scope_rewrites_logs_and_warnings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let user = write(
        tmp.path(),
        "user.json",
        r#"{"user_id": "auth0|2", "email_verified": true, "app_metadata": {"roles": ["viewer"]}}"#,
    );
    let context = write(
        tmp.path(),
        "context.json",
        r#"{"clientID": "other", "protocol": "oidc-basic-profile",
            "request": {"query": {"scope": "openid read:contacts write:contacts"}}}"#,
    );
    let rules = tmp.path().join("rules");
    std::fs::create_dir(&rules).expect("mkdir");
    std::fs::copy(
        root().join("rules/20-scope-by-role.rhai"),
        rules.join("20-scope-by-role.rhai"),
    )
    .expect("copy rule");
    write(
        &rules,
        "90-sloppy.rhai",
        "context.accessToken.plan = \"pro\";",
    );
    let out = claimrules(&[
        "run",
        "--user",
        &user,
        "--context",
        &context,
        &rules.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["scope"], json!(["openid", "read:contacts"]));
    assert_eq!(
        v["logs"][0]["lines"],
        json!(["non-admin: write scopes removed"])
    );
    let warning = v["warnings"][0].as_str().expect("a warning line");
    assert!(
        warning.contains("90-sloppy") && warning.contains("plan"),
        "{warning}"
    );
}

#[test]
fn run_without_context_uses_a_login_context() {
    let out = claimrules(&["run", "--user", "examples/user.json", "rules"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // 50-protocol saw "oidc-basic-profile".
    assert!(v["id_token"]
        .as_object()
        .expect("map")
        .contains_key("https://example.com/logins_count"));
}

#[test]
fn a_denial_exits_1_with_the_message_and_prints_no_claims() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let user = write(
        tmp.path(),
        "user.json",
        r#"{"user_id": "auth0|3", "blocked": true}"#,
    );
    let out = claimrules(&[
        "run",
        "--user",
        &user,
        &fixture("cli_deny").to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("denied"), "{stderr}");
    assert!(
        stderr.contains("20-gate") && stderr.contains("account blocked"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no outcome on denial: {}",
        text(&out.stdout)
    );

    // The sample rules deny an unverified email for the configured client.
    let user = write(
        tmp.path(),
        "unverified.json",
        r#"{"user_id": "auth0|4", "email": "u@example.com", "email_verified": false}"#,
    );
    let out = claimrules(&[
        "run",
        "--user",
        &user,
        "--context",
        "examples/context.json",
        "rules",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Please verify your email"));
}

#[test]
fn a_script_error_exits_1_with_rule_line_and_column() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let user = write(
        tmp.path(),
        "user.json",
        r#"{"user_id": "auth0|5", "broken": true}"#,
    );
    let out = claimrules(&[
        "run",
        "--user",
        &user,
        &fixture("cli_deny").to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(
        stderr.contains("20-gate") && stderr.contains("line 7, column 7"),
        "{stderr}"
    );
    assert!(stderr.contains("no_such_function"), "{stderr}");
}

#[test]
fn missing_or_invalid_json_exits_2_with_a_clear_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nope.json");
    let out = claimrules(&["run", "--user", &missing.to_string_lossy(), "rules"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot read user file") && stderr.contains("nope.json"),
        "{stderr}"
    );

    let bad = write(
        tmp.path(),
        "bad.json",
        "{\n  \"user_id\": \"x\",\n  oops\n}",
    );
    let out = claimrules(&["run", "--user", &bad, "rules"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{bad}:3:")) && stderr.contains("invalid JSON"),
        "{stderr}"
    );

    let array = write(tmp.path(), "array.json", "[1, 2]");
    let out = claimrules(&[
        "run",
        "--user",
        "examples/user.json",
        "--context",
        &array,
        "rules",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the context must be a JSON object"),
        "{}",
        text(&out.stderr)
    );

    // A missing required argument is a usage error too.
    let out = claimrules(&["run", "rules"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--user"));
}

#[test]
fn run_on_a_folder_that_does_not_load_exits_2() {
    let out = claimrules(&[
        "run",
        "--user",
        "examples/user.json",
        &fixture("one_bad").to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("20-bad.rhai:3:"), "{stderr}");
}

#[test]
fn check_passes_a_good_folder() {
    let out = claimrules(&["check", "rules"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("5 rules ok"));
}

#[test]
fn check_reports_each_error_with_file_line_and_column() {
    let dir = fixture("two_bad");
    let out = claimrules(&["check", &dir.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    let syntax = format!("error: {}:2:", dir.join("10-syntax.rhai").display());
    let typo = format!("error: {}:3:", dir.join("20-typo.rhai").display());
    assert!(errors[0].starts_with(&syntax), "{}", errors[0]);
    assert!(errors[1].starts_with(&typo), "{}", errors[1]);
    assert!(errors[1].contains("usr"), "{}", errors[1]);
    // Each line is path:line:column: message, with a numeric column.
    for e in &errors {
        let rest = e.trim_start_matches("error: ");
        let mut parts = rest.splitn(4, ':');
        let (_path, line, column) = (parts.next(), parts.next(), parts.next());
        assert!(line.and_then(|l| l.parse::<usize>().ok()).is_some(), "{e}");
        assert!(
            column
                .and_then(|c| c.parse::<usize>().ok())
                .is_some_and(|c| c > 0),
            "{e}"
        );
    }
    assert!(
        stderr.contains("2 of 3 rules failed to compile"),
        "{stderr}"
    );
}

#[test]
fn check_on_a_missing_folder_exits_2() {
    let out = claimrules(&["check", "no-such-rules-folder"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a folder"));
}
