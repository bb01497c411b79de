//! Reading case files (`.toml`, `.json`, `.yaml`/`.yml`): the on-disk shape, parsing with
//! positions, fixture files, the `[defaults]` every case starts from, and validation. Every
//! error names the file, the line and the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Case, Denied, Expect, TestError};

/// One case file: `[[case]]` tables (TOML) or a `case` list (JSON, YAML).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table (TOML) or object (JSON, YAML) with a `case` list"
)]
struct RawFile {
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

/// The file formats a case file may use, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
    Yaml,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// True when `path` has a case-file extension.
pub(super) fn is_case_file(path: &Path) -> bool {
    Format::of(path).is_some()
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count() + 1)
        .unwrap_or(1);
    (line, column)
}

/// The key an error is about: the path to it, plus the field a serde message names
/// (`unknown field `x``, `missing field `x``) when the path stops at its parent.
fn key_of(path: &serde_path_to_error::Path, message: &str) -> String {
    // `?` marks a segment serde_path_to_error could not name (e.g. inside a syntax error).
    let mut key = path.to_string().replace(".?", "");
    if key == "." || key == "?" {
        key.clear();
    }
    for marker in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.split(marker).nth(1) {
            if let Some(field) = rest.split('`').next() {
                let already = key.rsplit('.').next() == Some(field);
                if !already {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(field);
                }
            }
        }
    }
    if key.is_empty() {
        "(top level)".into()
    } else {
        key
    }
}

fn invalid(path: &Path, line: usize, column: usize, key: String, message: String) -> TestError {
    TestError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        key,
        message,
    }
}

/// Parses a case file into its raw shape, with file/line/key on any error.
fn parse(path: &Path, text: &str) -> Result<RawFile, TestError> {
    let format = Format::of(path).ok_or_else(|| TestError::Io {
        path: path.to_path_buf(),
        message: "not a case file (.toml, .json, .yaml or .yml)".into(),
    })?;
    match format {
        Format::Toml => {
            let de = toml::Deserializer::parse(text).map_err(|e| {
                let (line, column) = line_col(text, e.span().map(|s| s.start).unwrap_or(0));
                invalid(
                    path,
                    line,
                    column,
                    String::new(),
                    e.message().trim().to_owned(),
                )
            })?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key = key_of(e.path(), e.inner().message());
                let inner = e.into_inner();
                let (line, column) = line_col(text, inner.span().map(|s| s.start).unwrap_or(0));
                invalid(path, line, column, key, inner.message().trim().to_owned())
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let raw: RawFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let message = e.inner().to_string();
                let key = key_of(e.path(), &message);
                let inner = e.into_inner();
                invalid(
                    path,
                    inner.line(),
                    inner.column(),
                    key,
                    strip_json_position(&message),
                )
            })?;
            de.end().map_err(|e| {
                invalid(
                    path,
                    e.line(),
                    e.column(),
                    String::new(),
                    strip_json_position(&e.to_string()),
                )
            })?;
            Ok(raw)
        }
        Format::Yaml => {
            let de = serde_norway::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let message = e.inner().to_string();
                let key = key_of(e.path(), &message);
                let inner = e.into_inner();
                let (line, column) = inner
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                invalid(path, line, column, key, strip_yaml_position(&message))
            })
        }
    }
}

/// serde_json appends " at line L column C"; the error already carries both.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// serde_norway prefixes the path (`case[0].expect: `) and appends " at line L column C";
/// the error already carries both.
fn strip_yaml_position(message: &str) -> String {
    let message = match message.split_once(": ") {
        Some((head, tail)) if !head.contains(' ') && (head.contains('.') || head.contains('[')) => {
            tail
        }
        _ => message,
    };
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Finds the line where `key` of the case at `index` is written, for errors found after
/// parsing (which carry no position). Looks between the neighbouring cases' `name` lines and
/// takes the occurrence nearest this case's own `name` line.
fn locate(text: &str, names: &[String], index: usize, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut name_lines: Vec<usize> = Vec::with_capacity(names.len());
    let mut from = 0;
    for name in names {
        let found = (from..lines.len())
            .find(|&i| is_key_line(lines[i], "name") && lines[i].contains(name.as_str()));
        let at = found.unwrap_or(from);
        name_lines.push(at);
        from = at + 1;
    }
    let Some(&own) = name_lines.get(index) else {
        return 1;
    };
    if key == "name" {
        return own + 1;
    }
    let lo = if index == 0 {
        0
    } else {
        name_lines[index - 1] + 1
    };
    let hi = name_lines.get(index + 1).copied().unwrap_or(lines.len());
    (lo..hi)
        .filter(|&i| is_key_line(lines[i], key))
        .min_by_key(|&i| (i.abs_diff(own), i < own))
        .map(|i| i + 1)
        .unwrap_or(own + 1)
}

/// Whether a line writes `key` (TOML `key =`, JSON `"key":`, YAML `key:` or `- key:`), also
/// inside an inline table.
fn is_key_line(line: &str, key: &str) -> bool {
    let bytes_ok = |rest: &str| {
        let rest = rest.trim_start_matches('"').trim_start();
        rest.starts_with('=') || rest.starts_with(':')
    };
    let mut search = line;
    while let Some(i) = search.find(key) {
        let before = search[..i].trim_end_matches('"');
        let boundary = before
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '-' | '.' | '['));
        if boundary && bytes_ok(&search[i + key.len()..]) {
            return true;
        }
        search = &search[i + key.len()..];
    }
    false
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

/// The line of the `[defaults]` table (or `defaults` key), and of `key` inside it.
fn defaults_line(text: &str, key: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "[defaults]" || is_key_line(l, "defaults"))
        .unwrap_or(0);
    let end = lines
        .iter()
        .skip(start + 1)
        .position(|l| l.trim_start().starts_with("[[") || is_key_line(l, "case"))
        .map_or(lines.len(), |i| start + 1 + i);
    (start..end)
        .find(|&i| is_key_line(lines[i], key))
        .unwrap_or(start)
        + 1
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

/// Reads a fixture (a JSON, YAML or TOML object) relative to the case file's folder.
fn fixture(base: &Path, file: &str) -> Result<Map<String, Value>, String> {
    let path: PathBuf = base.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read fixture {}: {e}", path.display()))?;
    let value: Value = match Format::of(&path) {
        Some(Format::Json) | None => serde_json::from_str(&text).map_err(|e| {
            format!(
                "fixture {}:{}:{}: {}",
                path.display(),
                e.line(),
                e.column(),
                strip_json_position(&e.to_string())
            )
        })?,
        Some(Format::Yaml) => {
            serde_norway::from_str(&text).map_err(|e| format!("fixture {}: {e}", path.display()))?
        }
        Some(Format::Toml) => {
            toml::from_str(&text).map_err(|e| format!("fixture {}: {e}", path.display()))?
        }
    };
    match value {
        Value::Object(m) => Ok(m),
        other => Err(format!(
            "fixture {} must hold an object, not {}",
            path.display(),
            crate::claims::json_type(&other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn key_lines_match_each_format() {
        assert!(is_key_line("user_file = \"x\"", "user_file"));
        assert!(is_key_line("  \"user_file\": \"x\"", "user_file"));
        assert!(is_key_line("- user_file: x", "user_file"));
        assert!(!is_key_line("user = { a = 1 }", "user_file"));
        assert!(!is_key_line("context_file = \"x\"", "file"));
    }

    #[test]
    fn locate_picks_the_key_of_the_right_case() {
        let text = "[[case]]\nname = \"a\"\nuser_file = \"x\"\n\n[[case]]\nname = \"b\"\nuser_file = \"y\"\n";
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(locate(text, &names, 0, "user_file"), 3);
        assert_eq!(locate(text, &names, 1, "user_file"), 7);
        assert_eq!(locate(text, &names, 1, "name"), 6);
    }
}
