//! Fixtures of the helpers' tests (a rule that sets a claim to an expression, the message a
//! `try`/`catch` gets) and the operation cost of every helper.

use serde_json::{json, Value};

use crate::rules::{Outcome, RuleError, RuleSet, RuleSetOptions, SandboxLimits};

pub(super) const X: &str = "https://example.com/x";

/// `rep(s, n)`: `s` repeated `n` times (rhai's `pad` pads in place and returns `()`).
pub(super) const REP: &str = "\nfn rep(s, n) { let out = \"\"; for i in 0..n { out += s; } out }";

pub(super) fn set_with(source: &str, limits: SandboxLimits) -> RuleSet {
    let options = RuleSetOptions {
        limits,
        ..Default::default()
    };
    RuleSet::from_sources(vec![("r".into(), source.into())], json!({}), options)
        .unwrap_or_else(|e| panic!("{source}: {e}"))
}

pub(super) fn run_with(source: &str, limits: SandboxLimits) -> Result<Outcome, RuleError> {
    set_with(source, limits).run(json!({"user_id": "u1"}), json!({"clientID": "app"}))
}

/// What a rule that sets the claim to `expr` leaves in it.
pub(super) fn eval(expr: &str) -> Value {
    let source = format!("context.accessToken[\"{X}\"] = {expr};{REP}");
    match run_with(&source, SandboxLimits::default()) {
        Ok(out) => out.access_token.get(X).cloned().unwrap_or(Value::Null),
        Err(e) => panic!("{expr}: {e}"),
    }
}

/// The message `try`/`catch` gets from each expression (every one must throw), one rule
/// run each so that small string limits hold one message at a time.
pub(super) fn caught(exprs: &[&str], limits: SandboxLimits) -> Vec<String> {
    exprs
        .iter()
        .map(|e| {
            let source = format!(
                "let m = (); try {{ let r = {e}; m = `no error: ${{r}}`; }} catch (e) {{ m = e; }}
                    context.accessToken[\"{X}\"] = m;{REP}"
            );
            let out = run_with(&source, limits.clone()).unwrap_or_else(|err| panic!("{e}: {err}"));
            match &out.access_token[X] {
                Value::String(m) => m.clone(),
                other => panic!("{e}: caught {other}"),
            }
        })
        .collect()
}

/// Each expression, uncaught, fails the run as a script error naming `helper`; caught, the
/// rule gets the same message.
pub(super) fn assert_errors(helper: &str, exprs: &[&str]) {
    assert_errors_with(helper, exprs, SandboxLimits::default());
}

pub(super) fn assert_errors_with(helper: &str, exprs: &[&str], limits: SandboxLimits) {
    let prefix = format!("{helper}: ");
    let msgs = caught(exprs, limits.clone());
    for (e, m) in exprs.iter().zip(&msgs) {
        assert!(m.starts_with(&prefix), "{e} was caught as {m:?}");
    }
    for e in exprs {
        match run_with(&format!("let r = {e};{REP}"), limits.clone()) {
            Err(RuleError::Script { message, line, .. }) => {
                assert!(message.starts_with(&prefix), "{e}: {message}");
                assert_eq!(line, 1, "{e}");
            }
            other => panic!("{e}: expected a script error, got {other:?}"),
        }
    }
}

/// Operations a rule needs: the smallest `max_operations` it runs under.
fn operations(source: &str) -> u64 {
    let ok = |max: u64| {
        let limits = SandboxLimits {
            max_operations: max,
            ..Default::default()
        };
        run_with(source, limits).is_ok()
    };
    let (mut lo, mut hi) = (1, 100_000);
    assert!(ok(hi), "{source} does not run");
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Operations one `let r = <expr>;` adds to each turn of a loop.
fn per_turn(expr: &str) -> u64 {
    let rule = |n: u32| {
        format!(
            r#"let a = "abc"; let b = "YWJj"; let u = "https://example.com/p?q=1";
                let j = "[1,2]"; let m = #{{ sub: "u1" }}; let d = "2024-05-01T10:00:00Z";
                let t = 1714557600; let f = "%F"; let h = "HS256"; let n = 16;
                let ip = "10.1.2.3"; let c = "10.0.0.0/8"; let arr = ["x", "y"];
                for i in 0..{n} {{ let r = {expr}; }}"#
        )
    };
    (operations(&rule(20)) - operations(&rule(10))) / 10
}

#[test]
fn each_helper_is_one_operation() {
    // rhai counts one operation for a call, one per argument expression, and one more for
    // the dot of a method call with arguments; its own `contains` is the yardstick.
    let base = per_turn("a");
    assert_eq!(
        per_turn("contains(arr, a)"),
        base + 3,
        "rhai's accounting changed"
    );
    assert_eq!(
        per_turn("arr.contains(a)"),
        base + 4,
        "rhai's accounting changed"
    );
    let calls = [
        ("sha256(a)", 1),
        ("hmac_sha256(a, a)", 2),
        ("hmac_sha256_base64(a, a)", 2),
        ("base64_encode(a)", 1),
        ("base64_decode(b)", 1),
        ("base64url_encode(a)", 1),
        ("base64url_decode(b)", 1),
        ("url_encode(u)", 1),
        ("url_decode(u)", 1),
        ("parse_url(u)", 1),
        ("parse_json(j)", 1),
        ("to_json(m)", 1),
        ("to_json(arr)", 1),
        ("parse_date(d)", 1),
        ("format_date(t, f)", 2),
        ("uuid()", 0),
        ("random_hex(n)", 1),
        ("jwt_sign(m, a, h)", 3),
        ("ip_in_range(ip, c)", 2),
        ("join(arr, a)", 2),
    ];
    for (call, args) in calls {
        assert_eq!(per_turn(call), base + 1 + args, "{call}");
    }
    assert_eq!(per_turn("arr.join(a)"), base + 4, "arr.join(a)");
    assert_eq!(per_turn("a.sha256()"), base + 2, "a.sha256()");
}
