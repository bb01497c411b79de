//! The state every handler shares: the tenant, its store and issuer, the login throttle, the
//! password threads and the per-client limits on concurrent rule runs.

use std::sync::Arc;

use crate::config::Config;
use crate::issuer::Issuer;
use crate::store::Store;

use super::throttle::{self, Throttle};

/// Everything the handlers share.
pub struct AppState {
    /// The tenant.
    pub config: Arc<Config>,
    /// Persistent state.
    pub store: Store,
    /// Rules and signing.
    pub issuer: Arc<Issuer>,
    /// Login throttling.
    pub throttle: Throttle,
    /// The threads that check passwords.
    pub passwords: crate::password::VerifyPool,
    /// Whether cookies get `Secure` (everything but plain http on loopback).
    pub secure_cookies: bool,
    /// Concurrent rule runs per client.
    pub rule_slots: RuleSlots,
}

/// Marks the calling blocking-pool thread as CPU-bound: on Linux its nice value is raised to 5,
/// once per thread. Rules, signatures and password hashing run for hundreds of microseconds; at
/// a lower priority they give a core up at once to the threads that keep requests moving (the
/// runtime's workers and the SQLite writer's connection thread), which otherwise wait a
/// scheduler slice behind a signature on every hand-off.
pub(crate) fn cpu_bound_thread() {
    #[cfg(target_os = "linux")]
    {
        thread_local! {
            static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        LOWERED.with(|done| {
            if !done.replace(true) {
                // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
                // Failing (e.g. a seccomp filter) only leaves the priority as it was.
                unsafe {
                    let tid = libc::gettid();
                    libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 5);
                }
            }
        });
    }
}

/// Concurrent rule runs allowed per client. Rules run on a runtime worker or on the bounded
/// blocking pool ([`crate::server::cpu`]); a client whose rule loops until its budget, or waits
/// on a slow API, could otherwise fill every thread with its own requests and make every other
/// client's login wait behind it.
pub const RULE_RUNS_PER_CLIENT: usize = 2;

/// Per-client limits on concurrent rule runs (client ids come from the configuration, so the
/// map is bounded).
#[derive(Debug, Default)]
pub struct RuleSlots {
    per_client: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl RuleSlots {
    /// Waits (without holding a thread) until `client_id` may run its rules; the permit is held
    /// for the run. `None` only if the lock was poisoned.
    pub async fn acquire(&self, client_id: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.semaphore(client_id)?.acquire_owned().await.ok()
    }

    /// The client's semaphore, made on first use.
    fn semaphore(&self, client_id: &str) -> Option<Arc<tokio::sync::Semaphore>> {
        let mut map = self.per_client.lock().ok()?;
        Some(
            map.entry(client_id.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(RULE_RUNS_PER_CLIENT)))
                .clone(),
        )
    }

    /// Like [`RuleSlots::acquire`], as a slot the run gives up while a rule waits on an API
    /// (`http_get` and friends), so rules waiting on a slow API cannot hold every slot of
    /// their client while logins whose rules call nothing wait behind them.
    pub async fn acquire_slot(&self, client_id: &str) -> Option<Arc<RunSlot>> {
        let sem = self.semaphore(client_id)?;
        let permit = sem.clone().acquire_owned().await.ok()?;
        Some(Arc::new(RunSlot {
            sem,
            permit: std::sync::Mutex::new(Some(permit)),
            runtime: tokio::runtime::Handle::current(),
        }))
    }
}

/// A client's rule-run slot held by one run; released while the run waits on an API and
/// taken again (waiting if need be) before its rules go on.
#[derive(Debug)]
pub struct RunSlot {
    sem: Arc<tokio::sync::Semaphore>,
    permit: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    runtime: tokio::runtime::Handle,
}

impl crate::rules::http::WaitSlot for RunSlot {
    fn release(&self) {
        if let Ok(mut p) = self.permit.lock() {
            p.take();
        }
    }

    fn reacquire(&self) {
        // On the run's blocking-pool thread, outside any async context: blocking is allowed.
        // Never past the run's deadline: without a slot by then, the run goes on only to be
        // stopped at its next operation (the deadline has passed).
        let wait = self.sem.clone().acquire_owned();
        let permit = match crate::rules::run_time_left() {
            Some(left) => self.runtime.block_on(async {
                tokio::time::timeout(left, wait)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }),
            None => self.runtime.block_on(wait).ok(),
        };
        if let Ok(mut p) = self.permit.lock() {
            *p = permit;
        }
    }
}

impl AppState {
    /// State for a tenant; cookies are `Secure` unless the issuer is plain http on loopback.
    pub fn new(config: Arc<Config>, store: Store, issuer: Arc<Issuer>) -> AppState {
        let secure_cookies = !is_plain_http_loopback(&config.issuer);
        let login = &config.login;
        let throttle = Throttle::new(throttle::ThrottleLimits {
            per_account: login.max_failures_per_account_ip,
            per_account_total: login.max_failures_per_account,
            per_ip: login.max_failures_per_ip,
            window: std::time::Duration::from_secs(login.window_seconds),
            concurrent_per_ip: login.max_concurrent_per_ip,
            concurrent_per_account: login.max_concurrent_per_account,
        });
        let passwords = crate::password::VerifyPool::new(login.hash_threads, login.hash_queue);
        AppState {
            config,
            store,
            issuer,
            throttle,
            passwords,
            secure_cookies,
            rule_slots: RuleSlots::default(),
        }
    }
}

fn is_plain_http_loopback(issuer: &str) -> bool {
    url::Url::parse(issuer).is_ok_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    })
}

/// Shared state as handlers see it.
pub type Shared = Arc<AppState>;
