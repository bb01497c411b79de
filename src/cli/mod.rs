//! The commands of the `claimrules` binary, and how each failure maps to an exit code.
//!
//! [`commands`] holds the rule author's commands (`run`, `check`, `new`, `test`), [`serve`] the
//! ones that run a server or touch a tenant (`serve`, `keys rotate`, `playground`,
//! `hash-password`); [`banner`], [`signals`] and [`logging`] are what `serve` adds around
//! [`claimrules::server::setup`].

mod banner;
mod commands;
mod logging;
mod serve;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

pub use commands::{check, new_rule, run, test_once, test_watch, TestArgs};
pub use serve::{hash_password, keys_rotate, playground, serve};

/// The `--help` text on exit codes (also in the README, "Command line").
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failures: failing tests, a denied or failed `run`, rules that fail `check`
  2  usage or configuration error: bad arguments, an unreadable or invalid config, input or
     case file, rules that do not load, a report file that cannot be written, a data folder or
     database that cannot be opened at start
  3  I/O failure while running: the runtime cannot start, the address cannot be bound, the
     server or the store failed after start, stdin cannot be read";

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what it was asked.
    Success,
    /// 1: the command ran and found failures (tests, a denied `run`, `check`).
    Failures,
    /// 2: usage or configuration: fix the arguments, the files or the configuration.
    Usage,
    /// 3: an I/O failure of the environment while running; the same command may succeed later.
    Io,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(match e {
            Exit::Success => 0,
            Exit::Failures => 1,
            Exit::Usage => 2,
            Exit::Io => 3,
        })
    }
}

/// Why a command stopped, by kind ([`CliError::exit`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Starting or running the server failed.
    #[error(transparent)]
    Serve(#[from] claimrules::server::ServeError),
    /// Rotating the keys failed after the store was opened.
    #[error(transparent)]
    Keys(#[from] claimrules::server::keys::KeysError),
    /// The playground could not start or failed.
    #[error(transparent)]
    Playground(#[from] claimrules::playground::PlaygroundError),
    /// The log output could not be set up.
    #[error(transparent)]
    Logging(#[from] logging::LoggingError),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// An input file (`--user`, `--context`) could not be read.
    #[error("cannot read {what} file {}: {source}", path.display())]
    ReadInput {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An input file is not JSON.
    #[error("{}:{}:{}: invalid JSON: {source}", path.display(), source.line(), source.column())]
    InvalidJson {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An input file is JSON but not an object.
    #[error("{}: the {what} must be a JSON object", path.display())]
    NotAnObject {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The rules folder did not load.
    #[error(transparent)]
    Rules(#[from] claimrules::rules::LoadError),
    /// The test suite did not load.
    #[error(transparent)]
    Suite(#[from] claimrules::testing::TestError),
    /// `new` could not write the rule.
    #[error(transparent)]
    Scaffold(#[from] claimrules::rules::scaffold::ScaffoldError),
    /// The rules folder could not be watched.
    #[error(transparent)]
    Watch(#[from] claimrules::rules::WatchError),
    /// A report file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// stdin could not be read.
    #[error("cannot read the password from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    /// `hash-password` was given an empty line.
    #[error("empty password")]
    EmptyPassword,
    /// Hashing the password failed.
    #[error(transparent)]
    Hash(#[from] claimrules::password::PasswordError),
}

impl CliError {
    /// The exit code of this failure: 2 for what the user can fix in the arguments, files or
    /// configuration, 3 for I/O failures of the environment.
    pub fn exit(&self) -> Exit {
        use claimrules::playground::PlaygroundError;
        use claimrules::server::ServeError;
        match self {
            // Everything up to the store being open is start-up: a database that cannot be
            // reached at start is refused with 2 like a bad URL (README "Several instances").
            CliError::Serve(ServeError::Server(_))
            | CliError::Keys(_)
            | CliError::Playground(PlaygroundError::Bind { .. } | PlaygroundError::Io(_))
            | CliError::Runtime(_)
            | CliError::Stdin(_) => Exit::Io,
            // A report path in a missing folder is a bad argument, as before the codes split.
            CliError::Write { .. } => Exit::Usage,
            // Unchanged from before the codes were split: a failed hash is a failure (1).
            CliError::Hash(_) => Exit::Failures,
            _ => Exit::Usage,
        }
    }
}

/// Prints the error of a failed command and turns the result into the process's exit code.
pub fn finish(result: Result<Exit, CliError>) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit().into()
        }
    }
}
