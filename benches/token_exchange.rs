//! Code exchanges per second against the running server on loopback, with RS256 and ES256, beside
//! the signing-only ceiling measured in the same run (two signatures per exchange).
//!
//! Beside throughput it reports the process's CPU per exchange over the measured window (the
//! server and the bare client share the process: the client's part is a few µs) and the
//! overhead beyond the two signatures (CPU per exchange − 2 × one signature's CPU, measured on
//! every core in the same run), the figure issue 18's target 1 asks for the code exchange.
//!
//! `cargo bench --bench token_exchange` (env: SECONDS=5 CONCURRENCY="16 32"). Codes are minted through
//! the library's code store with the rules' claims computed as /authorize computes them, so the
//! figure is the token endpoint alone: parse, client auth, atomic code redemption, PKCE, two
//! signatures. The load side is a bare keep-alive HTTP/1.1 client (no client library), so the
//! cores go to the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
#[path = "common/cpu.rs"]
mod cpu;

use std::time::{Duration, Instant};

use claimrules::config::SigningAlg;
use claimrules::issuer::{SigningKey, TokenRequest};
use claimrules::model::{unix_now, Protocol};
use claimrules::server::{prepare, ServeOptions};
use serde_json::json;

const SECRET: &str = "bench-secret-0123456789";
const REDIRECT: &str = "http://127.0.0.1:4000/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Signs/s of one key on `threads` threads for `secs`.
fn signing_ceiling(alg: SigningAlg, threads: usize, secs: f64) -> f64 {
    let key = Arc::new(SigningKey::generate(alg).unwrap());
    let claims = json!({"iss": "http://127.0.0.1:3000/", "sub": "auth0|alice", "aud": "https://api.example.com",
        "iat": 1, "exp": 2, "scope": "openid read:contacts", "https://example.com/roles": ["admin"]});
    let count = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (key, claims, count) = (key.clone(), claims.clone(), count.clone());
            std::thread::spawn(move || {
                while Instant::now() < end {
                    std::hint::black_box(key.sign_jwt("at+jwt", &claims).unwrap());
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / secs
}

fn config(dir: &std::path::Path, alg: SigningAlg, port: u16) -> std::path::PathBuf {
    let hash = claimrules::password::hash("pw").unwrap();
    let text = format!(
        r#"issuer = "http://127.0.0.1:{port}/"
rules = "{rules}"
data = "{data}"
signing_alg = "{alg}"
[[client]]
client_id = "bench"
client_secret = "{SECRET}"
redirect_uris = ["{REDIRECT}"]
[[api]]
identifier = "https://api.example.com"
scopes = ["read:contacts"]
allow_offline_access = true
[[user]]
user_id = "auth0|alice"
email = "alice@example.com"
email_verified = true
name = "Alice"
password_hash = "{hash}"
app_metadata = {{ roles = ["admin"], plan = "pro" }}
"#,
        rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules"),
        data = dir.join("data").display(),
        alg = alg.as_str()
    );
    let p = dir.join("claimrules.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A keep-alive HTTP/1.1 connection that sends form POSTs: the load side of the bench, kept
/// lean (no client library) so the cores go to the server being measured.
struct Conn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream: tokio::io::BufReader::new(stream),
        }
    }

    /// Sends one POST and reads the answer (status, body); the server answers with a
    /// Content-Length, never chunked, for these small JSON bodies.
    async fn post(&mut self, addr: SocketAddr, path: &str, body: &str) -> (u16, Vec<u8>) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut answer = vec![0; len];
        self.stream.read_exact(&mut answer).await.unwrap();
        (status, answer)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One run: exchanges/s, p50 and p99 latency (ms), process CPU µs per exchange.
async fn exchange_run(alg: SigningAlg, secs: u64, concurrency: usize) -> (f64, f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let cfg = config(dir.path(), alg, addr.port());
    let prepared = prepare(&ServeOptions {
        config: Some(cfg),
        no_watch: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let state = prepared.state.clone();
    let app = claimrules::server::app(&prepared);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    // Mint enough codes: the rules run once per code, as at /authorize.
    let client = state.config.client("bench").unwrap().clone();
    let api = state.config.api("https://api.example.com").cloned();
    let user = state.config.users[0].to_rule_user(1);
    let scopes: Vec<String> = ["openid", "profile", "read:contacts"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut req = TokenRequest::for_client(&client, user)
        .scopes(scopes.clone())
        .nonce("n")
        .auth_time(unix_now())
        .protocol(Protocol::AuthorizationCode)
        .request(json!({"query": {}}))
        .logins_count(1);
    if let Some(api) = &api {
        req = req.api(api);
    }
    let claims = serde_json::to_value(state.issuer.run_rules(&req).unwrap()).unwrap();
    let n = (secs as usize + 2) * 6000;
    let codes: Vec<String> = (0..n).map(|i| format!("bench-code-{i:08}")).collect();
    for code in &codes {
        let grant = claimrules::store::Grant {
            client_id: "bench".into(),
            user_id: "auth0|alice".into(),
            audience: Some("https://api.example.com".into()),
            scopes: scopes.clone(),
            redirect_uri: REDIRECT.into(),
            nonce: Some("n".into()),
            code_challenge: Some(CHALLENGE.into()),
            auth_time: unix_now(),
            session_id: None,
            request: json!({}),
            rule_scope: None,
            claims: Some(claims.clone()),
        };
        state
            .store
            .put_code(
                &claimrules::crypto::sha256_hex(code),
                &grant,
                unix_now() + 3600,
            )
            .await
            .unwrap();
    }
    let codes = Arc::new(codes);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu::cpu_time();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (codes, next) = (codes.clone(), next.clone());
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await;
                let mut lat = Vec::new();
                while Instant::now() < end {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(code) = codes.get(i) else { break };
                    let body = serde_urlencoded::to_string([
                        ("grant_type", "authorization_code"),
                        ("client_id", "bench"),
                        ("client_secret", SECRET),
                        ("code", code),
                        ("redirect_uri", REDIRECT),
                        ("code_verifier", VERIFIER),
                    ])
                    .unwrap();
                    let t = Instant::now();
                    let (status, answer) = conn.post(addr, "/oauth/token", &body).await;
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                    assert!(answer.starts_with(b"{\"access_token\""));
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = (cpu::cpu_time() - cpu0).as_secs_f64() * 1e6 / all.len().max(1) as f64;
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        cpu_us,
    )
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let secs = env_num("SECONDS", 5);
    // Closed loop: at 16 clients the exchange waits on the code redemption's fsync; more
    // clients fill the commit batches. Both are reported.
    let concurrency: Vec<usize> = std::env::var("CONCURRENCY")
        .unwrap_or_else(|_| "16 32".into())
        .split([' ', ','])
        .filter_map(|c| c.parse().ok())
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
        .unwrap();
    println!(
        "token_exchange: {threads} cores, {concurrency:?} concurrent clients, {secs} s per run"
    );
    for alg in [SigningAlg::RS256, SigningAlg::ES256] {
        for &conc in &concurrency {
            let ceiling = signing_ceiling(alg, threads, 3.0);
            // Every core signing: one signature's CPU is `threads` cores over the rate.
            let sign_us = threads as f64 * 1e6 / ceiling;
            let (rps, p50, p99, cpu_us) = rt.block_on(exchange_run(alg, secs, conc));
            println!(
                "{:6} {conc:>3} clients | signing ceiling {:>8.0} signs/s -> {:>7.0} exchanges/s | measured {:>7.0} exchanges/s (p50 {:.2} ms, p99 {:.2} ms) = {:.0} % of the ceiling | CPU {:.0} µs/exchange, sign {:.0} µs, beyond 2 signatures {:.0} µs",
                alg.as_str(), ceiling, ceiling / 2.0, rps, p50, p99, 100.0 * rps / (ceiling / 2.0),
                cpu_us, sign_us, cpu_us - 2.0 * sign_us
            );
        }
    }
}
