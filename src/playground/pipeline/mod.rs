//! One playground run: the folder's rules with the page's unsaved sources swapped in, run on
//! the page's `user` and `context` the way `claimrules test` runs a case (context merged over
//! [`default_context`], namespace policy `drop` so dropped claims show as warnings), timed per
//! rule, and signed as the issuer would sign it.

mod run_report;
mod signer;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::paths::{self, PathError};
use crate::claims::NamespacePolicy;
use crate::issuer::KeyError;
use crate::rules::{
    read_folder, FolderContents, LoadError, RuleSet, RuleSetOptions, RunOptions, Trace,
};
use crate::testing::{case_context, default_context};

pub use run_report::{
    compile_failure, load_error_report, report, ErrorReport, RuleReport, RunReport, ScopeReport,
    WarningReport,
};
pub use signer::{Jwt, SignedView, Signer, PLAYGROUND_ISSUER};

/// Why a run could not start (a failed pipeline is a [`RunReport`], not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// `user` or `context` is not a JSON object (or not valid JSON text).
    #[error("{field}: {message}")]
    Input {
        /// `user` or `context`.
        field: &'static str,
        /// 1-based line in the text (0 when the input was not text).
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A path in the request is refused.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The signing key for the signed view could not be made.
    #[error("cannot make the playground's signing key: {0}")]
    Key(#[from] KeyError),
    /// The issuer for the signed view could not be built.
    #[error("cannot build the playground's issuer: {0}")]
    Issuer(String),
}

/// Reads `user` / `context` from a request: a JSON object, or the text of one (what the
/// page's editors hold; a syntax error is reported with line and column).
pub fn object_input(
    field: &'static str,
    value: &Value,
) -> Result<Map<String, Value>, PipelineError> {
    let err = |line, column, message: String| PipelineError::Input {
        field,
        line,
        column,
        message,
    };
    let parsed = match value {
        Value::String(text) => serde_json::from_str::<Value>(text).map_err(|e| {
            let message = e.to_string();
            let message = message
                .rfind(" at line ")
                .map_or(message.as_str(), |i| &message[..i])
                .to_owned();
            err(e.line(), e.column(), message)
        })?,
        other => other.clone(),
    };
    match parsed {
        Value::Object(m) => Ok(m),
        other => Err(err(
            0,
            0,
            format!(
                "must be a JSON object, not {}",
                crate::claims::json_type(&other)
            ),
        )),
    }
}

/// Reads the rules folder and swaps in unsaved sources (keyed by rule file, checked paths).
pub fn folder_with(
    dir: &Path,
    sources: &BTreeMap<String, String>,
) -> Result<Result<FolderContents, LoadError>, PathError> {
    let mut contents = match read_folder(dir) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    for (file, source) in sources {
        let i = paths::find_rule(dir, &contents, file)?;
        contents.rules[i].source = source.clone();
    }
    Ok(Ok(contents))
}

/// The context a run uses: the given context merged over the default exactly as the test
/// runner merges a case's ([`case_context`]), the clock pinned when `now` is given.
pub fn full_context(given: &Map<String, Value>, now: Option<i64>) -> Map<String, Value> {
    case_context(Some(&Value::Object(given.clone())), now)
}

/// `value` without the `null`s that the default context also holds (or lacks) at the same
/// place: merged over the default they change nothing, and TOML cannot write them.
pub fn without_default_nulls(value: &mut Value, default: &Value) {
    if let Value::Object(m) = value {
        m.retain(|k, v| !(v.is_null() && default.get(k).is_none_or(Value::is_null)));
        for (k, v) in m.iter_mut() {
            without_default_nulls(v, default.get(k).unwrap_or(&Value::Null));
        }
    }
}

/// The context as the page shows it: [`full_context`] without the default's `null`s.
pub fn shown_context(given: &Map<String, Value>, now: Option<i64>) -> Value {
    let mut v = Value::Object(full_context(given, now));
    without_default_nulls(&mut v, &Value::Object(default_context()));
    v
}

/// Runs the set on the inputs as a test case would, the clock pinned when `now` is given.
pub fn run_set(
    set: &RuleSet,
    user: &Map<String, Value>,
    context: &Map<String, Value>,
    now: Option<i64>,
) -> Trace {
    let opts = RunOptions {
        now,
        namespace_policy: Some(NamespacePolicy::Drop),
        ..Default::default()
    };
    set.run_with(
        Value::Object(user.clone()),
        Value::Object(full_context(context, now)),
        &opts,
    )
}

/// One whole run: folder + unsaved sources, compile, run, report.
pub fn run(
    dir: &Path,
    sources: &BTreeMap<String, String>,
    user: &Map<String, Value>,
    context: &Map<String, Value>,
    signer: &Signer,
) -> Result<RunReport, PathError> {
    let contents = match folder_with(dir, sources)? {
        Ok(c) => c,
        Err(e) => return Ok(compile_failure(dir, None, &e)),
    };
    let set = match RuleSet::compile(contents.clone(), RuleSetOptions::default()) {
        Ok(s) => s,
        Err(e) => return Ok(compile_failure(dir, Some(&contents), &e)),
    };
    let trace = run_set(&set, user, context, None);
    Ok(report(dir, &set, trace, user, context, signer, None))
}

/// The compile errors of one rule with `source` in place of its file (a disabled rule is
/// compiled too, since it is being saved).
pub fn check_rule(dir: &Path, file: &str, source: &str) -> Result<Option<ErrorReport>, PathError> {
    let contents = match read_folder(dir) {
        Ok(c) => c,
        Err(e) => return Ok(Some(load_error_report(dir, &e))),
    };
    let i = paths::find_rule(dir, &contents, file)?;
    let mut one = contents.clone();
    let mut rule = one.rules.swap_remove(i);
    rule.source = source.to_owned();
    rule.enabled = true;
    let name = rule.name.clone();
    one.rules = vec![rule];
    let errors = RuleSet::check(&one, &RuleSetOptions::default());
    Ok(errors
        .iter()
        .find(|e| matches!(e, LoadError::Compile { rule, .. } if *rule == name))
        .or(errors.first())
        .map(|e| load_error_report(dir, e)))
}

/// The path of a rule file given by the page (checked).
pub fn rule_path(dir: &Path, file: &str) -> Result<(PathBuf, String, bool), PathError> {
    let contents = read_folder(dir).map_err(|_| PathError::NotARule(file.to_owned()))?;
    let i = paths::find_rule(dir, &contents, file)?;
    let r = &contents.rules[i];
    Ok((r.path.clone(), r.name.clone(), r.enabled))
}
