//! Latency from a rule file write to the new rules being in effect under a watching
//! `HotRules`: median, 90th percentile and max over 50 edits. Target: median ≤ 250 ms.
//!
//! Run: `cargo bench --bench reload_latency`.

use std::time::{Duration, Instant};

use claimrules::rules::hot::{HotRules, DEBOUNCE, TICK_RATE};
use serde_json::json;

const EDITS: usize = 50;

fn rule(v: usize) -> String {
    format!("context.accessToken[\"https://example.com/v\"] = {v};\n")
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("10-v.rhai");
    std::fs::write(&file, rule(0)).expect("write");
    let hot = HotRules::load(dir.path(), Default::default()).expect("load");
    hot.watch().expect("watch");
    let user = json!({"user_id": "auth0|bench"});
    let ctx = json!({"clientID": "bench"});

    let mut samples = Vec::with_capacity(EDITS);
    for v in 1..=EDITS {
        let start = Instant::now();
        std::fs::write(&file, rule(v)).expect("write");
        // "In effect" = a pipeline run started now sees the new claim.
        loop {
            let out = hot
                .current()
                .set
                .run(user.clone(), ctx.clone())
                .expect("run");
            if out.access_token["https://example.com/v"] == json!(v) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "edit {v} never took effect"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(start.elapsed());
        // Let the watcher go idle so each edit is measured on its own.
        std::thread::sleep(DEBOUNCE * 2);
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = (ms(samples[EDITS / 2 - 1]) + ms(samples[EDITS / 2])) / 2.0;
    println!(
        "reload_latency: {EDITS} edits, debounce {} ms, tick {} ms (notify-debouncer-full, folder watched recursively)",
        DEBOUNCE.as_millis(),
        TICK_RATE.as_millis()
    );
    println!(
        "reload_latency: min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms (target median <= 250 ms)",
        ms(samples[0]),
        median,
        ms(samples[EDITS * 9 / 10 - 1]),
        ms(samples[EDITS - 1])
    );
    println!("reload_latency: final status {:?}", hot.status());
}
