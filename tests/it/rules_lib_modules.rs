//! Shared code between rules: `import "lib/x" as x;` loads `rules/lib/x.rhai`, compiled once per
//! load; files under `lib/` are modules, never rules; every other import is refused at load time
//! with the rule's file, line and column; a broken module names its own file.

use std::path::Path;

use claimrules::rules::{LoadError, RuleSet};
use serde_json::json;

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn claim(set: &RuleSet, key: &str) -> serde_json::Value {
    let out = set.run(json!({"user_id": "u1"}), json!({})).unwrap();
    out.access_token[key].clone()
}

#[test]
fn rules_share_functions_and_constants_from_lib() {
    let dir = folder(&[
        (
            "lib/greet.rhai",
            r#"
            export const PREFIX = "hello ";
            fn greet(name) { "hello " + name }
            fn shout(name) { greet(name).to_upper() }
            "#,
        ),
        ("lib/nested/math.rhai", "fn double(x) { x * 2 }"),
        (
            "10-a.rhai",
            r#"
            import "lib/greet" as g;
            import "lib/nested/math" as m;
            context.accessToken["https://example.com/a"] = g::shout(user.user_id);
            context.accessToken["https://example.com/n"] = m::double(21);
            context.accessToken["https://example.com/c"] = g::PREFIX;
            "#,
        ),
        (
            "20-b.rhai",
            r#"import "lib/greet" as g; context.accessToken["https://example.com/b"] = g::greet("b");"#,
        ),
    ]);
    let set = RuleSet::load(dir.path()).unwrap();
    assert_eq!(
        set.names(),
        vec!["10-a", "20-b"],
        "lib/ files are not rules"
    );
    assert_eq!(claim(&set, "https://example.com/a"), json!("HELLO U1"));
    assert_eq!(claim(&set, "https://example.com/n"), json!(42));
    assert_eq!(claim(&set, "https://example.com/c"), json!("hello "));
    assert_eq!(claim(&set, "https://example.com/b"), json!("hello b"));
}

fn load_error(dir: &Path) -> (String, usize, usize, String) {
    match RuleSet::load(dir).unwrap_err() {
        LoadError::Compile {
            path,
            line,
            column,
            message,
            ..
        } => (path.display().to_string(), line, column, message),
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn imports_outside_lib_are_refused_at_load_with_file_line_and_column() {
    for bad in [
        "../x",
        "lib/../10-rule",
        "/etc/passwd",
        "lib/missing",
        "crypto",
        "lib\\\\x",
        "rules.toml",
        "lib/./x",
    ] {
        let dir = folder(&[
            ("lib/x.rhai", "fn f() { 1 }"),
            ("outside.rhai", "fn f() { 2 }"),
            (
                "10-rule.rhai",
                &format!("let a = 1;\n  import \"{bad}\" as c;\ncontext.accessToken[\"https://e.com/x\"] = 1;"),
            ),
        ]);
        let (path, line, column, message) = load_error(dir.path());
        assert!(path.ends_with("10-rule.rhai"), "{bad}: {path}");
        assert_eq!(line, 2, "{bad}: {message}");
        assert!(column > 0, "{bad}");
        assert!(message.contains("rules/lib/"), "{bad}: {message}");
    }
}

#[test]
fn a_broken_module_is_reported_with_its_own_file_and_line() {
    let dir = folder(&[
        ("lib/broken.rhai", "fn ok() { 1 }\nfn bad( { 2 }\n"),
        (
            "10-rule.rhai",
            "import \"lib/broken\" as b;\nlet x = b::ok();",
        ),
    ]);
    let (path, line, _, message) = load_error(dir.path());
    assert!(path.ends_with("lib/broken.rhai"), "{path}");
    assert_eq!(line, 2, "{message}");
    assert!(message.contains("lib/broken"), "{message}");
}

#[test]
fn modules_that_import_each_other_in_a_cycle_are_refused() {
    let dir = folder(&[
        ("lib/a.rhai", "import \"lib/b\" as b;\nfn fa() { 1 }"),
        ("lib/b.rhai", "import \"lib/a\" as a;\nfn fb() { 2 }"),
        ("10-rule.rhai", "import \"lib/a\" as a;\nlet x = a::fa();"),
    ]);
    let (_, _, _, message) = load_error(dir.path());
    assert!(message.contains("cycle"), "{message}");
}

#[cfg(unix)]
#[test]
fn a_symlink_out_of_the_rules_folder_is_refused() {
    let outside = folder(&[("evil.rhai", "fn f() { 1 }")]);
    let dir = folder(&[("10-rule.rhai", "let x = 1;")]);
    std::fs::create_dir_all(dir.path().join("lib")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("evil.rhai"),
        dir.path().join("lib/evil.rhai"),
    )
    .unwrap();
    match RuleSet::load(dir.path()).unwrap_err() {
        LoadError::Io { path, message } => {
            assert!(path.ends_with("lib/evil.rhai"), "{}", path.display());
            assert!(
                message.contains("symlink out of the rules folder"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A symlinked folder leaving the rules folder is refused too.
    let dir2 = folder(&[("10-rule.rhai", "let x = 1;")]);
    std::fs::create_dir_all(dir2.path().join("lib")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir2.path().join("lib/ext")).unwrap();
    assert!(matches!(
        RuleSet::load(dir2.path()).unwrap_err(),
        LoadError::Io { .. }
    ));
}

#[test]
fn eval_stays_refused() {
    let dir = folder(&[("10-rule.rhai", "eval(\"1\");")]);
    let (_, line, _, message) = load_error(dir.path());
    assert_eq!(line, 1);
    assert!(message.contains("not allowed"), "{message}");
}

#[test]
fn the_check_command_accepts_imports_and_reports_bad_ones() {
    let dir = folder(&[
        ("lib/x.rhai", "fn f() { 1 }"),
        ("10-ok.rhai", "import \"lib/x\" as x; let a = x::f();"),
    ]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.path().join("20-bad.rhai"), "import \"../x\" as x;").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("20-bad.rhai:1:"), "{text}");
}
