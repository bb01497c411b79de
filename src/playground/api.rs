//! The page's JSON API. Every handler runs behind [`super::access::require_token`].
//!
//! | method | path          | body / query                          | answer                    |
//! |--------|---------------|---------------------------------------|---------------------------|
//! | GET    | `/api/rules`  |                                       | rules in run order        |
//! | GET    | `/api/rule`   | `?file=10-a.rhai`                     | its source and version    |
//! | PUT    | `/api/rule`   | `{file, source, base_version?}`       | saved, or 422 with position |
//! | POST   | `/api/run`    | `{user, context, sources?}`           | a [`RunReport`]           |
//! | GET    | `/api/inputs` |                                       | defaults, fixtures, cases |
//! | POST   | `/api/case`   | `{name, user, context}`               | the saved case            |
//!
//! `user` and `context` are JSON objects or the text of one; `sources` maps rule files to
//! unsaved sources. Bad bodies are 400 with the parser's line and column; refused paths 400.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::case::{self, CaseError};
use super::paths::{self, PathError};
use super::pipeline::{self, ErrorReport, PipelineError, RunReport};
use super::Playground;
use crate::rules::read_folder;
use crate::testing::TestSuite;

/// Errors of the API, each with its HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not the JSON the endpoint takes.
    #[error("invalid request body: {0}")]
    Body(String),
    /// A `user` / `context` input is unusable.
    #[error(transparent)]
    Input(PipelineError),
    /// A refused path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The rule does not compile (nothing was written).
    #[error("{}", .0.text)]
    Compile(Box<ErrorReport>),
    /// The file changed on disk since the page read it.
    #[error("{0} changed on disk since you opened it (reload it, or save again to overwrite)")]
    Conflict(String),
    /// Save as test case failed.
    #[error(transparent)]
    Case(#[from] CaseError),
    /// A file could not be read or written, or a task failed.
    #[error("{0}")]
    Internal(String),
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> ApiError {
        match e {
            PipelineError::Path(p) => ApiError::Path(p),
            other => ApiError::Input(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, detail) = match &self {
            ApiError::Body(_) => (StatusCode::BAD_REQUEST, json!({"kind": "body"})),
            ApiError::Input(PipelineError::Input {
                field,
                line,
                column,
                message,
            }) => (
                StatusCode::BAD_REQUEST,
                json!({"kind": "input", "field": field, "line": line, "column": column,
                       "detail": message}),
            ),
            ApiError::Input(_) | ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"kind": "internal"}),
            ),
            ApiError::Path(PathError::NotARule(_)) => {
                (StatusCode::NOT_FOUND, json!({"kind": "not_found"}))
            }
            ApiError::Path(_) => (StatusCode::BAD_REQUEST, json!({"kind": "path"})),
            ApiError::Compile(report) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::to_value(&**report).unwrap_or_default(),
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, json!({"kind": "conflict"})),
            ApiError::Case(CaseError::Duplicate(_)) => {
                (StatusCode::CONFLICT, json!({"kind": "duplicate"}))
            }
            ApiError::Case(CaseError::Io { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"kind": "io"}))
            }
            ApiError::Case(_) => (StatusCode::UNPROCESSABLE_ENTITY, json!({"kind": "case"})),
        };
        let mut error = match detail {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        error.insert("error".into(), json!(message));
        (status, Json(json!({ "error": error }))).into_response()
    }
}

/// Parses a JSON body, unknown fields refused, with the parser's position on error.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Body(e.to_string()))
}

/// One query parameter.
fn query_param(raw: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(raw?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A short content hash: what the page compares to notice changes on disk.
pub fn version(text: &str) -> String {
    crate::crypto::sha256_hex(text)[..16].to_owned()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("the task failed: {e}")))
}

/// `GET /api/rules`: the folder's rules in run order, with enabled state and version.
pub async fn rules(State(pg): State<Arc<Playground>>) -> Result<Json<Value>, ApiError> {
    let dir = pg.dir.clone();
    blocking(move || {
        let (rules, error) = match read_folder(&dir) {
            Ok(c) => (
                c.rules
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "file": paths::rule_file(&dir, &r.path),
                            "enabled": r.enabled,
                            "version": version(&r.source),
                        })
                    })
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        Json(json!({ "dir": dir.display().to_string(), "rules": rules, "error": error }))
    })
    .await
}

/// `GET /api/rule?file=`: one rule's source.
pub async fn rule(
    State(pg): State<Arc<Playground>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let file = query_param(query.as_deref(), "file").unwrap_or_default();
    let dir = pg.dir.clone();
    blocking(move || {
        let (path, name, enabled) = pipeline::rule_path(&dir, &file)?;
        let source = std::fs::read_to_string(&path)
            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
        Ok(Json(json!({
            "name": name,
            "file": file,
            "enabled": enabled,
            "version": version(&source),
            "source": source,
        })))
    })
    .await?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveRule {
    file: String,
    source: String,
    base_version: Option<String>,
}

/// `PUT /api/rule`: saves a rule that compiles; 422 with file, line and column otherwise.
pub async fn save_rule(
    State(pg): State<Arc<Playground>>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: SaveRule = body(&bytes)?;
    paths::relative(&req.file)?;
    let pg2 = pg.clone();
    blocking(move || {
        let dir = &pg2.dir;
        let (path, name, _) = pipeline::rule_path(dir, &req.file)?;
        if let Some(err) = pipeline::check_rule(dir, &req.file, &req.source)? {
            return Err(ApiError::Compile(Box::new(err)));
        }
        let _guard = pg2
            .write_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(base) = &req.base_version {
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            if &version(&on_disk) != base {
                return Err(ApiError::Conflict(req.file.clone()));
            }
        }
        case::write_atomically(&path, &req.source)?;
        Ok(Json(json!({
            "saved": true,
            "name": name,
            "file": req.file,
            "version": version(&req.source),
        })))
    })
    .await?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    user: Value,
    context: Value,
    #[serde(default)]
    sources: BTreeMap<String, String>,
}

/// `POST /api/run`: the pipeline on the page's inputs and unsaved sources, on the blocking
/// pool (a looping rule is stopped by the sandbox and never holds up the server's workers).
pub async fn run(
    State(pg): State<Arc<Playground>>,
    bytes: Bytes,
) -> Result<Json<RunReport>, ApiError> {
    let req: RunRequest = body(&bytes)?;
    let user = pipeline::object_input("user", &req.user)?;
    let context = pipeline::object_input("context", &req.context)?;
    for file in req.sources.keys() {
        paths::relative(file)?;
    }
    let _permit = pg
        .runs
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let pg2 = pg.clone();
    let report =
        blocking(move || pipeline::run(&pg2.dir, &req.sources, &user, &context, &pg2.signer))
            .await??;
    Ok(Json(report))
}

/// The user the page starts with.
pub fn default_user() -> Value {
    json!({
        "user_id": "auth0|playground",
        "email": "ada@example.com",
        "email_verified": true,
        "name": "Ada Lovelace",
        "app_metadata": { "roles": ["admin"], "plan": "pro" },
        "user_metadata": { "theme": "dark" },
    })
}

/// The context the page starts with: the test runner's default, asking for `openid profile
/// email` so that an ID token is issued.
pub fn page_context() -> Value {
    let mut ask = Map::new();
    ask.insert(
        "request".into(),
        json!({ "query": { "scope": "openid profile email" } }),
    );
    pipeline::shown_context(&ask, None)
}

/// The fixture objects under `tests/fixtures/` (two levels), for the pickers.
fn fixtures(dir: &Path) -> Vec<Value> {
    let root = dir.join("tests").join("fixtures");
    let mut files = Vec::new();
    let mut folders = vec![(root.clone(), 0)];
    while let Some((folder, depth)) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if p.is_dir() && depth < 1 {
                folders.push((p, depth + 1));
            } else if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            let value: Value = match p.extension()?.to_str()? {
                "json" => serde_json::from_str(&text).ok()?,
                "yaml" | "yml" => serde_norway::from_str(&text).ok()?,
                "toml" => toml::from_str(&text).ok()?,
                _ => return None,
            };
            value
                .is_object()
                .then(|| json!({ "file": paths::rule_file(&dir.join("tests"), p), "value": value }))
        })
        .collect()
}

/// `GET /api/inputs`: the default user and context, the fixtures and each case's inputs.
pub async fn inputs(State(pg): State<Arc<Playground>>) -> Result<Json<Value>, ApiError> {
    let dir = pg.dir.clone();
    blocking(move || {
        let (cases, cases_error) = match TestSuite::load(&dir) {
            Ok(suite) => (
                suite
                    .cases()
                    .iter()
                    .map(|c| {
                        let given = c.context.as_ref().and_then(Value::as_object).cloned();
                        json!({
                            "name": c.name,
                            "file": c.file.as_deref().map(|f| paths::rule_file(&dir.join("tests"), f)),
                            "user": c.user,
                            "context": pipeline::shown_context(&given.unwrap_or_default(), c.now),
                        })
                    })
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        Json(json!({
            "user": default_user(),
            "context": page_context(),
            "fixtures": fixtures(&dir),
            "cases": cases,
            "cases_error": cases_error,
        }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    name: String,
    user: Value,
    context: Value,
}

/// `POST /api/case`: appends a case to `tests/playground.toml` (checked by the runner).
pub async fn save_case(
    State(pg): State<Arc<Playground>>,
    bytes: Bytes,
) -> Result<Json<case::SavedCase>, ApiError> {
    let req: CaseRequest = body(&bytes)?;
    let user = pipeline::object_input("user", &req.user)?;
    let context = pipeline::object_input("context", &req.context)?;
    let pg2 = pg.clone();
    let saved = blocking(move || case::save(&pg2.dir, &req.name, &user, &context, &pg2.write_lock))
        .await??;
    Ok(Json(saved))
}
