//! Hot reload: a rules folder watched with `notify`, recompiled on change and swapped in
//! atomically, keeping the last good rule set when an edit does not compile.
//!
//! Every pipeline run takes one [`LoadedRules`] with [`HotRules::current`] and uses it from start
//! to end, so a run never sees half of a rule set. Reloads are serialised: the last reload after
//! a burst of changes always reads the folder as it is after the last change.
//!
//! ```
//! use claimrules::rules::RuleSet;
//! use claimrules::rules::HotRules;
//! use serde_json::json;
//!
//! let v1 = RuleSet::from_sources(
//!     vec![("a".into(), r#"context.accessToken["https://example.com/v"] = 1;"#.into())],
//!     json!({}),
//!     Default::default(),
//! ).unwrap();
//! let hot = HotRules::fixed(v1);
//! let v2 = RuleSet::from_sources(
//!     vec![("a".into(), r#"context.accessToken["https://example.com/v"] = 2;"#.into())],
//!     json!({}),
//!     Default::default(),
//! ).unwrap();
//! assert_eq!(hot.replace(v2), 2);
//! let now = hot.current();
//! let out = now.set.run(json!({"user_id": "u"}), json!({})).unwrap();
//! assert_eq!(out.access_token["https://example.com/v"], json!(2));
//! assert_eq!(hot.status().version, 2);
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use serde::Serialize;
use serde_json::Value;

use crate::rules::{read_folder, FolderContents, LoadError, RuleSet, RuleSetOptions};

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The folder could not be watched.
    #[error("cannot watch {}: {message}", path.display())]
    Watch {
        /// The folder.
        path: PathBuf,
        /// The notify error.
        message: String,
    },
    /// [`HotRules::wait_for`] gave up.
    #[error("the rule set did not reach the awaited state within {0:?}")]
    Timeout(Duration),
}

/// Debounce window of the folder watcher: a batch is delivered once no new event arrived for a
/// path during this long. Editors write a file in several syscalls (or write-then-rename); 50 ms
/// folds those into one reload while keeping the write-to-effect latency well under 250 ms.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// How often the debouncer checks for batches that are due (at most [`DEBOUNCE`]).
pub const TICK_RATE: Duration = Duration::from_millis(10);

/// Keeps a folder watch alive; dropping it stops watching.
pub struct FolderWatch {
    _debouncer: Box<dyn std::any::Any + Send>,
}

impl std::fmt::Debug for FolderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatch").finish_non_exhaustive()
    }
}

/// Calls `on_change` after each debounced batch of changes under `dir` (recursively): files
/// created, modified, removed or renamed, including editors' save-by-rename (the folder is
/// watched, not the files, so a replaced inode is seen). Pure access events (open, read, close)
/// are ignored. When the watcher reports an error (e.g. its event queue overflowed), `on_change`
/// is called too, since events may have been lost and a rescan is the safe answer.
pub fn watch_folder(
    dir: &Path,
    on_change: impl Fn() + Send + 'static,
) -> Result<FolderWatch, WatchError> {
    let err = |e: notify::Error| WatchError::Watch {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut debouncer = new_debouncer(
        DEBOUNCE,
        Some(TICK_RATE),
        move |res: DebounceEventResult| match res {
            Ok(events) => {
                if events
                    .iter()
                    .any(|ev| !matches!(ev.event.kind, notify::EventKind::Access(_)))
                {
                    on_change();
                }
            }
            Err(errors) => {
                for e in &errors {
                    tracing::warn!(error = %e, "rules folder watcher error; rescanning");
                }
                on_change();
            }
        },
    )
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
    /// Increases by one with every rule set swapped in, starting at 1.
    pub version: u64,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// The compiled rules.
    pub set: RuleSet,
}

/// The state of a [`HotRules`], as `GET /rules/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesStatus {
    /// The serving version.
    pub version: u64,
    /// When it was loaded (unix seconds).
    pub loaded_at: u64,
    /// Its rule names in order.
    pub rules: Vec<String>,
    /// The error of the last reload attempt, when that attempt failed (`path:line:column:
    /// message` for a compile error). Cleared by the next successful attempt.
    pub last_error: Option<String>,
    /// Reload attempts finished so far (successful, unchanged or failed); lets a waiter tell
    /// that a reload it caused has been processed even when it changed nothing.
    pub attempts: u64,
}

#[derive(Debug, Default)]
struct AttemptState {
    last_error: Option<String>,
    attempts: u64,
}

struct Inner {
    dir: Option<PathBuf>,
    options: RuleSetOptions,
    current: ArcSwap<LoadedRules>,
    /// Serialises reloads and swaps, so version numbers are unique and a reload that starts
    /// after a change always reads that change (no lost updates between concurrent reloads).
    reload_lock: Mutex<()>,
    attempts: Mutex<AttemptState>,
    status_tx: tokio::sync::watch::Sender<RulesStatus>,
    watch: Mutex<Option<FolderWatch>>,
}

/// A rule set that can be replaced while it serves. Each pipeline run takes one version with
/// [`HotRules::current`] and uses it from start to end. Cloning is cheap (shared state).
#[derive(Clone)]
pub struct HotRules {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HotRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotRules")
            .field("dir", &self.inner.dir)
            .field("version", &self.current().version)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the guarded state is
/// always left consistent, so poison carries no meaning here).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_secs(t: SystemTime) -> u64 {
    u64::try_from(crate::model::time::unix_seconds(t)).unwrap_or(0)
}

impl HotRules {
    /// Loads `dir` (failing if it does not load); call [`HotRules::watch`] to follow changes.
    pub fn load(dir: impl Into<PathBuf>, options: RuleSetOptions) -> Result<HotRules, LoadError> {
        let dir = dir.into();
        let set = RuleSet::load_with(&dir, options.clone())?;
        Ok(Self::new(Some(dir), set, options))
    }

    /// Wraps a rule set that has no folder (embedding, tests): [`HotRules::reload`] keeps it and
    /// [`HotRules::watch`] does nothing; [`HotRules::replace`] still swaps sets in.
    pub fn fixed(set: RuleSet) -> HotRules {
        let options = set.options().clone();
        Self::new(None, set, options)
    }

    fn new(dir: Option<PathBuf>, set: RuleSet, options: RuleSetOptions) -> HotRules {
        let loaded = LoadedRules {
            version: 1,
            loaded_at: SystemTime::now(),
            set,
        };
        let status = RulesStatus {
            version: 1,
            loaded_at: unix_secs(loaded.loaded_at),
            rules: loaded.set.names(),
            last_error: None,
            attempts: 0,
        };
        HotRules {
            inner: Arc::new(Inner {
                dir,
                options,
                current: ArcSwap::from_pointee(loaded),
                reload_lock: Mutex::new(()),
                attempts: Mutex::new(AttemptState::default()),
                status_tx: tokio::sync::watch::Sender::new(status),
                watch: Mutex::new(None),
            }),
        }
    }

    /// The folder this rule set is loaded from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// The version serving now. Hold the returned `Arc` for the whole pipeline run.
    pub fn current(&self) -> Arc<LoadedRules> {
        self.inner.current.load_full()
    }

    /// Rereads and recompiles the folder and swaps the new set in, returning the serving
    /// version. When the folder's rules and configuration are unchanged nothing is swapped and
    /// the version stays. On error the current set keeps serving, the error is recorded (see
    /// [`HotRules::status`]) and logged with file, line and column.
    pub fn reload(&self) -> Result<u64, LoadError> {
        let Some(dir) = &self.inner.dir else {
            return Ok(self.current().version);
        };
        let _serial = lock(&self.inner.reload_lock);
        let current = self.current();
        let loaded = read_folder(dir).and_then(|contents| {
            if same_contents(&current.set, &contents) {
                Ok(None)
            } else {
                RuleSet::compile(contents, self.inner.options.clone()).map(Some)
            }
        });
        match loaded {
            Ok(None) => {
                tracing::debug!(
                    version = current.version,
                    "rules folder changed nothing that matters; keeping the set"
                );
                self.finish_attempt(None);
                metrics::counter!("claimrules_rules_reloads_total", "result" => "ok").increment(1);
                Ok(current.version)
            }
            Ok(Some(set)) => {
                let version = self.swap_locked(set);
                self.finish_attempt(None);
                metrics::counter!("claimrules_rules_reloads_total", "result" => "ok").increment(1);
                metrics::gauge!("claimrules_rules_last_reload_failed").set(0.0);
                Ok(version)
            }
            Err(err) => {
                log_load_error(&err);
                self.finish_attempt(Some(err.to_string()));
                metrics::counter!("claimrules_rules_reloads_total", "result" => "failed")
                    .increment(1);
                metrics::gauge!("claimrules_rules_last_reload_failed").set(1.0);
                // The rule of the last error, a bounded label (rule names come from the folder).
                if let crate::rules::LoadError::Compile { rule, .. } = &err {
                    metrics::counter!("claimrules_rules_reload_errors_total", "rule" => rule.clone())
                        .increment(1);
                }
                Err(err)
            }
        }
    }

    /// Swaps in a rule set built elsewhere (an embedder that keeps rules in a database, tests)
    /// and returns its version.
    pub fn replace(&self, set: RuleSet) -> u64 {
        let _serial = lock(&self.inner.reload_lock);
        let version = self.swap_locked(set);
        self.finish_attempt(None);
        version
    }

    /// Stores `set` as the next version; the caller holds `reload_lock`.
    fn swap_locked(&self, set: RuleSet) -> u64 {
        let version = self.current().version + 1;
        metrics::gauge!("claimrules_rules_version").set(version as f64);
        let names = set.names();
        self.inner.current.store(Arc::new(LoadedRules {
            version,
            loaded_at: SystemTime::now(),
            set,
        }));
        tracing::info!(version, rules = ?names, "rule set swapped in");
        version
    }

    fn finish_attempt(&self, error: Option<String>) {
        {
            let mut st = lock(&self.inner.attempts);
            st.attempts += 1;
            st.last_error = error;
        }
        self.inner.status_tx.send_replace(self.status());
    }

    /// Starts watching the rules folder (recursively, debounced by [`DEBOUNCE`]); every batch
    /// of changes triggers [`HotRules::reload`]. Idempotent; a fixed set has nothing to watch.
    ///
    /// The watch lasts as long as the rule set is used: until the last clone of this
    /// `HotRules` (the one inside an [`Issuer`](crate::Issuer) included) is dropped, or
    /// [`HotRules::unwatch`]. The returned handle is such a clone, so
    /// `let rules = HotRules::load(dir, options)?.watch()?;` keeps what it watches.
    pub fn watch(&self) -> Result<HotRules, WatchError> {
        let Some(dir) = &self.inner.dir else {
            return Ok(self.clone());
        };
        let mut slot = lock(&self.inner.watch);
        if slot.is_none() {
            let weak: Weak<Inner> = Arc::downgrade(&self.inner);
            *slot = Some(watch_folder(dir, move || {
                if let Some(inner) = weak.upgrade() {
                    // Errors are recorded and logged by reload itself.
                    let _ = HotRules { inner }.reload();
                }
            })?);
            tracing::info!(dir = %dir.display(), debounce_ms = DEBOUNCE.as_millis() as u64, "watching the rules folder");
        }
        Ok(self.clone())
    }

    /// Stops watching the folder (reloads can still be triggered with [`HotRules::reload`]).
    pub fn unwatch(&self) {
        lock(&self.inner.watch).take();
    }

    /// Whether the folder is being watched.
    pub fn is_watching(&self) -> bool {
        lock(&self.inner.watch).is_some()
    }

    /// Version, load time, rule names, last error and the number of finished attempts.
    pub fn status(&self) -> RulesStatus {
        let cur = self.current();
        let st = lock(&self.inner.attempts);
        RulesStatus {
            version: cur.version,
            loaded_at: unix_secs(cur.loaded_at),
            rules: cur.set.names(),
            last_error: st.last_error.clone(),
            attempts: st.attempts,
        }
    }

    /// A receiver that sees the [`RulesStatus`] after every finished reload attempt or swap.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<RulesStatus> {
        self.inner.status_tx.subscribe()
    }

    /// Waits until the status satisfies `pred` (checked now and after every attempt), failing
    /// with [`WatchError::Timeout`] after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&RulesStatus) -> bool,
    ) -> Result<RulesStatus, WatchError> {
        let mut rx = self.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s)))
            .await
            .map(|r| r.map(|status| status.clone()));
        match waited {
            Ok(Ok(status)) => Ok(status),
            // The sender lives in `self`, so the channel cannot close while we wait.
            Ok(Err(_)) | Err(_) => Err(WatchError::Timeout(timeout)),
        }
    }
}

/// Whether `contents` describes exactly the rules and configuration `set` was compiled from.
fn same_contents(set: &RuleSet, contents: &FolderContents) -> bool {
    let config_same = match &contents.configuration {
        Value::Object(m) => m == set.configuration(),
        Value::Null => set.configuration().is_empty(),
        _ => false,
    };
    config_same
        && set.rules().len() == contents.rules.len()
        && set.rules().iter().zip(&contents.rules).all(|(have, new)| {
            have.name() == new.name
                && have.path() == new.path
                && have.enabled() == new.enabled
                && have.source() == new.source
        })
}

/// Logs why a reload failed, with file, line and column as separate fields for compile errors.
fn log_load_error(err: &LoadError) {
    match err {
        LoadError::Compile {
            rule,
            path,
            line,
            column,
            message,
        } => tracing::error!(
            rule = %rule,
            file = %path.display(),
            line,
            column,
            "rule does not compile ({}:{line}:{column}: {message}); the last good rule set keeps serving",
            path.display()
        ),
        other => tracing::error!(
            error = %other,
            "rules reload failed; the last good rule set keeps serving"
        ),
    }
}
