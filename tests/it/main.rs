//! The integration tests: one binary (one link of the whole dependency graph), one module per
//! capability. `common` holds the shared helpers: a real server on a random loopback port and
//! a real HTTP client.

/// As in the binary: the sandbox's memory budget is enforced in these tests too.
#[global_allocator]
static ALLOC: claimrules::rules::RunAllocator = claimrules::rules::RunAllocator;

mod common;
#[path = "../../fuzz/targets.rs"]
mod fuzz_targets;

mod auth0_templates;
mod authorize_flow;
mod bad_input_authorize;
mod bad_input_hooks;
mod bad_input_token;
mod cli_run_check;
mod crash_safety;
mod data_folder_modes;
mod deny_and_errors;
mod embed_axum;
mod embedding;
mod fuzz_corpus_replay;
mod hooks_hydra;
mod hooks_okta;
mod hot_reload;
mod login_burst;
mod multi_instance;
mod namespace_rule;
mod oidc_session;
mod operations;
mod playground;
mod rule_authoring;
mod rules_cache;
mod rules_cannot_starve;
mod rules_http;
mod rules_lib_modules;
mod rules_loading;
mod rules_metadata;
mod sandbox_limits;
mod scope_rewrite;
mod security_bcp;
mod serve_cli;
mod server_routes;
mod slow_api;
mod store_conformance;
mod test_runner;
mod token_endpoint;
