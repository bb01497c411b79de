//! CPU cost of one JWT signature with the server's own signing code ([`SigningKey::sign_jwt`],
//! aws-lc-rs), for `scripts/bench-vs-peer`: the server's CPU per refresh minus two of these is
//! the work beyond signing.
//!
//! ```sh
//! cargo run --release --example sign_cost -- RS256 ES256   # env SIGNS (default 2000)
//! ```
//!
//! Signs SIGNS tokens shaped like the refresh answer's (an access token and an ID token with the
//! two namespaced claims of rules/, alternating) and prints one JSON line per algorithm: CPU µs
//! per signature on one thread alone (`cpu_us_per_sign_1thread`), and with THREADS threads
//! (default: one per core) signing at the same time (`cpu_us_per_sign`, their mean). The second
//! is what a signature costs inside a server that keeps every core busy: two hardware threads of
//! one core share its multiplier, so RSA costs more per signature then. CPU time is each
//! thread's own clock, so other processes on the cores do not count.

use claimrules::{SigningAlg, SigningKey};
use serde_json::{json, Value};

/// This thread's CPU time in seconds (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The two token shapes of a refresh answer (what `Issuer::sign` builds for the bench config).
fn shapes(now: i64) -> [(&'static str, Value); 2] {
    let at = json!({
        "https://example.com/roles": ["admin"], "https://example.com/plan": "pro",
        "iss": "http://127.0.0.1:40000/", "sub": "auth0|alice",
        "aud": ["https://api.example.com", "http://127.0.0.1:40000/userinfo"],
        "iat": now, "exp": now + 86400, "azp": "bench-client", "client_id": "bench-client",
        "scope": "openid profile email offline_access read:contacts",
        "jti": "Zm9vYmFyYmF6cXV4cXV1eA",
    });
    let id = json!({
        "name": "Alice Example", "nickname": "alice", "email": "alice@example.com",
        "email_verified": true,
        "https://example.com/roles": ["admin"], "https://example.com/plan": "pro",
        "iss": "http://127.0.0.1:40000/", "sub": "auth0|alice", "aud": "bench-client",
        "iat": now, "exp": now + 36000, "auth_time": now - 60,
        "at_hash": "6pQ0nVxvY0yq3k0nYk4s3g",
    });
    [("at+jwt", at), ("JWT", id)]
}

/// Signs `signs` tokens (after a warm-up, and after `barrier` if given); returns CPU and wall
/// µs per signature.
fn sign_loop(
    key: &SigningKey,
    signs: usize,
    barrier: Option<&std::sync::Barrier>,
) -> Result<(f64, f64), claimrules::issuer::KeyError> {
    let shapes = shapes(1_800_000_000);
    // Warm-up: page in the code and the key's tables.
    for (typ, claims) in shapes.iter().cycle().take(50) {
        std::hint::black_box(key.sign_jwt(typ, claims)?);
    }
    if let Some(b) = barrier {
        b.wait();
    }
    let (cpu0, wall0) = (thread_cpu_s(), std::time::Instant::now());
    for (typ, claims) in shapes.iter().cycle().take(signs) {
        std::hint::black_box(key.sign_jwt(typ, claims)?);
    }
    let cpu = thread_cpu_s() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    Ok((cpu * 1e6 / signs as f64, wall * 1e6 / signs as f64))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let signs: usize = std::env::var("SIGNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut algs: Vec<String> = std::env::args().skip(1).collect();
    if algs.is_empty() {
        algs = vec!["RS256".into(), "ES256".into()];
    }
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    for name in algs {
        let alg: SigningAlg = name.parse()?;
        let key = std::sync::Arc::new(SigningKey::generate(alg)?);
        let alone = sign_loop(&key, signs, None)?;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (key, barrier) = (key.clone(), barrier.clone());
                std::thread::spawn(move || sign_loop(&key, signs, Some(&barrier)))
            })
            .collect();
        let mut cpu = 0.0;
        for h in handles {
            cpu += h.join().map_err(|_| "signing thread panicked")??.0;
        }
        let r1 = |x: f64| (x * 10.0).round() / 10.0;
        println!(
            "{}",
            json!({
                "impl": "claimrules SigningKey::sign_jwt (aws-lc-rs)",
                "alg": alg.as_str(),
                "signs": signs,
                "threads": threads,
                "cpu_us_per_sign": r1(cpu / threads as f64),
                "cpu_us_per_sign_1thread": r1(alone.0),
                "wall_us_per_sign_1thread": r1(alone.1),
            })
        );
    }
    Ok(())
}
