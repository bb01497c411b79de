//! `claimrules playground`'s JSON API over real HTTP: a playground on a random loopback port
//! serving a copy of the sample rules, driven by reqwest (and a raw socket where reqwest would
//! normalise the request).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use claimrules::playground::{AccessToken, Playground};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test-token-0123456789abcdefghijklmnopqrstuvwxyz";
const NS: &str = "https://example.com/";

struct Pg {
    base: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Pg {
    /// A playground over a copy of the sample rules.
    async fn start() -> Pg {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
            dir.path(),
        );
        let pg =
            Playground::with_token(dir.path(), AccessToken::from_string(TOKEN.into())).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, Arc::new(pg).router()).await.unwrap();
        });
        Pg {
            base: format!("http://{addr}"),
            dir,
            client: reqwest::Client::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("x-playground-token", TOKEN)
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self.req(method, path).json(&body).send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap())
    }

    async fn run(&self, body: Value) -> (StatusCode, Value) {
        self.json(reqwest::Method::POST, "/api/run", body).await
    }

    /// A raw HTTP/1.1 request (no client-side normalisation); returns the status code.
    async fn raw(&self, request_line: &str, headers: &str) -> u16 {
        let addr = self.base.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let host = if headers.contains("Host:") {
            String::new()
        } else {
            format!("Host: {addr}\r\n")
        };
        let req = format!("{request_line}\r\n{host}{headers}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.split(' ').nth(1).unwrap().parse().unwrap()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

fn editor() -> Value {
    json!({"user_id": "auth0|ed", "email": "ed@example.com", "email_verified": true,
           "app_metadata": {"roles": ["editor"], "plan": "free"}})
}

fn login_context() -> Value {
    json!({"request": {"query": {"scope": "openid profile read:contacts write:contacts"}}})
}

fn rule_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_every_request_is_403_and_nothing_is_written() {
    let pg = Pg::start().await;
    let rule = pg.path("10-add-roles.rhai");
    let before = std::fs::read_to_string(&rule).unwrap();
    for path in [
        "/",
        "/assets/app.js",
        "/api/rules",
        "/api/rule?file=10-add-roles.rhai",
        "/api/inputs",
        "/nope",
    ] {
        let url = format!("{}{path}", pg.base);
        let res = pg.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 403, "no token: {path}");
        let res = pg
            .client
            .get(&url)
            .header("x-playground-token", "wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "wrong header token: {path}");
        let sep = if path.contains('?') { '&' } else { '?' };
        let res = pg
            .client
            .get(format!("{url}{sep}token={}x", TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "wrong query token: {path}");
        let res = pg
            .client
            .get(format!("{url}{sep}token={}", &TOKEN[..10]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "token prefix: {path}");
    }
    // Writes refused the same way, and the file is untouched.
    let body = json!({"file": "10-add-roles.rhai", "source": "// gone\n"});
    let res = pg
        .client
        .put(format!("{}/api/rule", pg.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = pg
        .client
        .put(format!("{}/api/rule?token=nope", pg.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let case = json!({"name": "x", "user": {}, "context": {}});
    let res = pg
        .client
        .post(format!("{}/api/case", pg.base))
        .json(&case)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(std::fs::read_to_string(&rule).unwrap(), before);
    assert!(!pg.path("tests/playground.toml").exists());

    // A DNS-rebinding page reaches the port under its own host name: refused even with the token.
    let auth = format!("X-Playground-Token: {TOKEN}\r\n");
    assert_eq!(
        pg.raw(
            "GET /api/rules HTTP/1.1",
            &format!("{auth}Host: rebind.example\r\n")
        )
        .await,
        403
    );
    assert_eq!(
        pg.raw(
            "GET /api/rules HTTP/1.1",
            &format!("{auth}Host: localhost\r\n")
        )
        .await,
        200
    );

    // With the token: the page (token in the query) and the API (token in the header).
    let res = pg
        .client
        .get(format!("{}/?token={TOKEN}", pg.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let html = res.text().await.unwrap();
    assert!(html.contains(&format!("content=\"{TOKEN}\"")));
    assert!(!html.contains("{{TOKEN}}"));
    // No CDN: every script and stylesheet is the page's own.
    for attr in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!html.contains(attr), "outside reference {attr}");
    }
    for asset in ["/assets/app.js", "/assets/editor.js", "/assets/app.css"] {
        let res = pg
            .client
            .get(format!("{}{asset}?token={TOKEN}", pg.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{asset}");
    }
    let res = pg
        .req(reqwest::Method::GET, "/api/rules")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_rules_in_run_order_and_reads_one() {
    let pg = Pg::start().await;
    let res = pg
        .req(reqwest::Method::GET, "/api/rules")
        .send()
        .await
        .unwrap();
    let list: Value = res.json().await.unwrap();
    let names: Vec<&str> = list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "10-add-roles",
            "20-scope-by-role",
            "30-require-verified-email",
            "40-user-preferences",
            "50-protocol"
        ]
    );
    assert_eq!(list["rules"][0]["file"], "10-add-roles.rhai");
    assert_eq!(list["rules"][0]["enabled"], true);

    let res = pg
        .req(reqwest::Method::GET, "/api/rule?file=20-scope-by-role.rhai")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let rule: Value = res.json().await.unwrap();
    assert_eq!(
        rule["source"],
        std::fs::read_to_string(pg.path("20-scope-by-role.rhai")).unwrap()
    );
    assert_eq!(rule["version"], list["rules"][1]["version"]);

    let res = pg
        .req(reqwest::Method::GET, "/api/rule?file=rules.toml")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "only rule files are served");

    let res = pg
        .req(reqwest::Method::GET, "/api/inputs")
        .send()
        .await
        .unwrap();
    let inputs: Value = res.json().await.unwrap();
    assert!(inputs["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["file"] == "fixtures/admin.json"));
    assert!(inputs["cases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "admin gets roles, permissions and plan"));
    assert_eq!(inputs["context"]["clientID"], "test-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_shows_claims_scope_logs_run_times_and_the_signed_tokens() {
    let pg = Pg::start().await;
    let (status, r) = pg
        .run(json!({"user": editor(), "context": login_context()}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "ok");
    assert_eq!(r["access_token"][format!("{NS}roles")], json!(["editor"]));
    assert_eq!(r["id_token"][format!("{NS}plan")], "free");
    assert_eq!(
        r["scope"]["requested"],
        json!(["openid", "profile", "read:contacts", "write:contacts"])
    );
    assert_eq!(
        r["scope"]["final"],
        json!(["openid", "profile", "read:contacts"])
    );
    assert_eq!(r["scope"]["removed"], json!(["write:contacts"]));
    assert_eq!(r["scope"]["rewritten"], true);
    assert_eq!(
        rule_of(&r, "20-scope-by-role")["logs"],
        json!(["non-admin: write scopes removed"])
    );
    for rule in r["rules"].as_array().unwrap() {
        assert_eq!(rule["ran"], true, "{rule}");
        assert!(rule["micros"].is_u64(), "each rule is timed: {rule}");
    }
    let at = &r["signed"]["access_token"];
    assert_eq!(at["header"]["alg"], "ES256");
    assert_eq!(at["header"]["typ"], "at+jwt");
    assert_eq!(at["payload"]["iss"], "https://playground.invalid/");
    assert_eq!(at["payload"]["sub"], "auth0|ed");
    assert_eq!(at["payload"]["scope"], "openid profile read:contacts");
    assert_eq!(at["payload"][format!("{NS}roles")], json!(["editor"]));
    assert_eq!(at["jwt"].as_str().unwrap().split('.').count(), 3);
    let id = &r["signed"]["id_token"];
    assert_eq!(id["payload"]["aud"], "test-client");
    assert_eq!(id["payload"][format!("{NS}theme")], "light");

    // Inputs given as the editors' text work the same.
    let (status, r2) = pg
        .run(json!({"user": editor().to_string(), "context": login_context().to_string()}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(r2["access_token"], r["access_token"]);

    // A namespace warning is reported with the rule that set the claim.
    let sloppy =
        "context.accessToken.plan = \"x\";\ncontext.idToken[\"https://example.com/ok\"] = 1;\n";
    let (_, r) = pg
        .run(json!({"user": editor(), "context": {}, "sources": {"40-user-preferences.rhai": sloppy}}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    let w = &rule_of(&r, "40-user-preferences")["warnings"][0];
    assert_eq!(w["key"], "plan");
    assert_eq!(w["token"], "access token");
    assert!(r["access_token"].get("plan").is_none());
    assert_eq!(r["id_token"]["https://example.com/ok"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_uses_unsaved_sources_and_reports_errors_with_their_position() {
    let pg = Pg::start().await;
    let on_disk = std::fs::read_to_string(pg.path("10-add-roles.rhai")).unwrap();
    let edited = format!("{on_disk}context.accessToken[\"{NS}team\"] = \"blue\";\n");
    let (_, r) = pg
        .run(json!({"user": editor(), "context": {}, "sources": {"10-add-roles.rhai": edited}}))
        .await;
    assert_eq!(r["access_token"][format!("{NS}team")], "blue", "{r}");
    assert_eq!(
        std::fs::read_to_string(pg.path("10-add-roles.rhai")).unwrap(),
        on_disk,
        "a run writes nothing"
    );

    // A syntax error: the rule, file, line and column.
    let broken = "let ns = \"x\";\nlet oops = ;\n";
    let (_, r) = pg
        .run(json!({"user": editor(), "context": {}, "sources": {"10-add-roles.rhai": broken}}))
        .await;
    assert_eq!(r["status"], "compile_error");
    let e = &r["error"];
    assert_eq!(
        (e["kind"].as_str(), e["rule"].as_str(), e["file"].as_str()),
        (
            Some("compile"),
            Some("10-add-roles"),
            Some("10-add-roles.rhai")
        )
    );
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(2), Some(12)),
        "{e}"
    );

    // A runtime error: position from the engine.
    let (_, r) = pg
        .run(json!({"user": editor(), "context": {}, "sources": {"40-user-preferences.rhai": "let a = 1;\nlet b = a + \"x\" - 2;\n"}}))
        .await;
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["error"]["rule"], "40-user-preferences");
    assert_eq!(r["error"]["line"], 2);
    assert!(rule_of(&r, "50-protocol")["ran"] == false);

    // A denial: the rule, and the line of its deny call.
    let (_, r) = pg
        .run(json!({"user": {"user_id": "u", "email": "u@x", "email_verified": false}, "context": {"clientID": "demo-app"}}))
        .await;
    assert_eq!(r["status"], "denied");
    assert_eq!(r["error"]["rule"], "30-require-verified-email");
    assert_eq!(
        r["error"]["message"],
        "Please verify your email before logging in."
    );
    let src = std::fs::read_to_string(pg.path("30-require-verified-email.rhai")).unwrap();
    let deny_line = src.lines().position(|l| l.contains("deny(")).unwrap() + 1;
    assert_eq!(r["error"]["line"], deny_line);
    assert_eq!(r["error"]["approximate"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_rule_is_stopped_and_the_server_stays_responsive() {
    let pg = Pg::start().await;
    let body = json!({"user": editor(), "context": {},
                      "sources": {"10-add-roles.rhai": "let i = 0;\nloop { i += 1; }\n"}});
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let req = pg.req(reqwest::Method::POST, "/api/run").json(&body);
            tokio::spawn(async move { req.send().await.unwrap().json::<Value>().await.unwrap() })
        })
        .collect();
    // While the loops run, other requests are answered at once.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let res = pg
        .req(reqwest::Method::GET, "/api/rules")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    for run in runs {
        let r = run.await.unwrap();
        assert_eq!(r["status"], "error");
        assert_eq!(r["error"]["rule"], "10-add-roles");
        assert_eq!(r["error"]["line"], 2, "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("time budget") || msg.contains("operation budget"),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_writes_a_rule_that_compiles_and_refuses_one_that_does_not() {
    let pg = Pg::start().await;
    let path = pg.path("10-add-roles.rhai");
    let before = std::fs::read_to_string(&path).unwrap();
    let (status, e) = pg
        .json(
            reqwest::Method::PUT,
            "/api/rule",
            json!({"file": "10-add-roles.rhai", "source": "let a = 1;\nif a == {\n"}),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    let e = &e["error"];
    assert_eq!(e["kind"], "compile");
    assert_eq!(e["file"], "10-add-roles.rhai");
    assert!(e["line"].as_u64().unwrap() >= 2, "{e}");
    assert!(e["column"].as_u64().unwrap() >= 1, "{e}");
    let text = e["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("10-add-roles.rhai:{}:{}", e["line"], e["column"])),
        "file:line:column in {text}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "nothing written"
    );

    // Strict variables: a typo is a compile error too.
    let (status, _) = pg
        .json(reqwest::Method::PUT, "/api/rule", json!({"file": "10-add-roles.rhai", "source": "context.idToken[\"https://example.com/x\"] = usr.name;\n"}))
        .await;
    assert_eq!(status, 422);

    let good = format!("{before}context.accessToken[\"{NS}team\"] = \"blue\";\n");
    let (status, saved) = pg
        .json(
            reqwest::Method::PUT,
            "/api/rule",
            json!({"file": "10-add-roles.rhai", "source": good}),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    let (_, r) = pg.run(json!({"user": editor(), "context": {}})).await;
    assert_eq!(r["access_token"][format!("{NS}team")], "blue");

    // A stale base version (the file changed on disk since the page read it): 409.
    let (status, e) = pg
        .json(reqwest::Method::PUT, "/api/rule", json!({"file": "10-add-roles.rhai", "source": before, "base_version": "0000000000000000"}))
        .await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    let (status, _) = pg
        .json(reqwest::Method::PUT, "/api/rule", json!({"file": "10-add-roles.rhai", "source": before, "base_version": saved["version"]}))
        .await;
    assert_eq!(status, 200);

    // A disabled rule can be saved; its syntax is checked all the same.
    std::fs::write(
        pg.path("rules.toml"),
        std::fs::read_to_string(pg.path("rules.toml")).unwrap()
            + "\n[[rule]]\nname = \"off\"\nenabled = false\n",
    )
    .unwrap();
    std::fs::write(pg.path("off.rhai"), "// off\n").unwrap();
    let (status, _) = pg
        .json(
            reqwest::Method::PUT,
            "/api/rule",
            json!({"file": "off.rhai", "source": "let = 1;"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = pg
        .json(
            reqwest::Method::PUT,
            "/api/rule",
            json!({"file": "off.rhai", "source": "let x = 1;\n"}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_with_dot_dot_or_absolute_are_refused() {
    let pg = Pg::start().await;
    let outside = pg.dir.path().parent().unwrap().join("outside.rhai");
    for file in [
        "../outside.rhai",
        "tests/../10-add-roles.rhai",
        "./10-add-roles.rhai",
        "/etc/passwd",
        outside.to_str().unwrap(),
        "..\\x.rhai",
    ] {
        let q = url::form_urlencoded::byte_serialize(file.as_bytes()).collect::<String>();
        let res = pg
            .req(reqwest::Method::GET, &format!("/api/rule?file={q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "GET {file}");
        let (status, _) = pg
            .json(
                reqwest::Method::PUT,
                "/api/rule",
                json!({"file": file, "source": "let x = 1;"}),
            )
            .await;
        assert_eq!(status, 400, "PUT {file}");
        let (status, _) = pg
            .run(json!({"user": {}, "context": {}, "sources": {file: "let x = 1;"}}))
            .await;
        assert_eq!(status, 400, "run {file}");
    }
    assert!(!outside.exists());
    // In the URL path itself (sent raw: clients normalise `..` away).
    let auth = format!("X-Playground-Token: {TOKEN}\r\n");
    for line in [
        "GET /api/../api/rules HTTP/1.1",
        "GET /assets/%2e%2e/api/rules HTTP/1.1",
        "GET /assets/..%2fapi HTTP/1.1",
    ] {
        assert_eq!(pg.raw(line, &auth).await, 400, "{line}");
    }
    assert_eq!(pg.raw("GET /api/rules HTTP/1.1", &auth).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_inputs_are_400_with_line_and_column() {
    let pg = Pg::start().await;
    let send = |body: &'static str| {
        pg.req(reqwest::Method::POST, "/api/run")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "",
        "not json",
        "{\"user\": {}",
        "[]",
        "{\"user\": {}, \"context\": {}, \"extra\": 1}",
        "{\"context\": {}}",
        "{\"user\": {}, \"context\": {}, \"sources\": [1]}",
    ] {
        let res = send(body).await.unwrap();
        assert_eq!(res.status(), 400, "{body:?}");
        let e: Value = res.json().await.unwrap();
        assert_eq!(e["error"]["kind"], "body", "{body:?}: {e}");
    }
    let (status, e) = pg
        .run(json!({"user": "{\n  \"user_id\": \"u\",\n  \"email\" \"x\"\n}", "context": {}}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["kind"], "input");
    assert_eq!(e["error"]["field"], "user");
    assert_eq!(
        (e["error"]["line"].as_u64(), e["error"]["column"].as_u64()),
        (Some(3), Some(11)),
        "{e}"
    );
    for bad in [json!([1, 2]), json!("[1]"), json!(42), json!(null)] {
        let (status, e) = pg.run(json!({"user": {}, "context": bad})).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(e["error"]["field"], "context");
    }
    let (status, _) = pg
        .json(
            reqwest::Method::PUT,
            "/api/rule",
            json!({"file": "10-add-roles.rhai"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, e) = pg
        .json(
            reqwest::Method::POST,
            "/api/case",
            json!({"name": "x", "user": "{", "context": {}}),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    assert!(!pg.path("tests/playground.toml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_as_case_appends_cases_that_claimrules_test_passes() {
    let pg = Pg::start().await;
    let (status, saved) = pg
        .json(reqwest::Method::POST, "/api/case", json!({"name": "an editor loses the write scopes", "user": editor(), "context": login_context()}))
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["file"], "tests/playground.toml");
    // A denial, inputs as text, and a user with a null (TOML has none: a JSON fixture).
    let denied_user =
        json!({"user_id": "u", "email": "u@x", "email_verified": false, "picture": null});
    let (status, saved2) = pg
        .json(reqwest::Method::POST, "/api/case", json!({"name": "unverified on the strict client", "user": denied_user.to_string(), "context": "{\"clientID\": \"demo-app\"}"}))
        .await;
    assert_eq!(status, 200, "{saved2}");
    assert_eq!(saved2["fixtures"].as_array().unwrap().len(), 1);
    let text = std::fs::read_to_string(pg.path("tests/playground.toml")).unwrap();
    assert!(text.contains("name = \"an editor loses the write scopes\""));
    assert!(
        text.contains("scope = \"openid profile read:contacts\""),
        "{text}"
    );
    assert!(
        text.contains("denied = \"Please verify your email before logging in.\""),
        "{text}"
    );
    assert!(
        text.contains("user_file = \"fixtures/playground/"),
        "{text}"
    );

    // The same name again: 409, file unchanged. An empty name: refused.
    let (status, _) = pg
        .json(
            reqwest::Method::POST,
            "/api/case",
            json!({"name": "an editor loses the write scopes", "user": {}, "context": {}}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = pg
        .json(
            reqwest::Method::POST,
            "/api/case",
            json!({"name": "  ", "user": {}, "context": {}}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        std::fs::read_to_string(pg.path("tests/playground.toml")).unwrap(),
        text
    );

    // A rule whose claims change on every run cannot make a passing case: refused, not kept.
    let random = "context.accessToken[\"https://example.com/id\"] = uuid();\n";
    std::fs::write(pg.path("40-user-preferences.rhai"), random).unwrap();
    let (status, e) = pg
        .json(
            reqwest::Method::POST,
            "/api/case",
            json!({"name": "random", "user": editor(), "context": {}}),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"]["error"]
            .as_str()
            .unwrap()
            .contains("would not pass"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(pg.path("tests/playground.toml")).unwrap(),
        text
    );
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/40-user-preferences.rhai"),
        pg.path("40-user-preferences.rhai"),
    )
    .unwrap();

    // `claimrules test` passes with the new cases, at once.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claimrules"))
        .arg("test")
        .arg(pg.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PASS  playground.toml: an editor loses the write scopes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS  playground.toml: unverified on the strict client"),
        "{stdout}"
    );

    // The picker lists the new cases.
    let inputs: Value = pg
        .req(reqwest::Method::GET, "/api/inputs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(inputs["cases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "an editor loses the write scopes"));
}

#[test]
fn the_command_listens_on_loopback_only_and_prints_the_url_with_its_token() {
    use std::io::{BufRead, BufReader};
    let bin = env!("CARGO_BIN_EXE_claimrules");
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let out = std::process::Command::new(bin)
        .args(["playground", rules, "--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = std::process::Command::new(bin)
        .args([
            "playground",
            "/nonexistent-rules-folder",
            "--addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let mut child = std::process::Command::new(bin)
        .args(["playground", rules, "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let url = first.strip_prefix("claimrules playground on ").unwrap();
    let re = regex::Regex::new(r"^http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{43}$").unwrap();
    assert!(re.is_match(url), "{url}");
}
