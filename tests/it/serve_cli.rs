//! `claimrules serve` as a process: the embedded default's banner, config errors (exit 2 with the
//! key and line), graceful shutdown on SIGINT, and `keys rotate`.

use crate::common::free_port;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_claimrules"))
}

#[test]
fn embedded_default_prints_what_a_newcomer_needs_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let mut child = bin()
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--rules",
            rules,
            "--data",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = std::collections::HashMap::new();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(
        first,
        format!("claimrules listening on http://127.0.0.1:{port}")
    );
    for line in lines.by_ref() {
        let line = line.unwrap();
        let (k, v) = line.trim().split_once(':').unwrap();
        banner.insert(k.to_owned(), v.trim().to_owned());
        if k == "open" {
            break;
        }
    }
    for k in [
        "issuer",
        "client_id",
        "client_secret",
        "redirect_uri",
        "audience",
        "email",
        "password",
    ] {
        assert!(
            banner.get(k).is_some_and(|v| !v.is_empty()),
            "banner lacks {k}: {banner:?}"
        );
    }
    assert_eq!(banner["issuer"], format!("http://127.0.0.1:{port}/"));
    assert!(dir.path().join("data/claimrules.db").exists());
    // The same data folder keeps the same secret and password on the next start.
    let secret = std::fs::read_to_string(dir.path().join("data/demo-client-secret")).unwrap();
    assert_eq!(secret.trim(), banner["client_secret"]);

    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "graceful shutdown exits 0: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn config_errors_name_the_key_and_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("claimrules.toml");
    std::fs::write(&cfg, "issuer = \"http://127.0.0.1:3000/\"\nsigning_alg = \"RS256\"\nnamespace_polcy = \"drop\"\n").unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespace_polcy"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("claimrules.toml"), "{err}");

    std::fs::write(
        &cfg,
        "[[client]]\nclient_id = \"a\"\nredirect_uris = [\"not a url\"]\n",
    )
    .unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("redirect_uri"));
}

#[test]
fn hash_password_prints_an_argon2id_hash() {
    use std::io::Write;
    let mut child = bin()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(claimrules::password::verify("s3cret", hash.trim()));
    assert!(!claimrules::password::verify("other", hash.trim()));
}

#[test]
fn keys_rotate_adds_a_published_key_that_signs_after_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = claimrules::server::ServeOptions {
        data: Some(data.clone()),
        ..Default::default()
    };
    let (cfg, store) = rt.block_on(claimrules::server::open_store(&opts)).unwrap();
    let ring = rt
        .block_on(claimrules::server::keys::load_keys(&store, &cfg))
        .unwrap();
    let old_kid = ring.signing().unwrap().kid().to_owned();
    drop(store);
    let out = bin()
        .args(["keys", "rotate", "--delay", "3600", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, store) = rt.block_on(claimrules::server::open_store(&opts)).unwrap();
    let stored = rt.block_on(store.keys()).unwrap();
    assert_eq!(stored.len(), 2);
    let now = claimrules::model::unix_now();
    let ring = claimrules::server::keys::key_ring(&stored, now).unwrap();
    assert_eq!(
        ring.published().len(),
        2,
        "the new key is published at once"
    );
    assert_eq!(
        ring.signing().unwrap().kid(),
        old_kid,
        "old key signs during the delay"
    );
    let later = claimrules::server::keys::key_ring(&stored, now + 3601).unwrap();
    assert_ne!(
        later.signing().unwrap().kid(),
        old_kid,
        "new key signs after the delay"
    );
    assert_eq!(
        later.published().len(),
        2,
        "old key still published while its tokens live"
    );
}

#[test]
fn sighup_reloads_the_rules_without_watching() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("10-a.rhai"), "let a = 1;").unwrap();
    let port = free_port();
    let mut child = bin()
        .args([
            "serve",
            "--no-watch",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--rules",
        ])
        .arg(&rules)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("CLAIMRULES_ADMIN_TOKEN", "admin-token-0123456789")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _ = lines.next();
    let status = || -> Option<serde_json::Value> {
        let out = Command::new("curl")
            .args(["-sf", "-H", "authorization: Bearer admin-token-0123456789"])
            .arg(format!("http://127.0.0.1:{port}/rules/status"))
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while status().is_none() {
        assert!(Instant::now() < deadline, "status endpoint never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status().unwrap()["rules"], serde_json::json!(["10-a"]));
    std::fs::write(rules.join("20-b.rhai"), "let b = 2;").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        status().unwrap()["version"],
        1,
        "--no-watch: no reload without a signal"
    );
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status().unwrap();
        if st["version"] == 2 {
            assert_eq!(st["rules"], serde_json::json!(["10-a", "20-b"]));
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// --- Issue 15: configuration and log output.

#[test]
fn a_redirect_uri_with_a_fragment_is_refused_and_plain_http_elsewhere_warned() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("claimrules.toml");
    let client = |uri: &str| {
        format!(
            "rules = \"{}\"\n[[client]]\nclient_id = \"a\"\nclient_secret = \"s3cret-s3cret\"\nredirect_uris = [\"{uri}\"]\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/rules")
        )
    };
    for uri in [
        "https://app.example.com/cb#frag",
        "https://app.example.com/cb#",
    ] {
        std::fs::write(&cfg, client(uri)).unwrap();
        let out = bin()
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{uri}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("fragment") && err.contains("RFC 6749"),
            "{err}"
        );
    }
    // Plain http to another machine starts, with a warning; loopback does not warn.
    for (uri, warned) in [
        ("http://app.example.com/cb", true),
        ("http://127.0.0.1:4000/cb", false),
        ("http://localhost:4000/cb", false),
        ("https://app.example.com/cb", false),
    ] {
        std::fs::write(&cfg, client(uri)).unwrap();
        let port = free_port();
        let mut child = bin()
            .args([
                "serve",
                "--no-watch",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.next().is_some_and(|l| l.is_ok()), "{uri}: starts");
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.contains("plain http"), warned, "{uri}: {err}");
    }
}

#[test]
fn a_malformed_database_url_never_prints_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("claimrules.toml");
    for url in [
        "postgres://admin:Sup3rS3cret@db.example:notaport/claimrules",
        "postgres://admin:Sup3r S3cret@db.example/claimrules",
        "postgres://admin:Sup3r/S3cret@db.example:5432/claimrules",
        "postgres://db.example/claimrules?user=admin&password=Sup3rS3cret&port=x",
        "mysql://admin:Sup3rS3cret@db.example/claimrules",
    ] {
        std::fs::write(&cfg, format!("database_url = \"{url}\"\n")).unwrap();
        let out = bin()
            .args(["serve", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("S3cret"), "{url}: {all}");
        assert!(all.contains("***"), "{url}: {all}");
    }
}

/// A Hydra hook call whose fields carry CR, LF and ESC, against the binary logging as `format`;
/// returns the server's stderr.
async fn log_of_a_forging_hook_call(format: &str) -> String {
    use crate::common::*;
    let dir = tempfile::tempdir().unwrap();
    let s = start_binary_with(
        dir.path(),
        "[hooks]\nhydra_api_key = \"Bearer hook-key-0123456789\"\n",
        &["--log-format", format],
        "info",
    )
    .await;
    let body = serde_json::json!({
        "session": {"id_token": {"subject": "alice\nINFO claimrules: forged login of admin", "id_token_claims": {}}},
        "request": {"client_id": "app\r\n2030-01-01T00:00:00Z ERROR forged\u{1b}[2J\u{1b}[31m", "grant_types": ["authorization_code"]}
    });
    let res = reqwest::Client::new()
        .post(format!("{}/hooks/hydra/token", s.base))
        .header("authorization", "Bearer hook-key-0123456789")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    std::fs::read_to_string(dir.path().join("server.log")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_request_values_cannot_forge_or_hide_lines() {
    let text = log_of_a_forging_hook_call("text").await;
    assert!(text.contains("rules ran for a Hydra token"), "{text}");
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
    for line in text.lines() {
        assert!(
            line.as_bytes().first().is_some_and(u8::is_ascii_digit),
            "every line is the server's own (timestamp first): {line:?}"
        );
        assert!(
            !line.contains("claimrules: forged") || line.contains("alice\\n"),
            "{line:?}"
        );
    }
    assert!(
        text.contains("alice\\nINFO claimrules: forged"),
        "escaped in place: {text}"
    );
    assert!(text.contains("\\x1b[2J"), "{text}");

    let json = log_of_a_forging_hook_call("json").await;
    let mut seen = false;
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
        if v["fields"]["message"] == "rules ran for a Hydra token" {
            seen = true;
            assert_eq!(
                v["fields"]["subject"], "alice\nINFO claimrules: forged login of admin",
                "values round-trip exactly"
            );
            assert!(v["fields"]["client_id"]
                .as_str()
                .unwrap()
                .contains('\u{1b}'));
        }
    }
    assert!(seen, "{json}");
    assert!(!json.contains('\u{1b}'), "raw ESC in the JSON log");
    assert!(
        json.contains("\"spans\""),
        "the request span is kept: {json}"
    );
}
