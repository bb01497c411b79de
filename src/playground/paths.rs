//! Paths named in playground requests: relative to the rules folder, never absolute, never
//! with `..`, and for rules, only the files the folder lists as rules.

use std::path::{Component, Path, PathBuf};

use crate::rules::FolderContents;

/// Why a path in a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Empty path.
    #[error("the path is empty")]
    Empty,
    /// Absolute path, drive prefix or backslash.
    #[error("{0:?} is refused: paths are relative to the rules folder")]
    Absolute(String),
    /// A `..` (or `.`) component.
    #[error("{0:?} is refused: `..` and `.` are not allowed in paths")]
    DotDot(String),
    /// Not one of the folder's rule files.
    #[error("{0:?} is not a rule of this folder")]
    NotARule(String),
}

/// Checks a request's path: relative, plain components only. Returns it as a `PathBuf`.
pub fn relative(raw: &str) -> Result<PathBuf, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty);
    }
    // A backslash is a separator on Windows and never part of a rule's name here.
    if raw.contains('\\') || raw.contains('\0') {
        return Err(PathError::Absolute(raw.to_owned()));
    }
    let path = Path::new(raw);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir | Component::CurDir => {
                return Err(PathError::DotDot(raw.to_owned()))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Absolute(raw.to_owned()))
            }
        }
    }
    // `Path::components` drops interior `.` segments silently; refuse them like `..`.
    if raw.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotDot(raw.to_owned()));
    }
    Ok(out)
}

/// Whether a request's URL path has a `.` or `..` segment (percent-encoded ones included).
pub fn has_dot_segment(uri_path: &str) -> bool {
    uri_path.split('/').any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".." || seg.contains("%2f") || seg.contains("%5c")
    })
}

/// A rule file's path relative to the folder, with `/` separators (what the API uses).
pub fn rule_file(dir: &Path, rule_path: &Path) -> String {
    let rel = rule_path.strip_prefix(dir).unwrap_or(rule_path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The index in `contents.rules` of the rule stored in `raw` (checked with [`relative`]).
pub fn find_rule(dir: &Path, contents: &FolderContents, raw: &str) -> Result<usize, PathError> {
    let rel = relative(raw)?;
    contents
        .rules
        .iter()
        .position(|r| r.path == dir.join(&rel))
        .ok_or_else(|| PathError::NotARule(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_pass() {
        assert_eq!(relative("a.rhai").unwrap(), PathBuf::from("a.rhai"));
        assert_eq!(relative("sub/a.rhai").unwrap(), PathBuf::from("sub/a.rhai"));
        assert!(has_dot_segment("/api/../x"));
        assert!(has_dot_segment("/api/%2E%2e/x"));
        assert!(has_dot_segment("/a/..%2fb"));
        assert!(!has_dot_segment("/api/rules"));
        for bad in [
            "../a.rhai",
            "sub/../../a",
            "/etc/passwd",
            "./a.rhai",
            "a/./b",
            "a\\b",
            "",
        ] {
            assert!(relative(bad).is_err(), "{bad:?}");
        }
    }
}
