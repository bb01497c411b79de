//! The fuzz targets (`fuzz/targets.rs`) as ordinary tests: every committed corpus input replays
//! without a finding, and a seeded mutation run (deterministic, so a failure reproduces) drives
//! each target further. `FUZZ_ITERATIONS` raises the number of mutated inputs per target
//! (default 1500, a third of it for `rules_load`); `FUZZ_SEED` changes the seed.

use crate::fuzz_targets as targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Runs one input; a panic is reported with the input (hex and lossy text) to reproduce it.
fn run(target: &str, f: fn(&[u8]), input: &[u8], origin: &str) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!(
            "{target}: finding on {origin}\nhex: {hex}\ntext: {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_corpus_input_replays_without_a_finding() {
    let mut total = 0;
    for (name, f) in targets::TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "{name} has no corpus");
        for (file, bytes) in &inputs {
            run(name, f, bytes, file);
        }
        total += inputs.len();
    }
    println!("replayed {total} corpus inputs");
}

const DICTIONARY: &[&str] = &[
    "&",
    "=",
    "%",
    "%00",
    "%ff",
    "%2F",
    "+",
    "?",
    "#",
    "@",
    ":",
    "//",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    "null",
    "true",
    "1e999",
    "-0",
    "\\u0000",
    "\n",
    "\r\n",
    "client_id=",
    "redirect_uri=",
    "response_type=code",
    "grant_type=",
    "code_challenge=",
    "scope=",
    "state=",
    "spa",
    "native",
    "web",
    "http://127.0.0.1:1/cb",
    "http://127.0.0.1/cb",
    "com.example.app:/oauth",
    "loop",
    "fn f() { f() }",
    "throw",
    "deny(\"x\")",
    "context.accessToken[\"",
    "user.",
    "let x = ",
    "((((((((((",
    "[[[[[[[[",
    "[[rule]]",
    "name = ",
    "enabled = false",
    "file = ",
    "eyJ",
    ".",
    "\"alg\":\"none\"",
    "\"alg\":\"HS256\"",
    "\"kid\":",
    "\"kty\":\"EC\"",
    "\"crv\":\"P-256\"",
];

fn mutate(rng: &mut StdRng, input: &[u8], others: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = v.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = rng.random();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 1 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..=len.min(a + 16));
                v.drain(a..b);
            }
            4 if len > 1 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..=len.min(a + 32));
                let chunk = v[a..b].to_vec();
                let at = rng.random_range(0..=v.len());
                v.splice(at..at, chunk);
            }
            5 if !others.is_empty() => {
                let (_, other) = &others[rng.random_range(0..others.len())];
                let cut = rng.random_range(0..=v.len());
                let from = rng.random_range(0..=other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            6 => {
                let word = DICTIONARY[rng.random_range(0..DICTIONARY.len())].as_bytes();
                let at = rng.random_range(0..=len);
                v.splice(at..at, word.iter().copied());
            }
            _ if len > 0 => {
                v.truncate(rng.random_range(0..len));
            }
            _ => v.push(rng.random()),
        }
    }
    v
}

#[test]
fn seeded_mutations_of_the_corpus_find_nothing() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c1a1);
    for (name, f) in targets::TARGETS {
        let mut inputs = corpus(name);
        if name == "jwt_verify" {
            // Fresh valid tokens too (ECDSA signatures differ per run; the checks do not).
            for extra in [
                json!({}),
                json!({"aud": ["x", targets::AUD]}),
                json!({"exp": 1}),
            ] {
                inputs.push(("generated".into(), targets::fuzz_token(extra).into_bytes()));
            }
        }
        let mut rng = StdRng::seed_from_u64(seed ^ name.len() as u64);
        // Loading writes a rules folder and compiles it: a third of the runs keeps CI quick.
        let runs = if name == "rules_load" {
            iterations / 3
        } else {
            iterations
        };
        let start = std::time::Instant::now();
        for i in 0..runs {
            let (_, base) = &inputs[rng.random_range(0..inputs.len())];
            let input = mutate(&mut rng, base, &inputs);
            run(name, f, &input, &format!("mutation {i} (seed {seed:#x})"));
        }
        println!("{name}: {runs} mutated inputs in {:?}", start.elapsed());
    }
}

/// The corpus tokens still verify, so the verify targets start from accepted inputs.
#[test]
fn corpus_tokens_are_valid_and_the_jwks_is_the_fuzz_key() {
    let jwks = targets::fuzz_jwks();
    let mut valid = 0;
    for (_, bytes) in corpus("jwt_verify") {
        let token = String::from_utf8_lossy(&bytes).into_owned();
        if claimrules::issuer::verify::verify(
            token.trim(),
            &jwks,
            &claimrules::issuer::verify::VerifyOptions::new(targets::ISS, targets::AUD),
        )
        .is_ok()
        {
            valid += 1;
        }
    }
    assert!(valid >= 1, "no valid token in the jwt_verify corpus");
    let has_fuzz_jwks = corpus("jwks_verify")
        .iter()
        .any(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).is_ok_and(|v| v == jwks));
    assert!(
        has_fuzz_jwks,
        "the jwks_verify corpus holds the fuzz key's JWKS"
    );
}
