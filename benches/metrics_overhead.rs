//! The cost of metrics on the hot path: the sample rules' pipeline (which records per-rule
//! duration, operations and outcome, and the pipeline duration) plus the per-request counters
//! of a refresh (tokens issued, a store commit, batch size and queue wait), run in alternating
//! batches without a recorder and with the Prometheus recorder the server installs.
//!
//! Run with `cargo bench --bench metrics_overhead`; `RUNS` (default 20000) per variant. Prints
//! thread CPU µs per run for both and the difference, to set against the CPU cost of one
//! refresh (README "Performance").

use std::time::Duration;

use claimrules::rules::RuleSet;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec the caller owns.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn per_request_counters() {
    metrics::counter!("claimrules_tokens_issued_total", "grant_type" => "refresh_token", "alg" => "ES256").increment(1);
    metrics::histogram!("claimrules_store_commit_duration_seconds").record(0.0004);
    metrics::histogram!("claimrules_store_batch_size").record(3.0);
    metrics::histogram!("claimrules_store_pool_wait_seconds").record(0.00002);
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let set = RuleSet::load(concat!(env!("CARGO_MANIFEST_DIR"), "/rules")).expect("sample rules");
    let user = json!({"user_id": "auth0|1", "email": "a@example.com", "email_verified": true,
        "app_metadata": {"roles": ["admin"], "plan": "pro"}, "user_metadata": {"theme": "dark"}, "logins_count": 3});
    let context = json!({"clientID": "demo-app", "protocol": "oauth2-refresh-token",
        "request": {"query": {}, "body": {"scope": "openid read:contacts"}}, "stats": {"loginsCount": 3}});
    let recorder = PrometheusBuilder::new().build_recorder();
    let batch = 500;
    let (mut off, mut on) = (Duration::ZERO, Duration::ZERO);
    let mut done = 0;
    while done < runs {
        let t = thread_cpu();
        for _ in 0..batch {
            set.run(user.clone(), context.clone()).expect("runs");
            per_request_counters();
        }
        off += thread_cpu() - t;
        metrics::with_local_recorder(&recorder, || {
            let t = thread_cpu();
            for _ in 0..batch {
                set.run(user.clone(), context.clone()).expect("runs");
                per_request_counters();
            }
            on += thread_cpu() - t;
        });
        done += batch;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / done as f64;
    println!(
        "pipeline + per-request counters, CPU per run: without recorder {:.2} µs, with the Prometheus recorder {:.2} µs, metrics cost {:.2} µs ({done} runs each)",
        per(off),
        per(on),
        per(on) - per(off)
    );
}
