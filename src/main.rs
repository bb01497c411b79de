//! The `claimrules` command line: parses the arguments (clap) and runs the command in
//! [`cli`]. Exit codes: see [`cli::Exit`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

use cli::{Exit, TestArgs};

/// Counts what each rule run allocates, so the sandbox's memory budget is enforced
/// (`claimrules::rules::RunAllocator`: the system allocator plus thread-local bookkeeping).
#[global_allocator]
static ALLOC: claimrules::rules::RunAllocator = claimrules::rules::RunAllocator;

#[derive(Parser)]
#[command(
    name = "claimrules",
    version,
    about = "Auth0-style rules for token servers",
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the rule pipeline once on a user (and context) and prints the outcome as JSON.
    Run {
        /// The user, as a JSON file.
        #[arg(long)]
        user: PathBuf,
        /// The context, as a JSON file, merged deeply over the default login context (README
        /// "The default context").
        #[arg(long)]
        context: Option<PathBuf>,
        /// The rules folder.
        #[arg(default_value = "rules")]
        rules: PathBuf,
    },
    /// Compiles every rule and runs the static checks (unknown functions, JavaScript names,
    /// variables a `fn` cannot see, platform fields); reports each with file, line and column.
    Check {
        /// The rules folder.
        #[arg(default_value = "rules")]
        rules: PathBuf,
    },
    /// Writes a new rule, RULES_DIR/RULE_NAME.rhai, and its cases, RULES_DIR/tests/RULE_NAME.toml,
    /// that pass `claimrules test` at once (and lists the rule in rules.toml when there is one).
    New {
        /// The rule's name (letters, digits, `-`, `_`), e.g. 60-require-mfa.
        name: String,
        /// The rules folder (created when missing).
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
    /// Runs the rules' unit tests (case files in RULES_DIR/tests/).
    Test {
        /// The rules folder; its cases are in RULES_DIR/tests/.
        #[arg(default_value = "rules")]
        rules: PathBuf,
        /// Runs only cases whose name or file name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Also writes a JUnit XML report to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Also writes the rules' line coverage to this file, as an lcov tracefile.
        #[arg(long)]
        coverage: Option<PathBuf>,
        /// Output format.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// Reruns the tests whenever a rule or case file changes.
        #[arg(long)]
        watch: bool,
        /// `strict`: a claim the namespace rule drops fails the case; `drop`: as the server does.
        #[arg(long, default_value = "strict", value_parser = ["strict", "drop"])]
        namespace_policy: String,
    },
    /// Runs the token server (embedded default config when --config is not given).
    Serve {
        /// The tenant configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = claimrules::server::DEFAULT_ADDR)]
        addr: std::net::SocketAddr,
        /// The rules folder (overrides the config).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// The data folder (overrides the config).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Do not reload the rules when their files change.
        #[arg(long)]
        no_watch: bool,
        /// Log line format on stderr: `text`, or `json` (one object per line, for log shippers).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
    },
    /// Serves a local page to edit rules and see their tokens as you type (loopback only; the
    /// printed URL carries the access token).
    Playground {
        /// The rules folder.
        #[arg(default_value = "rules")]
        rules: PathBuf,
        /// Loopback address to listen on (port 0: any free port).
        #[arg(long, default_value = claimrules::playground::DEFAULT_ADDR)]
        addr: std::net::SocketAddr,
    },
    /// Reads a password from stdin and prints its Argon2id hash for `password_hash`.
    HashPassword,
    /// Manages signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Rolls in a new signing key (published now, used after --delay seconds); running servers
    /// pick it up within 30 s, and the old key stays published until its tokens expire.
    Rotate {
        /// The tenant configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The data folder (overrides the config).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Seconds between publishing the new key and signing with it.
        #[arg(long, default_value_t = 300)]
        delay: i64,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // `--help` and `--version` are "errors" printed on stdout.
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            return exit.into();
        }
    };
    let result = match cli.command {
        Command::Run {
            user,
            context,
            rules,
        } => cli::run(&user, context.as_deref(), &rules),
        Command::Check { rules } => cli::check(&rules),
        Command::New { name, rules } => cli::new_rule(&rules, &name),
        Command::Test {
            rules,
            filter,
            junit,
            coverage,
            format,
            watch,
            namespace_policy,
        } => {
            let args = TestArgs::new(rules, filter, namespace_policy == "drop")
                .junit(junit)
                .coverage(coverage)
                .json(format == "json");
            if watch {
                cli::test_watch(&args)
            } else {
                cli::test_once(&args)
            }
        }
        Command::Serve {
            config,
            addr,
            rules,
            data,
            no_watch,
            log_format,
        } => cli::serve(
            log_format.parse().unwrap_or_default(),
            claimrules::server::ServeOptions {
                config,
                addr: Some(addr),
                rules,
                data,
                no_watch,
            },
        ),
        Command::Playground { rules, addr } => cli::playground(rules, addr),
        Command::HashPassword => cli::hash_password(),
        Command::Keys {
            action:
                KeysAction::Rotate {
                    config,
                    data,
                    delay,
                },
        } => cli::keys_rotate(config, data, delay),
    };
    cli::finish(result)
}
