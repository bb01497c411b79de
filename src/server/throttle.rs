//! Login throttling per account and per client IP.
//!
//! A fixed window of failures: past the limit, further attempts wait until the window ends.
//! Windows are short (5 minutes), so an attacker who fails on purpose can delay a user's login
//! by at most one window, never lock the account for long; a success clears the account's count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the throttle.
#[derive(Debug, Clone)]
pub struct ThrottleLimits {
    /// Failures allowed per account per window.
    pub per_account: u32,
    /// Failures allowed per IP per window.
    pub per_ip: u32,
    /// The window.
    pub window: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            per_account: 5,
            per_ip: 20,
            window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug)]
struct Counter {
    failures: u32,
    since: Instant,
}

/// Failure counters by account and by IP.
#[derive(Debug, Default)]
pub struct Throttle {
    limits: ThrottleLimits,
    accounts: Mutex<HashMap<String, Counter>>,
    ips: Mutex<HashMap<String, Counter>>,
}

/// Bound on tracked keys, so a flood of distinct names cannot grow memory without end.
const MAX_KEYS: usize = 100_000;

impl Throttle {
    /// A throttle with these limits.
    pub fn new(limits: ThrottleLimits) -> Throttle {
        Throttle {
            limits,
            ..Default::default()
        }
    }

    /// `Err(seconds to wait)` when the account or the IP is over its limit.
    pub fn check(&self, account: &str, ip: &str) -> Result<(), u64> {
        let now = Instant::now();
        let wait = |map: &Mutex<HashMap<String, Counter>>, key: &str, limit: u32| -> Option<u64> {
            let map = map.lock().ok()?;
            let c = map.get(key)?;
            let elapsed = now.duration_since(c.since);
            (c.failures >= limit && elapsed < self.limits.window)
                .then(|| (self.limits.window - elapsed).as_secs().max(1))
        };
        if let Some(w) = wait(
            &self.accounts,
            &account.to_ascii_lowercase(),
            self.limits.per_account,
        ) {
            return Err(w);
        }
        if let Some(w) = wait(&self.ips, ip, self.limits.per_ip) {
            return Err(w);
        }
        Ok(())
    }

    /// Records a failed attempt.
    pub fn failure(&self, account: &str, ip: &str) {
        let now = Instant::now();
        let window = self.limits.window;
        let bump = |map: &Mutex<HashMap<String, Counter>>, key: String| {
            if let Ok(mut map) = map.lock() {
                if map.len() >= MAX_KEYS {
                    map.retain(|_, c| now.duration_since(c.since) < window);
                }
                let c = map.entry(key).or_insert(Counter {
                    failures: 0,
                    since: now,
                });
                if now.duration_since(c.since) >= window {
                    *c = Counter {
                        failures: 0,
                        since: now,
                    };
                }
                c.failures += 1;
            }
        };
        bump(&self.accounts, account.to_ascii_lowercase());
        bump(&self.ips, ip.to_owned());
    }

    /// Records a success: the account's failures are forgotten.
    pub fn success(&self, account: &str) {
        if let Ok(mut map) = self.accounts.lock() {
            map.remove(&account.to_ascii_lowercase());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_locks_after_limit_and_success_clears() {
        let t = Throttle::new(ThrottleLimits {
            per_account: 2,
            per_ip: 100,
            window: Duration::from_secs(60),
        });
        t.failure("A@x", "1.1.1.1");
        assert!(t.check("a@x", "1.1.1.1").is_ok());
        t.failure("a@x", "1.1.1.1");
        assert!(t.check("a@x", "2.2.2.2").is_err());
        assert!(t.check("b@x", "1.1.1.1").is_ok());
        t.success("a@x");
        assert!(t.check("a@x", "1.1.1.1").is_ok());
    }

    #[test]
    fn window_expiry_unlocks() {
        let t = Throttle::new(ThrottleLimits {
            per_account: 1,
            per_ip: 100,
            window: Duration::from_millis(0),
        });
        t.failure("a", "ip");
        assert!(t.check("a", "ip").is_ok());
    }
}
