//! Hot reload: a rules folder watched with `notify`, recompiled on change and swapped in
//! atomically, keeping the last good rule set when an edit does not compile.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use serde::Serialize;

use crate::rules::{LoadError, RuleSet, RuleSetOptions};

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The folder could not be watched.
    #[error("cannot watch {}: {message}", path.display())]
    Watch {
        /// The folder.
        path: PathBuf,
        /// The notify error.
        message: String,
    },
}

/// Debounce window of the folder watcher.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Keeps a folder watch alive; dropping it stops watching.
pub struct FolderWatch {
    _debouncer: Box<dyn std::any::Any + Send>,
}

/// Calls `on_change` after each debounced batch of changes under `dir` that touches a `*.rhai`,
/// `*.toml`, `*.json` or `*.yaml`/`*.yml` file. Watches the folder, not the files, so editors'
/// save-by-rename is seen; access events are ignored.
pub fn watch_folder(
    dir: &Path,
    on_change: impl Fn() + Send + 'static,
) -> Result<FolderWatch, WatchError> {
    let err = |e: notify::Error| WatchError::Watch {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        let Ok(events) = res else { return };
        let relevant = events.iter().any(|ev| {
            !matches!(ev.event.kind, notify::EventKind::Access(_))
                && ev.event.paths.iter().any(|p| {
                    p.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| matches!(x, "rhai" | "toml" | "json" | "yaml" | "yml"))
                })
        });
        if relevant {
            on_change();
        }
    })
    .map_err(err)?;
    debouncer
        .watch(dir, RecursiveMode::Recursive)
        .map_err(err)?;
    Ok(FolderWatch {
        _debouncer: Box::new(debouncer),
    })
}

/// One loaded version of a rule set.
#[derive(Debug)]
pub struct LoadedRules {
    /// Increases by one with every successful (re)load, starting at 1.
    pub version: u64,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// The compiled rules.
    pub set: RuleSet,
}

/// The state of a [`HotRules`], as `GET /rules/status` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct RulesStatus {
    /// The serving version.
    pub version: u64,
    /// When it was loaded (unix seconds).
    pub loaded_at: u64,
    /// Its rule names in order.
    pub rules: Vec<String>,
    /// The error of the last failed reload, if the last attempt failed.
    pub last_error: Option<String>,
}

struct Inner {
    dir: Option<PathBuf>,
    options: RuleSetOptions,
    current: ArcSwap<LoadedRules>,
    last_error: Mutex<Option<String>>,
    watch: Mutex<Option<FolderWatch>>,
}

/// A rule set that can be replaced while it serves. Each pipeline run takes one version with
/// [`HotRules::current`] and uses it from start to end.
#[derive(Clone)]
pub struct HotRules {
    inner: Arc<Inner>,
}

impl HotRules {
    /// Loads `dir` (failing if it does not load); call [`HotRules::watch`] to follow changes.
    pub fn load(dir: impl Into<PathBuf>, options: RuleSetOptions) -> Result<HotRules, LoadError> {
        let dir = dir.into();
        let set = RuleSet::load_with(&dir, options.clone())?;
        Ok(Self::new(Some(dir), set, options))
    }

    /// Wraps a fixed rule set (embedding, tests); [`HotRules::reload`] then keeps it.
    pub fn fixed(set: RuleSet) -> HotRules {
        let options = set.options().clone();
        Self::new(None, set, options)
    }

    fn new(dir: Option<PathBuf>, set: RuleSet, options: RuleSetOptions) -> HotRules {
        HotRules {
            inner: Arc::new(Inner {
                dir,
                options,
                current: ArcSwap::from_pointee(LoadedRules {
                    version: 1,
                    loaded_at: SystemTime::now(),
                    set,
                }),
                last_error: Mutex::new(None),
                watch: Mutex::new(None),
            }),
        }
    }

    /// The version serving now.
    pub fn current(&self) -> Arc<LoadedRules> {
        self.inner.current.load_full()
    }

    /// Recompiles the folder and swaps the new set in; on error the current set keeps serving
    /// and the error is recorded (and logged with file, line and column).
    pub fn reload(&self) -> Result<u64, LoadError> {
        let Some(dir) = &self.inner.dir else {
            return Ok(self.current().version);
        };
        match RuleSet::load_with(dir, self.inner.options.clone()) {
            Ok(set) => {
                let version = self.current().version + 1;
                self.inner.current.store(Arc::new(LoadedRules {
                    version,
                    loaded_at: SystemTime::now(),
                    set,
                }));
                if let Ok(mut e) = self.inner.last_error.lock() {
                    *e = None;
                }
                tracing::info!(version, "rules reloaded");
                Ok(version)
            }
            Err(err) => {
                tracing::error!(error = %err, "rules reload failed; the last good rule set keeps serving");
                if let Ok(mut e) = self.inner.last_error.lock() {
                    *e = Some(err.to_string());
                }
                Err(err)
            }
        }
    }

    /// Starts watching the rules folder; changes reload the set. Idempotent.
    pub fn watch(&self) -> Result<(), WatchError> {
        let Some(dir) = &self.inner.dir else {
            return Ok(());
        };
        let mut slot = self.inner.watch.lock().map_err(|_| WatchError::Watch {
            path: dir.clone(),
            message: "watch state poisoned".into(),
        })?;
        if slot.is_none() {
            let me = self.clone();
            *slot = Some(watch_folder(dir, move || {
                let _ = me.reload();
            })?);
        }
        Ok(())
    }

    /// Version, load time, rule names and last error.
    pub fn status(&self) -> RulesStatus {
        let cur = self.current();
        RulesStatus {
            version: cur.version,
            loaded_at: cur
                .loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            rules: cur.set.names(),
            last_error: self.inner.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}
