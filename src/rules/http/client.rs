//! The HTTP client of one rule set (TLS roots, guarded resolver, redirect policy, limits) and
//! the process-wide runtime its calls run on.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::allow::{AllowEntry, Policy};
use super::errors::Refusal;
use super::resolver::GuardedResolver;
use super::HttpConfig;

/// Most redirects one call follows; each hop is checked against the allow list.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client of one rule set: the allow list, the limits and one connection pool.
pub struct HttpClient {
    pub(super) client: reqwest::Client,
    pub(super) policy: Arc<Policy>,
    pub(super) timeout: Duration,
    pub(super) max_response_bytes: usize,
    pub(super) max_calls: u32,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("allow", &self.policy.entries)
            .field("allow_private", &self.policy.allow_private)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_calls", &self.max_calls)
            .finish_non_exhaustive()
    }
}

/// The runtime every rule's HTTP call runs on: one worker (calls are I/O-bound), built once,
/// never dropped (dropping a runtime inside another one's context panics).
pub(super) fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("claimrules-http")
                .enable_all()
                .build()
                .map_err(|e| format!("[http]: cannot start the HTTP runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The system's trusted roots, read once per process.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

impl HttpClient {
    /// Validates `config` and builds the client: every `allow` entry must be `host`,
    /// `*.suffix` or an IP literal, with an optional `http://`/`https://` prefix and `:port`;
    /// `ca_file` (PEM, relative to `rules_dir` when given) adds trusted roots to the system's.
    pub fn new(config: &HttpConfig, rules_dir: Option<&Path>) -> Result<HttpClient, String> {
        let entries = config
            .allow
            .iter()
            .map(|e| AllowEntry::parse(e).map_err(|why| format!("[http] allow entry {e:?}: {why}")))
            .collect::<Result<Vec<_>, _>>()?;
        if config.timeout_ms == 0 {
            return Err("[http] timeout_ms must be at least 1".into());
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(native_roots().iter().cloned());
        if let Some(ca) = &config.ca_file {
            let path = match rules_dir {
                Some(dir) if ca.is_relative() => dir.join(ca),
                _ => ca.clone(),
            };
            let shown = path.display();
            let pem = std::fs::read(&path).map_err(|e| format!("[http] ca_file {shown}: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("[http] ca_file {shown}: invalid PEM: {e}"))?;
            if certs.is_empty() {
                return Err(format!("[http] ca_file {shown}: no certificate in it"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("[http] ca_file {shown}: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("[http]: TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let policy = Arc::new(Policy {
            entries,
            allow_private: config.allow_private,
        });
        let redirect_policy = {
            let policy = policy.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    let host = attempt.url().host_str().unwrap_or("").to_owned();
                    return attempt.error(Refusal {
                        host,
                        detail: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                match policy.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            })
        };
        // Built inside the runtime's context, where its connection pool will live.
        let _context = runtime()?.enter();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private,
            }))
            .redirect(redirect_policy)
            .no_proxy()
            .referer(false)
            .user_agent(concat!("claimrules/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("[http]: cannot build the HTTP client: {e}"))?;
        Ok(HttpClient {
            client,
            policy,
            timeout: Duration::from_millis(config.timeout_ms),
            max_response_bytes: config.max_response_bytes,
            max_calls: config.max_calls,
        })
    }
}
