//! What the page shows about one run ([`RunReport`]): per-rule timings, logs and warnings, the
//! scope change, the error with its position, and the signed tokens.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::paths;
use super::{full_context, SignedView, Signer};
use crate::rules::{
    FolderContents, LoadError, MetadataUpdates, Outcome, RuleError, RuleSet, Trace,
};
use crate::testing::requested_scope;

/// Everything the page shows about one run.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// `ok`, `denied`, `error` (a rule failed) or `compile_error` (a rule did not compile).
    pub status: &'static str,
    /// Custom access-token claims (after the namespace rule).
    pub access_token: Option<Map<String, Value>>,
    /// Custom ID-token claims.
    pub id_token: Option<Map<String, Value>>,
    /// Requested and final scope.
    pub scope: Option<ScopeReport>,
    /// Each rule of the folder in run order: ran or not, run time, log lines, warnings.
    pub rules: Vec<RuleReport>,
    /// The denial or error.
    pub error: Option<ErrorReport>,
    /// The tokens as the issuer would sign them.
    pub signed: Option<SignedView>,
    /// Metadata updates the rules asked to persist.
    pub metadata: MetadataUpdates,
}

/// Requested vs final scope.
#[derive(Debug, Serialize)]
pub struct ScopeReport {
    /// What the app asked for (`None`: no scope in `context.request`).
    pub requested: Option<Vec<String>>,
    /// What the access token carries.
    #[serde(rename = "final")]
    pub final_scope: Vec<String>,
    /// Whether a rule set `context.accessToken.scope`.
    pub rewritten: bool,
    /// In the final scope, not requested.
    pub added: Vec<String>,
    /// Requested, not in the final scope.
    pub removed: Vec<String>,
}

/// One rule in a run.
#[derive(Debug, Serialize)]
pub struct RuleReport {
    /// Its name.
    pub name: String,
    /// Its file, relative to the rules folder.
    pub file: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// Whether it started in this run.
    pub ran: bool,
    /// Its run time in microseconds ([`Trace::durations`]).
    pub micros: Option<u64>,
    /// Its `log` lines.
    pub logs: Vec<String>,
    /// Claims the namespace rule dropped from what it set.
    pub warnings: Vec<WarningReport>,
}

/// A dropped claim.
#[derive(Debug, Serialize)]
pub struct WarningReport {
    /// The claim key.
    pub key: String,
    /// `access token` or `ID token`.
    pub token: String,
    /// Why it was dropped.
    pub reason: String,
    /// The warning as `claimrules test` words it (what a case's `expect.warnings` matches).
    pub text: String,
}

/// A compile error, denial or rule error, with where it happened.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// `compile`, `denied`, `script`, `timeout`, `scope`, `namespace`, `size`, `input` or
    /// `folder` (the folder itself did not load).
    pub kind: &'static str,
    /// The rule, when there is one.
    pub rule: Option<String>,
    /// The rule's file (relative), when known.
    pub file: Option<String>,
    /// 1-based line (`None` when unknown).
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// The message alone.
    pub message: String,
    /// The whole error as the CLI prints it.
    pub text: String,
    /// True when the position was found in the source rather than reported by the engine
    /// (denials: the engine does not report where `deny` was called).
    pub approximate: bool,
}

/// The report of a folder or rule that did not load.
pub fn load_error_report(dir: &Path, e: &LoadError) -> ErrorReport {
    let (kind, rule, file, line, column, message) = match e {
        LoadError::Compile {
            rule,
            path,
            line,
            column,
            message,
        } => (
            "compile",
            Some(rule.clone()),
            Some(paths::rule_file(dir, path)),
            Some(*line).filter(|l| *l > 0),
            Some(*column).filter(|c| *c > 0),
            message.clone(),
        ),
        other => ("folder", None, None, None, None, other.to_string()),
    };
    ErrorReport {
        kind,
        rule,
        file,
        line,
        column,
        message,
        text: e.to_string(),
        approximate: false,
    }
}

/// Where a rule calls `deny`/`throw` with this message: the line quoting the message, else the
/// rule's only such call.
pub(super) fn locate_denial(source: &str, message: &str) -> Option<(usize, usize)> {
    let calls: Vec<(usize, usize, &str)> = source
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line.split("//").next().unwrap_or(line);
            let at = code.find("deny(").or_else(|| code.find("throw"))?;
            Some((i + 1, code[..at].chars().count() + 1, line))
        })
        .collect();
    let quoted = calls
        .iter()
        .find(|(_, _, line)| !message.is_empty() && line.contains(message));
    match (quoted, calls.as_slice()) {
        (Some(&(l, c, _)), _) => Some((l, c)),
        (None, [(l, c, _)]) => Some((*l, *c)),
        _ => None,
    }
}

fn rule_error_report(set: &RuleSet, dir: &Path, e: &RuleError) -> ErrorReport {
    let rule = e.rule().map(str::to_owned);
    let compiled = set.rules().iter().find(|r| Some(r.name()) == e.rule());
    let file = compiled.map(|r| paths::rule_file(dir, r.path()));
    let pos = |l: usize, c: usize| (Some(l).filter(|l| *l > 0), Some(c).filter(|c| *c > 0));
    let (kind, (line, column), message, approximate) = match e {
        RuleError::Denied { message, .. } => {
            let at = compiled.and_then(|r| locate_denial(r.source(), message));
            (
                "denied",
                (at.map(|a| a.0), at.map(|a| a.1)),
                message.clone(),
                at.is_some(),
            )
        }
        RuleError::Script {
            line,
            column,
            message,
            ..
        } => ("script", pos(*line, *column), message.clone(), false),
        RuleError::Timeout { line, column, .. } => {
            ("timeout", pos(*line, *column), e.to_string(), false)
        }
        RuleError::InvalidScope { message, .. } => ("scope", (None, None), message.clone(), false),
        RuleError::Namespace { .. } => ("namespace", (None, None), e.to_string(), false),
        RuleError::ClaimsTooLarge { .. } => ("size", (None, None), e.to_string(), false),
        RuleError::Input(m) => ("input", (None, None), m.clone(), false),
    };
    ErrorReport {
        kind,
        rule,
        file,
        line,
        column,
        message,
        text: e.to_string(),
        approximate,
    }
}

fn scope_report(requested: Option<Vec<String>>, out: &Outcome) -> ScopeReport {
    let final_scope = out
        .scope
        .clone()
        .or_else(|| requested.clone())
        .unwrap_or_default();
    let req = requested.clone().unwrap_or_default();
    ScopeReport {
        added: final_scope
            .iter()
            .filter(|s| !req.contains(s))
            .cloned()
            .collect(),
        removed: req
            .iter()
            .filter(|s| !final_scope.contains(s))
            .cloned()
            .collect(),
        rewritten: out.scope.is_some(),
        requested,
        final_scope,
    }
}

/// The report of a compiled set's run (timed per rule, signed on success).
pub fn report(
    dir: &Path,
    set: &RuleSet,
    trace: Trace,
    user: &Map<String, Value>,
    context: &Map<String, Value>,
    signer: &Signer,
    now: Option<i64>,
) -> RunReport {
    let full = full_context(context, now);
    let warnings = match &trace.result {
        Ok(out) => out.warnings.clone(),
        Err(_) => Vec::new(),
    };
    let rules = set
        .rules()
        .iter()
        .map(|r| {
            let index = trace.rules_run.iter().position(|n| n == r.name());
            RuleReport {
                name: r.name().to_owned(),
                file: paths::rule_file(dir, r.path()),
                enabled: r.enabled(),
                ran: index.is_some(),
                micros: index
                    .and_then(|i| trace.durations.get(i))
                    .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                logs: trace
                    .logs
                    .iter()
                    .filter(|l| l.rule == r.name())
                    .flat_map(|l| l.lines.iter().cloned())
                    .collect(),
                warnings: warnings
                    .iter()
                    .filter(|w| w.rule == r.name())
                    .map(|w| WarningReport {
                        key: w.key.clone(),
                        token: w.token.to_string(),
                        reason: w.reason.to_string(),
                        text: w.to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    match &trace.result {
        Ok(out) => RunReport {
            status: "ok",
            access_token: Some(out.access_token.clone()),
            id_token: Some(out.id_token.clone()),
            scope: Some(scope_report(requested_scope(&full), out)),
            rules,
            error: None,
            signed: signer.sign(user, &full, out),
            metadata: trace.metadata.clone(),
        },
        Err(e) => RunReport {
            status: if e.is_denial() { "denied" } else { "error" },
            access_token: None,
            id_token: None,
            scope: None,
            rules,
            error: Some(rule_error_report(set, dir, e)),
            signed: None,
            metadata: trace.metadata.clone(),
        },
    }
}

/// A run of rules that did not compile: the error and the folder's rules, none run.
pub fn compile_failure(dir: &Path, contents: Option<&FolderContents>, e: &LoadError) -> RunReport {
    let rules = contents
        .map(|c| {
            c.rules
                .iter()
                .map(|r| RuleReport {
                    name: r.name.clone(),
                    file: paths::rule_file(dir, &r.path),
                    enabled: r.enabled,
                    ran: false,
                    micros: None,
                    logs: Vec::new(),
                    warnings: Vec::new(),
                })
                .collect()
        })
        .unwrap_or_default();
    RunReport {
        status: "compile_error",
        access_token: None,
        id_token: None,
        scope: None,
        rules,
        error: Some(load_error_report(dir, e)),
        signed: None,
        metadata: MetadataUpdates::default(),
    }
}
