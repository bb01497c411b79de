//! The report as JUnit XML for CI systems.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::text::{failure_headline, render_case};
use crate::testing::{CaseResult, SuiteReport};

/// Escapes text for XML content and attribute values; drops characters XML 1.0 forbids.
pub(super) fn xml_escape(s: &str) -> String {
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
