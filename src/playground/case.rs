//! "Save as test case": the page's inputs and the saved rules' current result, appended as a
//! `[[case]]` to `RULES_DIR/tests/playground.toml` (the case-file format of
//! `src/testing/case_file.rs`), then checked with the test runner itself; a case that would not
//! pass is taken out again.
//!
//! The expectations are exact: both tokens' custom claims (`exact = true`), the final scope,
//! the namespace warnings, metadata updates; or the denial's message; or the error's text. The
//! clock is pinned (`now`) so rules that read `now()` give the same claims when rerun. TOML has
//! no `null`: inputs holding one are written as JSON fixtures under `tests/fixtures/playground/`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use super::pipeline;
use crate::model::unix_now;
use crate::rules::{LoadError, RuleError, RuleSet, Trace};
use crate::testing::{SuiteOptions, TestError, TestSuite};

/// The case file the playground appends to, under `RULES_DIR/tests/`.
pub const CASE_FILE: &str = "playground.toml";

/// Why a case was not saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    /// The name is empty, too long or has control characters.
    #[error("the case name {0:?} is not usable: give 1 to 200 characters on one line")]
    Name(String),
    /// Another case of the file has this name.
    #[error("{CASE_FILE} already has a case named {0:?}")]
    Duplicate(String),
    /// The saved rules do not load.
    #[error("the rules on disk do not load: {0}")]
    Rules(#[from] LoadError),
    /// The existing case file is not valid TOML.
    #[error("tests/{CASE_FILE} is not valid TOML, fix it first: {0}")]
    Existing(String),
    /// An expected claim holds a `null`, which TOML cannot write.
    #[error("{0} holds a null, which a TOML case file cannot express; write this case by hand in a .json case file")]
    Null(String),
    /// A value has no TOML form (e.g. an integer over 2^63).
    #[error("{0} has no TOML form: {1}")]
    Toml(String, String),
    /// Reading or writing a file failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The suite did not load with the new case (it was taken out again).
    #[error("with the new case the test suite does not load (case not saved): {0}")]
    Suite(#[from] TestError),
    /// The new case does not pass (it was taken out again), e.g. a rule returns random values.
    #[error("the new case would not pass `claimrules test` (case not saved):\n{0}")]
    WouldFail(String),
}

/// A saved case.
#[derive(Debug, Serialize)]
pub struct SavedCase {
    /// Its name.
    pub name: String,
    /// Its file, relative to the rules folder.
    pub file: String,
    /// The line of its `name`.
    pub line: Option<usize>,
    /// The TOML appended.
    pub toml: String,
    /// Fixture files written for inputs with `null`s (relative to the rules folder).
    pub fixtures: Vec<String>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CaseError + '_ {
    move |e| CaseError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The first `null` in `v`, as a path below `at`.
fn find_null(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::Null => Some(at.to_owned()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_null(x, &format!("{at}[{i}]"))),
        Value::Object(m) => m
            .iter()
            .find_map(|(k, x)| find_null(x, &format!("{at}.{k}"))),
        _ => None,
    }
}

/// A TOML key: bare when it may be, else a quoted basic string.
fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_owned()
    } else {
        toml::Value::String(k.to_owned()).to_string()
    }
}

/// A JSON value as an inline TOML value.
fn inline(v: &Value, what: &str) -> Result<String, CaseError> {
    if let Some(at) = find_null(v, what) {
        return Err(CaseError::Null(at));
    }
    Ok(match v {
        Value::Object(m) => {
            let items = m
                .iter()
                .map(|(k, x)| {
                    Ok(format!(
                        "{} = {}",
                        key(k),
                        inline(x, &format!("{what}.{k}"))?
                    ))
                })
                .collect::<Result<Vec<_>, CaseError>>()?;
            if items.is_empty() {
                "{}".into()
            } else {
                format!("{{ {} }}", items.join(", "))
            }
        }
        Value::Array(a) => {
            let items = a
                .iter()
                .enumerate()
                .map(|(i, x)| inline(x, &format!("{what}[{i}]")))
                .collect::<Result<Vec<_>, CaseError>>()?;
            format!("[{}]", items.join(", "))
        }
        other => toml::Value::try_from(other)
            .map_err(|e| CaseError::Toml(what.to_owned(), e.to_string()))?
            .to_string(),
    })
}

/// A file-name-safe form of a case name, with a hash against collisions.
fn slug(name: &str, now: i64) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(40);
    let s = s.trim_matches('-');
    let hash = crate::crypto::sha256_hex(&format!("{name}\n{now}"));
    format!("{}-{}", if s.is_empty() { "case" } else { s }, &hash[..8])
}

/// The `expect` lines for a run's result.
fn expectations(trace: &Trace, requested: Option<Vec<String>>) -> Result<Vec<String>, CaseError> {
    let mut lines = Vec::new();
    let metadata = |lines: &mut Vec<String>| -> Result<(), CaseError> {
        for (field, m) in [
            ("app_metadata", &trace.metadata.app_metadata),
            ("user_metadata", &trace.metadata.user_metadata),
        ] {
            if let Some(m) = m {
                let v = Value::Object(m.clone());
                lines.push(format!(
                    "{field} = {}",
                    inline(&v, &format!("expect.{field}"))?
                ));
            }
        }
        Ok(())
    };
    match &trace.result {
        Ok(out) => {
            lines.push("exact = true".into());
            for (field, m) in [
                ("access_token", &out.access_token),
                ("id_token", &out.id_token),
            ] {
                let v = Value::Object(m.clone());
                lines.push(format!(
                    "{field} = {}",
                    inline(&v, &format!("expect.{field}"))?
                ));
            }
            if let Some(scope) = out.scope.clone().or(requested) {
                lines.push(format!("scope = {}", toml::Value::String(scope.join(" "))));
            }
            if !out.warnings.is_empty() {
                let texts: Vec<Value> = out
                    .warnings
                    .iter()
                    .map(|w| Value::String(w.to_string()))
                    .collect();
                lines.push(format!(
                    "warnings = {}",
                    inline(&Value::Array(texts), "warnings")?
                ));
            }
            metadata(&mut lines)?;
        }
        Err(RuleError::Denied { message, .. }) => {
            if message.is_empty() {
                lines.push("denied = true".into());
            } else {
                lines.push(format!("denied = {}", toml::Value::String(message.clone())));
            }
            metadata(&mut lines)?;
        }
        Err(e) => {
            // The stable part: a timeout's position depends on where the clock ran out.
            let text = match e {
                RuleError::Script { message, .. } => message.clone(),
                RuleError::Timeout { .. } => "exceeded the pipeline's time budget".into(),
                other => other.to_string(),
            };
            lines.push(format!("error = {}", toml::Value::String(text)));
        }
    }
    Ok(lines)
}

/// Names of the cases already in the file.
fn existing_names(text: &str) -> Result<Vec<String>, CaseError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| CaseError::Existing(e.to_string()))?;
    Ok(table
        .get("case")
        .and_then(toml::Value::as_array)
        .map(|cases| {
            cases
                .iter()
                .filter_map(|c| {
                    c.get("name")
                        .and_then(toml::Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Writes `text` to `path` through a temporary file and a rename (readers never see half).
pub fn write_atomically(path: &Path, text: &str) -> Result<(), CaseError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.playground-tmp"));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// An input as inline TOML, or (when it holds a `null`) a JSON fixture file.
fn input_line(
    dir: &Path,
    field: &str,
    value: &Map<String, Value>,
    slug: &str,
    written: &mut Vec<PathBuf>,
) -> Result<String, CaseError> {
    let v = Value::Object(value.clone());
    if find_null(&v, field).is_none() {
        return Ok(format!("{field} = {}", inline(&v, field)?));
    }
    let folder = dir.join("tests").join("fixtures").join("playground");
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let file = format!("{slug}.{field}.json");
    let path = folder.join(&file);
    let text = serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    std::fs::write(&path, text).map_err(io(&path))?;
    written.push(path);
    Ok(format!(
        "{field}_file = {}",
        toml::Value::String(format!("fixtures/playground/{file}"))
    ))
}

/// Appends a case for `user`/`context` (as the page holds them) and the saved rules' result,
/// then checks it with the test runner; `lock` serialises writers.
pub fn save(
    dir: &Path,
    name: &str,
    user: &Map<String, Value>,
    context: &Map<String, Value>,
    lock: &std::sync::Mutex<()>,
) -> Result<SavedCase, CaseError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(CaseError::Name(name.to_owned()));
    }
    let set = RuleSet::load(dir)?;
    let now = unix_now();
    let trace = pipeline::run_set(&set, user, context, Some(now));
    let requested = crate::testing::requested_scope(&pipeline::full_context(context, Some(now)));
    let expect = expectations(&trace, requested)?;

    let _guard = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tests = dir.join("tests");
    std::fs::create_dir_all(&tests).map_err(io(&tests))?;
    let path = tests.join(CASE_FILE);
    let before = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&path)(e)),
    };
    if let Some(text) = &before {
        if existing_names(text)?.iter().any(|n| n == name) {
            return Err(CaseError::Duplicate(name.to_owned()));
        }
    }
    let slug = slug(name, now);
    let mut fixtures = Vec::new();
    let block = (|| -> Result<String, CaseError> {
        let mut block = format!(
            "\n[[case]]\nname = {}\nnow = {now}\n",
            toml::Value::String(name.to_owned())
        );
        block.push_str(&input_line(dir, "user", user, &slug, &mut fixtures)?);
        block.push('\n');
        block.push_str(&input_line(dir, "context", context, &slug, &mut fixtures)?);
        block.push_str("\n\n[case.expect]\n");
        for line in &expect {
            block.push_str(line);
            block.push('\n');
        }
        Ok(block)
    })();
    let undo = |fixtures: &[PathBuf]| {
        for f in fixtures {
            let _ = std::fs::remove_file(f);
        }
        match &before {
            Some(text) => write_atomically(&path, text),
            None => std::fs::remove_file(&path).map_err(io(&path)),
        }
    };
    let block = match block {
        Ok(b) => b,
        Err(e) => {
            for f in &fixtures {
                let _ = std::fs::remove_file(f);
            }
            return Err(e);
        }
    };
    let head = before.clone().unwrap_or_else(|| {
        "# Cases recorded by `claimrules playground` (\"Save as test case\"): the inputs and the\n\
         # result at the time, as exact expectations. Edit or move them freely.\n"
            .into()
    });
    write_atomically(&path, &format!("{head}{block}"))?;

    // The proof: the runner itself, on the folder as it now is.
    let verdict = TestSuite::load(dir).map(|suite| {
        let report = suite.run_with(&SuiteOptions {
            filter: Some(name.to_owned()),
            ..Default::default()
        });
        report
            .results
            .into_iter()
            .find(|r| r.name == name && r.file.as_deref() == Some(path.as_path()))
    });
    match verdict {
        Ok(Some(r)) if r.passed() => Ok(SavedCase {
            name: name.to_owned(),
            file: format!("tests/{CASE_FILE}"),
            line: r.line,
            toml: block,
            fixtures: fixtures
                .iter()
                .map(|f| super::paths::rule_file(dir, f))
                .collect(),
        }),
        Ok(Some(r)) => {
            undo(&fixtures)?;
            Err(CaseError::WouldFail(r.render(false)))
        }
        Ok(None) => {
            undo(&fixtures)?;
            Err(CaseError::WouldFail(
                "the runner did not find the case".into(),
            ))
        }
        Err(e) => {
            undo(&fixtures)?;
            Err(CaseError::Suite(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_become_inline_toml() {
        let v = json!({"https://x.example/a": [1, "two", {"b": true}], "plain_key": 1.5, "e": {}});
        let text = inline(&v, "v").unwrap();
        let back: toml::Table = toml::from_str(&format!("v = {text}")).unwrap();
        let back: Value = serde_json::to_value(&back["v"]).unwrap();
        assert_eq!(back, v);
        assert!(
            matches!(inline(&json!({"a": [null]}), "x"), Err(CaseError::Null(p)) if p == "x.a[0]")
        );
    }

    #[test]
    fn slugs_are_file_names() {
        let s = slug("Admin / gets ROLES!", 1);
        assert!(s.starts_with("admin---gets-roles-"), "{s}");
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
