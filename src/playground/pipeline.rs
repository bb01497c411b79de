//! One playground run: the folder's rules with the page's unsaved sources swapped in, run on
//! the page's `user` and `context` the way `claimrules test` runs a case (context merged over
//! [`default_context`], namespace policy `drop` so dropped claims show as warnings), timed per
//! rule, and signed as the issuer would sign it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::paths::{self, PathError};
use crate::claims::NamespacePolicy;
use crate::config::{ApiConfig, ClientConfig, SigningAlg};
use crate::issuer::{Issuer, KeyError, Protocol, RuleClaims, SigningKey, TokenRequest};
use crate::rules::{
    read_folder, FolderContents, LoadError, MetadataUpdates, Outcome, RuleError, RuleSet,
    RuleSetOptions, RunOptions, Trace,
};
use crate::testing::{case_context, default_context, requested_scope};

/// The `iss` of the playground's tokens (`.invalid` is reserved by RFC 2606 §2).
pub const PLAYGROUND_ISSUER: &str = "https://playground.invalid/";

/// Why a run could not start (a failed pipeline is a [`RunReport`], not an error).
#[derive(Debug, thiserror::Error)]
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

/// A JWT with its decoded parts.
#[derive(Debug, Serialize)]
pub struct Jwt {
    /// The compact JWS.
    pub jwt: String,
    /// Its header.
    pub header: Value,
    /// Its payload (standard and custom claims).
    pub payload: Value,
}

/// The signed tokens of a successful run.
#[derive(Debug, Serialize)]
pub struct SignedView {
    /// How they were made.
    pub note: String,
    /// The access token.
    pub access_token: Jwt,
    /// The ID token (when `openid` was requested).
    pub id_token: Option<Jwt>,
}

/// Signs outcomes as the issuer would, with a throwaway key made at start-up.
pub struct Signer {
    issuer: Issuer,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// An issuer for [`PLAYGROUND_ISSUER`] with a fresh ES256 key.
    pub fn new() -> Result<Signer, PipelineError> {
        let rules = RuleSet::from_sources(vec![], json!({}), RuleSetOptions::default())
            .map_err(|e| PipelineError::Issuer(e.to_string()))?;
        let issuer = Issuer::builder(PLAYGROUND_ISSUER)
            .rules(rules)
            .key(SigningKey::generate(SigningAlg::ES256)?)
            .build()
            .map_err(|e| PipelineError::Issuer(e.to_string()))?;
        Ok(Signer { issuer })
    }

    /// The tokens for `outcome`, built by [`Issuer::sign`] from the request the context
    /// describes: client `clientID`, API `audience`, granted scope = requested scope.
    fn sign(
        &self,
        user: &Map<String, Value>,
        context: &Map<String, Value>,
        out: &Outcome,
    ) -> Option<SignedView> {
        let str_of = |k: &str| context.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut client =
            ClientConfig::new(str_of("clientID").unwrap_or_else(|| "test-client".into()));
        client.name = str_of("clientName");
        let api = str_of("audience").map(ApiConfig::new);
        let requested = requested_scope(context).unwrap_or_default();
        let mut req = TokenRequest::for_client(&client, Value::Object(user.clone()))
            .scopes(requested.clone());
        if let Some(api) = &api {
            req = req.api(api);
        }
        if str_of("protocol").as_deref() == Some(Protocol::RefreshToken.as_str()) {
            req.protocol = Protocol::RefreshToken;
        }
        req.request = Some(context.get("request").cloned().unwrap_or_else(|| json!({})));
        req.session_id = str_of("sessionID");
        if let Some(n) = context
            .get("stats")
            .and_then(|s| s.get("loginsCount"))
            .and_then(Value::as_i64)
        {
            req.logins_count = n;
        }
        let scope = out.scope.clone().unwrap_or_else(|| requested.clone());
        let claims = RuleClaims {
            user: out.user.clone(),
            access_token: out.access_token.clone(),
            id_token: out.id_token.clone(),
            scope_changed: scope != requested,
            scope,
            rules_version: 0,
            metadata: out.metadata.clone(),
        };
        let issued = self.issuer.sign(&req, &claims).ok()?;
        Some(SignedView {
            note: format!(
                "signed by the playground's issuer {PLAYGROUND_ISSUER} with a throwaway ES256 key \
                 made at start-up (the same code as the token server's); the granted scope is \
                 the requested one, and an ID token is issued when it holds `openid`"
            ),
            access_token: decode(issued.access_token),
            id_token: issued.id_token.map(decode),
        })
    }
}

/// Splits a JWS and decodes its header and payload (no verification: we just signed it).
fn decode(jwt: String) -> Jwt {
    let part = |i: usize| {
        jwt.split('.')
            .nth(i)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let (header, payload) = (part(0), part(1));
    Jwt {
        jwt,
        header,
        payload,
    }
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
fn locate_denial(source: &str, message: &str) -> Option<(usize, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_located_by_message_or_the_only_call() {
        let src = "let a = 1;\nif a == 1 {\n    deny(\"no way\");\n}\n";
        assert_eq!(locate_denial(src, "no way"), Some((3, 5)));
        assert_eq!(locate_denial(src, "other"), Some((3, 5)));
        let two = "deny(\"a\");\n// deny(\"b\") in a comment\nthrow \"b\";\n";
        assert_eq!(locate_denial(two, "b"), Some((3, 1)));
        assert_eq!(locate_denial(two, "c"), None);
    }

    #[test]
    fn nulls_the_default_also_has_are_left_out() {
        let mut v = json!({"a": null, "b": {"c": null, "d": 1}, "e": null});
        without_default_nulls(&mut v, &json!({"a": null, "b": {"c": 2}}));
        assert_eq!(v, json!({"b": {"c": null, "d": 1}}));
    }

    #[test]
    fn inputs_are_objects_or_their_text() {
        let m = object_input("user", &json!("{\"a\": 1}")).unwrap();
        assert_eq!(m["a"], 1);
        match object_input("user", &json!("{\n  \"a\": }")) {
            Err(PipelineError::Input { line, column, .. }) => assert_eq!((line, column), (2, 8)),
            other => panic!("{other:?}"),
        }
        assert!(object_input("context", &json!([1])).is_err());
        assert!(object_input("context", &json!("[1]")).is_err());
    }
}
