//! Reading case files (`.toml`, `.json`, `.yaml`/`.yml`): the on-disk shape, parsing with
//! positions, fixture files, the `[defaults]` every case starts from, and validation. Every
//! error names the file, the line and the key.

mod locate;
mod parse;
#[cfg(test)]
mod tests;

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Case, Denied, Expect, TestError};
use locate::{defaults_line, locate};
use parse::{fixture, parse};

pub(super) use parse::is_case_file;

/// One case file: `[[case]]` tables (TOML) or a `case` list (JSON, YAML).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table (TOML) or object (JSON, YAML) with a `case` list"
)]
pub(super) struct RawFile {
    /// Keys every case starts from.
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    case: Vec<RawCase>,
}

/// The `[defaults]` table: every key of a case but `name`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of case keys (all but `name`)"
)]
struct RawDefaults {
    user: Option<Map<String, Value>>,
    user_file: Option<String>,
    context: Option<Map<String, Value>>,
    context_file: Option<String>,
    configuration: Option<Map<String, Value>>,
    now: Option<i64>,
    rules: Option<Vec<String>>,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a case table")]
struct RawCase {
    name: String,
    user: Option<Map<String, Value>>,
    user_file: Option<String>,
    context: Option<Map<String, Value>>,
    context_file: Option<String>,
    configuration: Option<Map<String, Value>>,
    now: Option<i64>,
    rules: Option<Vec<String>>,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    access_token: Option<Map<String, Value>>,
    id_token: Option<Map<String, Value>>,
    exact: Option<bool>,
    absent: Option<Vec<String>>,
    scope: Option<RawScope>,
    denied: Option<RawDenied>,
    error: Option<String>,
    logs: Option<Vec<String>>,
    warnings: Option<Vec<String>>,
    app_metadata: Option<Map<String, Value>>,
    user_metadata: Option<Map<String, Value>>,
    user: Option<Map<String, Value>>,
    user_absent: Option<Vec<String>>,
}

/// `over` merged deeply over `base` (objects merge, other values replace).
fn merged(
    base: &Option<Map<String, Value>>,
    over: Option<Map<String, Value>>,
) -> Option<Map<String, Value>> {
    match (base, over) {
        (None, over) => over,
        (Some(b), None) => Some(b.clone()),
        (Some(b), Some(o)) => {
            let mut v = Value::Object(b.clone());
            super::merge_deep(&mut v, &Value::Object(o));
            match v {
                Value::Object(m) => Some(m),
                _ => None,
            }
        }
    }
}

impl RawExpect {
    /// This case's expectations over the defaults': tables merge, other keys replace.
    fn over(self, d: &RawExpect) -> RawExpect {
        RawExpect {
            access_token: merged(&d.access_token, self.access_token),
            id_token: merged(&d.id_token, self.id_token),
            exact: self.exact.or(d.exact),
            absent: self.absent.or_else(|| d.absent.clone()),
            scope: self.scope.or_else(|| d.scope.clone()),
            denied: self.denied.or_else(|| d.denied.clone()),
            error: self.error.or_else(|| d.error.clone()),
            logs: self.logs.or_else(|| d.logs.clone()),
            warnings: self.warnings.or_else(|| d.warnings.clone()),
            app_metadata: merged(&d.app_metadata, self.app_metadata),
            user_metadata: merged(&d.user_metadata, self.user_metadata),
            user: merged(&d.user, self.user),
            user_absent: self.user_absent.or_else(|| d.user_absent.clone()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a space-separated scope string or an array of scope strings"
)]
enum RawScope {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "`true`, `false` or a substring of the denial message"
)]
enum RawDenied {
    Flag(bool),
    Message(String),
}

pub(super) fn invalid(
    path: &Path,
    line: usize,
    column: usize,
    key: String,
    message: String,
) -> TestError {
    TestError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        key,
        message,
    }
}

/// One of `inline` and `file` (a fixture relative to `base`), or neither; both is an error.
fn object_or_fixture(
    base: &Path,
    inline: Option<Map<String, Value>>,
    file: Option<String>,
    key: &str,
) -> Result<Option<Map<String, Value>>, (String, String)> {
    match (inline, file) {
        (Some(_), Some(_)) => Err((
            format!("{key}_file"),
            format!("give either `{key}` or `{key}_file`, not both"),
        )),
        (Some(m), None) => Ok(Some(m)),
        (None, Some(f)) => fixture(base, &f)
            .map(Some)
            .map_err(|m| (format!("{key}_file"), m)),
        (None, None) => Ok(None),
    }
}

/// Reads one case file and turns its cases into [`Case`]s: `[defaults]` applied, fixtures
/// loaded, inputs checked, `rules` checked against `known_rules` (the enabled rules of the set).
pub(super) fn load_file(path: &Path, known_rules: &[String]) -> Result<Vec<Case>, TestError> {
    let text = std::fs::read_to_string(path).map_err(|e| TestError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let raw = parse(path, &text)?;
    let names: Vec<String> = raw.case.iter().map(|c| c.name.clone()).collect();
    let at = |index: usize, key: &str, message: String| {
        let line = locate(&text, &names, index, key);
        invalid(path, line, 1, format!("case[{index}].{key}"), message)
    };
    if raw.case.is_empty() {
        return Err(invalid(
            path,
            1,
            1,
            "case".into(),
            "the file holds no cases (add a [[case]] table, or a `case` list in JSON/YAML)".into(),
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let d = raw.defaults;
    let in_defaults = |(key, message): (String, String)| {
        invalid(
            path,
            defaults_line(&text, &key),
            1,
            format!("defaults.{key}"),
            message,
        )
    };
    let default_user = object_or_fixture(base, d.user, d.user_file, "user").map_err(in_defaults)?;
    let default_context =
        object_or_fixture(base, d.context, d.context_file, "context").map_err(in_defaults)?;
    if let Some(rules) = &d.rules {
        if let Some(unknown) = rules.iter().find(|r| !known_rules.contains(r)) {
            return Err(in_defaults((
                "rules".into(),
                format!(
                    "no enabled rule is named {unknown:?} (known: {})",
                    known_rules.join(", ")
                ),
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut cases = Vec::with_capacity(raw.case.len());
    for (index, c) in raw.case.into_iter().enumerate() {
        if c.name.trim().is_empty() {
            return Err(at(index, "name", "a case needs a non-empty name".into()));
        }
        if !seen.insert(c.name.clone()) {
            return Err(at(
                index,
                "name",
                format!("another case in this file is already named {:?}", c.name),
            ));
        }
        let in_case = |(key, message): (String, String)| at(index, &key, message);
        let user = object_or_fixture(base, c.user, c.user_file, "user").map_err(in_case)?;
        let user = match merged(&default_user, user) {
            Some(u) => u,
            None => {
                return Err(at(
                    index,
                    "user",
                    "the case has no input user: add `user = { ... }` or `user_file = \"...\"` (here or in [defaults])"
                        .into(),
                ))
            }
        };
        let context =
            object_or_fixture(base, c.context, c.context_file, "context").map_err(in_case)?;
        let context = merged(&default_context, context);
        let rules = c.rules.or_else(|| d.rules.clone());
        if let Some(rules) = &rules {
            if let Some(unknown) = rules.iter().find(|r| !known_rules.contains(r)) {
                return Err(at(
                    index,
                    "rules",
                    format!(
                        "no enabled rule is named {unknown:?} (known: {})",
                        known_rules.join(", ")
                    ),
                ));
            }
        }
        let e = c.expect.over(&d.expect);
        let denied = match e.denied {
            None | Some(RawDenied::Flag(false)) => None,
            Some(RawDenied::Flag(true)) => Some(Denied::Any),
            Some(RawDenied::Message(m)) => Some(Denied::Message(m)),
        };
        if denied.is_some() && e.error.is_some() {
            return Err(at(
                index,
                "error",
                "expect `denied` or `error`, not both (a run fails one way)".into(),
            ));
        }
        let absent = e.absent.unwrap_or_default();
        let warnings = e.warnings.unwrap_or_default();
        if denied.is_some() || e.error.is_some() {
            for (key, given) in [
                ("access_token", e.access_token.is_some()),
                ("id_token", e.id_token.is_some()),
                ("scope", e.scope.is_some()),
                ("absent", !absent.is_empty()),
                ("warnings", !warnings.is_empty()),
                ("user", e.user.is_some()),
                ("user_absent", e.user_absent.is_some()),
            ] {
                if given {
                    return Err(at(
                        index,
                        key,
                        format!("`expect.{key}` cannot be checked when the case expects the run to fail (a failed run issues no token)"),
                    ));
                }
            }
        }
        let scope = match e.scope {
            None => None,
            Some(RawScope::One(s)) => Some(s.split_whitespace().map(str::to_owned).collect()),
            Some(RawScope::Many(v)) => Some(v),
        };
        let mut case = Case::new(c.name);
        case.file = Some(path.to_path_buf());
        case.line = Some(locate(&text, &names, index, "name"));
        case.user = Value::Object(user);
        case.context = context.map(Value::Object);
        case.configuration = merged(&d.configuration, c.configuration);
        case.now = c.now.or(d.now);
        case.rules = rules;
        case.expect = Expect {
            access_token: e.access_token,
            id_token: e.id_token,
            exact: e.exact.unwrap_or(false),
            absent,
            scope,
            denied,
            error: e.error,
            logs: e.logs.unwrap_or_default(),
            warnings,
            app_metadata: e.app_metadata,
            user_metadata: e.user_metadata,
            user: e.user,
            user_absent: e.user_absent.unwrap_or_default(),
        };
        cases.push(case);
    }
    Ok(cases)
}
