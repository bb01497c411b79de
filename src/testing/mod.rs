//! Rule unit tests: case files in `RULES_DIR/tests/` (TOML, JSON or YAML), each case an input
//! user and context plus what the rules must produce; a runner that checks them against a
//! [`RuleSet`], and reporters (text with diffs, JSON, JUnit XML).
//!
//! From Rust, load a folder's suite with [`TestSuite::load`], or write a case inline with the
//! [`Case`] builder:
//!
//! ```
//! use claimrules::rules::RuleSet;
//! use claimrules::testing::Case;
//! use serde_json::json;
//!
//! let set = RuleSet::from_sources(
//!     vec![("roles".into(), r#"
//!         context.accessToken["https://example.com/roles"] = user.app_metadata.roles;
//!         if user.email_verified != true { deny("verify your email"); }
//!     "#.into())],
//!     json!({}),
//!     Default::default(),
//! ).unwrap();
//!
//! Case::new("admins get their roles")
//!     .user(json!({"user_id": "auth0|1", "email_verified": true,
//!                  "app_metadata": {"roles": ["admin"]}}))
//!     .expect_access_claim("https://example.com/roles", json!(["admin"]))
//!     .expect_absent("https://example.com/plan")
//!     .run(&set)
//!     .assert_passed();
//!
//! let result = Case::new("unverified users are denied")
//!     .user(json!({"user_id": "auth0|2", "email_verified": false, "app_metadata": {}}))
//!     .expect_denied_with("verify")
//!     .run(&set);
//! assert!(result.passed(), "{}", result.render(false));
//! ```

mod case;
mod case_file;
mod context;
mod coverage;
mod expect;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::rules::{LoadError, RuleSet, RuleSetOptions};

pub use case::{Case, CaseResult, Denied, Expect};
pub use context::{case_context, default_context, merge_deep, requested_scope};
pub use coverage::{Coverage, LineHits, RuleCoverage, SiteCoverage};
pub use expect::Failure;
pub use report::{color_enabled, render_json, render_junit, render_lcov, render_text};

/// Errors of loading a test suite. Each stops the run before any case runs (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestError {
    /// The rules folder did not load (compile error, bad `rules.toml`, not a folder).
    #[error("the rules did not load: {0}")]
    Rules(#[from] LoadError),
    /// The tests folder is missing or holds no case file.
    #[error("no test cases: {} holds no .toml, .json or .yaml case file", .0.display())]
    NoTests(PathBuf),
    /// A file could not be read.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A case file is invalid.
    #[error("{}", describe_invalid(path, *line, *column, key, message))]
    Invalid {
        /// The case file.
        path: PathBuf,
        /// 1-based line (0 when the parser gave none).
        line: usize,
        /// 1-based column (0 when the parser gave none).
        column: usize,
        /// The key, as a path such as `case[0].expect.denied` (empty for a syntax error).
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn describe_invalid(path: &Path, line: usize, column: usize, key: &str, message: &str) -> String {
    if key.is_empty() {
        format!(
            "{}:{line}:{column}: syntax error: {message}",
            path.display()
        )
    } else {
        format!("{}:{line}:{column}: key `{key}`: {message}", path.display())
    }
}

/// How the runner treats a claim the namespace rule drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// A dropped claim fails the case (naming rule and key) unless the case expects the warning.
    #[default]
    Strict,
    /// Dropped claims are only warnings, as on the server with `namespace_policy = "drop"`.
    Drop,
}

impl std::str::FromStr for NamespaceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(NamespaceMode::Strict),
            "drop" => Ok(NamespaceMode::Drop),
            other => Err(format!(
                "unknown namespace policy {other:?} (strict | drop)"
            )),
        }
    }
}

/// A case a filter left out.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedCase {
    /// Its name.
    pub name: String,
    /// Its file.
    pub file: Option<PathBuf>,
}

/// The results of running a suite.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// The cases that ran, in file and case order.
    pub results: Vec<CaseResult>,
    /// Cases the filter left out.
    pub skipped: Vec<SkippedCase>,
    /// The coverage hint.
    pub coverage: Coverage,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

impl SuiteReport {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Cases the filter skipped.
    pub fn skipped(&self) -> usize {
        self.skipped.len()
    }

    /// True when no case failed.
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// `N passed, N failed` plus `, N skipped` when a filter skipped some.
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.skipped() > 0 {
            s.push_str(&format!(", {} skipped", self.skipped()));
        }
        s
    }
}

/// Options of a suite run.
#[derive(Debug, Clone, Default)]
pub struct SuiteOptions {
    /// Runs only cases whose name or file name contains this text.
    pub filter: Option<String>,
    /// Strict (default) or drop namespace handling.
    pub namespace: NamespaceMode,
}

/// A rules folder's compiled rules and the cases of its `tests/` folder.
#[derive(Debug)]
pub struct TestSuite {
    set: RuleSet,
    cases: Vec<Case>,
}

impl TestSuite {
    /// Loads the rules in `dir` (recording coverage) and the cases in `dir/tests/`.
    pub fn load(dir: impl AsRef<Path>) -> Result<TestSuite, TestError> {
        let dir = dir.as_ref();
        let options = RuleSetOptions {
            coverage: true,
            ..Default::default()
        };
        let set = RuleSet::load_with(dir, options)?;
        Self::with_rules(set, &dir.join("tests"))
    }

    /// Uses an already built rule set and the case files in `tests_dir`.
    pub fn with_rules(set: RuleSet, tests_dir: &Path) -> Result<TestSuite, TestError> {
        let entries = std::fs::read_dir(tests_dir)
            .map_err(|_| TestError::NoTests(tests_dir.to_path_buf()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && case_file::is_case_file(p))
            .collect();
        if files.is_empty() {
            return Err(TestError::NoTests(tests_dir.to_path_buf()));
        }
        files.sort();
        let known: Vec<String> = set
            .rules()
            .iter()
            .filter(|r| r.enabled())
            .map(|r| r.name().to_owned())
            .collect();
        let mut cases = Vec::new();
        for f in &files {
            cases.extend(case_file::load_file(f, &known)?);
        }
        Ok(TestSuite { set, cases })
    }

    /// Builds a suite from a rule set and cases made in code.
    pub fn from_cases(set: RuleSet, cases: Vec<Case>) -> TestSuite {
        TestSuite { set, cases }
    }

    /// The cases, in file and case order.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// The rule set the cases run against.
    pub fn rules(&self) -> &RuleSet {
        &self.set
    }

    /// Runs every case in strict namespace mode.
    pub fn run(&self) -> SuiteReport {
        self.run_with(&SuiteOptions::default())
    }

    /// Runs the cases the filter selects.
    pub fn run_with(&self, opts: &SuiteOptions) -> SuiteReport {
        let started = Instant::now();
        let mut results = Vec::new();
        let mut skipped = Vec::new();
        for case in &self.cases {
            let selected = opts.filter.as_deref().is_none_or(|f| {
                case.name.contains(f)
                    || case
                        .file
                        .as_ref()
                        .and_then(|p| p.file_name())
                        .is_some_and(|n| n.to_string_lossy().contains(f))
            });
            if selected {
                results.push(case.run_with(&self.set, opts.namespace));
            } else {
                skipped.push(SkippedCase {
                    name: case.name.clone(),
                    file: case.file.clone(),
                });
            }
        }
        let coverage = Coverage::compute(&self.set, &results);
        SuiteReport {
            results,
            skipped,
            coverage,
            elapsed: started.elapsed(),
        }
    }
}
