//! A compiled rule set: its options and sandbox limits, loading a folder or named sources,
//! and what the set exposes to its runs and to tooling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use rhai::{Dynamic, Engine, AST};
use serde_json::{Map, Value};

use super::compile::compile_all;
use super::{cache, coverage, engine, http, modules, platform, sites};
use super::{read_folder, FolderContents, LoadError, RuleSource};
use crate::claims::{self, NamespaceConfig, Refusal};

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
    /// [`RunAllocator`](super::RunAllocator) is the global allocator, as in the `claimrules`
    /// binary (0: no budget).
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

/// One compiled rule.
#[derive(Debug)]
pub struct CompiledRule {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) enabled: bool,
    pub(super) source: String,
    pub(super) ast: AST,
    /// Its metric handles, registered at its first run ([`RuleMetrics`]).
    pub(super) metrics: OnceLock<RuleMetrics>,
}

/// One rule's `claimrules_rule_*` metrics (README "Operating"). Looking a labelled metric up
/// hashes its name and labels and allocates the label values, three times per rule per login
/// (`scripts/profile-refresh`: 1.4 % of a refresh's CPU with the five sample rules), so each rule
/// keeps its handles. They are taken at the rule's first run, which comes after `serve`
/// installed the recorder (src/server/telemetry.rs); a rule set reloaded later gets new ones.
#[derive(Debug)]
pub(super) struct RuleMetrics {
    /// `claimrules_rule_duration_seconds`.
    pub(super) duration: metrics::Histogram,
    /// `claimrules_rule_operations`.
    pub(super) operations: metrics::Histogram,
    /// `claimrules_rule_runs_total` by outcome, indexed by [`RunOutcome`].
    pub(super) runs: [metrics::Counter; 3],
}

/// How one rule's run ended, the `outcome` label of `claimrules_rule_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunOutcome {
    /// It ran to its end.
    Ok,
    /// It denied the login.
    Denied,
    /// It failed.
    Error,
}

impl RunOutcome {
    const ALL: [RunOutcome; 3] = [RunOutcome::Ok, RunOutcome::Denied, RunOutcome::Error];

    /// The label value.
    fn label(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Denied => "denied",
            RunOutcome::Error => "error",
        }
    }
}

impl RuleMetrics {
    /// Registers the handles of the rule `rule`.
    pub(super) fn new(rule: &str) -> RuleMetrics {
        let rule = rule.to_owned();
        RuleMetrics {
            duration: metrics::histogram!("claimrules_rule_duration_seconds", "rule" => rule.clone()),
            operations: metrics::histogram!("claimrules_rule_operations", "rule" => rule.clone()),
            runs: RunOutcome::ALL.map(|outcome| {
                metrics::counter!("claimrules_rule_runs_total", "rule" => rule.clone(), "outcome" => outcome.label())
            }),
        }
    }
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
    pub(super) engine: Arc<Engine>,
    pub(super) cache: Arc<cache::Cache>,
    pub(super) http: Option<http::HttpConfig>,
    pub(super) rules: Vec<Arc<CompiledRule>>,
    pub(super) configuration: Map<String, Value>,
    /// `configuration` converted once at load: most runs need no per-run conversion.
    pub(super) configuration_dyn: Dynamic,
    pub(super) options: RuleSetOptions,
    pub(super) reserved: Arc<Vec<String>>,
    /// Namespace-rule verdicts per claim key, for the access token and the ID token.
    pub(super) verdicts: [RwLock<HashMap<String, Result<(), Refusal>>>; 2],
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.names())
            .finish_non_exhaustive()
    }
}

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

    /// Whether a run may wait on the network: `http_get` and friends are enabled (an `[http]`
    /// table with `allow` entries). Without, every run is CPU work bounded by the sandbox.
    pub fn may_call_out(&self) -> bool {
        self.http.as_ref().is_some_and(http::HttpConfig::enabled)
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
}
