//! Static checks of `claimrules check`, for mistakes that compile but can only fail at run
//! time: a call to a function that no rule helper, Rhai package, script `fn` or imported module
//! defines (with the Rhai name of a JavaScript method: "`indexOf` is JavaScript; use
//! `index_of`"), a JavaScript property (`.length`), a variable a script `fn` reads without
//! declaring it (`user`, `context`: functions see only their arguments and `configuration`),
//! and, as warnings, assignments to Auth0 platform fields ([`super::platform`]).
//!
//! The functions known are asked of the rule set's own engine, so a helper registered later
//! is known without a list to keep up to date.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use rhai::{ASTNode, Engine, Expr, Stmt, AST};
use serde::Serialize;

use super::sites::{self, line_col, Segment};
use super::{engine, modules, platform, CompiledRule, FolderContents, RuleSetOptions};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The rule fails at run time when it gets there: `check` fails.
    Error,
    /// Worth knowing; `check` still passes.
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem the static checks found, at a position of a rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The rule's name.
    pub rule: String,
    /// The rule's file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, with a hint.
    pub message: String,
}

/// Names the evaluator handles itself rather than as registered functions.
const KEYWORDS: &[&str] = &[
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_fn",
    "is_def_var",
];

/// Runs the static checks over the enabled rules of a folder that compile (compile errors are
/// [`super::RuleSet::check`]'s), in rule order, each rule's findings in source order.
pub fn lint(contents: &FolderContents, options: &RuleSetOptions) -> Vec<Finding> {
    let parts = engine::EngineParts {
        lib: Some(Arc::new(modules::LibResolver::new(contents.lib.clone()))),
        ..Default::default()
    };
    let engine = engine::build(&options.limits, &parts);
    let known = known_functions(&engine);
    let lib = module_functions(&engine, contents);
    let mut ignored: Vec<&str> = options
        .ignore_platform_fields
        .iter()
        .map(String::as_str)
        .collect();
    ignored.extend(contents.ignore_platform_fields.iter().map(String::as_str));
    let (rules, _) = super::compile::compile_all(&engine, contents);
    let mut findings = Vec::new();
    for rule in rules.iter().filter(|r| r.enabled) {
        let mut found = lint_rule(rule, &known, &lib, &ignored);
        found.sort_by_key(|f| (f.line, f.column));
        found.dedup_by(|a, b| a.line == b.line && a.column == b.column && a.message == b.message);
        findings.extend(found);
    }
    findings
}

/// Every function name the engine knows: rule helpers, Rhai packages, getters (`get$x`).
fn known_functions(engine: &Engine) -> HashSet<String> {
    engine
        .collect_fn_metadata(None, |f| Some(f.metadata.name.to_string()), true)
        .into_iter()
        .chain(KEYWORDS.iter().map(|k| (*k).to_owned()))
        .collect()
}

/// The public functions of each module under `lib/`, by import path (`lib/x`); a module that
/// does not compile is left out (loading reports it).
fn module_functions(
    engine: &Engine,
    contents: &FolderContents,
) -> HashMap<String, HashSet<String>> {
    contents
        .lib
        .iter()
        .filter_map(|m| {
            let ast = engine.compile(&m.source).ok()?;
            let names = ast
                .iter_functions()
                .filter(|f| f.access == rhai::FnAccess::Public)
                .map(|f| f.name.to_owned())
                .collect();
            Some((m.import_path.clone(), names))
        })
        .collect()
}

/// `import "path" as alias;` statements: alias → path.
fn imports(ast: &AST) -> HashMap<String, String> {
    let mut out = HashMap::new();
    sites::walk_top_level(ast, &mut |path| {
        if let Some(ASTNode::Stmt(Stmt::Import(x, _))) = path.last() {
            if let Expr::StringConstant(p, _) = &x.0 {
                if !x.1.name.is_empty() {
                    out.insert(x.1.name.to_string(), p.to_string());
                }
            }
        }
        true
    });
    out
}

/// Names declared anywhere in the nodes a walk visits (`let`, `const`, `for`, `catch`).
fn declared_in(path: &[ASTNode], names: &mut HashSet<String>) {
    match path.last() {
        Some(ASTNode::Stmt(Stmt::Var(x, _, _))) => {
            names.insert(x.0.name.to_string());
        }
        Some(ASTNode::Stmt(Stmt::For(x, _))) => {
            names.insert(x.0.name.to_string());
            if let Some(counter) = &x.1 {
                names.insert(counter.name.to_string());
            }
        }
        Some(ASTNode::Stmt(Stmt::TryCatch(x, _))) => {
            if let Expr::Variable(v, _, _) = &x.expr {
                names.insert(v.1.to_string());
            }
        }
        _ => {}
    }
}

fn lint_rule(
    rule: &CompiledRule,
    known: &HashSet<String>,
    lib: &HashMap<String, HashSet<String>>,
    ignored: &[&str],
) -> Vec<Finding> {
    let ast = &rule.ast;
    let mut findings = Vec::new();
    let mut report = |severity: Severity, (line, column): (usize, usize), message: String| {
        findings.push(Finding {
            severity,
            rule: rule.name.clone(),
            path: rule.path.clone(),
            line,
            column,
            message,
        });
    };
    let script_fns: HashSet<String> = ast.iter_functions().map(|f| f.name.to_owned()).collect();
    let mut variables = HashSet::new();
    sites::walk(ast, &mut |path| {
        declared_in(path, &mut variables);
        true
    });
    for def in ast.iter_fn_def() {
        variables.extend(def.params.iter().map(|p| p.to_string()));
    }
    let imports = imports(ast);

    // Calls and JavaScript properties, everywhere (function bodies included).
    let mut calls = Vec::new();
    let mut nots = Vec::new();
    sites::walk(ast, &mut |path| {
        match path.last() {
            // `!user.email_verified`: an error at run time when the field is missing.
            Some(ASTNode::Expr(Expr::FnCall(f, pos))) if f.name == "!" && f.args.len() == 1 => {
                let target = sites::chain(&f.args[0]).filter(|_| !ends_in_call(&f.args[0]));
                if let Some(target) = target {
                    let names: Vec<&str> = target
                        .iter()
                        .map(|s| match s {
                            Segment::Name(n) => n.as_str(),
                            Segment::Computed => "[…]",
                        })
                        .collect();
                    if names.len() > 1 && (names[0] == "user" || names[0] == "context") {
                        nots.push((names.join("."), *pos));
                    }
                }
            }
            Some(ASTNode::Stmt(Stmt::FnCall(f, pos)))
            | Some(ASTNode::Expr(Expr::FnCall(f, pos)))
            | Some(ASTNode::Expr(Expr::MethodCall(f, pos)))
                if !f.is_operator_call() && rhai::is_valid_identifier(&f.name) =>
            {
                let namespace = (!f.namespace.is_empty()).then(|| f.namespace.root().to_owned());
                calls.push((f.name.to_string(), namespace, *pos));
            }
            Some(ASTNode::Expr(Expr::Property(p, pos))) => {
                if let Some(hint) = super::hints::js_property(&p.2) {
                    calls.push((format!(".{}", p.2), Some(hint), *pos));
                }
            }
            _ => {}
        }
        true
    });
    for (name, namespace, pos) in calls {
        if let Some(property) = name.strip_prefix('.') {
            let hint = namespace.unwrap_or_default();
            report(
                Severity::Error,
                line_col(pos),
                format!("no property `.{property}` on strings, arrays or maps: {hint}"),
            );
            continue;
        }
        if let Some(alias) = namespace {
            let Some(module) = imports.get(&alias) else {
                continue;
            };
            let Some(fns) = lib.get(module) else { continue };
            if !fns.contains(&name) {
                report(
                    Severity::Error,
                    line_col(pos),
                    format!(
                        "unknown function `{alias}::{name}`: module {module:?} has no public `fn {name}`"
                    ),
                );
            }
            continue;
        }
        if known.contains(&name) || script_fns.contains(&name) || variables.contains(&name) {
            continue;
        }
        let hint = super::hints::js_function(&name)
            .or_else(|| closest(&name, known.iter().chain(&script_fns)).map(|n| format!("did you mean `{n}`?")))
            .unwrap_or_else(|| {
                "no rule helper, Rhai built-in or `fn` of this rule has that name (README \"Helpers\", \"Rhai built-ins\")".into()
            });
        report(
            Severity::Error,
            line_col(pos),
            format!("unknown function `{name}`: {hint}"),
        );
    }

    for (field, pos) in nots {
        report(
            Severity::Warning,
            line_col(pos),
            format!(
                "`!{field}` fails at run time when the field is missing or not a bool (`!` takes a bool, a missing field is `()`): write `{field} != true` for a flag, `({field} ?? \"\") == \"\"` for a missing or empty string"
            ),
        );
    }

    // Variables a script function reads without declaring them.
    for def in ast.iter_fn_def() {
        let mut declared: HashSet<String> = def.params.iter().map(|p| p.to_string()).collect();
        let mut reads = Vec::new();
        sites::walk_function(ast, def, &mut |path| {
            declared_in(path, &mut declared);
            if let Some(ASTNode::Expr(Expr::Variable(v, _, pos))) = path.last() {
                if v.2.is_empty() {
                    reads.push((v.1.to_string(), *pos));
                }
            }
            true
        });
        let anonymous = def.name.starts_with("anon$");
        for (name, pos) in reads {
            if (name == "user" || name == "context") && !declared.contains(&name) {
                let which = if anonymous {
                    "a closure".to_owned()
                } else {
                    format!("function `{}`", def.name)
                };
                report(
                    Severity::Error,
                    line_col(pos),
                    format!(
                        "{which} reads `{name}`, which it does not declare: a script function sees only its arguments (and `configuration`); pass it in: `fn {}({name}, …)` called as `{}({name}, …)`",
                        def.name, def.name
                    ),
                );
            }
        }
    }

    // Assignments to Auth0 platform fields.
    for a in sites::assignments(ast) {
        let [Segment::Name(root), Segment::Name(field), ..] = a.target.as_slice() else {
            continue;
        };
        if root != "context" || ignored.contains(&field.as_str()) {
            continue;
        }
        if platform::PLATFORM_FIELDS.iter().any(|(n, _)| n == field) {
            report(Severity::Warning, line_col(a.pos), platform::message(field));
        }
    }
    findings
}

/// Whether an access chain ends in a method call (`user.roles.contains(x)`: a bool).
fn ends_in_call(expr: &Expr) -> bool {
    match expr {
        Expr::Dot(b, _, _) | Expr::Index(b, _, _) => ends_in_call(&b.rhs),
        Expr::MethodCall(..) | Expr::FnCall(..) => true,
        _ => false,
    }
}

/// The known name closest to `name` (at most two edits, or the same name in another case).
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let lower = name.to_lowercase().replace('_', "");
    known
        .filter(|k| !k.contains('$'))
        .map(|k| {
            let d = if k.to_lowercase().replace('_', "") == lower {
                0
            } else {
                edit_distance(name, k)
            };
            (d, k)
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, k)| (*d, k.len()))
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = if ca == cb {
                prev
            } else {
                1 + prev.min(row[j]).min(here)
            };
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_swaps() {
        assert_eq!(edit_distance("starts_wth", "starts_with"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn closest_ignores_case_and_underscores_first() {
        let known = ["sub_string".to_string(), "split".to_string()];
        assert_eq!(closest("zzz", known.iter()), None);
        assert_eq!(closest("SubString", known.iter()), Some("sub_string"));
        assert_eq!(closest("splt", known.iter()), Some("split"));
    }
}
