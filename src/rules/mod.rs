//! The rules engine: a folder of Rhai rules compiled once, run in order in a sandbox with
//! Auth0-shaped `user` / `context` objects, yielding the custom claims and scope of the tokens.
//!
//! ```
//! use claimrules::rules::RuleSet;
//! use serde_json::json;
//!
//! let set = RuleSet::from_sources(
//!     vec![("add-roles".into(), r#"
//!         context.accessToken["https://example.com/roles"] = user.app_metadata.roles;
//!     "#.into())],
//!     json!({}),
//!     Default::default(),
//! ).unwrap();
//! let out = set.run(
//!     json!({"user_id": "auth0|1", "app_metadata": {"roles": ["admin"]}}),
//!     json!({"clientID": "app"}),
//! ).unwrap();
//! assert_eq!(out.access_token["https://example.com/roles"], json!(["admin"]));
//! ```

mod budget;
pub mod cache;
mod classify;
mod compile;
pub mod coverage;
mod engine;
mod error;
mod helpers;
mod hints;
pub mod hot;
pub mod http;
mod inspect;
pub mod lint;
mod loader;
mod metadata;
pub mod modules;
pub mod platform;
mod run;
pub mod scaffold;
mod set;
pub mod sites;
mod stack;

pub use budget::{memory_budget_enforced, RunAllocator};
#[cfg(feature = "server")]
pub(crate) use engine::time_left as run_time_left;
pub use engine::MAX_METADATA_BYTES;
pub use error::{LoadError, RuleError};
pub use hot::{HotRules, LoadedRules, RulesStatus, WatchError};
pub use loader::{read_folder, FolderContents, RuleSource};
pub use metadata::{merge_metadata, MetadataUpdates};
pub use run::{Outcome, RuleLog, RunOptions, Trace, Warning};
pub use set::{CompiledRule, RuleSet, RuleSetOptions, SandboxLimits};
