//! Store throughput: refresh-token rotations per second with 1, 16 and 64 concurrent tasks.
//!
//! `cargo bench --bench store` (plain main, prints ops/s and latency percentiles). Each task
//! rotates its own refresh-token chain as fast as it can for `CLAIMRULES_BENCH_SECS` seconds
//! (default 3). Every rotation is durable (SQLite: WAL, synchronous=FULL) before it returns.
//! PostgreSQL is measured too when `CLAIMRULES_BENCH_POSTGRES_URL` is set.
//!
//! A fixed workload for CPU counts: `CLAIMRULES_BENCH_ROTATIONS=10000 CLAIMRULES_BENCH_TASKS=1`
//! runs exactly that many rotations (split over the tasks) on SQLite only and prints the
//! process's CPU time (user + system, all threads, from `getrusage`) per rotation; run it under
//! `perf stat -e task-clock` or `valgrind --tool=callgrind` for figures that do not depend on
//! the machine's other load.
//!
//! Reading the figures: with one task every rotation pays one commit (one fsync); with more
//! tasks the SQLite writer commits all queued rotations together, so throughput grows with
//! concurrency until the CPU, not the disk, is the limit. The bench also prints the disk's own
//! fdatasync rate so the figures can be compared across machines.

#[path = "common/cpu.rs"]
mod cpu;

use std::time::{Duration, Instant};

use claimrules::store::{Grant, Rotation, Store};
use sha2::{Digest, Sha256};

fn hash(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn grant(i: usize) -> Grant {
    Grant {
        client_id: "demo-app".into(),
        user_id: format!("auth0|user{i}"),
        audience: Some("https://api.example.com".into()),
        scopes: vec![
            "openid".into(),
            "profile".into(),
            "offline_access".into(),
            "read:contacts".into(),
        ],
        redirect_uri: "http://127.0.0.1:4000/callback".into(),
        nonce: None,
        code_challenge: None,
        auth_time: 1_800_000_000,
        session_id: Some(format!("session-{i}")),
        request: serde_json::json!({"ip": "127.0.0.1", "hostname": "127.0.0.1:3000",
                                    "userAgent": "bench", "query": {}}),
        rule_scope: None,
        claims: None,
    }
}

/// Rotations by `tasks` concurrent chains for `secs` seconds, or `count` rotations per task.
async fn rotations(
    store: &Store,
    tasks: usize,
    run: &str,
    secs: u64,
    count: Option<u64>,
) -> (f64, Vec<Duration>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        let family = format!("{run}-family-{t}");
        handles.push(tokio::spawn(async move {
            let mut current = hash(&format!("{family}-0"));
            store
                .put_refresh(&current, &family, &grant(t), Some(1_900_000_000))
                .await
                .map_err(|e| e.to_string())?;
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while count.map_or(Instant::now() < deadline, |c| n < c) {
                n += 1;
                let next = hash(&format!("{family}-{n}"));
                let t0 = Instant::now();
                let r = store
                    .rotate_refresh(&current, &next, 1_800_000_000, Some(1_900_000_000))
                    .await
                    .map_err(|e| e.to_string())?;
                latencies.push(t0.elapsed());
                if !matches!(r, Rotation::Rotated { .. }) {
                    return Err(format!("unexpected rotation result {r:?}"));
                }
                current = next;
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => panic!("bench task failed: {e}"),
            Err(e) => panic!("bench task panicked: {e}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, all)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn bench_engine(name: &str, store: &Store, secs: u64) {
    for tasks in [1usize, 16, 64] {
        let (ops, lat) = rotations(store, tasks, &format!("{name}-{tasks}"), secs, None).await;
        println!(
            "{name:<10} rotate_refresh  tasks={tasks:<3} {ops:>9.0} ops/s   p50 {:.2} ms  p99 {:.2} ms",
            pct(&lat, 0.50),
            pct(&lat, 0.99)
        );
    }
}

/// The disk's durable-write rate: 4 KiB overwrites, each followed by fdatasync, for one second.
fn fsync_rate(dir: &std::path::Path) {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    f.write_all(&vec![0u8; 4096 * 256]).expect("probe write");
    f.sync_all().expect("probe sync");
    let (started, mut n, mut lat) = (Instant::now(), 0u64, Vec::new());
    while started.elapsed() < Duration::from_secs(1) {
        f.seek(SeekFrom::Start((n % 256) * 4096)).expect("seek");
        f.write_all(&[1u8; 4096]).expect("write");
        let t0 = Instant::now();
        f.sync_data().expect("fdatasync");
        lat.push(t0.elapsed());
        n += 1;
    }
    lat.sort();
    println!(
        "disk       fdatasync               {:>9.0} ops/s   p50 {:.2} ms  p99 {:.2} ms",
        n as f64 / started.elapsed().as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99)
    );
    let _ = std::fs::remove_file(path);
}

/// The fixed workload: `total` rotations over `tasks` chains, CPU per rotation.
async fn fixed_workload(store: &Store, total: u64, tasks: usize) {
    let per_task = total.div_ceil(tasks as u64);
    let (cpu0, wall0) = (cpu::cpu_time(), Instant::now());
    let (_, lat) = rotations(store, tasks, "fixed", 0, Some(per_task)).await;
    let (cpu, wall) = (cpu::cpu_time() - cpu0, wall0.elapsed());
    let n = lat.len() as f64;
    println!(
        "sqlite     fixed tasks={tasks:<3} rotations={} wall {:.2} s  {:>8.0} ops/s  CPU {:.1} us/rotation  p50 {:.2} ms  p99 {:.2} ms",
        lat.len(),
        wall.as_secs_f64(),
        n / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n,
        pct(&lat, 0.50),
        pct(&lat, 0.99)
    );
}

fn main() {
    // Criterion-style filter arguments (`cargo bench -- x`) are accepted and ignored.
    let secs = std::env::var("CLAIMRULES_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fixed: Option<u64> = std::env::var("CLAIMRULES_BENCH_ROTATIONS")
        .ok()
        .and_then(|s| s.parse().ok());
    let tasks: usize = std::env::var("CLAIMRULES_BENCH_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        // The store refuses a data folder others can read: a private one inside the tempdir.
        let data = dir.path().join("data");
        if let Some(total) = fixed {
            let store = Store::open_in_folder(&data)
                .await
                .expect("open sqlite store");
            fixed_workload(&store, total, tasks.max(1)).await;
            return;
        }
        fsync_rate(dir.path());
        let store = Store::open_in_folder(&data)
            .await
            .expect("open sqlite store");
        bench_engine("sqlite", &store, secs).await;
        if let Ok(base) = std::env::var("CLAIMRULES_BENCH_POSTGRES_URL") {
            // A schema of its own, dropped afterwards.
            use sqlx::Connection;
            let mut admin = sqlx::postgres::PgConnection::connect(&base)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL unreachable at {base}: {e}"));
            let schema = format!("cr_bench_{:08x}", rand::random::<u32>());
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut admin)
                .await
                .expect("create bench schema");
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
            let store = Store::open(&url).await.expect("open postgres store");
            bench_engine("postgres", &store, secs).await;
            drop(store);
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut admin)
                .await
                .expect("drop bench schema");
        }
    });
}
