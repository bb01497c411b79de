//! Login throttling per account and per client IP.
//!
//! A fixed window of failures: past the limit, further attempts wait until the window ends.
//! Windows are short (5 minutes). Failures count per account *and client IP* first: an attacker
//! who fails on purpose from one address locks only that address out of the account, not the
//! user at theirs. A much higher account-wide limit still caps guessing spread over many
//! addresses, and a per-IP limit caps one address guessing across accounts. A success clears the
//! account's counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the throttle.
#[derive(Debug, Clone)]
pub struct ThrottleLimits {
    /// Failures allowed per account from one IP per window.
    pub per_account: u32,
    /// Failures allowed per account from all IPs together per window (distributed guessing).
    pub per_account_total: u32,
    /// Failures allowed per IP per window.
    pub per_ip: u32,
    /// The window.
    pub window: Duration,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            per_account: 5,
            per_account_total: 100,
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
    account_ips: Mutex<HashMap<String, Counter>>,
    ips: Mutex<HashMap<String, Counter>>,
}

/// The key of an (account, IP) pair; NUL cannot occur in either part from a form or socket.
fn pair(account: &str, ip: &str) -> String {
    format!("{}\0{ip}", account.to_ascii_lowercase())
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
            &self.account_ips,
            &pair(account, ip),
            self.limits.per_account,
        ) {
            return Err(w);
        }
        if let Some(w) = wait(
            &self.accounts,
            &account.to_ascii_lowercase(),
            self.limits.per_account_total,
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
        bump(&self.account_ips, pair(account, ip));
        bump(&self.accounts, account.to_ascii_lowercase());
        bump(&self.ips, ip.to_owned());
    }

    /// Records a success from `ip`: the account-wide count and this address's count for the
    /// account are forgotten (other addresses' locks on the account stay).
    pub fn success(&self, account: &str, ip: &str) {
        if let Ok(mut map) = self.accounts.lock() {
            map.remove(&account.to_ascii_lowercase());
        }
        if let Ok(mut map) = self.account_ips.lock() {
            map.remove(&pair(account, ip));
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
            per_account_total: 3,
            per_ip: 100,
            window: Duration::from_secs(60),
        });
        t.failure("A@x", "1.1.1.1");
        assert!(t.check("a@x", "1.1.1.1").is_ok());
        t.failure("a@x", "1.1.1.1");
        assert!(t.check("a@x", "1.1.1.1").is_err());
        // Another address is not locked out by the first one's failures...
        assert!(t.check("a@x", "2.2.2.2").is_ok());
        assert!(t.check("b@x", "1.1.1.1").is_ok());
        // ...until the account-wide limit is reached.
        t.failure("a@x", "2.2.2.2");
        assert!(t.check("a@x", "3.3.3.3").is_err());
        t.success("a@x", "2.2.2.2");
        assert!(t.check("a@x", "3.3.3.3").is_ok());
        assert!(
            t.check("a@x", "1.1.1.1").is_err(),
            "1.1.1.1 keeps its own lock"
        );
    }

    #[test]
    fn window_expiry_unlocks() {
        let t = Throttle::new(ThrottleLimits {
            per_account: 1,
            per_account_total: 1,
            per_ip: 100,
            window: Duration::from_millis(0),
        });
        t.failure("a", "ip");
        assert!(t.check("a", "ip").is_ok());
    }
}
