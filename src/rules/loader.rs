//! Reading a rules folder: `rules.toml` (order, `enabled`, `[configuration]`) or, without it,
//! every `*.rhai` file in file-name order.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::LoadError;

/// `rules/rules.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    configuration: toml::Table,
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
#[derive(Debug, Clone)]
pub struct FolderContents {
    /// Rules in run order, disabled ones included.
    pub rules: Vec<RuleSource>,
    /// The `[configuration]` table as JSON.
    pub configuration: serde_json::Value,
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
        let configuration =
            serde_json::to_value(&manifest.configuration).map_err(|e| LoadError::Manifest {
                path: manifest_path.clone(),
                message: e.to_string(),
            })?;
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
    })
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
