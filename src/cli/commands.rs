//! The rule author's commands: `run`, `check`, `new` and `test`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use claimrules::rules::lint::Severity;
use claimrules::rules::{read_folder, RuleSet, RuleSetOptions};
use claimrules::testing::{
    color_enabled, render_json, render_junit, render_lcov, render_text, NamespaceMode,
    SuiteOptions, TestSuite,
};

use super::{CliError, Exit};

/// Reads a JSON object from `path` (`what` names it in errors).
fn read_json(path: &Path, what: &'static str) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadInput {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| CliError::InvalidJson {
        path: path.to_owned(),
        source,
    })?;
    if !value.is_object() {
        return Err(CliError::NotAnObject {
            what,
            path: path.to_owned(),
        });
    }
    Ok(value)
}

/// `claimrules run`: the pipeline once, the outcome as JSON on stdout.
pub fn run(user: &Path, context: Option<&Path>, rules: &Path) -> Result<Exit, CliError> {
    let user = read_json(user, "user")?;
    let mut ctx = Value::from(claimrules::Context::default());
    if let Some(p) = context {
        claimrules::testing::merge_deep(&mut ctx, &read_json(p, "context")?);
    }
    let set = RuleSet::load(rules)?;
    match set.run(user, ctx) {
        Ok(outcome) => {
            let pretty = json!({
                "access_token": outcome.access_token,
                "id_token": outcome.id_token,
                "scope": outcome.scope,
                "logs": outcome.logs,
                "warnings": outcome.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "user": outcome.user,
                "metadata": outcome.metadata,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&pretty).unwrap_or_default()
            );
            Ok(Exit::Success)
        }
        Err(e) => {
            eprintln!("{}: {e}", if e.is_denial() { "denied" } else { "error" });
            Ok(Exit::Failures)
        }
    }
}

/// `claimrules check`: compile errors and static checks, each on stderr.
pub fn check(rules: &Path) -> Result<Exit, CliError> {
    let contents = read_folder(rules)?;
    let errors = RuleSet::check(&contents, &RuleSetOptions::default());
    for e in &errors {
        eprintln!("error: {e}");
    }
    let findings = claimrules::rules::lint::lint(&contents, &RuleSetOptions::default());
    for f in &findings {
        eprintln!("{}: {f}", f.severity);
    }
    let is_error = |f: &&claimrules::rules::lint::Finding| f.severity == Severity::Error;
    let failing: std::collections::BTreeSet<&str> = findings
        .iter()
        .filter(is_error)
        .map(|f| f.rule.as_str())
        .collect();
    let warnings = findings.len() - findings.iter().filter(is_error).count();
    let enabled = contents.rules.iter().filter(|r| r.enabled).count();
    if !errors.is_empty() {
        eprintln!("{} of {enabled} rules failed to compile", errors.len());
    }
    if !failing.is_empty() {
        eprintln!(
            "{} of {enabled} rules failed the static checks (each would fail at run time)",
            failing.len()
        );
    }
    if !errors.is_empty() || !failing.is_empty() {
        return Ok(Exit::Failures);
    }
    match warnings {
        0 => println!("{enabled} rules ok"),
        1 => println!("{enabled} rules ok, 1 warning"),
        n => println!("{enabled} rules ok, {n} warnings"),
    }
    Ok(Exit::Success)
}

/// `claimrules new`: a rule and its cases that pass at once.
pub fn new_rule(rules: &Path, name: &str) -> Result<Exit, CliError> {
    let done = claimrules::rules::scaffold::new_rule(rules, name)?;
    println!("wrote {}", done.rule.display());
    println!("wrote {}", done.cases.display());
    if let Some(manifest) = &done.manifest {
        println!("listed {name} last in {}", manifest.display());
    }
    println!("next: claimrules test {}", rules.display());
    Ok(Exit::Success)
}

/// Settings of `claimrules test`.
pub struct TestArgs {
    rules: PathBuf,
    options: SuiteOptions,
    junit: Option<PathBuf>,
    coverage: Option<PathBuf>,
    json: bool,
    color: bool,
}

impl TestArgs {
    /// The suite of `rules`, optionally filtered; `drop_namespace` selects `--namespace-policy
    /// drop`. Colours follow the terminal and `NO_COLOR`.
    pub fn new(rules: PathBuf, filter: Option<String>, drop_namespace: bool) -> TestArgs {
        TestArgs {
            rules,
            options: SuiteOptions {
                filter,
                namespace: if drop_namespace {
                    NamespaceMode::Drop
                } else {
                    NamespaceMode::Strict
                },
            },
            junit: None,
            coverage: None,
            json: false,
            color: color_enabled(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ),
        }
    }

    /// `--junit FILE`.
    pub fn junit(mut self, path: Option<PathBuf>) -> TestArgs {
        self.junit = path;
        self
    }

    /// `--coverage FILE`.
    pub fn coverage(mut self, path: Option<PathBuf>) -> TestArgs {
        self.coverage = path;
        self
    }

    /// `--format json`.
    pub fn json(mut self, json: bool) -> TestArgs {
        self.json = json;
        self
    }
}

fn write(path: &Path, text: String) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|source| CliError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Loads and runs the suite once and prints the report.
pub fn test_once(args: &TestArgs) -> Result<Exit, CliError> {
    let suite = TestSuite::load(&args.rules)?;
    let report = suite.run_with(&args.options);
    if let Some(path) = &args.coverage {
        write(path, render_lcov(&report))?;
    }
    if let Some(path) = &args.junit {
        write(path, render_junit(&report))?;
    }
    if args.json {
        println!("{}", render_json(&report));
    } else {
        print!("{}", render_text(&report, args.color));
    }
    Ok(if report.success() {
        Exit::Success
    } else {
        Exit::Failures
    })
}

/// Runs the suite, then again after every change under the rules folder (tests included);
/// returns only when the watch ends.
pub fn test_watch(args: &TestArgs) -> Result<Exit, CliError> {
    let (tx, rx) = std::sync::mpsc::channel();
    // Watch before the first run, so no edit made after its summary goes unseen.
    let _watch = claimrules::rules::hot::watch_folder(&args.rules, move || {
        let _ = tx.send(());
    })?;
    // A run's own failure (a broken case file mid-edit) is reported and watched past.
    let report = |r: Result<Exit, CliError>| {
        if let Err(e) = r {
            eprintln!("error: {e}");
        }
    };
    report(test_once(args));
    while rx.recv().is_ok() {
        // Editors write in bursts; one rerun per burst.
        while rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_ok()
        {}
        if args.json {
            // Keep stdout one JSON document per line.
            eprintln!("-- change detected, rerunning");
        } else {
            println!("\n-- change detected, rerunning");
        }
        report(test_once(args));
    }
    Ok(Exit::Usage)
}
