//! The `claimrules` command line: parses arguments and calls the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use claimrules::rules::{read_folder, RuleSet, RuleSetOptions};
use claimrules::testing::{
    color_enabled, render_json, render_junit, render_text, NamespaceMode, SuiteOptions, TestSuite,
};

/// Counts what each rule run allocates, so the sandbox's memory budget is enforced
/// (`claimrules::rules::RunAllocator`: the system allocator plus thread-local bookkeeping).
#[global_allocator]
static ALLOC: claimrules::rules::RunAllocator = claimrules::rules::RunAllocator;

/// Exit code for usage and configuration errors.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "claimrules",
    version,
    about = "Auth0-style rules for token servers"
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
        #[arg(long, default_value = claimrules::serve::DEFAULT_ADDR)]
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
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run {
            user,
            context,
            rules,
        } => run(&user, context.as_deref(), &rules),
        Command::Check { rules } => check(&rules),
        Command::New { name, rules } => new_rule(&rules, &name),
        Command::Test {
            rules,
            filter,
            junit,
            coverage,
            format,
            watch,
            namespace_policy,
        } => {
            let args = TestArgs {
                rules,
                options: SuiteOptions {
                    filter,
                    namespace: if namespace_policy == "drop" {
                        NamespaceMode::Drop
                    } else {
                        NamespaceMode::Strict
                    },
                },
                junit,
                coverage,
                json: format == "json",
                color: color_enabled(
                    std::io::stdout().is_terminal(),
                    std::env::var_os("NO_COLOR").as_deref(),
                ),
            };
            if watch {
                test_watch(&args)
            } else {
                ExitCode::from(test_once(&args))
            }
        }
        Command::Serve {
            config,
            addr,
            rules,
            data,
            no_watch,
            log_format,
        } => serve(
            log_format.parse().unwrap_or_default(),
            claimrules::serve::ServeOptions {
                config,
                addr: Some(addr),
                rules,
                data,
                no_watch,
            },
        ),
        Command::Playground { rules, addr } => playground(rules, addr),
        Command::HashPassword => hash_password(),
        Command::Keys {
            action:
                KeysAction::Rotate {
                    config,
                    data,
                    delay,
                },
        } => keys_rotate(config, data, delay),
    }
}

fn keys_rotate(config: Option<PathBuf>, data: Option<PathBuf>, delay: i64) -> ExitCode {
    owner_only_files();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let opts = claimrules::serve::ServeOptions {
        config,
        data,
        ..Default::default()
    };
    let result = runtime.block_on(async {
        let (cfg, store) = claimrules::serve::open_store(&opts).await?;
        claimrules::serve::rotate_keys(&store, &cfg, delay).await
    });
    match result {
        Ok(kid) => {
            println!("new key {kid}: published now, signing in {delay} s");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Makes glibc hand large buffers straight back to the OS.
///
/// Each Argon2 verification allocates ~19 MiB. glibc's dynamic mmap threshold grows after the
/// first such free, after which those buffers come from per-thread arenas and stay resident:
/// 32 logins left the server at ~300 MiB RSS. A fixed threshold keeps every allocation over
/// 1 MiB on mmap, returned on free.
fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called once before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Everything the server creates is for its own user only (`umask 077`): a second line of
/// defence behind the explicit modes of `claimrules::datadir`, for any file a future change or a
/// library might create.
fn owner_only_files() {
    #[cfg(unix)]
    // SAFETY: umask only changes this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

fn serve(
    log_format: claimrules::logging::LogFormat,
    opts: claimrules::serve::ServeOptions,
) -> ExitCode {
    owner_only_files();
    return_large_allocations_to_the_os();
    // Every logged value has its control characters escaped (see `claimrules::logging`).
    if let Err(e) = claimrules::logging::init(log_format) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    // Rules and signing run on the blocking pool; a small bound keeps memory flat under load
    // (every extra thread costs a stack and a malloc arena) and the 2 workers free for I/O.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(80)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match runtime.block_on(claimrules::serve::serve(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn playground(rules: PathBuf, addr: std::net::SocketAddr) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let opts = claimrules::playground::PlaygroundOptions { rules, addr };
    match runtime.block_on(claimrules::playground::serve(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn hash_password() -> ExitCode {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("error: cannot read the password from stdin");
        return ExitCode::from(EXIT_USAGE);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::from(EXIT_USAGE);
    }
    match claimrules::password::hash(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_json(path: &Path, what: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: invalid JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if !value.is_object() {
        return Err(format!(
            "{}: the {what} must be a JSON object",
            path.display()
        ));
    }
    Ok(value)
}

fn run(user: &Path, context: Option<&Path>, rules: &Path) -> ExitCode {
    let inputs = read_json(user, "user").and_then(|u| {
        let mut c = Value::from(claimrules::Context::default());
        if let Some(p) = context {
            claimrules::testing::merge_deep(&mut c, &read_json(p, "context")?);
        }
        Ok((u, c))
    });
    let (user, context) = match inputs {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let set = match RuleSet::load(rules) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match set.run(user, context) {
        Ok(outcome) => {
            let pretty = json!({
                "access_token": outcome.access_token,
                "id_token": outcome.id_token,
                "scope": outcome.scope,
                "logs": outcome.logs,
                "warnings": outcome.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "user": outcome.user,
                "metadata": outcome.metadata,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&pretty).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", if e.is_denial() { "denied" } else { "error" });
            ExitCode::from(1)
        }
    }
}

fn check(rules: &Path) -> ExitCode {
    let contents = match read_folder(rules) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let errors = RuleSet::check(&contents, &RuleSetOptions::default());
    for e in &errors {
        eprintln!("error: {e}");
    }
    let findings = claimrules::rules::lint::lint(&contents, &RuleSetOptions::default());
    for f in &findings {
        eprintln!("{}: {f}", f.severity);
    }
    let failing: std::collections::BTreeSet<&str> = findings
        .iter()
        .filter(|f| f.severity == claimrules::rules::lint::Severity::Error)
        .map(|f| f.rule.as_str())
        .collect();
    let warnings = findings.len()
        - findings
            .iter()
            .filter(|f| f.severity == claimrules::rules::lint::Severity::Error)
            .count();
    let enabled = contents.rules.iter().filter(|r| r.enabled).count();
    if !errors.is_empty() {
        eprintln!("{} of {enabled} rules failed to compile", errors.len());
    }
    if !failing.is_empty() {
        eprintln!(
            "{} of {enabled} rules failed the static checks (each would fail at run time)",
            failing.len()
        );
    }
    if errors.is_empty() && failing.is_empty() {
        match warnings {
            0 => println!("{enabled} rules ok"),
            1 => println!("{enabled} rules ok, 1 warning"),
            n => println!("{enabled} rules ok, {n} warnings"),
        }
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn new_rule(rules: &Path, name: &str) -> ExitCode {
    match claimrules::rules::scaffold::new_rule(rules, name) {
        Ok(done) => {
            println!("wrote {}", done.rule.display());
            println!("wrote {}", done.cases.display());
            if let Some(manifest) = &done.manifest {
                println!("listed {name} last in {}", manifest.display());
            }
            println!("next: claimrules test {}", rules.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Settings of `claimrules test`.
struct TestArgs {
    rules: PathBuf,
    options: SuiteOptions,
    junit: Option<PathBuf>,
    coverage: Option<PathBuf>,
    json: bool,
    color: bool,
}

/// Loads and runs the suite once, prints the report; returns the exit code.
fn test_once(args: &TestArgs) -> u8 {
    let suite = match TestSuite::load(&args.rules) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let report = suite.run_with(&args.options);
    if let Some(path) = &args.coverage {
        if let Err(e) = std::fs::write(path, claimrules::testing::render_lcov(&report)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return EXIT_USAGE;
        }
    }
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, render_junit(&report)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return EXIT_USAGE;
        }
    }
    if args.json {
        println!("{}", render_json(&report));
    } else {
        print!("{}", render_text(&report, args.color));
    }
    if report.success() {
        0
    } else {
        1
    }
}

/// Runs the suite, then again after every change under the rules folder (tests included).
fn test_watch(args: &TestArgs) -> ExitCode {
    let (tx, rx) = std::sync::mpsc::channel();
    // Watch before the first run, so no edit made after its summary goes unseen.
    let _watch = match claimrules::rules::hot::watch_folder(&args.rules, move || {
        let _ = tx.send(());
    }) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    test_once(args);
    while rx.recv().is_ok() {
        // Editors write in bursts; one rerun per burst.
        while rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_ok()
        {}
        if args.json {
            // Keep stdout one JSON document per line.
            eprintln!("-- change detected, rerunning");
        } else {
            println!("\n-- change detected, rerunning");
        }
        test_once(args);
    }
    ExitCode::from(EXIT_USAGE)
}
