//! CPU cost of one JWT signature with the server's own signing code ([`SigningKey::sign_jwt`],
//! aws-lc-rs), for `scripts/bench-vs-peer`: the server's CPU per refresh minus two of these is
//! the work beyond signing.
//!
//! ```sh
//! cargo run --release --example sign_cost -- RS256 ES256   # env SIGNS (default 2000)
//! ```
//!
//! Signs SIGNS tokens shaped like the refresh answer's (an access token and an ID token with the
//! two namespaced claims of rules/, alternating) on one thread, and prints one JSON line per
//! algorithm: CPU µs per signature (this thread's CPU clock, so other processes on the cores do
//! not count) and wall µs per signature.

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let signs: usize = std::env::var("SIGNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut algs: Vec<String> = std::env::args().skip(1).collect();
    if algs.is_empty() {
        algs = vec!["RS256".into(), "ES256".into()];
    }
    let shapes = shapes(1_800_000_000);
    for name in algs {
        let alg: SigningAlg = name.parse()?;
        let key = SigningKey::generate(alg)?;
        // Warm-up: page in the code and the key's tables.
        for (typ, claims) in shapes.iter().cycle().take(50) {
            std::hint::black_box(key.sign_jwt(typ, claims)?);
        }
        let (cpu0, wall0) = (thread_cpu_s(), std::time::Instant::now());
        for (typ, claims) in shapes.iter().cycle().take(signs) {
            std::hint::black_box(key.sign_jwt(typ, claims)?);
        }
        let cpu = thread_cpu_s() - cpu0;
        let wall = wall0.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({
                "impl": "claimrules SigningKey::sign_jwt (aws-lc-rs)",
                "alg": alg.as_str(),
                "signs": signs,
                "cpu_us_per_sign": (cpu * 1e6 / signs as f64 * 10.0).round() / 10.0,
                "wall_us_per_sign": (wall * 1e6 / signs as f64 * 10.0).round() / 10.0,
            })
        );
    }
    Ok(())
}
