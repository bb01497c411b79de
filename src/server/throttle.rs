//! Login throttling per account and per client IP.
//!
//! A fixed window of failures: past the limit, further attempts wait until the window ends.
//! Windows are short (5 minutes). Failures count per account *and client IP* first: an attacker
//! who fails on purpose from one address locks only that address out of the account, not the
//! user at theirs. A much higher account-wide limit still caps guessing spread over many
//! addresses, and a per-IP limit caps one address guessing across accounts. A success clears the
//! account's counts.
//!
//! An attempt is counted *before* the password is checked ([`Throttle::begin`]), in one step
//! under one lock with the limit check, and uncounted when it succeeds ([`Attempt::succeeded`]):
//! so however many attempts arrive at once, no more than the limit are ever checked, and a
//! burst from one address can never push the account-wide count past what that address alone
//! may add. An attempt whose outcome is never learned (the client went away mid-check) stays
//! counted as a failure. The same step also caps how many checks one address and one account
//! may have *in flight* at once, so one client cannot fill the password-hashing queue.
//!
//! Accounts are keyed on the account a login name resolves to ([`AccountKey`]), not on the text
//! typed: `" Demo@Example.com "`, `"demo@example.com"` and the username `demo` share one
//! counter. IPv6 clients are counted per /64, the block one subscriber usually holds.

use std::collections::HashMap;
use std::net::IpAddr;
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
    /// Password checks one IP may have in flight at once.
    pub concurrent_per_ip: u32,
    /// Password checks one account may have in flight at once.
    pub concurrent_per_account: u32,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            per_account: 5,
            per_account_total: 100,
            per_ip: 20,
            window: Duration::from_secs(300),
            concurrent_per_ip: 4,
            concurrent_per_account: 4,
        }
    }
}

/// What a login's account counters are keyed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccountKey {
    /// A login name that resolved to this `user_id`.
    User(String),
    /// A login name that names no account: its normalized form (trimmed, ASCII-lowercased),
    /// as a SHA-256 digest so arbitrarily long names cost a fixed few bytes.
    Unknown(String),
}

impl AccountKey {
    /// The key of a login that resolved to `user_id`.
    pub fn user(user_id: &str) -> AccountKey {
        AccountKey::User(user_id.to_owned())
    }

    /// The key of a login name that resolved to no account.
    pub fn unknown(login: &str) -> AccountKey {
        AccountKey::Unknown(crate::crypto::sha256_hex(
            &login.trim().to_ascii_lowercase(),
        ))
    }
}

/// The key of a client address: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6 as IPv4); text
/// that is no address (e.g. `unknown`) as is.
pub fn ip_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

/// Why an attempt was not allowed to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over a failure limit: wait this many seconds.
    Locked(u64),
    /// Too many checks in flight for this address or account, or too many tracked keys: try
    /// again in a moment.
    Busy,
}

impl Refused {
    /// Seconds the client should wait (`Retry-After`).
    pub fn retry_after(self) -> u64 {
        match self {
            Refused::Locked(s) => s,
            Refused::Busy => 1,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    since: Instant,
}

#[derive(Debug, Default)]
struct Counters {
    accounts: HashMap<AccountKey, Counter>,
    pairs: HashMap<(AccountKey, String), Counter>,
    ips: HashMap<String, Counter>,
    in_flight_accounts: HashMap<AccountKey, u32>,
    in_flight_ips: HashMap<String, u32>,
}

/// Failure counters by account and by IP.
#[derive(Debug, Default)]
pub struct Throttle {
    limits: ThrottleLimits,
    counters: Mutex<Counters>,
}

/// Bound on tracked keys per map, so a flood of distinct names cannot grow memory without end.
const MAX_KEYS: usize = 100_000;

/// An attempt counted by [`Throttle::begin`]; it stays counted as a failure unless
/// [`Attempt::succeeded`] or [`Attempt::cancel`] is called. Dropping it ends it in flight.
#[derive(Debug)]
#[must_use = "an attempt counts as a failure unless marked succeeded"]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    account: AccountKey,
    ip: String,
}

fn active(c: &Counter, now: Instant, window: Duration) -> bool {
    now.duration_since(c.since) < window
}

/// Seconds left of a counter's window when it is at `limit`.
fn locked(c: Option<&Counter>, limit: u32, now: Instant, window: Duration) -> Option<u64> {
    let c = c?;
    let elapsed = now.duration_since(c.since);
    (c.failures >= limit && elapsed < window).then(|| (window - elapsed).as_secs().max(1))
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Counter>, key: K, now: Instant, w: Duration) {
    let c = map.entry(key).or_insert(Counter {
        failures: 0,
        since: now,
    });
    if !active(c, now, w) {
        *c = Counter {
            failures: 0,
            since: now,
        };
    }
    c.failures = c.failures.saturating_add(1);
}

fn unbump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Counter>, key: &K) {
    if let Some(c) = map.get_mut(key) {
        c.failures = c.failures.saturating_sub(1);
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Makes room for a new key in `map` by dropping expired counters; `false` when it stays full.
fn room<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Counter>,
    key: &K,
    now: Instant,
    w: Duration,
) -> bool {
    if map.len() < MAX_KEYS || map.contains_key(key) {
        return true;
    }
    map.retain(|_, c| active(c, now, w));
    map.len() < MAX_KEYS
}

impl Throttle {
    /// A throttle with these limits.
    pub fn new(limits: ThrottleLimits) -> Throttle {
        Throttle {
            limits,
            ..Default::default()
        }
    }

    /// The limits.
    pub fn limits(&self) -> &ThrottleLimits {
        &self.limits
    }

    /// `Err` when `account` or `ip` is over a failure limit now (read only; a login must use
    /// [`Throttle::begin`], which also counts the attempt).
    pub fn check(&self, account: &AccountKey, ip: &str) -> Result<(), Refused> {
        let Ok(c) = self.counters.lock() else {
            return Err(Refused::Busy);
        };
        match self.lock_of(&c, account, &ip_key(ip), Instant::now()) {
            Some(w) => Err(Refused::Locked(w)),
            None => Ok(()),
        }
    }

    fn lock_of(&self, c: &Counters, account: &AccountKey, ip: &str, now: Instant) -> Option<u64> {
        let l = &self.limits;
        let pair = (account.clone(), ip.to_owned());
        locked(c.pairs.get(&pair), l.per_account, now, l.window)
            .or_else(|| locked(c.accounts.get(account), l.per_account_total, now, l.window))
            .or_else(|| locked(c.ips.get(ip), l.per_ip, now, l.window))
    }

    /// Checks the limits and, when none is reached, counts the attempt as a failure of
    /// `account` from `ip` and puts it in flight — in one step, so concurrent attempts can never
    /// all pass a check made before any of them is counted.
    pub fn begin(&self, account: &AccountKey, ip: &str) -> Result<Attempt<'_>, Refused> {
        let ip = ip_key(ip);
        let now = Instant::now();
        let w = self.limits.window;
        let mut guard = self.counters.lock().map_err(|_| Refused::Busy)?;
        let c = &mut *guard;
        if let Some(wait) = self.lock_of(c, account, &ip, now) {
            return Err(Refused::Locked(wait));
        }
        let in_ip = c.in_flight_ips.get(&ip).copied().unwrap_or(0);
        let in_account = c.in_flight_accounts.get(account).copied().unwrap_or(0);
        if in_ip >= self.limits.concurrent_per_ip
            || in_account >= self.limits.concurrent_per_account
        {
            return Err(Refused::Busy);
        }
        let pair = (account.clone(), ip.clone());
        // Fail closed: when every slot holds a live counter, refuse rather than forget one.
        if !room(&mut c.pairs, &pair, now, w)
            || !room(&mut c.accounts, account, now, w)
            || !room(&mut c.ips, &ip, now, w)
            || c.in_flight_ips.len() >= MAX_KEYS
        {
            tracing::warn!("login throttle is tracking too many keys; refusing new ones");
            return Err(Refused::Busy);
        }
        bump(&mut c.pairs, pair, now, w);
        bump(&mut c.accounts, account.clone(), now, w);
        bump(&mut c.ips, ip.clone(), now, w);
        *c.in_flight_ips.entry(ip.clone()).or_insert(0) += 1;
        *c.in_flight_accounts.entry(account.clone()).or_insert(0) += 1;
        drop(guard);
        Ok(Attempt {
            throttle: self,
            account: account.clone(),
            ip,
        })
    }
}

impl Attempt<'_> {
    /// The password was right: the account-wide count and this address's count for the
    /// account are forgotten (other addresses' locks on the account stay), and this attempt no
    /// longer counts against the address.
    pub fn succeeded(self) {
        if let Ok(mut c) = self.throttle.counters.lock() {
            c.accounts.remove(&self.account);
            c.pairs.remove(&(self.account.clone(), self.ip.clone()));
            unbump(&mut c.ips, &self.ip);
        }
    }

    /// The password was never checked (the server was too busy): the attempt is uncounted.
    pub fn cancel(self) {
        if let Ok(mut c) = self.throttle.counters.lock() {
            unbump(&mut c.accounts, &self.account);
            unbump(&mut c.pairs, &(self.account.clone(), self.ip.clone()));
            unbump(&mut c.ips, &self.ip);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.throttle.counters.lock() {
            release(&mut c.in_flight_ips, &self.ip);
            release(&mut c.in_flight_accounts, &self.account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(t: &Throttle, a: &AccountKey, ip: &str) -> Result<(), Refused> {
        t.begin(a, ip).map(drop)
    }

    #[test]
    fn account_locks_after_limit_and_success_clears() {
        let t = Throttle::new(ThrottleLimits {
            per_account: 2,
            per_account_total: 3,
            per_ip: 100,
            window: Duration::from_secs(60),
            ..Default::default()
        });
        let a = AccountKey::user("a");
        fail(&t, &a, "1.1.1.1").unwrap();
        assert!(t.check(&a, "1.1.1.1").is_ok());
        fail(&t, &a, "1.1.1.1").unwrap();
        assert!(matches!(t.begin(&a, "1.1.1.1"), Err(Refused::Locked(_))));
        // Another address is not locked out by the first one's failures...
        assert!(t.check(&a, "2.2.2.2").is_ok());
        assert!(t.check(&AccountKey::user("b"), "1.1.1.1").is_ok());
        // ...until the account-wide limit is reached.
        fail(&t, &a, "2.2.2.2").unwrap();
        assert!(t.check(&a, "3.3.3.3").is_err());
        // Below the account-wide limit, a success forgets the account-wide count and the
        // succeeding address's count, not another address's.
        let t2 = Throttle::new(ThrottleLimits {
            per_account_total: 4,
            ..t.limits().clone()
        });
        fail(&t2, &a, "2.2.2.2").unwrap();
        fail(&t2, &a, "1.1.1.1").unwrap();
        fail(&t2, &a, "1.1.1.1").unwrap();
        t2.begin(&a, "2.2.2.2").unwrap().succeeded();
        assert!(t2.check(&a, "3.3.3.3").is_ok());
        assert!(
            t2.check(&a, "1.1.1.1").is_err(),
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
            ..Default::default()
        });
        let a = AccountKey::user("a");
        fail(&t, &a, "ip").unwrap();
        assert!(t.check(&a, "ip").is_ok());
    }

    #[test]
    fn concurrent_attempts_never_pass_the_limit() {
        let t = std::sync::Arc::new(Throttle::new(ThrottleLimits {
            concurrent_per_ip: 1000,
            concurrent_per_account: 1000,
            ..Default::default()
        }));
        let a = AccountKey::user("a");
        let held: Vec<_> = (0..200)
            .filter_map(|_| t.begin(&a, "9.9.9.9").ok())
            .collect();
        assert_eq!(held.len(), 5, "only per_account attempts are let through");
        drop(held);
        // The account-wide count got only this address's five.
        assert!(t.check(&a, "8.8.8.8").is_ok());
    }

    #[test]
    fn in_flight_checks_are_capped_and_released() {
        let t = Throttle::new(ThrottleLimits {
            per_account: 100,
            concurrent_per_ip: 2,
            ..Default::default()
        });
        let a = AccountKey::user("a");
        let x = t.begin(&a, "1.1.1.1").unwrap();
        let y = t.begin(&a, "1.1.1.1").unwrap();
        assert_eq!(t.begin(&a, "1.1.1.1").unwrap_err(), Refused::Busy);
        drop(x);
        y.cancel();
        assert!(t.begin(&a, "1.1.1.1").is_ok());
    }

    #[test]
    fn login_spellings_share_a_counter_and_ipv6_counts_per_64() {
        assert_eq!(
            AccountKey::unknown(" Nobody@Example.com\t"),
            AccountKey::unknown("nobody@example.com")
        );
        assert_eq!(
            ip_key("2001:db8:1:2:aaaa::1"),
            ip_key("2001:db8:1:2:bbbb::9")
        );
        assert_ne!(ip_key("2001:db8:1:2::1"), ip_key("2001:db8:1:3::1"));
        assert_eq!(ip_key("::ffff:10.0.0.1"), "10.0.0.1");
    }
}
