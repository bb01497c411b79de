//! `claimrules new RULE_NAME`: a rule and a case file that pass `claimrules test` at once, as
//! a starting point that shows the shape of both (claims, a denial, `[defaults]`).

use std::path::{Path, PathBuf};

/// Why a new rule could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    /// The name cannot be a rule file's name.
    #[error("{0:?} is not a rule name: use letters, digits, `-` and `_` (e.g. 10-add-roles)")]
    BadName(String),
    /// A file the command would write exists already.
    #[error("{} exists already; pick another name or edit it", .0.display())]
    Exists(PathBuf),
    /// The rule is already listed in `rules.toml`.
    #[error("{}: a rule named {name:?} is already listed", path.display())]
    Listed {
        /// `rules.toml`.
        path: PathBuf,
        /// The rule.
        name: String,
    },
    /// Writing failed.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
}

/// What [`new_rule`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaffold {
    /// `DIR/RULE_NAME.rhai`.
    pub rule: PathBuf,
    /// `DIR/tests/RULE_NAME.toml`.
    pub cases: PathBuf,
    /// `DIR/rules.toml`, when the rule was added to it.
    pub manifest: Option<PathBuf>,
}

/// The rule's source. It acts only on users with fields no other case has (`blocked`,
/// `app_metadata.department`), so adding it leaves the folder's other cases passing.
pub fn rule_source(name: &str) -> String {
    format!(
        r#"// {name}: say here what this rule does.
//
// In scope (README "Variables in scope"): `user`, the Auth0-shaped user; `context`, the login
// (clientID, protocol, request.query, …; README "The default context"); `configuration`, the
// [configuration] table of rules.toml (read-only, also inside `fn`s). Rules are Rhai, not
// JavaScript: a rule just ends (no callback), a missing field reads as `()`.
let ns = configuration.NAMESPACE ?? "https://example.com/";

// Refuse the login on purpose: the app gets `access_denied` with this message.
if user.blocked == true {{
    deny("This account is blocked.");
}}

// Add claims: custom keys must be namespaced URLs (README "Claims and namespaces").
let department = user.app_metadata?.department;
if department != () {{
    context.accessToken[ns + "department"] = department;
    context.idToken[ns + "department"] = department;
    log("{name}: department " + department);
}}
"#
    )
}

/// The case file's source.
pub fn cases_source(name: &str) -> String {
    format!(
        r#"# Cases of the rule {name}; run them with `claimrules test`. README "Testing your rules"
# lists every key. [defaults] holds keys every case starts from: tables (user, context,
# configuration, expect.*) merge key by key, other values replace.
[defaults]
rules = ["{name}"]                                   # run only this rule
configuration = {{ NAMESPACE = "https://example.com/" }}
user = {{ user_id = "auth0|1", email = "ada@example.com", email_verified = true, app_metadata = {{ department = "sales" }} }}

[[case]]
name = "adds the department to both tokens"
[case.expect]
access_token = {{ "https://example.com/department" = "sales" }}
id_token = {{ "https://example.com/department" = "sales" }}
logs = ["department sales"]

[[case]]
name = "each user gets their own department"
user = {{ app_metadata = {{ department = "engineering" }} }}   # merged over [defaults].user
[case.expect]
access_token = {{ "https://example.com/department" = "engineering" }}

[[case]]
name = "a blocked user is denied"
user = {{ blocked = true }}
[case.expect]
denied = "blocked"
"#
    )
}

fn io(path: &Path, e: &std::io::Error) -> ScaffoldError {
    ScaffoldError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Whether `name` can name a rule file.
fn valid(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Writes `dir/NAME.rhai` and `dir/tests/NAME.toml` (creating the folders), and lists the rule
/// last in `dir/rules.toml` when that file exists. Writes nothing when a file exists already.
pub fn new_rule(dir: &Path, name: &str) -> Result<Scaffold, ScaffoldError> {
    if !valid(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let rule = dir.join(format!("{name}.rhai"));
    let tests = dir.join("tests");
    let cases = tests.join(format!("{name}.toml"));
    for path in [&rule, &cases] {
        if path.exists() {
            return Err(ScaffoldError::Exists(path.clone()));
        }
    }
    let manifest_path = dir.join("rules.toml");
    let manifest = if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| io(&manifest_path, &e))?;
        let listed = toml::from_str::<toml::Table>(&text)
            .ok()
            .and_then(|t| t.get("rule").and_then(|r| r.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .any(|r| r.get("name").and_then(|n| n.as_str()) == Some(name));
        if listed {
            return Err(ScaffoldError::Listed {
                path: manifest_path,
                name: name.to_owned(),
            });
        }
        Some(text)
    } else {
        None
    };
    std::fs::create_dir_all(&tests).map_err(|e| io(&tests, &e))?;
    std::fs::write(&rule, rule_source(name)).map_err(|e| io(&rule, &e))?;
    std::fs::write(&cases, cases_source(name)).map_err(|e| io(&cases, &e))?;
    let manifest = match manifest {
        Some(mut text) => {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("\n[[rule]]\nname = \"{name}\"\n"));
            std::fs::write(&manifest_path, text).map_err(|e| io(&manifest_path, &e))?;
            Some(manifest_path)
        }
        None => None,
    };
    Ok(Scaffold {
        rule,
        cases,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_file_stems() {
        assert!(valid("10-add-roles"));
        assert!(valid("mfa_v2"));
        assert!(!valid("../x"));
        assert!(!valid("a b"));
        assert!(!valid(""));
    }
}
