//! Shared code between rules: `import "lib/crypto" as c;` loads `rules/lib/crypto.rhai`.
//!
//! Only modules found under the rules folder's `lib/` when the set loads can be imported; the
//! loader refuses symlinks that leave the folder, and the resolver refuses every path that is
//! not `lib/` followed by plain name segments (no `..`, no absolute paths, no backslashes). Each
//! module is compiled and evaluated once per load, the first time a rule imports it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};

/// One module file under `lib/`, before compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibSource {
    /// The import path: `lib/crypto` for `lib/crypto.rhai`, `lib/a/b` for `lib/a/b.rhai`.
    pub import_path: String,
    /// The file.
    pub path: PathBuf,
    /// Its Rhai source.
    pub source: String,
}

/// The `lib/` modules of one rule set, compiled on first import and kept for the set's life.
#[derive(Debug, Default)]
pub struct LibResolver {
    sources: HashMap<String, LibSource>,
    compiled: Mutex<HashMap<String, Shared<Module>>>,
    /// Modules being evaluated right now, to refuse import cycles instead of recursing.
    loading: Mutex<HashSet<String>>,
}

impl LibResolver {
    /// A resolver over these module files.
    pub fn new(sources: Vec<LibSource>) -> LibResolver {
        LibResolver {
            sources: sources
                .into_iter()
                .map(|s| (s.import_path.clone(), s))
                .collect(),
            ..Default::default()
        }
    }

    /// The file behind an import path, when there is one.
    pub fn file(&self, import_path: &str) -> Option<&LibSource> {
        self.sources.get(import_path)
    }
}

/// Whether `path` is an import path a rule may use: `lib/` then name segments of letters,
/// digits, `_` and `-`.
pub fn valid_import_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("lib/") else {
        return false;
    };
    !rest.is_empty()
        && rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// The engine's module resolver: a rule set's [`LibResolver`], or none (every import refused).
#[derive(Debug, Default, Clone)]
pub(crate) struct Resolver(pub Arc<LibResolver>);

/// The error every refused import gets; its text names what may be imported.
fn refused(path: &str, why: &str, pos: Position) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorSystem(
        format!(
            "import {path:?}: {why}; rules import only modules under rules/lib/ \
             (`import \"lib/crypto\" as c;` loads rules/lib/crypto.rhai)"
        ),
        Box::new(std::io::Error::other("import refused")),
    ))
    .map_position(pos)
}

trait MapPosition {
    fn map_position(self, pos: Position) -> Self;
}

impl MapPosition for Box<EvalAltResult> {
    fn map_position(mut self, pos: Position) -> Self {
        self.set_position(pos);
        self
    }
}

impl ModuleResolver for Resolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        if !valid_import_path(path) {
            return Err(refused(path, "not a module path", pos));
        }
        let lib = &self.0;
        if let Some(m) = lib.compiled.lock().ok().and_then(|c| c.get(path).cloned()) {
            return Ok(m);
        }
        let Some(file) = lib.sources.get(path) else {
            return Err(refused(path, "no such module", pos));
        };
        {
            let Ok(mut loading) = lib.loading.lock() else {
                return Err(refused(path, "the module table is unusable", pos));
            };
            if !loading.insert(path.to_owned()) {
                return Err(refused(path, "modules import each other in a cycle", pos));
            }
        }
        let result = (|| {
            let mut ast = engine
                .compile(&file.source)
                .map_err(|e| Box::new(EvalAltResult::from(e)))?;
            ast.set_source(path);
            Module::eval_ast_as_new(Scope::new(), &ast, engine)
        })();
        if let Ok(mut loading) = lib.loading.lock() {
            loading.remove(path);
        }
        let module: Shared<Module> = result
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_owned(), e, pos)))?
            .into();
        if let Ok(mut c) = lib.compiled.lock() {
            c.insert(path.to_owned(), module.clone());
        }
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::valid_import_path;

    #[test]
    fn only_plain_paths_under_lib_are_import_paths() {
        for ok in ["lib/crypto", "lib/a/b", "lib/x-1_2"] {
            assert!(valid_import_path(ok), "{ok}");
        }
        for bad in [
            "../x",
            "lib/../x",
            "lib/./x",
            "/etc/passwd",
            "lib/",
            "lib//x",
            "crypto",
            "lib\\x",
            "lib/x.rhai",
            "lib/ x",
            "LIB/x",
            "lib/../../etc/passwd",
        ] {
            assert!(!valid_import_path(bad), "{bad}");
        }
    }
}
