//! The rules' line coverage as an lcov tracefile (the `geninfo` format of the Linux Test
//! Project's lcov, which CI coverage tools read).

use std::fmt::Write as _;

use crate::testing::SuiteReport;

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
