//! Reading a rules folder: `rules.toml` (order, `enabled`, `[configuration]`,
//! `configuration_env`, `ignore_platform_fields`, `[http]`, `[cache]`) or, without it, every `*.rhai` file in file-name
//! order; and the modules under `lib/`, which are imported by rules, never run as rules.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cache::CacheConfig;
use super::http::HttpConfig;
use super::modules::LibSource;
use super::LoadError;

/// `rules/rules.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    configuration: toml::Table,
    /// Configuration keys read from environment variables: `KEY = "ENV_VAR"`.
    #[serde(default)]
    configuration_env: std::collections::BTreeMap<String, String>,
    /// Auth0 platform fields rules may set without failing the login (see `platform`).
    #[serde(default)]
    ignore_platform_fields: Vec<String>,
    http: Option<HttpConfig>,
    cache: Option<CacheConfig>,
    #[serde(default)]
    rule: Vec<ManifestRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestRule {
    name: String,
    file: Option<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// One rule as found on disk, before compilation.
#[derive(Debug, Clone)]
pub struct RuleSource {
    /// The rule's name (file stem, or `name` in `rules.toml`).
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// Its Rhai source.
    pub source: String,
    /// Whether the rule runs.
    pub enabled: bool,
}

/// Everything a rules folder describes.
#[derive(Debug, Clone, Default)]
pub struct FolderContents {
    /// Rules in run order, disabled ones included.
    pub rules: Vec<RuleSource>,
    /// The `[configuration]` table as JSON, with the `configuration_env` values read.
    pub configuration: serde_json::Value,
    /// The folder, when read from one (relative paths such as `[http] ca_file` start there).
    pub dir: Option<PathBuf>,
    /// The `[http]` table.
    pub http: Option<HttpConfig>,
    /// The `[cache]` table.
    pub cache: Option<CacheConfig>,
    /// The modules under `lib/`.
    pub lib: Vec<LibSource>,
    /// `ignore_platform_fields` of `rules.toml`: Auth0 platform fields (`multifactor`, …) that
    /// rules may set without failing the login.
    pub ignore_platform_fields: Vec<String>,
}

/// Reads a rules folder without compiling anything.
pub fn read_folder(dir: &Path) -> Result<FolderContents, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::NotAFolder(dir.to_path_buf()));
    }
    let manifest_path = dir.join("rules.toml");
    if manifest_path.is_file() {
        let text = read(&manifest_path)?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| LoadError::Manifest {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let mut configuration =
            serde_json::to_value(&manifest.configuration).map_err(|e| LoadError::Manifest {
                path: manifest_path.clone(),
                message: e.to_string(),
            })?;
        for (key, var) in &manifest.configuration_env {
            // A secret need not sit in the file; a missing variable fails the load loudly
            // rather than letting rules run with an empty key.
            let value = std::env::var(var).map_err(|_| LoadError::Manifest {
                path: manifest_path.clone(),
                message: format!(
                    "configuration_env.{key}: the environment variable {var:?} is not set (or not UTF-8)"
                ),
            })?;
            if let Some(m) = configuration.as_object_mut() {
                m.insert(key.clone(), serde_json::Value::String(value));
            }
        }
        let mut http = manifest.http;
        if let Some(ca) = http.as_mut().and_then(|h| h.ca_file.as_mut()) {
            if ca.is_relative() {
                *ca = dir.join(&*ca);
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut rules = Vec::with_capacity(manifest.rule.len());
        for r in manifest.rule {
            if !seen.insert(r.name.clone()) {
                return Err(LoadError::Manifest {
                    path: manifest_path.clone(),
                    message: format!("rule {:?} is listed twice", r.name),
                });
            }
            let file = r.file.unwrap_or_else(|| format!("{}.rhai", r.name));
            let path = dir.join(&file);
            let source = read(&path)?;
            rules.push(RuleSource {
                name: r.name,
                path,
                source,
                enabled: r.enabled,
            });
        }
        return Ok(FolderContents {
            rules,
            configuration,
            dir: Some(dir.to_path_buf()),
            http,
            cache: manifest.cache,
            lib: read_lib(dir)?,
            ignore_platform_fields: manifest.ignore_platform_fields,
        });
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LoadError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    paths.sort();
    let rules = paths
        .into_iter()
        .map(|path| {
            let source = read(&path)?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(RuleSource {
                name,
                path,
                source,
                enabled: true,
            })
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    Ok(FolderContents {
        rules,
        configuration: serde_json::Value::Object(Default::default()),
        dir: Some(dir.to_path_buf()),
        lib: read_lib(dir)?,
        ..Default::default()
    })
}

/// Every `*.rhai` file under `dir/lib/`, as importable modules. A symlink (file or folder)
/// that resolves outside the rules folder is refused: modules come from the folder only.
fn read_lib(dir: &Path) -> Result<Vec<LibSource>, LoadError> {
    let lib = dir.join("lib");
    if !lib.exists() {
        return Ok(Vec::new());
    }
    let root = dir.canonicalize().map_err(|e| io_error(dir, &e))?;
    let mut out = Vec::new();
    let mut pending = vec![lib];
    while let Some(folder) = pending.pop() {
        let real = folder.canonicalize().map_err(|e| io_error(&folder, &e))?;
        if !real.starts_with(&root) {
            return Err(outside(&folder));
        }
        let entries = std::fs::read_dir(&folder).map_err(|e| io_error(&folder, &e))?;
        for entry in entries {
            let path = entry.map_err(|e| io_error(&folder, &e))?.path();
            let real = path.canonicalize().map_err(|e| io_error(&path, &e))?;
            if !real.starts_with(&root) {
                return Err(outside(&path));
            }
            if real.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "rhai") {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push(LibSource {
                    import_path: rel,
                    source: read(&path)?,
                    path,
                });
            }
        }
    }
    out.sort_by(|a, b| a.import_path.cmp(&b.import_path));
    Ok(out)
}

fn io_error(path: &Path, e: &std::io::Error) -> LoadError {
    LoadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn outside(path: &Path) -> LoadError {
    LoadError::Io {
        path: path.to_path_buf(),
        message: "a symlink out of the rules folder; modules must live under rules/lib/".into(),
    }
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
