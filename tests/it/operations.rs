//! Operations: `/metrics` in the Prometheus text format (parsed here with an independent parser,
//! values moving after real logins, refreshes, a denial, a rule error and hot reloads), the
//! admin token in front of it, `/healthz` and `/readyz`, and a real Prometheus server scraping
//! the real binary (`promtool check metrics` accepting the output, PromQL over the scrape).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, free_port, TestServer, ALICE, BOB};

const ADMIN: &str = "ops-admin-secret";

/// Rules that deny Bob, fail when the authorize request carries `boom=1`, and add a claim.
fn rules(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("10-deny-bob.rhai"),
        r#"if user.user_id == "auth0|bob" { deny("no bob"); }"#,
    )
    .unwrap();
    std::fs::write(
        rules.join("20-boom.rhai"),
        r#"if context.request.query.boom == "1" { let x = 1 + (); }
           context.accessToken["https://example.com/ok"] = true;"#,
    )
    .unwrap();
    rules
}

async fn scrape(base: &str) -> prometheus_parse::Scrape {
    let res = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = res.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap()
}

/// The value of a counter or gauge sample with these labels (0 when absent).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn authorize_with(
    server: &TestServer,
    extra: &[(&str, &str)],
    user: (&str, &str),
) -> Vec<(String, String)> {
    let mut params = common::authorize_params("openid offline_access");
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let client = common::browser();
    let res = common::login_and_consent(server, &client, &params, user).await;
    common::location_params(&res)
}

#[tokio::test]
async fn metrics_move_with_logins_refreshes_denials_errors_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(dir.path());
    common::write_config(
        dir.path(),
        Some(&rules),
        &format!("admin_token = \"{ADMIN}\""),
    );
    let server = TestServer::start(dir.path()).await;

    // Never public: no token, a wrong token.
    let res = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(res.status(), 401);
    let res = reqwest::Client::new()
        .get(server.url("/metrics"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        reqwest::get(server.url("/healthz")).await.unwrap().status(),
        200
    );
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");

    let before = scrape(&server.base).await;
    // A login, its code exchange and a refresh.
    let p = authorize_with(&server, &[], ALICE).await;
    let code = common::param(&p, "code").expect("a code");
    let t: Value = common::exchange(&server, &code).await.json().await.unwrap();
    let rt = t["refresh_token"].as_str().expect("a refresh token");
    assert_eq!(common::refresh(&server, rt).await.status(), 200);
    // A denial and a rule error.
    let p = authorize_with(&server, &[], BOB).await;
    assert_eq!(common::param(&p, "error").as_deref(), Some("access_denied"));
    let p = authorize_with(&server, &[("boom", "1")], ALICE).await;
    assert_eq!(common::param(&p, "error").as_deref(), Some("server_error"));
    // A wrong password.
    let client = common::browser();
    let html = client
        .get(common::authorize_url(
            &server,
            &common::authorize_params("openid"),
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let res = common::submit_login(&client, &server.url("/login"), &html, (ALICE.0, "wrong")).await;
    assert_eq!(res.status(), 401);
    // A bad token request.
    let res = reqwest::Client::new()
        .post(server.url("/oauth/token"))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // A failed and a good hot reload.
    std::fs::write(rules.join("30-broken.rhai"), "let = ;").unwrap();
    assert!(server.state.issuer.rules().reload().is_err());
    let failed = scrape(&server.base).await;
    assert_eq!(
        value(&failed, "claimrules_rules_last_reload_failed", &[]),
        1.0
    );
    std::fs::write(rules.join("30-broken.rhai"), "let fixed = 1;").unwrap();
    let version = server.state.issuer.rules().reload().unwrap();

    let after = scrape(&server.base).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        delta("claimrules_logins_total", &[("result", "ok")]),
        3.0,
        "Alice twice, Bob once (his password is right; a rule denies him)"
    );
    assert_eq!(
        delta("claimrules_logins_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(
        delta(
            "claimrules_tokens_issued_total",
            &[("grant_type", "authorization_code"), ("alg", "RS256")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "claimrules_tokens_issued_total",
            &[("grant_type", "refresh_token")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "claimrules_rule_runs_total",
            &[("rule", "10-deny-bob"), ("outcome", "denied")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "claimrules_rule_runs_total",
            &[("rule", "20-boom"), ("outcome", "error")]
        ),
        1.0
    );
    assert!(
        delta(
            "claimrules_rule_runs_total",
            &[("rule", "20-boom"), ("outcome", "ok")]
        ) >= 2.0
    );
    assert_eq!(
        delta(
            "claimrules_authorize_errors_total",
            &[("error", "access_denied")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "claimrules_authorize_errors_total",
            &[("error", "server_error")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "claimrules_token_errors_total",
            &[("error", "unsupported_grant_type")]
        ),
        1.0
    );
    assert_eq!(
        delta("claimrules_rules_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(
        delta("claimrules_rules_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        delta(
            "claimrules_rules_reload_errors_total",
            &[("rule", "30-broken")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "claimrules_rules_version", &[]),
        version as f64
    );
    assert_eq!(
        value(&after, "claimrules_rules_last_reload_failed", &[]),
        0.0
    );
    assert!(delta("claimrules_consents_total", &[("decision", "allow")]) >= 1.0);
    assert!(
        delta("claimrules_store_batch_size_count", &[]) >= 1.0
            || value(&after, "claimrules_store_batch_size", &[]) >= 1.0
    );
    assert!(
        value(
            &after,
            "claimrules_rule_duration_seconds_count",
            &[("rule", "20-boom")]
        ) >= 1.0
            || value(
                &after,
                "claimrules_rule_duration_seconds",
                &[("rule", "20-boom")]
            ) >= 1.0
    );
    // Labels stay bounded: no user id, client-provided string or URL in any label.
    for s in &after.samples {
        for (k, v) in s.labels.iter() {
            assert!(
                !v.contains("auth0|") && !v.contains("http") && !v.contains("boom=1"),
                "{} has label {k}={v}",
                s.metric
            );
        }
    }
    server.stop();
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::get(url)
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "{what} did not come up at {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        Path::new(&path).exists(),
        "{path} is required for this test: Debian's `prometheus` package (scripts/test installs it)"
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_binary_and_answers_promql() {
    let (prometheus, promtool) = (tool("prometheus"), tool("promtool"));
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(dir.path());
    let metrics_port = free_port();
    common::write_config(
        dir.path(),
        Some(&rules),
        &format!("metrics_addr = \"127.0.0.1:{metrics_port}\""),
    );
    let port = free_port();
    let cfg = dir.path().join("claimrules.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "issuer = \"http://127.0.0.1:1/\"",
        &format!("issuer = \"http://127.0.0.1:{port}/\""),
    );
    std::fs::write(&cfg, text).unwrap();
    let _server = Kill(
        Command::new(env!("CARGO_BIN_EXE_claimrules"))
            .args(["serve", "--no-watch", "--config"])
            .arg(&cfg)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_for(&format!("{base}/healthz"), "claimrules").await;
    wait_for(&metrics_url, "the metrics listener").await;

    // Traffic: logins with codes exchanged.
    let server_like = TestServerAt(base.clone());
    for _ in 0..3 {
        let client = common::browser();
        let res = reqwest_login(&server_like, &client).await;
        let code = common::param(&common::location_params(&res), "code").expect("code");
        let res = reqwest::Client::new()
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", common::CLIENT_ID),
                ("client_secret", common::CLIENT_SECRET),
                ("code", code.as_str()),
                ("redirect_uri", common::REDIRECT),
                ("code_verifier", common::VERIFIER),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    // promtool accepts the exposition.
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it every second.
    let prom_port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: claimrules\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let _prom = Kill(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let api = format!("http://127.0.0.1:{prom_port}");
    wait_for(&format!("{api}/-/ready"), "prometheus").await;
    let query = |q: &str| {
        let url = format!(
            "{api}/api/v1/query?{}",
            serde_urlencoded::to_string([("query", q)]).unwrap()
        );
        async move {
            let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            assert_eq!(v["status"], "success", "{v}");
            v["data"]["result"].as_array().cloned().unwrap_or_default()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let issued = loop {
        let r = query("sum(claimrules_tokens_issued_total)").await;
        if let Some(v) = r.first().and_then(|s| s["value"][1].as_str()) {
            break v.parse::<f64>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(issued, 3.0);
    let p99 = query(
        "histogram_quantile(0.99, sum by (le, rule) (claimrules_rule_duration_seconds_bucket))",
    )
    .await;
    let rules_seen: Vec<&str> = p99
        .iter()
        .filter_map(|s| s["metric"]["rule"].as_str())
        .collect();
    assert!(rules_seen.contains(&"20-boom"), "{p99:?}");
    for s in &p99 {
        let v: f64 = s["value"][1].as_str().unwrap().parse().unwrap();
        assert!(v > 0.0 && v < 10.0, "a per-rule p99 of {v} s");
    }
}

/// The login helpers of `common` take a `TestServer`; this one points at the real binary.
struct TestServerAt(String);

async fn reqwest_login(server: &TestServerAt, client: &reqwest::Client) -> reqwest::Response {
    let url = format!(
        "{}/authorize?{}",
        server.0,
        serde_urlencoded::to_string(common::authorize_params("openid")).unwrap()
    );
    let html = client.get(url).send().await.unwrap().text().await.unwrap();
    let res = common::submit_login(client, &format!("{}/login", server.0), &html, ALICE).await;
    if res.status() == 200 {
        let html = res.text().await.unwrap();
        common::submit_consent(client, &format!("{}/consent", server.0), &html, "allow").await
    } else {
        res
    }
}
