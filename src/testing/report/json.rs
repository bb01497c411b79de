//! The report as one JSON document (`claimrules test --format json`).

use serde_json::{json, Value};

use super::text::failure_headline;
use crate::testing::SuiteReport;

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
