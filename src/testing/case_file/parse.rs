//! Parsing a case file (TOML, JSON or YAML) into its raw shape, with file, line, column and
//! key on every error; reading fixture files.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{invalid, RawFile};
use crate::testing::TestError;

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
pub(in crate::testing) fn is_case_file(path: &Path) -> bool {
    Format::of(path).is_some()
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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

/// Parses a case file into its raw shape, with file/line/key on any error.
pub(super) fn parse(path: &Path, text: &str) -> Result<RawFile, TestError> {
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

/// Reads a fixture (a JSON, YAML or TOML object) relative to the case file's folder.
pub(super) fn fixture(base: &Path, file: &str) -> Result<Map<String, Value>, String> {
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
