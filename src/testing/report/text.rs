//! The runner's text: one status line per case, a diff for each failure, the coverage hint and
//! the summary last.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::rules::RuleError;
use crate::testing::{CaseResult, Failure, SuiteReport};

pub(super) struct Style {
    pub(super) color: bool,
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
pub(crate) fn render_case(r: &CaseResult, color: bool) -> String {
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

pub(super) fn render_failure(f: &Failure, st: &Style) -> String {
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
pub(super) fn failure_headline(f: &Failure) -> String {
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
