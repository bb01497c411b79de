//! The chart of `scripts/bench-vs-peer`: refreshes per second and server CPU per refresh (two
//! signatures + the work beyond them), claimrules beside the peer, per signing algorithm.
//!
//! ```sh
//! cargo run --release --example bench_chart -- docs/perf/baseline-2026-12-02.json out.svg
//! ```
//!
//! Reads the `medians` of the figures file the script writes and draws a plain SVG (no fonts
//! or libraries needed to view it).

use std::fmt::Write as _;

use serde_json::Value;

const W: f64 = 960.0;
const H: f64 = 400.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 330.0;
const PEER: &str = "#9aa0a6";
const OURS: &str = "#1a73e8";
const OURS_SIGN: &str = "#a8c7fa";
const PEER_SIGN: &str = "#dadce0";

/// One bar: segments bottom-up (value, colour), the label above it.
struct Bar {
    segments: Vec<(f64, &'static str)>,
    label: String,
}

/// A panel of bars grouped by algorithm.
fn panel(svg: &mut String, x0: f64, width: f64, title: &str, groups: &[(String, Vec<Bar>)]) {
    let max = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter())
        .map(|b| b.segments.iter().map(|s| s.0).sum::<f64>())
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let scale = (BOTTOM - TOP) / max;
    let _ = writeln!(
        svg,
        r#"<text x="{:.0}" y="50" font-size="15" font-weight="bold" text-anchor="middle">{title}</text>"#,
        x0 + width / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{x0:.0}" y1="{BOTTOM}" x2="{:.0}" y2="{BOTTOM}" stroke="#5f6368"/>"##,
        x0 + width
    );
    let group_w = width / groups.len().max(1) as f64;
    for (g, (name, bars)) in groups.iter().enumerate() {
        let gx = x0 + g as f64 * group_w;
        let bar_w = (group_w * 0.7 / bars.len().max(1) as f64).min(90.0);
        let start = gx + (group_w - bar_w * bars.len() as f64) / 2.0;
        for (i, bar) in bars.iter().enumerate() {
            let bx = start + i as f64 * bar_w;
            let mut y = BOTTOM;
            for (value, colour) in &bar.segments {
                let h = value * scale;
                y -= h;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{colour}"/>"#,
                    bx + 4.0,
                    bar_w - 8.0
                );
            }
            // One line of the label per `\n`, the last just above the bar.
            let lines: Vec<&str> = bar.label.split('\n').collect();
            for (j, line) in lines.iter().enumerate() {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{line}</text>"#,
                    bx + bar_w / 2.0,
                    y - 6.0 - 14.0 * (lines.len() - 1 - j) as f64,
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.0}" font-size="13" text-anchor="middle">{name}</text>"#,
            gx + group_w / 2.0,
            BOTTOM + 20.0
        );
    }
}

fn num(m: &Value, k: &str) -> f64 {
    m[k].as_f64().unwrap_or(0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        return Err("usage: bench_chart FIGURES.json OUT.svg".into());
    };
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(input)?)?;
    let medians = doc["medians"].as_array().cloned().unwrap_or_default();
    let mut algs: Vec<String> = Vec::new();
    for m in &medians {
        if let Some(a) = m["alg"].as_str() {
            if !algs.iter().any(|x| x == a) {
                algs.push(a.to_string());
            }
        }
    }
    // Peer first, then claimrules, in each algorithm's group.
    let servers = ["oidc-provider", "claimrules"];
    let pick = |alg: &str| -> Vec<&Value> {
        servers
            .iter()
            .filter_map(|s| {
                medians
                    .iter()
                    .find(|m| m["alg"] == alg && m["server"] == *s)
            })
            .collect()
    };
    let throughput: Vec<(String, Vec<Bar>)> = algs
        .iter()
        .map(|alg| {
            let bars = pick(alg)
                .into_iter()
                .map(|m| Bar {
                    segments: vec![(
                        num(m, "rps"),
                        if m["server"] == "claimrules" {
                            OURS
                        } else {
                            PEER
                        },
                    )],
                    label: format!("{:.0}", num(m, "rps")),
                })
                .collect();
            (alg.clone(), bars)
        })
        .collect();
    let cpu: Vec<(String, Vec<Bar>)> = algs
        .iter()
        .map(|alg| {
            let bars = pick(alg)
                .into_iter()
                .map(|m| {
                    let ours = m["server"] == "claimrules";
                    let sign = 2.0 * num(m, "sign_us");
                    let total = num(m, "cpu_us_per_req");
                    Bar {
                        segments: vec![
                            (sign.min(total), if ours { OURS_SIGN } else { PEER_SIGN }),
                            ((total - sign).max(0.0), if ours { OURS } else { PEER }),
                        ],
                        label: format!("{total:.0}\n({:+.0})", total - sign),
                    }
                })
                .collect();
            (alg.clone(), bars)
        })
        .collect();

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let s = &doc["settings"];
    let _ = writeln!(
        svg,
        r##"<text x="{:.0}" y="22" font-size="13" text-anchor="middle" fill="#3c4043">refresh_token grant, {} clients, {} s, {} core(s), medians of {} run(s); peer: node oidc-provider (in memory), claimrules: SQLite (durable)</text>"##,
        W / 2.0,
        s["clients"],
        s["duration_s"],
        doc["cpus"],
        medians
            .iter()
            .filter_map(|m| m["runs"].as_u64())
            .max()
            .unwrap_or(0)
    );
    panel(
        &mut svg,
        30.0,
        W / 2.0 - 60.0,
        "refreshes / s (higher is better)",
        &throughput,
    );
    panel(
        &mut svg,
        W / 2.0 + 30.0,
        W / 2.0 - 60.0,
        "server CPU µs / refresh (lower is better)",
        &cpu,
    );
    // Legend.
    let legend = [
        (PEER, "oidc-provider"),
        (OURS, "claimrules"),
        (PEER_SIGN, "2 signatures (peer)"),
        (OURS_SIGN, "2 signatures (claimrules)"),
    ];
    for (i, (colour, text)) in legend.iter().enumerate() {
        let x = 60.0 + i as f64 * 220.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="14" height="14" fill="{colour}"/><text x="{}" y="{}" font-size="12">{text}</text>"#,
            H - 38.0,
            x + 20.0,
            H - 26.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.0}" y="{}" font-size="11" text-anchor="middle" fill="#5f6368">CPU labels: total (beyond the two signatures)</text>"##,
        W * 0.75,
        H - 8.0
    );
    svg.push_str("</svg>\n");
    std::fs::write(output, svg)?;
    Ok(())
}
