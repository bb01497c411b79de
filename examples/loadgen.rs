//! Refresh-grant load generator for any loopback token server, without Node.
//!
//! Mints N refresh tokens through the real flow (/authorize + login form + consent form + code
//! exchange with PKCE), then runs C workers that loop the refresh grant for D seconds after a
//! warm-up, keeping each rotated token, and prints one JSON line: rps, latency percentiles,
//! errors and the server's RSS.
//!
//! ```sh
//! cargo run --release --example loadgen -- --base http://127.0.0.1:3000 --client-id demo-app \
//!   --client-secret SECRET --users demo@example.com:PASSWORD --server-pid $(pgrep claimrules)
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use regex::Regex;
use serde_json::{json, Value};
use sha2::Digest;

#[derive(Debug, Clone)]
struct Opts {
    base: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    audience: String,
    scope: String,
    users: Vec<(String, String)>,
    n: usize,
    concurrency: usize,
    duration: f64,
    warmup: f64,
    server_pid: Option<u32>,
}

fn parse_args() -> Result<Opts, String> {
    let mut m: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let key = a.trim_start_matches('-').to_owned();
        let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        m.insert(key, v);
    }
    let get = |k: &str, d: &str| m.get(k).cloned().unwrap_or_else(|| d.to_owned());
    let base = get("base", "http://127.0.0.1:3000");
    let host = url_host(&base);
    if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
        return Err(format!("refusing non-loopback target {base}"));
    }
    Ok(Opts {
        base: base.trim_end_matches('/').to_owned(),
        client_id: get("client-id", "demo-app"),
        client_secret: m
            .get("client-secret")
            .cloned()
            .ok_or("--client-secret is required")?,
        redirect_uri: get("redirect-uri", "http://127.0.0.1:4000/callback"),
        audience: get("audience", "https://api.example.com"),
        scope: get("scope", "openid profile email offline_access read:contacts"),
        users: get("users", "demo@example.com:demo")
            .split(',')
            .filter_map(|u| u.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect(),
        n: get("n", "32").parse().map_err(|e| format!("--n: {e}"))?,
        concurrency: get("c", "16").parse().map_err(|e| format!("-c: {e}"))?,
        duration: get("d", "15").parse().map_err(|e| format!("-d: {e}"))?,
        warmup: get("warmup", "3")
            .parse()
            .map_err(|e| format!("--warmup: {e}"))?,
        server_pid: m.get("server-pid").and_then(|p| p.parse().ok()),
    })
}

fn url_host(base: &str) -> String {
    base.split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_owned()
}

fn hidden(html: &str, name: &str) -> Option<String> {
    let re = Regex::new(&format!(r#"name="{name}" value="([^"]*)""#)).ok()?;
    re.captures(html).map(|c| {
        c[1].replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    })
}

/// One refresh token through the real flow.
async fn mint(o: &Opts, user: &(String, String)) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let q = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", o.client_id.as_str()),
        ("redirect_uri", o.redirect_uri.as_str()),
        ("scope", o.scope.as_str()),
        ("audience", o.audience.as_str()),
        ("state", "loadgen"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .map_err(|e| e.to_string())?;
    let mut res = http
        .get(format!("{}/authorize?{q}", o.base))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..4 {
        if res.status().is_redirection() {
            break;
        }
        let html = res.text().await.map_err(|e| e.to_string())?;
        let authz = hidden(&html, "authz").ok_or("no authz field on the page")?;
        let csrf = hidden(&html, "csrf").ok_or("no csrf field on the page")?;
        res = if html.contains("type=\"password\"") {
            http.post(format!("{}/login", o.base))
                .form(&[
                    ("authz", authz.as_str()),
                    ("csrf", &csrf),
                    ("username", &user.0),
                    ("password", &user.1),
                ])
                .send()
                .await
        } else {
            http.post(format!("{}/consent", o.base))
                .form(&[
                    ("authz", authz.as_str()),
                    ("csrf", &csrf),
                    ("decision", "allow"),
                ])
                .send()
                .await
        }
        .map_err(|e| e.to_string())?;
    }
    let loc = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("no redirect after login/consent")?;
    let code = url::Url::parse(loc)
        .map_err(|e| e.to_string())?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| format!("no code in {loc}"))?;
    let tok: Value = http
        .post(format!("{}/oauth/token", o.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", o.client_id.as_str()),
            ("client_secret", o.client_secret.as_str()),
            ("code", code.as_str()),
            ("redirect_uri", o.redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    tok["refresh_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no refresh_token in {tok}"))
}

fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((kb("VmRSS:")? / 1024.0, kb("VmHWM:")? / 1024.0))
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let mut tokens = Vec::with_capacity(o.n);
    for i in 0..o.n {
        let user = &o.users[i % o.users.len().max(1)];
        match mint(&o, user).await {
            Ok(t) => tokens.push(t),
            Err(e) => {
                eprintln!("loadgen: minting token {i} failed: {e}");
                std::process::exit(1);
            }
        }
    }
    eprintln!(
        "loadgen: {} refresh tokens in {:.1} s",
        tokens.len(),
        t0.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency)
        .build()
        .unwrap_or_default();
    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(o.warmup);
    let end = window_start + Duration::from_secs_f64(o.duration);
    let cpu0 = Arc::new(std::sync::Mutex::new(None));
    if let Some(pid) = o.server_pid {
        let c = cpu0.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            if let Ok(mut g) = c.lock() {
                *g = cpu_ticks(pid);
            }
        });
    }
    let mut per_worker: Vec<Vec<String>> = vec![Vec::new(); o.concurrency];
    for (i, t) in tokens.into_iter().enumerate() {
        per_worker[i % o.concurrency].push(t);
    }
    let url = format!("{}/oauth/token", o.base);
    let tasks: Vec<_> = per_worker
        .into_iter()
        .map(|mut mine| {
            let (http, url, id, secret) = (
                http.clone(),
                url.clone(),
                o.client_id.clone(),
                o.client_secret.clone(),
            );
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), HashMap::<String, u64>::new());
                let mut i = 0;
                while Instant::now() < end && !mine.is_empty() {
                    let idx = i % mine.len();
                    let t = Instant::now();
                    let res = http
                        .post(&url)
                        .form(&[
                            ("grant_type", "refresh_token"),
                            ("client_id", &id),
                            ("client_secret", &secret),
                            ("refresh_token", &mine[idx]),
                        ])
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    let in_window = t >= window_start && Instant::now() <= end;
                    match res {
                        Ok(r) if r.status() == 200 => {
                            let body: Value = r.json().await.unwrap_or(Value::Null);
                            if let Some(nt) = body["refresh_token"].as_str() {
                                mine[idx] = nt.to_owned();
                            }
                            if in_window {
                                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                            }
                        }
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let body: Value = r.json().await.unwrap_or(Value::Null);
                            *errors
                                .entry(format!("{status} {}", body["error"].as_str().unwrap_or("")))
                                .or_default() += 1;
                            // Nobody knows whether a failed request consumed the token: drop it.
                            mine.remove(idx);
                        }
                        Err(e) => {
                            *errors
                                .entry(format!("net {}", e.without_url()))
                                .or_default() += 1;
                            mine.remove(idx);
                        }
                    }
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), HashMap::<String, u64>::new());
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            for (k, v) in e {
                *errors.entry(k).or_default() += v;
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut out = json!({
        "rps": (lat.len() as f64 / o.duration * 10.0).round() / 10.0,
        "ok": lat.len(),
        "latency_ms": {"p50": pct(&lat, 0.5), "p90": pct(&lat, 0.9), "p99": pct(&lat, 0.99),
                        "max": lat.last().copied().unwrap_or(0.0)},
        "errors": errors.values().sum::<u64>(),
        "error_kinds": errors,
        "concurrency": o.concurrency,
        "duration_s": o.duration,
    });
    if let Some(pid) = o.server_pid {
        let ticks_per_s = 100.0;
        let c0 = cpu0.lock().ok().and_then(|g| *g);
        if let (Some(c0), Some(c1)) = (c0, cpu_ticks(pid)) {
            out["server_cpu_pct"] =
                json!(((c1 - c0) as f64 / ticks_per_s / o.duration * 1000.0).round() / 10.0);
        }
        if let Some((rss, hwm)) = rss_mib(pid) {
            out["server_mem_mib"] =
                json!({"rss": (rss * 10.0).round() / 10.0, "hwm": (hwm * 10.0).round() / 10.0});
        }
    }
    println!("{out}");
}
