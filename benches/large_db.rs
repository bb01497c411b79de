//! Refresh-token rotation on an empty and on a large SQLite database, and during a purge of the
//! expired tokens (issue 18, target 4: flat with data size; the purge does not stall requests).
//!
//! ```sh
//! cargo bench --bench large_db                      # 1,000,000 live + 1,000,000 expired tokens
//! LIVE=100000 EXPIRED=100000 SECS=3 cargo bench --bench large_db   # quick run
//! ```
//!
//! Env: `LIVE`, `EXPIRED` (rows to fill), `SECS` (seconds per round, default 5), `ROUNDS`
//! (turns of the empty and the full database, default 3), `TASKS`
//! (concurrent chains, default 16, as the loadgen's 16 clients), `OUT` (also write the figures
//! as one JSON object to that file).
//!
//! Each task loops the store calls the token endpoint makes per refresh
//! (src/server/token/refresh.rs): `Store::rotate_refresh_early` (mark used, read the grant and
//! the user's metadata, store the successor) and the wait for its commit (durable before the
//! answer). No HTTP and no signing: this isolates the store's share and how it grows with the
//! data.
//!
//! The tokens' keys are the server's own (`claimrules::crypto::refresh_token_key` of a
//! `new_refresh_token`): they sort by issue order.
//!
//! The large database is filled FAST through a separate SQLite connection (rusqlite, bulk
//! `INSERT … SELECT` over a recursive CTE in one transaction, same schema as
//! migrations/sqlite/*.sql, created by `Store::open_in_folder`): every live token in a family of
//! its own (one grant per token; family ids shaped like the server's `crypto::new_family_id`,
//! made with the token), every expired token likewise, so the purge deletes 2 rows per expired
//! grant. Their keys are shaped like the server's: issued
//! in the 30 days before the run (the live ones) and the 30 before those (the expired ones), in
//! that order, with a random digest.
//!
//! Phases: `empty` (fresh database) and `full` (after the fill, flushed to disk, store reopened),
//! measured in `ROUNDS` turns of `SECS` each (empty, full, empty, full, …: this machine's speed
//! drifts within a minute, so one phase after the other compared the drift as much as the data),
//! then `purge` (the same load while `Store::purge_expired` deletes the expired grants; its p99 is
//! over the requests that overlapped the purge).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use claimrules::crypto::{new_family_id, new_refresh_token, refresh_token_key, sha256_hex};
use claimrules::store::{Grant, Rotation, Store};
use serde_json::{json, Value};

const DAY: i64 = 86_400;

fn env_num(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(d)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A grant shaped like the ones the authorization code flow stores for a refresh family
/// (src/server/token/code.rs `for_refresh`: no login request, of the login's claims only the
/// user's `logins_count`).
fn grant(i: usize) -> Grant {
    Grant {
        client_id: "bench-client".into(),
        user_id: format!("auth0|user{i}"),
        audience: Some("https://api.example.com".into()),
        scopes: [
            "openid",
            "profile",
            "email",
            "offline_access",
            "read:contacts",
        ]
        .map(String::from)
        .to_vec(),
        redirect_uri: "https://client.example.com/callback".into(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: None,
        auth_time: now(),
        session_id: Some(sha256_hex(&format!("session-{i}"))),
        request: Value::Null,
        rule_scope: None,
        claims: Some(json!({"user": {"logins_count": 1}})),
    }
}

/// Bulk-fills `live` live and `expired` expired refresh tokens, each with its own family, in one
/// transaction on a connection of its own. Returns seconds taken.
fn fill(db: &Path, live: u64, expired: u64) -> Result<f64, rusqlite::Error> {
    let t = Instant::now();
    let c = rusqlite::Connection::open(db)?;
    // Bench-only settings for the fill connection: the store's own connections keep theirs.
    c.execute_batch(
        "PRAGMA synchronous = OFF; PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY;",
    )?;
    let grant_json = serde_json::to_string(&grant(0)).unwrap_or_default();
    let n = now();
    c.execute_batch("BEGIN")?;
    // (rows, expiry, issue time of the first row in µs): the expired ones were issued first.
    let us = |secs: i64| secs * 1_000_000;
    for (count, expires_at, issued_from) in [
        (expired, n - DAY, us(n - 60 * DAY)),
        (live, n + 30 * DAY, us(n - 30 * DAY)),
    ] {
        if count == 0 {
            continue;
        }
        let step = us(30 * DAY) / count.max(1) as i64;
        c.execute_batch(
            "DROP TABLE IF EXISTS temp.fill;
             CREATE TEMP TABLE fill (family TEXT NOT NULL);",
        )?;
        // Families named like the server's (`crypto::new_family_id`), created with their token.
        c.execute(
            "WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < ?1)
             INSERT INTO temp.fill (family)
             SELECT printf('%016x', ?2 + n * ?3) || '.' || lower(hex(randomblob(8))) FROM i",
            rusqlite::params![count as i64, issued_from, step],
        )?;
        c.execute(
            "INSERT INTO refresh_families (family, grant_json, revoked)
             SELECT family, ?1, 0 FROM temp.fill",
            rusqlite::params![grant_json],
        )?;
        c.execute(
            "INSERT INTO refresh_tokens (token_hash, family, family_id, expires_at, used_at)
             SELECT 'z' || printf('%016x', ?2 + w.rowid * ?3) || lower(hex(randomblob(32))),
                    w.family, f.id, ?1, NULL
             FROM temp.fill w JOIN refresh_families f ON f.family = w.family ORDER BY w.rowid",
            rusqlite::params![expires_at, issued_from, step],
        )?;
    }
    c.execute_batch("DROP TABLE IF EXISTS temp.fill; COMMIT;")?;
    // Leave no giant WAL behind for the store to replay.
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(t.elapsed().as_secs_f64())
}

/// One phase's latencies: (start offset from the phase start, duration).
type Samples = Vec<(Duration, Duration)>;

/// `tasks` chains, each looping refresh_grant + rotate_refresh until `until` says stop.
async fn load(
    store: &Store,
    tasks: usize,
    stop: Arc<tokio::sync::watch::Receiver<bool>>,
) -> (f64, Samples) {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (store, stop) = (store.clone(), stop.clone());
        let family = new_family_id();
        handles.push(tokio::spawn(async move {
            let exp = Some(now() + 30 * DAY);
            let mut current = refresh_token_key(&new_refresh_token());
            store
                .put_refresh(&current, &family, &grant(t), exp)
                .await
                .map_err(|e| e.to_string())?;
            let mut samples = Vec::new();
            while !*stop.borrow() {
                let next = refresh_token_key(&new_refresh_token());
                let t0 = Instant::now();
                let ts = now();
                // As the token endpoint does: one rotation that also reads the grant, answered
                // in the open transaction, then the wait for its commit.
                let (r, committed) = store
                    .rotate_refresh_early(&current, &next, ts, exp, "bench-client")
                    .await;
                let r = r.map_err(|e| e.to_string())?;
                committed.wait().await.map_err(|e| e.to_string())?;
                if !matches!(r, Rotation::Rotated { .. }) {
                    return Err(format!("chain {t}: unexpected rotation {r:?}"));
                }
                samples.push((t0 - started, t0.elapsed()));
                current = next;
            }
            Ok::<_, String>(samples)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(s)) => all.extend(s),
            Ok(Err(e)) => panic!("bench task failed: {e}"),
            Err(e) => panic!("bench task panicked: {e}"),
        }
    }
    (started.elapsed().as_secs_f64(), all)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    (sorted[i].as_secs_f64() * 1e6).round() / 1e3
}

fn summary(phase: &str, secs: f64, samples: &[(Duration, Duration)]) -> Value {
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    lat.sort();
    json!({
        "phase": phase,
        "rotations": lat.len(),
        "rotations_per_s": (lat.len() as f64 / secs).round(),
        "p50_ms": pct(&lat, 0.50),
        "p99_ms": pct(&lat, 0.99),
        "max_ms": pct(&lat, 1.0),
    })
}

/// Runs the load for `secs` seconds.
async fn timed(store: &Store, tasks: usize, secs: u64) -> (f64, Samples) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let _ = tx.send(true);
    });
    let out = load(store, tasks, Arc::new(rx)).await;
    let _ = stopper.await;
    out
}

/// One database's rounds: every sample, the seconds they took, and each round's throughput.
#[derive(Default)]
struct Rounds {
    samples: Samples,
    secs: f64,
    per_round: Vec<f64>,
}

impl Rounds {
    fn add(&mut self, (secs, samples): (f64, Samples)) {
        self.per_round.push((samples.len() as f64 / secs).round());
        self.secs += secs;
        self.samples.extend(samples);
    }

    /// [`summary`] over all rounds, with each round's rotations per second.
    fn summary(&self, phase: &str) -> Value {
        let mut line = summary(phase, self.secs, &self.samples);
        line["rounds_rotations_per_s"] = json!(self.per_round);
        line
    }
}

fn db_mib(dir: &Path) -> f64 {
    let size: u64 = ["claimrules.db", "claimrules.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    (size as f64 / 1048576.0 * 10.0).round() / 10.0
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let live = env_num("LIVE", 1_000_000);
    let expired = env_num("EXPIRED", 1_000_000);
    let secs = env_num("SECS", 5);
    let tasks = env_num("TASKS", 16) as usize;
    let rounds = env_num("ROUNDS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut lines = Vec::new();
    rt.block_on(async {
        let root = tempfile::tempdir().expect("tempdir");
        let empty = root.path().join("empty");
        let empty_store = Store::open_in_folder(&empty)
            .await
            .expect("open empty store");
        // Large database: the store creates the schema, the fill connection adds the rows.
        let full = root.path().join("full");
        drop(
            Store::open_in_folder(&full)
                .await
                .expect("create full store"),
        );
        eprintln!("large_db: filling {live} live + {expired} expired refresh tokens");
        let fill_s = fill(&full.join("claimrules.db"), live, expired).expect("bulk fill");
        let size = db_mib(&full);
        eprintln!("large_db: filled in {fill_s:.1} s, database {size} MiB");
        // A database in use has no gigabytes of the fill's dirty pages waiting for writeback:
        // flushed first, they would slow the first phase's fsyncs.
        std::fs::File::open(full.join("claimrules.db"))
            .and_then(|f| f.sync_all())
            .expect("sync the filled database");
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let store = Store::open_in_folder(&full)
            .await
            .expect("reopen full store");
        // The two databases in turns, so the machine's drift (a shared VM) hits both alike.
        let (mut e, mut f) = (Rounds::default(), Rounds::default());
        for _ in 0..rounds {
            e.add(timed(&empty_store, tasks, secs).await);
            f.add(timed(&store, tasks, secs).await);
        }
        drop(empty_store);
        lines.push(e.summary("empty"));
        let mut full_line = f.summary("full");
        full_line["fill_s"] = json!((fill_s * 10.0).round() / 10.0);
        full_line["db_mib"] = json!(size);
        lines.push(full_line);

        // The same load while the expired grants are purged: the purge starts after 1 s and the
        // load runs until `secs` have passed and the purge has been over for 1 s.
        let (tx, rx) = tokio::sync::watch::channel(false);
        let load_store = store.clone();
        let loader = tokio::spawn(async move { load(&load_store, tasks, Arc::new(rx)).await });
        let phase_start = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let purge_from = phase_start.elapsed();
        let deleted = store.purge_expired(now()).await.expect("purge");
        let purge_to = phase_start.elapsed();
        let rest = Duration::from_secs(secs).saturating_sub(purge_to);
        tokio::time::sleep(rest.max(Duration::from_secs(1))).await;
        let _ = tx.send(true);
        let (s, samples) = loader.await.expect("load task");
        // The loader's clock started a moment before `phase_start`; the difference is far
        // below a millisecond and only widens the overlap window.
        let during: Vec<_> = samples
            .iter()
            .copied()
            .filter(|(at, d)| *at < purge_to && *at + *d > purge_from)
            .collect();
        let mut line = summary("purge", s, &samples);
        let d = summary("during", 1.0, &during);
        line["purge_s"] = json!(((purge_to - purge_from).as_secs_f64() * 100.0).round() / 100.0);
        line["purge_rows_deleted"] = json!(deleted);
        line["during_purge"] = json!({"rotations": d["rotations"], "p50_ms": d["p50_ms"],
                                      "p99_ms": d["p99_ms"], "max_ms": d["max_ms"]});
        lines.push(line);
    });
    let result = json!({"bench": "large_db", "live": live, "expired": expired, "tasks": tasks,
                        "secs_per_round": secs, "rounds": rounds, "phases": lines});
    for l in &lines {
        println!("{l}");
    }
    let (e, f) = (&lines[0], &lines[1]);
    let ratio = |k: &str| f[k].as_f64().unwrap_or(0.0) / e[k].as_f64().unwrap_or(1.0).max(1e-9);
    println!(
        "large_db: empty {} rot/s p99 {} ms | {live}+{expired} rows {} rot/s p99 {} ms ({:+.1} %) | during purge ({} s, {} rows) p99 {} ms max {} ms",
        e["rotations_per_s"], e["p99_ms"], f["rotations_per_s"], f["p99_ms"],
        100.0 * (ratio("rotations_per_s") - 1.0), lines[2]["purge_s"],
        lines[2]["purge_rows_deleted"], lines[2]["during_purge"]["p99_ms"], lines[2]["during_purge"]["max_ms"]
    );
    if let Ok(out) = std::env::var("OUT") {
        std::fs::write(&out, format!("{result:#}\n")).expect("write OUT");
    }
}
