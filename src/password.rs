//! Argon2id password hashing for the user directory.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

/// Errors of password hashing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Hashing failed.
    #[error("argon2: {0}")]
    Hash(#[from] argon2::password_hash::Error),
}

/// Hashes a password into an Argon2id PHC string with a random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let salt = SaltString::encode_b64(&bytes)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::from)
}

/// Verifies a password against a PHC string (constant time inside argon2).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a random password, verified against when a login names an unknown user, so a
/// failed login takes the same time whether or not the account exists.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(&crate::crypto::random_token(16)).unwrap_or_default())
}

/// Why [`VerifyPool::verify`] gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Every hashing thread is busy and the queue is full: try again later.
    #[error("the password checks queue is full")]
    Busy,
    /// The pool's threads are gone.
    #[error("the password hashing threads stopped")]
    Stopped,
}

struct Job {
    password: String,
    phc: String,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// Password verification on its own few threads with a bounded queue.
///
/// Argon2 is made to be slow (~40 ms and ~19 MiB per check). Run on the async runtime's
/// blocking pool, a burst of logins took every blocking thread and made rules, signing and the
/// token endpoint wait behind it; here it can never use more than `threads` threads (running at
/// a lower priority than the rules and signing, see `crate::server::cpu_bound_thread`), and a
/// check that finds `queue` others waiting is refused at once ([`PoolError::Busy`]) instead of
/// queueing without bound.
pub struct VerifyPool {
    tx: std::sync::mpsc::SyncSender<Job>,
    threads: usize,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool")
            .field("threads", &self.threads)
            .finish()
    }
}

/// Nice value of the hashing threads: below the rules and signing (nice 5), so a login burst
/// takes only the CPU that token requests leave.
const HASH_NICE: i32 = 10;

/// Threads a pool gets by default: half the cores, at least one.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl VerifyPool {
    /// A pool of `threads` threads (0: [`default_threads`]) taking at most `queue` waiting
    /// checks. The threads end when the pool is dropped. A thread that cannot be spawned is
    /// logged; with none, every check fails with [`PoolError::Stopped`].
    pub fn new(threads: usize, queue: usize) -> VerifyPool {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("claimrules-argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // The login gave up (client gone): do not spend 40 ms on it.
                        if job.reply.is_closed() {
                            continue;
                        }
                        let ok = verify(&job.password, &job.phc);
                        let _ = job.reply.send(ok);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        VerifyPool { tx, threads }
    }

    /// Verifies `password` against `phc` on one of the pool's threads.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, PoolError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .try_send(Job {
                password,
                phc,
                reply,
            })
            .map_err(|e| match e {
                std::sync::mpsc::TrySendError::Full(_) => PoolError::Busy,
                std::sync::mpsc::TrySendError::Disconnected(_) => PoolError::Stopped,
            })?;
        rx.await.map_err(|_| PoolError::Stopped)
    }
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; failing only leaves the priority.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HASH_NICE);
    }
}
