//! Reporters: the runner's text (one line per case, diffs for failures, coverage hint, summary
//! last), a JSON document, JUnit XML for CI systems, and an lcov tracefile of the rules' line
//! coverage (the `geninfo` format of the Linux Test Project's lcov, which CI coverage tools
//! read).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::{CaseResult, Failure, SuiteReport};
use crate::rules::RuleError;

/// Whether to color the text output: only on a terminal, and never when `NO_COLOR` is set to a
/// non-empty value (<https://no-color.org>).
pub fn color_enabled(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn bold_red(&self, t: &str) -> String {
        self.paint("1;31", t)
    }
}

fn file_name(path: Option<&Path>) -> String {
    path.and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The text of one case: its status line and, when it failed, the diff, logs and error.
pub(super) fn render_case(r: &CaseResult, color: bool) -> String {
    let st = Style { color };
    let mut out = String::new();
    let file = file_name(r.file.as_deref());
    let label = if file.is_empty() {
        r.name.clone()
    } else {
        format!("{file}: {}", r.name)
    };
    let time = st.dim(&format!("({})", format_duration(r.duration)));
    if r.passed() {
        let _ = writeln!(out, "{}  {label} {time}", st.green("PASS"));
        return out;
    }
    let _ = writeln!(out, "{}  {label} {time}", st.bold_red("FAIL"));
    if let (Some(path), Some(line)) = (&r.file, r.line) {
        let _ = writeln!(out, "    at {}:{line}", path.display());
    }
    for f in &r.failures {
        out.push_str(&render_failure(f, &st));
    }
    let lines: Vec<(&str, &str)> = r
        .logs
        .iter()
        .flat_map(|l| {
            l.lines
                .iter()
                .map(move |line| (l.rule.as_str(), line.as_str()))
        })
        .collect();
    if !lines.is_empty() {
        let _ = writeln!(out, "    logs:");
        for (rule, line) in lines {
            let _ = writeln!(out, "      {} {line}", st.dim(&format!("[{rule}]")));
        }
    }
    if let Some(err) = &r.error {
        let what = if err.is_denial() { "denied" } else { "error" };
        let _ = writeln!(out, "    {what}: {err}");
        if let Some(src) = &r.error_source {
            let _ = writeln!(out, "      {}", st.yellow(src));
        }
    }
    out
}

fn diff_lines(out: &mut String, st: &Style, expected: &str, actual: &str) {
    let _ = writeln!(out, "      {}", st.red(&format!("- expected: {expected}")));
    let _ = writeln!(out, "      {}", st.green(&format!("+ actual:   {actual}")));
}

fn render_failure(f: &Failure, st: &Style) -> String {
    let mut out = String::new();
    match f {
        Failure::Claim {
            token,
            key,
            expected,
            actual,
        } => {
            let _ = writeln!(out, "    {token} claim {key:?}:");
            let actual = actual
                .as_ref()
                .map(compact)
                .unwrap_or_else(|| "(missing)".into());
            diff_lines(&mut out, st, &compact(expected), &actual);
        }
        Failure::UnexpectedClaim { token, key, actual } => {
            let _ = writeln!(
                out,
                "    {token} has a claim the case does not list (exact = true) {key:?}:"
            );
            diff_lines(&mut out, st, "(no such claim)", &compact(actual));
        }
        Failure::PresentClaim { token, key, actual } => {
            let _ = writeln!(out, "    {token} claim {key:?} should be absent:");
            diff_lines(&mut out, st, "(absent)", &compact(actual));
        }
        Failure::Scope { expected, actual } => {
            let _ = writeln!(out, "    scope:");
            let shown = |s: &Vec<String>| {
                if s.is_empty() {
                    "(empty)".to_owned()
                } else {
                    s.join(" ")
                }
            };
            let actual = actual
                .as_ref()
                .map(shown)
                .unwrap_or_else(|| "(not set, none requested)".into());
            diff_lines(&mut out, st, &shown(expected), &actual);
        }
        Failure::NotFailed { expected } => {
            let _ = writeln!(out, "    expected {expected}, but the run succeeded");
        }
        Failure::DenialMessage {
            rule,
            expected,
            actual,
        } => {
            let _ = writeln!(out, "    denial message of rule {rule:?}:");
            diff_lines(
                &mut out,
                st,
                &format!("containing {expected:?}"),
                &format!("{actual:?}"),
            );
        }
        Failure::WrongFailure { expected, actual } => {
            let _ = writeln!(
                out,
                "    expected {expected}, but the run failed otherwise:"
            );
            diff_lines(&mut out, st, expected, &actual.to_string());
        }
        Failure::Unexpected { error } => {
            let what = match error {
                RuleError::Denied { .. } => "was denied",
                _ => "failed",
            };
            let _ = writeln!(out, "    expected success, but the run {what}");
        }
        Failure::MissingLog { expected } => {
            let _ = writeln!(out, "    no log line contains {expected:?}");
        }
        Failure::MissingWarning { expected } => {
            let _ = writeln!(out, "    no namespace warning contains {expected:?}");
        }
        Failure::User {
            path,
            expected,
            actual,
        } => {
            let _ = writeln!(out, "    user field {path:?}:");
            let expected = if expected.is_null() {
                "(absent)".to_owned()
            } else {
                compact(expected)
            };
            let actual = actual
                .as_ref()
                .map(compact)
                .unwrap_or_else(|| "(absent)".into());
            diff_lines(&mut out, st, &expected, &actual);
        }
        Failure::Metadata {
            field,
            key,
            expected,
            actual,
        } => {
            let actual = actual
                .as_ref()
                .map(compact)
                .unwrap_or_else(|| "(not updated)".into());
            match key {
                Some(key) if expected.is_null() => {
                    let _ = writeln!(
                        out,
                        "    {field} update has a key the case does not list (exact = true) {key:?}:"
                    );
                    diff_lines(&mut out, st, "(not updated)", &actual);
                }
                Some(key) => {
                    let _ = writeln!(out, "    {field} update {key:?}:");
                    diff_lines(&mut out, st, &compact(expected), &actual);
                }
                None => {
                    let _ = writeln!(out, "    {field}: expected no update:");
                    diff_lines(&mut out, st, "(no update)", &actual);
                }
            }
        }
        Failure::DroppedClaim(w) => {
            let _ = writeln!(
                out,
                "    rule {:?} set claim {:?} on the {}, which the namespace rule drops: {}",
                w.rule, w.key, w.token, w.reason
            );
            let _ = writeln!(
                out,
                "      {}",
                st.dim(&format!(
                    "namespace it, expect it with warnings = [{:?}], or run with --namespace-policy drop",
                    w.key
                ))
            );
        }
    }
    out
}

/// One line of plain text per failure (JSON `message`, JUnit `message`).
fn failure_headline(f: &Failure) -> String {
    render_failure(f, &Style { color: false })
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The runner's whole text output; its last line is the summary.
pub fn render_text(report: &SuiteReport, color: bool) -> String {
    let st = Style { color };
    let mut out = String::new();
    for r in &report.results {
        out.push_str(&render_case(r, color));
    }
    let cov = &report.coverage;
    if !cov.unexercised.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            st.yellow(&format!(
                "coverage hint: no case ran rule(s): {}",
                cov.unexercised.join(", ")
            ))
        );
    }
    if !cov.denial_untested.is_empty() {
        let rules: Vec<String> = cov
            .denial_untested
            .iter()
            .map(|rule| {
                let lines: Vec<String> = cov
                    .untested_sites(rule)
                    .iter()
                    .map(|s| s.line.to_string())
                    .collect();
                match lines.len() {
                    0 => rule.clone(),
                    1 => format!("{rule} (line {})", lines[0]),
                    _ => format!("{rule} (lines {})", lines.join(", ")),
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            st.yellow(&format!(
                "coverage hint: no case triggered the deny/throw of rule(s): {}",
                rules.join(", ")
            ))
        );
    }
    let summary = report.summary();
    let summary = if report.success() {
        st.green(&summary)
    } else {
        st.bold_red(&summary)
    };
    let _ = writeln!(out, "{summary}");
    out
}

/// The report as one JSON document.
pub fn render_json(report: &SuiteReport) -> Value {
    let cases: Vec<Value> = report
        .results
        .iter()
        .map(|r| {
            let failures: Vec<Value> = r
                .failures
                .iter()
                .map(|f| {
                    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("message".into(), json!(failure_headline(f)));
                    }
                    v
                })
                .collect();
            json!({
                "name": r.name,
                "file": r.file,
                "line": r.line,
                "status": if r.passed() { "pass" } else { "fail" },
                "time_ms": r.duration.as_secs_f64() * 1000.0,
                "failures": failures,
                "rules_run": r.rules_run,
                "logs": r.logs,
                "error": r.error.as_ref().map(|e| json!({
                    "rule": e.rule(),
                    "denied": e.is_denial(),
                    "message": e.to_string(),
                    "source": r.error_source,
                })),
                "outcome": r.outcome.as_ref().map(|o| json!({
                    "access_token": o.access_token,
                    "id_token": o.id_token,
                    "scope": o.scope,
                    "warnings": o.warnings,
                    "user": o.user,
                    "metadata": o.metadata,
                })),
            })
        })
        .collect();
    json!({
        "summary": {
            "passed": report.passed(),
            "failed": report.failed(),
            "skipped": report.skipped(),
            "time_ms": report.elapsed.as_secs_f64() * 1000.0,
            "line": report.summary(),
        },
        "cases": cases,
        "skipped": report.skipped,
        "coverage": report.coverage,
    })
}

/// The rules' line coverage as an lcov tracefile: one record per enabled rule (`SF:` its file,
/// `DA:line,hits` for each line that holds a statement, `LF`/`LH` the lines found and hit).
/// Empty records for a set built without coverage.
pub fn render_lcov(report: &SuiteReport) -> String {
    let mut out = String::new();
    for rule in &report.coverage.rules {
        let _ = writeln!(out, "TN:{}", rule.rule);
        let _ = writeln!(out, "SF:{}", rule.file.display());
        for l in &rule.lines {
            let _ = writeln!(out, "DA:{},{}", l.line, l.hits);
        }
        let hit = rule.lines.iter().filter(|l| l.hits > 0).count();
        let _ = writeln!(out, "LF:{}", rule.lines.len());
        let _ = writeln!(out, "LH:{hit}");
        out.push_str("end_of_record\n");
    }
    out
}

/// Escapes text for XML content and attribute values; drops characters XML 1.0 forbids.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

/// The report as JUnit XML: one `<testsuite>` per case file, one `<testcase>` per case,
/// `<failure>` with the diff text, `<skipped>` for filtered-out cases, logs in `<system-out>`.
pub fn render_junit(report: &SuiteReport) -> String {
    // Files in first-seen order, so the XML follows the run.
    let mut files: Vec<String> = Vec::new();
    let key = |p: Option<&Path>| {
        p.map(|p| p.display().to_string())
            .unwrap_or_else(|| "cases".into())
    };
    for f in report
        .results
        .iter()
        .map(|r| key(r.file.as_deref()))
        .chain(report.skipped.iter().map(|s| key(s.file.as_deref())))
    {
        if !files.contains(&f) {
            files.push(f);
        }
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"claimrules\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{}\">",
        report.results.len() + report.skipped(),
        report.failed(),
        report.skipped(),
        secs(report.elapsed)
    );
    for file in &files {
        let results: Vec<&CaseResult> = report
            .results
            .iter()
            .filter(|r| &key(r.file.as_deref()) == file)
            .collect();
        let skipped: Vec<_> = report
            .skipped
            .iter()
            .filter(|s| &key(s.file.as_deref()) == file)
            .collect();
        let failed = results.iter().filter(|r| !r.passed()).count();
        let time: Duration = results.iter().map(|r| r.duration).sum();
        let suite_name = Path::new(file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        let classname = Path::new(file)
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
            xml_escape(&suite_name),
            results.len() + skipped.len(),
            skipped.len(),
            secs(time)
        );
        for r in results {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" time=\"{}\"",
                xml_escape(&r.name),
                xml_escape(&classname),
                xml_escape(file),
                secs(r.duration)
            );
            let logs: Vec<String> = r
                .logs
                .iter()
                .flat_map(|l| {
                    l.lines
                        .iter()
                        .map(move |line| format!("[{}] {line}", l.rule))
                })
                .collect();
            if r.passed() && logs.is_empty() {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            if !r.passed() {
                let message = r.failures.first().map(failure_headline).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "      <failure message=\"{}\" type=\"assertion\">{}</failure>",
                    xml_escape(&message),
                    xml_escape(&render_case(r, false))
                );
            }
            if !logs.is_empty() {
                let _ = writeln!(
                    out,
                    "      <system-out>{}</system-out>",
                    xml_escape(&logs.join("\n"))
                );
            }
            out.push_str("    </testcase>\n");
        }
        for s in skipped {
            let _ = writeln!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" time=\"0\"><skipped message=\"filtered out\"/></testcase>",
                xml_escape(&s.name),
                xml_escape(&classname),
                xml_escape(file)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_only_on_a_terminal_without_no_color() {
        assert!(color_enabled(true, None));
        assert!(!color_enabled(false, None));
        assert!(!color_enabled(true, Some(std::ffi::OsStr::new("1"))));
        // An empty NO_COLOR does not disable color (no-color.org).
        assert!(color_enabled(true, Some(std::ffi::OsStr::new(""))));
    }

    #[test]
    fn xml_escape_covers_markup_and_control_characters() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;c&apos;\n"
        );
    }

    #[test]
    fn every_failure_kind_serializes_to_an_object() {
        use crate::claims::{Refusal, TokenKind};
        use crate::rules::Warning;
        let err = RuleError::Denied {
            rule: "r".into(),
            message: "m".into(),
        };
        let all = [
            Failure::Claim {
                token: TokenKind::IdToken,
                key: "k".into(),
                expected: json!(1),
                actual: Some(json!(2)),
            },
            Failure::UnexpectedClaim {
                token: TokenKind::AccessToken,
                key: "k".into(),
                actual: json!(1),
            },
            Failure::PresentClaim {
                token: TokenKind::AccessToken,
                key: "k".into(),
                actual: json!(1),
            },
            Failure::Scope {
                expected: vec!["a".into()],
                actual: None,
            },
            Failure::NotFailed {
                expected: "a denial".into(),
            },
            Failure::DenialMessage {
                rule: "r".into(),
                expected: "x".into(),
                actual: "m".into(),
            },
            Failure::WrongFailure {
                expected: "an error".into(),
                actual: err.clone(),
            },
            Failure::Unexpected { error: err },
            Failure::MissingLog {
                expected: "l".into(),
            },
            Failure::MissingWarning {
                expected: "w".into(),
            },
            Failure::DroppedClaim(Warning {
                rule: "r".into(),
                token: TokenKind::AccessToken,
                key: "roles".into(),
                reason: Refusal::NotNamespaced,
            }),
        ];
        for f in &all {
            let v = serde_json::to_value(f).expect("serializes");
            assert!(v["kind"].is_string(), "{v}");
            assert!(!failure_headline(f).is_empty());
        }
    }

    #[test]
    fn colored_diff_uses_ansi_codes_and_plain_does_not() {
        let f = Failure::Claim {
            token: crate::claims::TokenKind::AccessToken,
            key: "https://x.com/a".into(),
            expected: json!(1),
            actual: None,
        };
        let colored = render_failure(&f, &Style { color: true });
        assert!(
            colored.contains("\x1b[31m- expected: 1\x1b[0m"),
            "{colored}"
        );
        assert!(colored.contains("\x1b[32m+ actual:   (missing)\x1b[0m"));
        let plain = render_failure(&f, &Style { color: false });
        assert!(!plain.contains('\x1b'));
        assert!(plain.contains("- expected: 1"));
    }
}
