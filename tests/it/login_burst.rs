//! Login throttling under concurrency, against the real binary (issue 15, findings 2 and 3):
//! 200 parallel wrong passwords from one address get at most the configured number of password
//! checks (the rest 429) and do not lock the account for another address; the names a login
//! accepts for one account share its counters; and refreshes keep their latency while bursts of
//! logins hash passwords.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SCOPE: &str = "openid offline_access read:contacts";
/// The configured per-(account, address) limit.
const LIMIT: usize = 5;

type Server = BinServer;

async fn start(dir: &Path) -> Server {
    start_binary(
        dir,
        &format!("[login]\nmax_failures_per_account_ip = {LIMIT}\n"),
    )
    .await
}

/// A browser on local address `ip`.
fn browser_at(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(Some(ip.parse().unwrap()))
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// The login page for the standard request (sets the CSRF cookie in `b`).
async fn login_page(base: &str, b: &reqwest::Client) -> String {
    let url = format!(
        "{base}/authorize?{}",
        serde_urlencoded::to_string(authorize_params(SCOPE)).unwrap()
    );
    let res = b.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// Posts `n` logins as `user` at once from `b`; returns their statuses. The form is encoded
/// once, so the client spends its CPU on sending, not on parsing the page 200 times.
async fn burst(
    base: &str,
    b: &reqwest::Client,
    html: &str,
    user: (&str, &str),
    n: usize,
) -> Vec<u16> {
    let url = format!("{base}/login");
    let authz = hidden(html, "authz").unwrap();
    let csrf = hidden(html, "csrf").unwrap();
    let form = serde_urlencoded::to_string([
        ("authz", authz.as_str()),
        ("csrf", csrf.as_str()),
        ("username", user.0),
        ("password", user.1),
    ])
    .unwrap();
    let attempts: Vec<_> = (0..n)
        .map(|_| {
            let req = b
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone());
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut out = Vec::new();
    for a in attempts {
        out.push(a.await.unwrap());
    }
    out
}

fn count(statuses: &[u16], s: u16) -> usize {
    statuses.iter().filter(|&&x| x == s).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_parallel_wrong_passwords_get_at_most_the_limit_checked() {
    let _alone = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let attacker = browser_at("127.0.0.1");
    let html = login_page(&s.base, &attacker).await;
    let statuses = burst(&s.base, &attacker, &html, (ALICE.0, "wrong"), 200).await;
    let failures = count(&statuses, 401);
    eprintln!(
        "200 parallel wrong passwords: {failures} answered 401, {} answered 429",
        count(&statuses, 429)
    );
    assert!(
        (1..=LIMIT).contains(&failures),
        "at most {LIMIT} password checks may fail before 429: {failures}"
    );
    assert_eq!(failures + count(&statuses, 429), 200, "{statuses:?}");
    // One at a time, the address gets exactly its remaining allowance, then 429 — also for the
    // right password.
    let url = format!("{}/login", s.base);
    let html = login_page(&s.base, &attacker).await;
    let mut more = 0;
    loop {
        let res = submit_login(&attacker, &url, &html, (ALICE.0, "wrong")).await;
        match res.status().as_u16() {
            401 => more += 1,
            429 => break,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        failures + more,
        LIMIT,
        "burst and single attempts share the limit"
    );
    let res = submit_login(&attacker, &url, &html, ALICE).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // ...but the burst did not lock the account for anyone else.
    let user = browser_at("127.0.0.2");
    let html = login_page(&s.base, &user).await;
    let res = submit_login(&user, &format!("{}/login", s.base), &html, ALICE).await;
    assert_eq!(
        res.status(),
        200,
        "the user at another address logs in (consent page)"
    );
    assert!(res.text().await.unwrap().contains("action=\"/consent\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_an_account_shares_its_counters() {
    let _alone = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let b = browser_at("127.0.0.4");
    let html = login_page(&s.base, &b).await;
    let url = format!("{}/login", s.base);
    // Email with spaces or a tab, other case, the username: all one account.
    let spellings = [
        " alice@example.com ",
        "\talice@example.com",
        "ALICE@EXAMPLE.COM",
        "alice",
        "alice@example.com\n",
    ];
    let mut statuses = Vec::new();
    for name in spellings.iter().cycle().take(LIMIT + 2) {
        statuses.push(
            submit_login(&b, &url, &html, (name, "wrong"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses[..LIMIT], [401; LIMIT], "{statuses:?}");
    assert_eq!(statuses[LIMIT..], [429; 2], "{statuses:?}");
    // An unknown name is normalized the same way: its spellings share a counter too.
    let mut statuses = Vec::new();
    for name in [
        "nobody@example.com",
        " NOBODY@example.com",
        "nobody@example.com\t",
    ]
    .iter()
    .cycle()
    .take(LIMIT + 1)
    {
        let b = browser_at("127.0.0.5");
        let html = login_page(&s.base, &b).await;
        statuses.push(
            submit_login(&b, &url, &html, (name, "wrong"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses[LIMIT], 429, "{statuses:?}");
}

/// Logs in from `ip`, consents, exchanges the code; returns a refresh token.
async fn refresh_token(base: &str, ip: &str) -> String {
    let b = browser_at(ip);
    let html = login_page(base, &b).await;
    let res = submit_login(&b, &format!("{base}/login"), &html, ALICE).await;
    let html = res.text().await.unwrap();
    let res = submit_consent(&b, &format!("{base}/consent"), &html, "allow").await;
    assert_eq!(res.status(), 303);
    let code = param(&location_params(&res), "code").expect("code");
    let res = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `n` refreshes one after the other along a chain; returns their latencies.
async fn refreshes(
    base: &str,
    http: &reqwest::Client,
    token: &mut String,
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let res = http
            .post(format!("{base}/oauth/token"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        out.push(t.elapsed());
        *token = body["refresh_token"].as_str().unwrap().to_owned();
    }
    out
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    let i = ((v.len() as f64) * 0.99).ceil() as usize - 1;
    v[i.min(v.len() - 1)]
}

/// Sends a burst of 200 parallel wrong passwords for `user` from `ip` on its own thread and
/// runtime (as another client would: its tasks never delay the refreshes' own client work), while
/// `n` refreshes are measured; returns their latencies and how many passwords were checked.
async fn refreshes_under_burst(
    s: &Server,
    http: &reqwest::Client,
    token: &mut String,
    ip: &str,
    user: &'static str,
    n: usize,
) -> (Vec<Duration>, usize) {
    let b = browser_at(ip);
    let html = login_page(&s.base, &b).await;
    let base = s.base.clone();
    let wave = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(burst(&base, &b, &html, (user, "wrong"), 200))
    });
    let latencies = refreshes(&s.base, http, token, n).await;
    (latencies, count(&wave.join().unwrap(), 401))
}

/// The figure of issue 15: refresh p99 while 200 parallel wrong passwords arrive, against idle.
///
/// 200 requests arriving at once delay any request queued behind them by the time the server
/// takes to answer them (~50 ms of CPU in a debug build on 2 cores, ~10x less in release),
/// password checks or not. So next to idle the test measures a control: the same burst from an
/// address already locked out, which checks no password. The burst that checks passwords must
/// stay within 3x of the larger of the two; with password hashing on the runtime's blocking
/// pool (before the fix) it reached seconds. The printed figures include idle; run with
/// `CLAIMRULES_TEST_BIN=target/release/claimrules` for release figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_latency_holds_while_login_bursts_hash_passwords() {
    const ROUNDS: u32 = 5;
    const PER_ROUND: usize = 20;
    let _alone = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let mut token = refresh_token(&s.base, "127.0.0.3").await;
    let http = reqwest::Client::new();
    // Warm up connections and the rule set; lock the control address out.
    refreshes(&s.base, &http, &mut token, 10).await;
    let locked = "127.0.0.9";
    let (_, n) = refreshes_under_burst(&s, &http, &mut token, locked, ALICE.0, 1).await;
    assert!(n <= LIMIT);
    // The burst may leave some of the allowance unused (at most 4 checks run at once): use it up.
    let b = browser_at(locked);
    let html = login_page(&s.base, &b).await;
    while burst(&s.base, &b, &html, (ALICE.0, "wrong"), 1).await != [429] {}
    // The phases alternate, so whatever else loads the machine weighs on all three alike.
    let (mut idle, mut control, mut under, mut checked) = (vec![], vec![], vec![], 0);
    for round in 0..ROUNDS {
        idle.extend(refreshes(&s.base, &http, &mut token, PER_ROUND).await);
        let (l, n) = refreshes_under_burst(&s, &http, &mut token, locked, ALICE.0, PER_ROUND).await;
        assert_eq!(n, 0, "the control burst checks no password");
        control.extend(l);
        // A new address each round: its own full allowance of password checks.
        let ip = format!("127.0.1.{}", 10 + round);
        let user = if round % 2 == 0 { ALICE.0 } else { BOB.0 };
        let (l, n) = refreshes_under_burst(&s, &http, &mut token, &ip, user, PER_ROUND).await;
        under.extend(l);
        checked += n;
    }
    let (idle, control, under) = (p99(idle), p99(control), p99(under));
    eprintln!(
        "refresh p99: idle {idle:?}; under bursts of 200 parallel logins: checking no \
         password {control:?}, checking {checked} passwords {under:?}"
    );
    assert!(checked > 0, "the bursts must have checked passwords");
    let bound = idle.max(control) * 3;
    assert!(
        under <= bound,
        "refresh p99 under the login burst {under:?} exceeds 3x {:?}",
        idle.max(control)
    );
}

/// The latency test measures alone among this module's tests.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
