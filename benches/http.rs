//! Overhead of `http_get` through a rule (src/rules/http.rs): one pipeline run with a rule that
//! calls a local server and stores a field of its JSON answer, against the same rule without
//! the call. Plain http and https (test CA, pooled connection) on 127.0.0.1; median and p99
//! in µs.
//!
//! Run: `cargo bench --bench http`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use claimrules::rules::http::HttpConfig;
use claimrules::rules::{RuleSet, RuleSetOptions};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const WARMUP: usize = 200;
const RUNS: usize = 3000;

const BODY: &str = r#"{"roles":["admin","billing"],"tier":"gold"}"#;

/// Answers every request on a keep-alive connection with the same small JSON body.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        buf.clear();
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Starts a plain and an https server; returns their ports and the CA's PEM file.
fn start_servers(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> (u16, u16, std::path::PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write ca");
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let plain = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let secure = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let ports = (
        plain.local_addr().expect("addr").port(),
        secure.local_addr().expect("addr").port(),
    );
    rt.spawn(async move {
        while let Ok((s, _)) = plain.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s));
        }
    });
    rt.spawn(async move {
        while let Ok((s, _)) = secure.accept().await {
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    serve(tls).await;
                }
            });
        }
    });
    (ports.0, ports.1, ca_path)
}

fn set(src: &str, http: Option<HttpConfig>) -> RuleSet {
    RuleSet::from_sources(
        vec![("bench".into(), src.into())],
        json!({}),
        RuleSetOptions {
            http,
            ..Default::default()
        },
    )
    .expect("compiles")
}

/// Median and p99 of one pipeline run, in µs.
fn measure(set: &RuleSet) -> (f64, f64) {
    let user = json!({"user_id": "auth0|bench"});
    let ctx = json!({"clientID": "bench"});
    for _ in 0..WARMUP {
        set.run(user.clone(), ctx.clone()).expect("run");
    }
    let mut samples: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let out = set.run(user.clone(), ctx.clone()).expect("run");
            let took = start.elapsed();
            assert_eq!(out.access_token["https://example.com/tier"], json!("gold"));
            took
        })
        .collect();
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (us(samples[RUNS / 2]), us(samples[RUNS * 99 / 100]))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (plain, secure, ca_path) = start_servers(&rt, dir.path());

    let without = set(
        r#"let r = #{json: #{tier: "gold"}}; context.accessToken["https://example.com/tier"] = r.json.tier;"#,
        None,
    );
    let config = HttpConfig {
        allow: vec!["http://127.0.0.1".into()],
        allow_private: true,
        ca_file: Some(ca_path),
        ..Default::default()
    };
    let call = |scheme: &str, port: u16| {
        format!(
            r#"let r = http_get("{scheme}://127.0.0.1:{port}/profile?id=1"); context.accessToken["https://example.com/tier"] = r.json.tier;"#
        )
    };
    let over_http = set(&call("http", plain), Some(config.clone()));
    let over_https = set(&call("https", secure), Some(config));

    println!("http: {RUNS} pipeline runs each after {WARMUP} warm-up runs, server on 127.0.0.1 (keep-alive)");
    let (m0, p0) = measure(&without);
    println!("http: rule without http_get:        median {m0:8.1} us, p99 {p0:8.1} us");
    for (name, set) in [
        ("http_get over http: ", &over_http),
        ("http_get over https:", &over_https),
    ] {
        let (m, p) = measure(set);
        println!(
            "http: rule with {name}      median {m:8.1} us, p99 {p:8.1} us (overhead: median {:.1} us)",
            m - m0
        );
    }
}
