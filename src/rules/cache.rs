//! The cache rules share between logins (`cache_get` / `cache_set`), Auth0's `global` object
//! made bounded: per rule set and per process, least recently used entries evicted first,
//! emptied when the rule set reloads. Instances of a cluster do not share it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};
use serde::Deserialize;
use serde_json::Value;

/// The `[cache]` table of `rules.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most entries kept.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Most bytes kept (keys plus the values' JSON).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

fn default_max_entries() -> usize {
    10_000
}

fn default_max_bytes() -> usize {
    8 * 1024 * 1024
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: default_max_entries(),
            max_bytes: default_max_bytes(),
        }
    }
}

struct Entry {
    value: Value,
    bytes: usize,
    expires: Instant,
    /// Position in the recency order (`Inner::order`).
    tick: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// tick → key, oldest use first.
    order: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
            self.bytes -= e.bytes;
        }
    }

    fn touch(&mut self, key: &str) {
        let tick = self.next_tick;
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.tick);
            e.tick = tick;
            self.order.insert(tick, key.to_owned());
            self.next_tick += 1;
        }
    }
}

/// A bounded, expiring key-value store of JSON values.
pub struct Cache {
    config: CacheConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.config)
            .field("entries", &self.len())
            .finish()
    }
}

/// Why a value was not cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The entry alone is larger than the whole cache may be.
    #[error("the entry is {bytes} bytes, over the cache's limit of {limit} bytes")]
    TooLarge {
        /// Key plus JSON value, in bytes.
        bytes: usize,
        /// `[cache] max_bytes`.
        limit: usize,
    },
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(CacheConfig::default())
    }
}

impl Cache {
    /// An empty cache with these bounds.
    pub fn new(config: CacheConfig) -> Cache {
        Cache {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The value under `key` unless absent or expired; a hit counts as a use.
    pub fn get(&self, key: &str) -> Option<Value> {
        let mut inner = self.inner.lock().ok()?;
        let expired = inner.entries.get(key)?.expires <= Instant::now();
        if expired {
            inner.remove(key);
            return None;
        }
        inner.touch(key);
        inner.entries.get(key).map(|e| e.value.clone())
    }

    /// Stores `value` under `key` for `ttl`, evicting the least recently used entries to stay
    /// within the bounds.
    pub fn set(&self, key: &str, value: Value, ttl: Duration) -> Result<(), CacheError> {
        let bytes = key.len() + serde_json::to_vec(&value).map_or(0, |v| v.len());
        if bytes > self.config.max_bytes {
            return Err(CacheError::TooLarge {
                bytes,
                limit: self.config.max_bytes,
            });
        }
        let Ok(mut inner) = self.inner.lock() else {
            return Ok(());
        };
        inner.remove(key);
        if self.config.max_entries == 0 {
            return Ok(());
        }
        let now = Instant::now();
        while inner.entries.len() >= self.config.max_entries
            || inner.bytes + bytes > self.config.max_bytes
        {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
        let tick = inner.next_tick;
        inner.next_tick += 1;
        inner.order.insert(tick, key.to_owned());
        inner.bytes += bytes;
        inner.entries.insert(
            key.to_owned(),
            Entry {
                value,
                bytes,
                expires: now + ttl,
                tick,
            },
        );
        Ok(())
    }

    /// Entries held now (expired ones included until they are read or evicted).
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.entries.len())
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Registers `cache_get(key)` and `cache_set(key, value, ttl_seconds)` over `cache`.
pub(crate) fn register(engine: &mut Engine, cache: Arc<Cache>) {
    let c = cache.clone();
    engine.register_fn("cache_get", move |key: &str| -> Dynamic {
        c.get(key)
            .and_then(|v| rhai::serde::to_dynamic(v).ok())
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn(
        "cache_set",
        move |ctx: NativeCallContext,
              key: &str,
              value: Dynamic,
              ttl_seconds: i64|
              -> Result<(), Box<EvalAltResult>> {
            let pos = ctx.call_position();
            if ttl_seconds <= 0 {
                return Err(super::engine::helper_error(
                    pos,
                    format!("cache_set: ttl_seconds must be positive, got {ttl_seconds}"),
                ));
            }
            let json = super::engine::to_json_value(&value).map_err(|what| {
                super::engine::helper_error(pos, format!("cache_set: the value {what}"))
            })?;
            let ttl = Duration::from_secs(ttl_seconds.unsigned_abs());
            cache
                .set(key, json, ttl)
                .map_err(|e| super::engine::helper_error(pos, format!("cache_set: {e}")))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cache(entries: usize, bytes: usize) -> Cache {
        Cache::new(CacheConfig {
            max_entries: entries,
            max_bytes: bytes,
        })
    }

    #[test]
    fn least_recently_used_entries_go_first() {
        let c = cache(2, 1 << 20);
        let hour = Duration::from_secs(3600);
        c.set("a", json!(1), hour).unwrap();
        c.set("b", json!(2), hour).unwrap();
        assert_eq!(c.get("a"), Some(json!(1))); // `a` is now the most recent
        c.set("c", json!(3), hour).unwrap();
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get("a"), Some(json!(1)));
        assert_eq!(c.get("c"), Some(json!(3)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn the_byte_bound_evicts_and_refuses_oversized_entries() {
        let c = cache(100, 20);
        let hour = Duration::from_secs(3600);
        c.set("k1", json!("12345678"), hour).unwrap(); // 2 + 10 bytes
        c.set("k2", json!("12345678"), hour).unwrap();
        assert_eq!(
            c.get("k1"),
            None,
            "over 20 bytes: the older entry is evicted"
        );
        assert!(c.get("k2").is_some());
        assert!(matches!(
            c.set("big", json!("x".repeat(30)), hour),
            Err(CacheError::TooLarge { .. })
        ));
    }

    #[test]
    fn entries_expire() {
        let c = cache(10, 1 << 20);
        c.set("k", json!(true), Duration::from_millis(20)).unwrap();
        assert_eq!(c.get("k"), Some(json!(true)));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get("k"), None);
        assert!(c.is_empty());
    }

    #[test]
    fn overwriting_a_key_keeps_the_byte_count_exact() {
        let c = cache(10, 30);
        let hour = Duration::from_secs(3600);
        for i in 0..100 {
            c.set("same", json!(i), hour).unwrap();
        }
        c.set("other", json!("1234567890"), hour).unwrap();
        assert_eq!(c.len(), 2, "rewrites of one key must not leak bytes");
    }
}
