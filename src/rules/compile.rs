//! Compiling rule sources once, against the scope they run in, reporting every error with its
//! file, line and column (those of an imported module's file when the error is there).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope, AST};

use super::classify::{describe, root_cause};
use super::{hints, modules, CompiledRule, FolderContents, LoadError, RuleSource};

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
pub(super) fn compile_all(
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
            metrics: OnceLock::new(),
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
