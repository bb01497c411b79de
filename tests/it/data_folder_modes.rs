//! The data folder is private (issue 15, finding 1): the real binary creates the folder `0700`
//! and every file in it (the SQLite database with its `-wal` and `-shm`, the demo secrets)
//! `0600`, even when started with a permissive umask; it refuses to start (exit 2, saying what
//! to run) when an existing folder or key-holding file is accessible by group or others.

use crate::common::free_port;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `claimrules serve ARGS` under `umask 000`, so any file created without an explicit mode would
/// come out world-readable.
fn serve_permissive(args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 000; exec \"$0\" serve \"$@\"")
        .arg(env!("CARGO_BIN_EXE_claimrules"))
        .args(args);
    c
}

/// Starts the embedded default on `data`, waits for the banner, and stops it after `check`.
fn while_serving(data: &Path, check: impl FnOnce()) {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut child = serve_permissive(&[
        "--no-watch",
        "--addr",
        &addr,
        "--rules",
        rules,
        "--data",
        data.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next();
    if !matches!(&first, Some(Ok(l)) if l.starts_with("claimrules listening")) {
        let out = child.wait_with_output().unwrap();
        panic!(
            "server did not start: {first:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Drain the banner so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    check();
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_fresh_data_folder_and_every_file_in_it_are_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    // Under a world-readable parent, as /var/lib or a home directory often is.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    while_serving(&data, || {
        assert_eq!(mode(&data), 0o700, "data folder");
        for f in [
            "claimrules.db",
            "claimrules.db-wal",
            "claimrules.db-shm",
            "demo-client-secret",
            "demo-password",
        ] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
        // Nothing else in the folder is readable by others either.
        for e in std::fs::read_dir(&data).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p) & 0o077, 0, "{}", p.display());
        }
    });
    // A second start on the same (private) folder works and keeps the modes.
    while_serving(&data, || {
        assert_eq!(mode(&data.join("claimrules.db")), 0o600)
    });
}

#[test]
fn a_database_named_by_url_gets_owner_only_files_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db/keys.db");
    let cfg = dir.path().join("claimrules.toml");
    std::fs::write(
        &cfg,
        format!("database_url = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" keys rotate --delay 0 --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_claimrules"))
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "keys rotate: {status}");
    assert_eq!(mode(db.parent().unwrap()), 0o700);
    assert_eq!(mode(&db), 0o600);
    for e in std::fs::read_dir(db.parent().unwrap()).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// Runs `serve` on `data` and expects exit 2 with a message naming `path` and the fix.
fn refused(data: &Path, path: &Path, fix: &str) {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let addr = format!("127.0.0.1:{}", free_port());
    let out = serve_permissive(&[
        "--no-watch",
        "--addr",
        &addr,
        "--rules",
        rules,
        "--data",
        data.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "must refuse to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(fix), "{err}");
    assert!(err.contains("group or others"), "{err}");
}

#[test]
fn an_exposed_data_folder_or_key_file_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    while_serving(&data, || {});

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused(&data, &data, "chmod 700");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();

    for f in [
        "claimrules.db",
        "demo-password",
        "demo-client-secret",
        "claimrules.db-wal",
    ] {
        let p = data.join(f);
        if !p.exists() {
            std::fs::write(&p, b"").unwrap();
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        refused(&data, &p, "chmod 600");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Fixed as told, it starts again.
    while_serving(&data, || {});
}
