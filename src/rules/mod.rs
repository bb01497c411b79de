//! The rules engine: a folder of Rhai rules compiled once, run in order in a sandbox with
//! Auth0-shaped `user` / `context` objects, yielding the custom claims and scope of the tokens.
//!
//! ```
//! use claimrules::rules::RuleSet;
//! use serde_json::json;
//!
//! let set = RuleSet::from_sources(
//!     vec![("add-roles".into(), r#"
//!         context.accessToken["https://example.com/roles"] = user.app_metadata.roles;
//!     "#.into())],
//!     json!({}),
//!     Default::default(),
//! ).unwrap();
//! let out = set.run(
//!     json!({"user_id": "auth0|1", "app_metadata": {"roles": ["admin"]}}),
//!     json!({"clientID": "app"}),
//! ).unwrap();
//! assert_eq!(out.access_token["https://example.com/roles"], json!(["admin"]));
//! ```

mod budget;
pub mod cache;
pub mod coverage;
mod engine;
mod helpers;
mod hints;
pub mod http;
pub mod lint;
mod loader;
pub mod modules;
pub mod platform;
pub mod scaffold;
pub mod sites;
mod stack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope, AST};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::claims::{self, NamespaceConfig, NamespacePolicy, Refusal, TokenKind};
pub use budget::{memory_budget_enforced, RunAllocator};
#[cfg(feature = "server")]
pub(crate) use engine::time_left as run_time_left;
pub use engine::MAX_METADATA_BYTES;
pub use loader::{read_folder, FolderContents, RuleSource};

/// Sandbox limits; every one is set explicitly on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Operations one rule may perform.
    pub max_operations: u64,
    /// Wall-clock budget for the whole pipeline.
    pub pipeline_budget: Duration,
    /// Longest string, in bytes.
    pub max_string_size: usize,
    /// Most items of an array (nested arrays counted).
    pub max_array_size: usize,
    /// Most entries of a map (nested maps counted).
    pub max_map_size: usize,
    /// Deepest function call nesting.
    pub max_call_levels: usize,
    /// Deepest expression nesting at top level.
    pub max_expr_depth: usize,
    /// Deepest expression nesting inside functions.
    pub max_function_expr_depth: usize,
    /// Most variables alive at once (size limits are per value, so this caps the total).
    pub max_variables: usize,
    /// Most script-defined functions per rule.
    pub max_functions: usize,
    /// Most bytes one pipeline run may allocate (net), all its values together; enforced when
    /// [`RunAllocator`] is the global allocator, as in the `claimrules` binary (0: no budget).
    pub max_memory: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            max_operations: 1_000_000,
            pipeline_budget: Duration::from_millis(200),
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_call_levels: 64,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_variables: 256,
            max_functions: 256,
            max_memory: 16 * 1024 * 1024,
        }
    }
}

/// Options a rule set is built with.
#[derive(Debug, Clone, Default)]
pub struct RuleSetOptions {
    /// Sandbox limits.
    pub limits: SandboxLimits,
    /// The namespace rule applied to every outcome.
    pub namespace: NamespaceConfig,
    /// Outbound HTTP (the `[http]` table of `rules.toml`, which takes precedence); without it,
    /// or without `allow` entries, `http_get` and friends are helper errors.
    pub http: Option<http::HttpConfig>,
    /// Bounds of the set's cache, unless the folder's `[cache]` table says otherwise.
    pub cache: Option<cache::CacheConfig>,
    /// Records what each run reaches (statements, `deny`/`throw` sites) for
    /// [`coverage::collect`]; the test runner sets it, a server should not (it costs time).
    pub coverage: bool,
    /// Auth0 platform fields ([`platform::PLATFORM_FIELDS`]) a rule may set without failing the
    /// login (they are then ignored); `rules.toml`'s `ignore_platform_fields` adds to these.
    pub ignore_platform_fields: Vec<String>,
}

/// Per-run options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Pins `now()` to these unix seconds.
    pub now: Option<i64>,
    /// Keys merged over the rule set's `configuration` for this run.
    pub configuration: Option<Map<String, Value>>,
    /// Runs only these rules (in set order); `None` runs every enabled rule.
    pub only: Option<Vec<String>>,
    /// Overrides the set's namespace policy for this run.
    pub namespace_policy: Option<NamespacePolicy>,
}

/// Why a rule set did not load.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The rules path is not a folder.
    #[error("{}: not a folder", .0.display())]
    NotAFolder(PathBuf),
    /// A file could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// `rules.toml` is invalid.
    #[error("{}: {message}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A rule failed to compile.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Compile {
        /// The rule's name.
        rule: String,
        /// The rule's file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
}

/// Why a pipeline run failed. No token may be issued after any of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The rule denied the login on purpose (`deny("msg")` or `throw "msg"`).
    #[error("rule {rule:?} denied access: {message}")]
    Denied {
        /// The denying rule.
        rule: String,
        /// Its message (safe to show to the app).
        message: String,
    },
    /// A script error: type error, unknown function, sandbox limit, bad helper input.
    #[error("rule {rule:?} failed at line {line}, column {column}: {message}")]
    Script {
        /// The failing rule.
        rule: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What went wrong.
        message: String,
    },
    /// The pipeline's wall-clock budget ran out.
    #[error("rule {rule:?} exceeded the pipeline's time budget of {budget_ms} ms (line {line}, column {column})")]
    Timeout {
        /// The rule running when time ran out.
        rule: String,
        /// The budget.
        budget_ms: u64,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// `context.accessToken.scope` is not a valid scope.
    #[error("rule {rule:?} set an invalid context.accessToken.scope: {message}")]
    InvalidScope {
        /// The rule.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// Under the `reject` policy, a claim broke the namespace rule.
    #[error("rule {rule:?} set {key:?} on the {token}: {reason}")]
    Namespace {
        /// The rule that set the claim.
        rule: String,
        /// The claim key.
        key: String,
        /// The token.
        token: TokenKind,
        /// Why it is refused.
        reason: Refusal,
    },
    /// One token's custom claims exceed the size cap.
    #[error("the {token}'s custom claims are {size} bytes of JSON, over the limit of {limit}")]
    ClaimsTooLarge {
        /// The token.
        token: TokenKind,
        /// Their size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The user or context input is not usable (not a JSON object, or not convertible).
    #[error("invalid input: {0}")]
    Input(String),
}

impl RuleError {
    /// The rule the error belongs to, when there is one.
    pub fn rule(&self) -> Option<&str> {
        match self {
            RuleError::Denied { rule, .. }
            | RuleError::Script { rule, .. }
            | RuleError::Timeout { rule, .. }
            | RuleError::InvalidScope { rule, .. }
            | RuleError::Namespace { rule, .. } => Some(rule),
            RuleError::ClaimsTooLarge { .. } | RuleError::Input(_) => None,
        }
    }

    /// True for an on-purpose denial (the app gets `access_denied` with the message).
    pub fn is_denial(&self) -> bool {
        matches!(self, RuleError::Denied { .. })
    }
}

/// A claim the namespace rule left out, reported as a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The rule that set the claim.
    pub rule: String,
    /// The token.
    pub token: TokenKind,
    /// The claim key.
    pub key: String,
    /// Why it was dropped.
    pub reason: Refusal,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule {:?}: dropped claim {:?} from the {}: {}",
            self.rule, self.key, self.token, self.reason
        )
    }
}

/// Metadata the rules asked to persist (`update_app_metadata` / `update_user_metadata`): the
/// top-level keys to merge over the user's stored metadata, a `null` value removing the key.
/// Each field is `None` when no rule updated that metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MetadataUpdates {
    /// Update of `user.app_metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_metadata: Option<Map<String, Value>>,
    /// Update of `user.user_metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Map<String, Value>>,
}

impl MetadataUpdates {
    /// Whether no rule updated any metadata.
    pub fn is_empty(&self) -> bool {
        self.app_metadata.is_none() && self.user_metadata.is_none()
    }

    /// Merges these updates over the `app_metadata` / `user_metadata` of a user object.
    pub fn apply_to(&self, user: &mut Value) {
        let Some(user) = user.as_object_mut() else {
            return;
        };
        for (field, update) in [
            ("app_metadata", &self.app_metadata),
            ("user_metadata", &self.user_metadata),
        ] {
            if let Some(update) = update {
                let slot = user
                    .entry(field)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(m) = slot {
                    merge_metadata(m, update, false);
                }
            }
        }
    }

    /// Merges `later` over these updates (`later` wins key by key).
    pub fn merge(&mut self, later: &MetadataUpdates) {
        for (mine, theirs) in [
            (&mut self.app_metadata, &later.app_metadata),
            (&mut self.user_metadata, &later.user_metadata),
        ] {
            if let Some(theirs) = theirs {
                merge_metadata(mine.get_or_insert_with(Map::new), theirs, true);
            }
        }
    }

    pub(crate) fn get(&self, which: usize) -> Option<&Map<String, Value>> {
        [&self.app_metadata, &self.user_metadata][which].as_ref()
    }

    pub(crate) fn set(&mut self, which: usize, map: Map<String, Value>) {
        *[&mut self.app_metadata, &mut self.user_metadata][which] = Some(map);
    }
}

/// Top-level merge of a metadata update, as Auth0's Management API merges `app_metadata`:
/// each key of `update` replaces the one in `base`; a `null` removes it, unless `keep_nulls`
/// (merging updates into updates, where the `null` must survive to remove the stored key).
pub fn merge_metadata(
    base: &mut Map<String, Value>,
    update: &Map<String, Value>,
    keep_nulls: bool,
) {
    for (k, v) in update {
        if v.is_null() && !keep_nulls {
            base.remove(k);
        } else {
            base.insert(k.clone(), v.clone());
        }
    }
}

/// The log lines one rule wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleLog {
    /// The rule.
    pub rule: String,
    /// Its `log`/`print` lines, in order.
    pub lines: Vec<String>,
}

/// The result of a successful pipeline run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The user as the rules left it.
    pub user: Value,
    /// Custom claims for the access token (after the namespace rule).
    pub access_token: Map<String, Value>,
    /// Custom claims for the ID token (after the namespace rule).
    pub id_token: Map<String, Value>,
    /// The rewritten access-token scope, when a rule set one.
    pub scope: Option<Vec<String>>,
    /// Log lines of each rule that ran.
    pub logs: Vec<RuleLog>,
    /// Claims the namespace rule dropped.
    pub warnings: Vec<Warning>,
    /// Metadata updates for the host to persist.
    pub metadata: MetadataUpdates,
}

/// Everything a run produced, success or not (for the test runner and tooling).
#[derive(Debug, Clone)]
pub struct Trace {
    /// The outcome, or why the run failed.
    pub result: Result<Outcome, RuleError>,
    /// Rules that started, in order.
    pub rules_run: Vec<String>,
    /// Log lines of each rule that ran, including the failing one.
    pub logs: Vec<RuleLog>,
    /// Metadata updates to persist: those of a successful run, and those made before a denial
    /// (so a rule can count refused attempts, as on Auth0); empty after any other failure.
    pub metadata: MetadataUpdates,
    /// Run time of each rule in `rules_run`, same order (the failing rule's included; one
    /// shorter when the engine panicked). For tooling such as `claimrules playground`.
    pub durations: Vec<Duration>,
}

/// One compiled rule.
#[derive(Debug)]
pub struct CompiledRule {
    name: String,
    path: PathBuf,
    enabled: bool,
    source: String,
    ast: AST,
}

impl CompiledRule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Whether it runs.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    /// The rule's Rhai source.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Whether the rule has a `deny` call or a `throw` statement (comments do not count).
    pub fn can_deny(&self) -> bool {
        !self.deny_sites().is_empty()
    }
    /// The rule's `deny` calls and `throw` statements, by position (for coverage).
    pub fn deny_sites(&self) -> Vec<sites::DenySite> {
        sites::deny_sites(&self.ast)
    }
    /// The positions of the rule's statements (for line coverage).
    pub fn statement_positions(&self) -> Vec<(usize, usize)> {
        sites::statement_positions(&self.ast)
    }
}

/// An ordered set of compiled rules with their shared configuration and sandbox.
///
/// `RuleSet` is `Send + Sync`; one instance serves concurrent runs.
pub struct RuleSet {
    engine: Arc<Engine>,
    cache: Arc<cache::Cache>,
    http: Option<http::HttpConfig>,
    rules: Vec<Arc<CompiledRule>>,
    configuration: Map<String, Value>,
    /// `configuration` converted once at load: most runs need no per-run conversion.
    configuration_dyn: Dynamic,
    options: RuleSetOptions,
    reserved: Arc<Vec<String>>,
    /// Namespace-rule verdicts per claim key, for the access token and the ID token.
    verdicts: [RwLock<HashMap<String, Result<(), Refusal>>>; 2],
}

/// Most claim-key verdicts a set remembers.
const VERDICT_CACHE_CAP: usize = 4096;

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.names())
            .finish_non_exhaustive()
    }
}

const SCOPE_VARS: [&str; 3] = ["user", "context", "configuration"];

impl RuleSet {
    /// Loads and compiles a rules folder with default options.
    pub fn load(dir: impl AsRef<Path>) -> Result<RuleSet, LoadError> {
        Self::load_with(dir, RuleSetOptions::default())
    }

    /// Loads and compiles a rules folder.
    pub fn load_with(dir: impl AsRef<Path>, options: RuleSetOptions) -> Result<RuleSet, LoadError> {
        let contents = read_folder(dir.as_ref())?;
        Self::compile(contents, options)
    }

    /// Compiles named sources (all enabled), as an embedder that keeps rules elsewhere would.
    pub fn from_sources(
        sources: Vec<(String, String)>,
        configuration: Value,
        options: RuleSetOptions,
    ) -> Result<RuleSet, LoadError> {
        let rules = sources
            .into_iter()
            .map(|(name, source)| RuleSource {
                path: PathBuf::from(format!("{name}.rhai")),
                name,
                source,
                enabled: true,
            })
            .collect();
        Self::compile(
            FolderContents {
                rules,
                configuration,
                ..Default::default()
            },
            options,
        )
    }

    /// Compiles every enabled rule; any error fails the whole set.
    pub fn compile(
        contents: FolderContents,
        mut options: RuleSetOptions,
    ) -> Result<RuleSet, LoadError> {
        let manifest_path = contents
            .dir
            .as_ref()
            .map_or_else(|| PathBuf::from("rules.toml"), |d| d.join("rules.toml"));
        let manifest_error = |message: String| LoadError::Manifest {
            path: manifest_path.clone(),
            message,
        };
        let http = contents.http.clone().or_else(|| options.http.clone());
        if let Some(h) = http.as_ref().filter(|h| h.enabled()) {
            let budget = Duration::from_millis(h.budget_ms.unwrap_or(http::DEFAULT_HTTP_BUDGET_MS));
            options.limits.pipeline_budget = options.limits.pipeline_budget.max(budget);
        }
        options.http = http.clone();
        let client = match http.as_ref().filter(|h| h.enabled()) {
            Some(h) => Some(Arc::new(
                http::HttpClient::new(h, contents.dir.as_deref()).map_err(&manifest_error)?,
            )),
            None => None,
        };
        let cache_config = contents
            .cache
            .clone()
            .or_else(|| options.cache.clone())
            .unwrap_or_default();
        let parts = engine::EngineParts {
            cache: Arc::new(cache::Cache::new(cache_config)),
            lib: Some(Arc::new(modules::LibResolver::new(contents.lib.clone()))),
            http: client,
        };
        platform::validate(&contents.ignore_platform_fields).map_err(&manifest_error)?;
        for field in &contents.ignore_platform_fields {
            if !options.ignore_platform_fields.contains(field) {
                options.ignore_platform_fields.push(field.clone());
            }
        }
        #[allow(unused_mut)]
        let mut engine = engine::build(&options.limits, &parts);
        if options.coverage {
            coverage::register(&mut engine);
        }
        let (rules, errors) = compile_all(&engine, &contents);
        if let Some(first) = errors.into_iter().next() {
            return Err(first);
        }
        let configuration = match contents.configuration {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(manifest_error(format!(
                    "configuration must be a table, got {}",
                    claims::json_type(&other)
                )))
            }
        };
        let reserved = Arc::new(options.namespace.reserved_hosts.clone());
        let configuration_dyn = rhai::serde::to_dynamic(&configuration)
            .map_err(|e| manifest_error(format!("configuration: {e}")))?;
        Ok(RuleSet {
            engine: Arc::new(engine),
            cache: parts.cache,
            http,
            rules,
            configuration,
            configuration_dyn,
            options,
            reserved,
            verdicts: Default::default(),
        })
    }

    /// Compiles every enabled rule and returns every error (not just the first).
    pub fn check(contents: &FolderContents, options: &RuleSetOptions) -> Vec<LoadError> {
        let parts = engine::EngineParts {
            lib: Some(Arc::new(modules::LibResolver::new(contents.lib.clone()))),
            ..Default::default()
        };
        let engine = engine::build(&options.limits, &parts);
        let mut errors = compile_all(&engine, contents).1;
        if let Err(message) = platform::validate(&contents.ignore_platform_fields) {
            let dir = contents.dir.clone().unwrap_or_default();
            errors.insert(
                0,
                LoadError::Manifest {
                    path: dir.join("rules.toml"),
                    message,
                },
            );
        }
        errors
    }

    /// The set's cache (`cache_get` / `cache_set`), emptied by a reload since every load makes
    /// a new set.
    pub fn cache(&self) -> &cache::Cache {
        &self.cache
    }

    /// The `[http]` settings the set was loaded with, if any.
    pub fn http(&self) -> Option<&http::HttpConfig> {
        self.http.as_ref()
    }

    /// Names of all rules in order, disabled ones included.
    pub fn names(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.name.clone()).collect()
    }

    /// The compiled rules in order.
    pub fn rules(&self) -> &[Arc<CompiledRule>] {
        &self.rules
    }

    /// The `[configuration]` map rules see.
    pub fn configuration(&self) -> &Map<String, Value> {
        &self.configuration
    }

    /// The options the set was built with.
    pub fn options(&self) -> &RuleSetOptions {
        &self.options
    }

    /// The same compiled rules, sharing engine and cache, with `hosts` added to the reserved
    /// hosts of the namespace rule (the issuer reserves its own host this way).
    pub(crate) fn with_reserved_hosts(&self, hosts: &[String]) -> RuleSet {
        let mut options = self.options.clone();
        options
            .namespace
            .reserved_hosts
            .extend(hosts.iter().cloned());
        RuleSet {
            engine: self.engine.clone(),
            cache: self.cache.clone(),
            http: self.http.clone(),
            rules: self.rules.clone(),
            configuration: self.configuration.clone(),
            configuration_dyn: self.configuration_dyn.clone(),
            reserved: Arc::new(options.namespace.reserved_hosts.clone()),
            options,
            verdicts: Default::default(),
        }
    }

    /// Runs every enabled rule in order on `user` and `context`.
    pub fn run(&self, user: Value, context: Value) -> Result<Outcome, RuleError> {
        self.run_with(user, context, &RunOptions::default()).result
    }

    /// Runs the pipeline with per-run options and returns everything it produced.
    pub fn run_with(&self, user: Value, context: Value, opts: &RunOptions) -> Trace {
        let mut trace = Trace {
            result: Err(RuleError::Input(String::new())),
            rules_run: Vec::new(),
            logs: Vec::new(),
            metadata: MetadataUpdates::default(),
            durations: Vec::new(),
        };
        let (rules_run, logs, metadata) =
            (&mut trace.rules_run, &mut trace.logs, &mut trace.metadata);
        let durations = &mut trace.durations;
        // Rules run on a stack with room for the sandbox's limits (see `stack`), and a panic
        // inside rhai becomes an error of the rule instead of unwinding into the caller.
        let started = std::time::Instant::now();
        let result = stack::with_run_stack(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_inner(user, context, opts, (rules_run, durations), logs, metadata)
            }))
        });
        trace.result = result.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(RuleError::Script {
                rule: trace.rules_run.last().cloned().unwrap_or_default(),
                line: 0,
                column: 0,
                message: format!("internal error of the rules engine: {what}"),
            })
        });
        metrics::histogram!("claimrules_pipeline_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match &mut trace.result {
            Ok(out) => out.logs = trace.logs.clone(),
            // Updates made before a denial persist (a rule may count refused attempts); a
            // rule error or a sandbox limit stores nothing.
            Err(RuleError::Denied { .. }) => {}
            Err(_) => trace.metadata = MetadataUpdates::default(),
        }
        trace
    }

    fn run_inner(
        &self,
        user: Value,
        mut context: Value,
        opts: &RunOptions,
        (rules_run, durations): (&mut Vec<String>, &mut Vec<Duration>),
        logs: &mut Vec<RuleLog>,
        metadata: &mut MetadataUpdates,
    ) -> Result<Outcome, RuleError> {
        if !user.is_object() {
            return Err(RuleError::Input(format!(
                "user must be a JSON object, got {}",
                claims::json_type(&user)
            )));
        }
        let ctx = context
            .as_object_mut()
            .ok_or_else(|| RuleError::Input("context must be a JSON object".to_string()))?;
        for field in ["accessToken", "idToken"] {
            if !ctx.get(field).is_some_and(Value::is_object) {
                ctx.insert(field.to_owned(), Value::Object(Map::new()));
            }
        }
        let to_dyn =
            |v: &Value| rhai::serde::to_dynamic(v).map_err(|e| RuleError::Input(e.to_string()));
        let configuration = match &opts.configuration {
            None => self.configuration_dyn.clone(),
            Some(extra) => {
                let mut merged = self.configuration.clone();
                merged.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                to_dyn(&Value::Object(merged))?
            }
        };
        let mut scope = Scope::with_capacity(8);
        scope.push_dynamic("user", to_dyn(&user)?);
        scope.push_dynamic("context", to_dyn(&context)?);
        scope.push_constant_dynamic("configuration", configuration.clone());
        let platform_before = platform::snapshot(&context);

        let policy = opts
            .namespace_policy
            .unwrap_or(self.options.namespace.policy);
        let base_metadata = ["app_metadata", "user_metadata"].map(|field| {
            user.get(field)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        });
        let guard = engine::RunGuard::install(
            self.options.limits.pipeline_budget,
            self.options.limits.max_memory,
            opts.now,
            self.reserved.clone(),
            base_metadata,
        );
        // Script functions see `configuration` too (engine's variable resolver).
        guard.set_configuration(configuration.clone());
        // Which rule first set each refused claim key, so warnings and errors can name it.
        let mut offenders: HashMap<(TokenKind, String), (String, Refusal)> = HashMap::new();
        let mut scope_list: Option<Vec<String>> = None;

        for rule in self.rules.iter().filter(|r| r.enabled) {
            if let Some(only) = &opts.only {
                if !only.iter().any(|n| n == &rule.name) {
                    continue;
                }
            }
            rules_run.push(rule.name.clone());
            let started = std::time::Instant::now();
            let result = self.engine.run_ast_with_scope(&mut scope, &rule.ast);
            durations.push(started.elapsed());
            let outcome = match (&result, guard.peek_stop()) {
                (Ok(_), false) => "ok",
                (Err(e), _) if matches!(**e, EvalAltResult::ErrorRuntime(ref v, _) if !engine::is_helper_error(v)) => {
                    "denied"
                }
                (_, true) if guard.denied() => "denied",
                _ => "error",
            };
            record_rule_metrics(&rule.name, started.elapsed(), outcome, engine::operations());
            logs.push(RuleLog {
                rule: rule.name.clone(),
                lines: guard.take_logs(),
            });
            *metadata = guard.metadata();
            // A stop the script swallowed (e.g. `deny` inside a `sort` comparator) still ends it.
            let stop = guard.take_stop();
            match (result, stop) {
                (Err(err), stop) => return Err(self.classify(&rule.name, *err, stop)),
                (Ok(_), Some(stop)) => {
                    return Err(self.stopped(&rule.name, stop, Position::NONE));
                }
                (Ok(_), None) => {}
            }
            let pending = guard.take_pending_metadata();
            if !pending.is_empty() {
                merge_into_scope_user(&mut scope, &pending);
            }
            // A rule's top-level `let`s must not leak into the next rule. `configuration` is
            // pushed afresh too: rhai refuses changes to the constant's existing keys but lets a
            // rule add new ones, which must not reach later rules.
            scope.rewind(SCOPE_VARS.len() - 1);
            scope.push_constant_dynamic("configuration", configuration.clone());
            self.inspect_claims(&scope, &rule.name, policy, &mut offenders, &mut scope_list)?;
            platform::check(
                &scope,
                &platform_before,
                &self.options.ignore_platform_fields,
            )
            .map_err(|field| platform::error(rule, field))?;
        }
        drop(guard);

        let user: Value = match scope.get("user") {
            None => user,
            Some(d) => {
                if let Err(what) = json_shape(d, MAX_USER_DEPTH) {
                    let rule = rules_run.last().cloned().unwrap_or_default();
                    let (line, column) = self.position_of(&rule, &["user"]);
                    return Err(RuleError::Script {
                        rule,
                        line,
                        column,
                        message: format!("after the rules ran, `user` {what}"),
                    });
                }
                rhai::serde::from_dynamic(d).map_err(|e| RuleError::Input(format!("user: {e}")))?
            }
        };
        let mut access_token = token_map(&scope, TokenKind::AccessToken)?;
        let mut id_token = token_map(&scope, TokenKind::IdToken)?;
        access_token.remove("scope");
        let mut warnings = Vec::new();
        for (kind, map) in [
            (TokenKind::AccessToken, &mut access_token),
            (TokenKind::IdToken, &mut id_token),
        ] {
            map.retain(|_, v| !v.is_null());
            let mut dropped: Vec<String> = map
                .keys()
                .filter(|k| self.verdict(kind, k).is_err())
                .cloned()
                .collect();
            dropped.sort();
            for key in dropped {
                map.remove(&key);
                let (rule, reason) = offenders
                    .get(&(kind, key.clone()))
                    .cloned()
                    .unwrap_or_else(|| ("?".into(), Refusal::NotNamespaced));
                metrics::counter!(
                    "claimrules_namespace_drops_total",
                    "rule" => rule.clone(),
                    "token" => kind.to_string()
                )
                .increment(1);
                warnings.push(Warning {
                    rule,
                    token: kind,
                    key,
                    reason,
                });
            }
            let size = serde_json::to_vec(map)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            let limit = self.options.namespace.max_claims_bytes;
            if size > limit {
                return Err(RuleError::ClaimsTooLarge {
                    token: kind,
                    size,
                    limit,
                });
            }
        }
        Ok(Outcome {
            user,
            access_token,
            id_token,
            scope: scope_list,
            logs: Vec::new(),
            warnings,
            metadata: metadata.clone(),
        })
    }

    /// After each rule: validate a scope rewrite and attribute refused claim keys to the rule.
    fn inspect_claims(
        &self,
        scope: &Scope,
        rule: &str,
        policy: NamespacePolicy,
        offenders: &mut HashMap<(TokenKind, String), (String, Refusal)>,
        scope_list: &mut Option<Vec<String>>,
    ) -> Result<(), RuleError> {
        let Some(context) = scope
            .get("context")
            .and_then(|d| d.read_lock::<rhai::Map>())
        else {
            let (line, column) = self.position_of(rule, &["context"]);
            return Err(RuleError::Script {
                rule: rule.to_owned(),
                line,
                column,
                message: "the rule replaced `context` with something that is not a map".into(),
            });
        };
        for kind in [TokenKind::AccessToken, TokenKind::IdToken] {
            let Some(map) = context
                .get(kind.context_field())
                .and_then(|d| d.read_lock::<rhai::Map>())
            else {
                let (line, column) = self.position_of(rule, &["context", kind.context_field()]);
                return Err(RuleError::Script {
                    rule: rule.to_owned(),
                    line,
                    column,
                    message: format!("context.{} must stay a map", kind.context_field()),
                });
            };
            if kind == TokenKind::AccessToken && !map.contains_key("scope") {
                // No rewrite, or a later rule removed it: the granted scope stands.
                *scope_list = None;
            }
            for (key, value) in map.iter() {
                let key = key.as_str();
                if kind == TokenKind::AccessToken && key == "scope" {
                    if value.is_unit() {
                        *scope_list = None;
                        continue;
                    }
                    let json: Value =
                        rhai::serde::from_dynamic(value).map_err(|e| RuleError::InvalidScope {
                            rule: rule.to_owned(),
                            message: e.to_string(),
                        })?;
                    *scope_list =
                        Some(
                            claims::parse_scope(&json).map_err(|e| RuleError::InvalidScope {
                                rule: rule.to_owned(),
                                message: e.to_string(),
                            })?,
                        );
                    continue;
                }
                if value.is_unit() {
                    continue;
                }
                // Checked here, not at the end, so the error can name the rule.
                json_shape(value, MAX_CLAIM_DEPTH).map_err(|what| {
                    let (line, column) =
                        self.position_of(rule, &["context", kind.context_field(), key]);
                    RuleError::Script {
                        rule: rule.to_owned(),
                        line,
                        column,
                        message: format!("context.{}[{key:?}] {what}", kind.context_field()),
                    }
                })?;
                if offenders.contains_key(&(kind, key.to_owned())) {
                    continue;
                }
                if let Err(reason) = self.verdict(kind, key) {
                    if policy == NamespacePolicy::Reject {
                        return Err(RuleError::Namespace {
                            rule: rule.to_owned(),
                            key: key.to_owned(),
                            token: kind,
                            reason,
                        });
                    }
                    offenders.insert((kind, key.to_owned()), (rule.to_owned(), reason));
                }
            }
        }
        Ok(())
    }

    /// Where rule `rule` assigns `path` (see [`sites::assignment_position`]); `(0, 0)` when
    /// no assignment is found.
    fn position_of(&self, rule: &str, path: &[&str]) -> (usize, usize) {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| sites::assignment_position(&r.ast, path))
            .unwrap_or((0, 0))
    }

    /// `claims::check_claim` for this set's reserved hosts, remembered across runs: claim keys
    /// are nearly always the same few literals, and parsing them as URLs after every rule of
    /// every run was a tenth of the pipeline's time.
    fn verdict(&self, kind: TokenKind, key: &str) -> Result<(), Refusal> {
        let cache = match kind {
            TokenKind::AccessToken => &self.verdicts[0],
            TokenKind::IdToken => &self.verdicts[1],
        };
        if let Some(v) = cache.read().ok().and_then(|c| c.get(key).copied()) {
            return v;
        }
        let v = claims::check_claim(kind, key, &self.reserved);
        if let Ok(mut c) = cache.write() {
            // Bounded: rules that invent keys per user must not grow it without end.
            if c.len() < VERDICT_CACHE_CAP {
                c.insert(key.to_owned(), v);
            }
        }
        v
    }

    /// The error for a run the engine stopped; `pos` is where the script was when it stopped.
    fn stopped(&self, rule: &str, stop: engine::Stop, pos: Position) -> RuleError {
        let rule = rule.to_owned();
        let (line, column) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
        match stop {
            engine::Stop::Denied(message) => RuleError::Denied { rule, message },
            engine::Stop::Fault(message, at) => RuleError::Script {
                rule,
                line: at.line().unwrap_or(0),
                column: at.position().unwrap_or(0),
                message,
            },
            engine::Stop::Deadline => RuleError::Timeout {
                rule,
                budget_ms: u64::try_from(self.options.limits.pipeline_budget.as_millis())
                    .unwrap_or(u64::MAX),
                line,
                column,
            },
            engine::Stop::Stack => RuleError::Script {
                rule,
                line,
                column,
                message: "calls nested too deeply for the native stack (unbounded recursion?)"
                    .into(),
            },
            engine::Stop::Memory => RuleError::Script {
                rule,
                line,
                column,
                message: format!(
                    "the rule used more than the sandbox's {} MiB of memory",
                    self.options.limits.max_memory / (1024 * 1024)
                ),
            },
        }
    }

    fn classify(&self, rule: &str, err: EvalAltResult, stop: Option<engine::Stop>) -> RuleError {
        let err = root_cause(err);
        let pos = err.position();
        if let Some(stop) = stop {
            return self.stopped(rule, stop, pos);
        }
        let (line, column) = (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
        let rule = rule.to_owned();
        match err {
            EvalAltResult::ErrorTerminated(..) => RuleError::Script {
                rule,
                line,
                column,
                message: "terminated".into(),
            },
            EvalAltResult::ErrorRuntime(value, _) if engine::is_helper_error(&value) => {
                RuleError::Script {
                    rule,
                    line,
                    column,
                    message: thrown_message(&value),
                }
            }
            EvalAltResult::ErrorRuntime(value, _) => RuleError::Denied {
                rule,
                message: thrown_message(&value),
            },
            other => RuleError::Script {
                rule,
                line,
                column,
                message: describe(other),
            },
        }
    }
}

/// Per-rule metrics (`claimrules_rule_*`, see README "Operating"); the rule name is a bounded
/// label (names come from the rules folder).
fn record_rule_metrics(rule: &str, took: Duration, outcome: &'static str, operations: u64) {
    let rule = rule.to_owned();
    metrics::histogram!("claimrules_rule_duration_seconds", "rule" => rule.clone())
        .record(took.as_secs_f64());
    metrics::histogram!("claimrules_rule_operations", "rule" => rule.clone())
        .record(operations as f64);
    metrics::counter!("claimrules_rule_runs_total", "rule" => rule, "outcome" => outcome)
        .increment(1);
}

/// Merges a rule's metadata updates into the scope's `user`, so later rules see them.
pub(crate) fn merge_into_scope_user(scope: &mut Scope, updates: &MetadataUpdates) {
    let Some(mut user) = scope
        .get_mut("user")
        .and_then(|d| d.write_lock::<rhai::Map>())
    else {
        return;
    };
    for (field, update) in [
        ("app_metadata", &updates.app_metadata),
        ("user_metadata", &updates.user_metadata),
    ] {
        let Some(update) = update else { continue };
        let slot = user
            .entry(field.into())
            .or_insert_with(|| Dynamic::from_map(Default::default()));
        if !slot.is_map() {
            *slot = Dynamic::from_map(Default::default());
        }
        if let Some(mut map) = slot.write_lock::<rhai::Map>() {
            for (k, v) in update {
                if v.is_null() {
                    map.remove(k.as_str());
                } else if let Ok(d) = rhai::serde::to_dynamic(v) {
                    map.insert(k.as_str().into(), d);
                }
            }
        }
    }
}

/// Deepest nesting of a claim value. Verifiers parse tokens with JSON parsers that refuse deep
/// nesting (serde_json stops at 128 levels), and a bound keeps every recursive walk shallow.
const MAX_CLAIM_DEPTH: usize = 64;

/// Deepest nesting of the user the rules hand back (serde_json's own parsing limit).
const MAX_USER_DEPTH: usize = 128;

/// `Ok` when `value` has a JSON form no deeper than `depth` levels; else what is wrong with it.
fn json_shape(value: &Dynamic, depth: usize) -> Result<(), String> {
    if value.is_unit()
        || value.is_bool()
        || value.is_int()
        || value.is_float()
        || value.is_string()
        || value.is_char()
    {
        return Ok(());
    }
    let nested = value.is_array() || value.is_map();
    if nested && depth == 0 {
        return Err("nests too deeply to be issued as JSON".into());
    }
    if let Some(items) = value.read_lock::<rhai::Array>() {
        return items.iter().try_for_each(|v| json_shape(v, depth - 1));
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        return map.values().try_for_each(|v| json_shape(v, depth - 1));
    }
    Err(format!(
        "holds a value of type `{}`, which has no JSON form",
        value.type_name()
    ))
}

/// Unwraps errors raised inside script-defined functions to the one that started it.
fn root_cause(err: EvalAltResult) -> EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => root_cause(*inner),
        other => other,
    }
}

/// A rhai error's message without the position suffix rhai appends.
fn describe(mut e: EvalAltResult) -> String {
    e.clear_position();
    match &e {
        EvalAltResult::ErrorTooManyOperations(_) => {
            "the rule exceeded its operation budget (an endless loop?)".into()
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            "call depth limit exceeded (unbounded recursion?)".into()
        }
        _ => hints::with_runtime_hint(e.to_string()),
    }
}

fn thrown_message(value: &Dynamic) -> String {
    // Formatted no further than a denial message can hold, whatever was thrown.
    let cap = engine::MAX_DENY_MESSAGE;
    if let Some(map) = value.read_lock::<rhai::Map>() {
        if let Some(m) = map.get("message") {
            return budget::bounded_fmt(format_args!("{m}"), cap);
        }
    }
    budget::bounded_text(value, cap)
}

fn token_map(scope: &Scope, kind: TokenKind) -> Result<Map<String, Value>, RuleError> {
    let map = scope
        .get("context")
        .and_then(|c| {
            c.read_lock::<rhai::Map>()
                .map(|m| m.get(kind.context_field()).cloned())
        })
        .flatten()
        .unwrap_or(Dynamic::UNIT);
    match rhai::serde::from_dynamic::<Value>(&map) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Ok(Map::new()),
        Err(e) => Err(RuleError::Input(format!(
            "context.{}: {e}",
            kind.context_field()
        ))),
    }
}

/// The scope rules are compiled against, so strict variables catches typos at load time.
fn declaration_scope() -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push_dynamic("user", Dynamic::from_map(Default::default()));
    scope.push_dynamic("context", Dynamic::from_map(Default::default()));
    // Declared as a plain variable on purpose: rhai's optimizer inlines the values of constants
    // in the compile scope, which would bake this empty placeholder into every rule (and make
    // `configuration.X = 1` hit an internal panic). It is pushed as a constant at run time.
    scope.push_dynamic("configuration", Dynamic::from_map(Default::default()));
    scope
}

/// Compiles every enabled rule once; the rules in order (for a set) and every error (for
/// `check`), so a load reports all broken rules without compiling twice.
fn compile_all(
    engine: &Engine,
    contents: &FolderContents,
) -> (Vec<Arc<CompiledRule>>, Vec<LoadError>) {
    let scope = declaration_scope();
    let mut rules = Vec::with_capacity(contents.rules.len());
    let mut errors = Vec::new();
    for r in &contents.rules {
        let ast = if r.enabled {
            match compile_one(engine, &scope, r, &contents.lib) {
                Ok(ast) => ast,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            }
        } else {
            AST::empty()
        };
        rules.push(Arc::new(CompiledRule {
            name: r.name.clone(),
            path: r.path.clone(),
            enabled: r.enabled,
            source: r.source.clone(),
            ast,
        }));
    }
    (rules, errors)
}

/// 1-based line and column of the first `"path"` literal in `source` (imports are resolved
/// before rhai knows their position).
fn import_position(source: &str, path: &str) -> (usize, usize) {
    let needle = format!("{path:?}");
    source
        .lines()
        .enumerate()
        .find_map(|(i, line)| line.find(&needle).map(|c| (i + 1, c + 1)))
        .unwrap_or((0, 0))
}

fn compile_one(
    engine: &Engine,
    scope: &Scope,
    r: &RuleSource,
    lib: &[modules::LibSource],
) -> Result<AST, LoadError> {
    let error = |path: &Path, (line, column): (usize, usize), message: String| LoadError::Compile {
        rule: r.name.clone(),
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let at = |pos: Position| (pos.line().unwrap_or(0), pos.position().unwrap_or(0));
    match engine.compile_into_self_contained(scope, &r.source) {
        Ok(mut ast) => {
            ast.set_source(r.name.as_str());
            Ok(ast)
        }
        Err(e) => match *e {
            EvalAltResult::ErrorParsing(kind, pos) => {
                let mut message = hints::parse_message(&kind, &r.source, pos);
                let eval = matches!(&kind, rhai::ParseErrorType::Reserved(sym) if sym == "eval")
                    || message.contains("'eval' is disabled");
                if eval {
                    message = "`eval` is not allowed in rules (sandbox)".into();
                }
                Err(error(&r.path, at(pos), message))
            }
            EvalAltResult::ErrorInModule(import, inner, _) => {
                // The error is inside the imported module: name its file and position.
                let file = lib
                    .iter()
                    .find(|m| m.import_path == import)
                    .map_or_else(|| r.path.clone(), |m| m.path.clone());
                let inner = root_cause(*inner);
                let pos = inner.position();
                let mut inner = inner;
                inner.clear_position();
                let message = match inner {
                    EvalAltResult::ErrorParsing(kind, _) => kind.to_string(),
                    EvalAltResult::ErrorSystem(m, _) => m,
                    other => other.to_string(),
                };
                Err(error(
                    &file,
                    at(pos),
                    format!(
                        "in module {import:?} (imported by rule {:?}): {message}",
                        r.name
                    ),
                ))
            }
            EvalAltResult::ErrorSystem(message, _) => {
                let path = message
                    .strip_prefix("import ")
                    .and_then(|m| m.split(':').next())
                    .and_then(|p| serde_json::from_str::<String>(p).ok())
                    .unwrap_or_default();
                Err(error(&r.path, import_position(&r.source, &path), message))
            }
            other => {
                let pos = other.position();
                Err(error(&r.path, at(pos), describe(other)))
            }
        },
    }
}
