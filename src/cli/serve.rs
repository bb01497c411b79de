//! The commands that run a server or touch a tenant: `serve`, `keys rotate`, `playground` and
//! `hash-password`.

use std::net::SocketAddr;
use std::path::PathBuf;

use claimrules::server::{self, ServeOptions};

use super::logging::{self, LogFormat};
use super::{banner, signals, CliError, Exit};

/// `claimrules serve`: prepares the tenant, prints the banner and serves until Ctrl-C or
/// SIGTERM, reloading the rules on SIGHUP.
pub fn serve(log_format: LogFormat, opts: ServeOptions) -> Result<Exit, CliError> {
    owner_only_files();
    return_large_allocations_to_the_os();
    // Every logged value has its control characters escaped (see `logging`).
    logging::init(log_format)?;
    // Rules and signing run on the blocking pool; a small bound keeps memory flat under load
    // (every extra thread costs a stack and a malloc arena) and the 2 workers free for I/O.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(80)
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let prepared = server::prepare(&opts).await?;
        let listener = server::setup::bind(&prepared)
            .await
            .map_err(server::ServeError::from)?;
        let local = listener
            .local_addr()
            .map_err(|e| server::ServeError::from(server::ServerError::Io(e)))?;
        // Registered before the banner tells anyone the server is up, so an early Ctrl-C is
        // never lost.
        let shutdown = signals::shutdown();
        banner::print(&prepared, local);
        signals::reload_rules_on_sighup(prepared.rules.clone());
        server::setup::serve(prepared, listener, shutdown).await?;
        Ok(Exit::Success)
    })
}

/// `claimrules keys rotate`: rolls in a new signing key.
pub fn keys_rotate(
    config: Option<PathBuf>,
    data: Option<PathBuf>,
    delay: i64,
) -> Result<Exit, CliError> {
    owner_only_files();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let opts = ServeOptions {
        config,
        data,
        ..Default::default()
    };
    runtime.block_on(async {
        let (cfg, store) = server::open_store(&opts).await?;
        let kid = server::keys::rotate_keys(&store, &cfg, delay).await?;
        println!("new key {kid}: published now, signing in {delay} s");
        Ok(Exit::Success)
    })
}

/// `claimrules playground`.
pub fn playground(rules: PathBuf, addr: SocketAddr) -> Result<Exit, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let opts = claimrules::playground::PlaygroundOptions { rules, addr };
    runtime.block_on(claimrules::playground::serve(opts))?;
    Ok(Exit::Success)
}

/// `claimrules hash-password`: one line of stdin, its Argon2id hash on stdout.
pub fn hash_password() -> Result<Exit, CliError> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::Stdin)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(CliError::EmptyPassword);
    }
    println!("{}", claimrules::password::hash(password)?);
    Ok(Exit::Success)
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
