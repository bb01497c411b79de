//! Engine-specific tests: a database written by the sqlx engine opens here, URL parsing, group
//! commit. The behaviour shared with PostgreSQL is tests/it/store_conformance.rs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::url_path;
use crate::store::{CodeRedemption, Rotation, Store, StoreError};

/// A copy of tests/fixtures/store/v2.sqlite (schema 2, written by the sqlx engine) in a private
/// folder, as the store demands.
fn fixture(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = data.join("claimrules.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store/v2.sqlite"),
        &db,
    )
    .unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    data
}

const NOW: i64 = 1_800_000_000;

/// The first column of every row `sql` returns.
fn column<T: rusqlite::types::FromSql>(c: &rusqlite::Connection, sql: &str) -> Vec<T> {
    c.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_database_of_the_sqlx_engine_opens_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture(dir.path());
    let store = Store::open_in_folder(&data).await.unwrap();

    let grant = store
        .refresh_grant("refresh-hash-2", NOW)
        .await
        .unwrap()
        .expect("the live refresh token");
    assert_eq!(grant.client_id, "fixture-client");
    assert_eq!(grant.user_id, "auth0|fixture");
    assert_eq!(grant.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    assert_eq!(
        grant.claims,
        Some(serde_json::json!({"https://example.com/role": "admin"}))
    );
    // The first token of the chain was rotated already.
    assert_eq!(
        store.refresh_grant("refresh-hash-1", NOW).await.unwrap(),
        None
    );

    match store.redeem_code("code-hash-1", NOW).await.unwrap() {
        CodeRedemption::Redeemed(g) => assert_eq!(g, grant),
        other => panic!("{other:?}"),
    }
    let session = store.session("session-hash-1", NOW).await.unwrap().unwrap();
    assert_eq!(session.user_id, "auth0|fixture");
    assert!(store
        .consent_covers(
            "auth0|fixture",
            "fixture-client",
            "https://api.example.com",
            &["profile".into(), "openid".into()]
        )
        .await
        .unwrap());
    assert_eq!(store.increment_logins("auth0|fixture").await.unwrap(), 3);
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, "fixture-key");
    assert_eq!(keys[0].private_pkcs8_der, vec![48, 1, 2, 3]);
    assert_eq!(keys[0].retires_at, None);
    let metadata = store.user_metadata("auth0|fixture").await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&metadata).unwrap(),
        serde_json::json!({"app_metadata": {"plan": "gold"}, "user_metadata": {"theme": "dark"}})
    );

    // Writes go on in the same chain, and replaying the old token still revokes it.
    let rotated = store
        .rotate_refresh("refresh-hash-2", "refresh-hash-3", NOW, None)
        .await
        .unwrap();
    assert!(matches!(rotated, Rotation::Rotated { family, .. } if family == "family-1"));
    let reused = store
        .rotate_refresh("refresh-hash-1", "refresh-hash-4", NOW, None)
        .await
        .unwrap();
    assert_eq!(
        reused,
        Rotation::Reused {
            family: "family-1".into()
        }
    );
    drop(store);

    // Version 3 rebuilt the refresh tokens as a rowid table: the migrated rows first, and every
    // new token after them, in the order stored.
    {
        let c = rusqlite::Connection::open(data.join("claimrules.db")).unwrap();
        let order: Vec<String> = column(&c, "SELECT token_hash FROM refresh_tokens ORDER BY id");
        assert_eq!(order.last().map(String::as_str), Some("refresh-hash-3"));
        assert!(order.contains(&"refresh-hash-1".to_string()), "{order:?}");
        assert!(order.contains(&"refresh-hash-2".to_string()), "{order:?}");
        // Versions 3 and 4 made the tokens and the families rowid tables, and every token names
        // its family's rowid.
        for table in ["refresh_tokens", "refresh_families"] {
            let without_rowid: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_schema WHERE name = ? \
                     AND sql LIKE '%WITHOUT ROWID%'",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(without_rowid, 0, "{table}");
        }
        let mismatched: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM refresh_tokens t LEFT JOIN refresh_families f \
                 ON f.id = t.family_id WHERE f.family IS NOT t.family",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(mismatched, 0);
        let tokens: i64 = c
            .query_row("SELECT COUNT(*) FROM refresh_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tokens as usize, order.len());
    }

    // Reopened: nothing to migrate, schema version 4.
    let store = Store::open_in_folder(&data).await.unwrap();
    assert_eq!(
        store.refresh_grant("refresh-hash-3", NOW).await.unwrap(),
        None
    );
    drop(store);
    let c = rusqlite::Connection::open(data.join("claimrules.db")).unwrap();
    let versions: Vec<i64> = column(&c, "SELECT version FROM claimrules_schema ORDER BY version");
    assert_eq!(versions, vec![1, 2, 3, 4]);
}

#[test]
fn urls_name_a_file() {
    let path = |url: &str| url_path(url, url).map(|p| p.display().to_string());
    assert_eq!(path("sqlite:///var/lib/c.db").unwrap(), "/var/lib/c.db");
    assert_eq!(path("sqlite://data/c.db").unwrap(), "data/c.db");
    assert_eq!(path("sqlite:c.db?mode=rwc").unwrap(), "c.db");
    assert_eq!(path("sqlite:///tmp/a%3Fb.db").unwrap(), "/tmp/a?b.db");
    for bad in [
        "sqlite::memory:",
        "sqlite://c.db?mode=memory",
        "sqlite://",
        "sqlite://c.db?vfs=unix",
        "sqlite://c.db?mode=x",
        "sqlite:///tmp/%zz.db",
    ] {
        assert!(
            matches!(path(bad), Err(StoreError::InvalidUrl { .. })),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn concurrent_writes_each_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in_folder(&dir.path().join("data"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.increment_logins(&format!("u{}", i % 4)).await })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap().unwrap());
    }
    counts.sort();
    // Each of the 4 users counted 8 logins, each count handed out once.
    let expected: Vec<i64> = (1..=8).flat_map(|n| [n; 4]).collect();
    assert_eq!(counts, expected);
}

#[tokio::test]
async fn the_thread_ends_with_the_last_clone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open_in_folder(&data).await.unwrap();
    store.increment_logins("u").await.unwrap();
    drop(store);
    // The connection closed with its thread: the WAL was checkpointed into the file and removed.
    let wal = data.join("claimrules.db-wal");
    within_5_s("the WAL is still there", || !wal.exists());
}

/// Polls `done` every 10 ms; fails with `what` when it is still false after 5 s.
fn within_5_s(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn the_writer_checkpoints_every_ten_thousand_frames_and_truncates_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let opener = super::Opener {
        path: dir.path().join("claimrules.db"),
    };
    let c = opener.open().unwrap();
    let pragma = |name: &str| -> i64 { c.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
    assert_eq!(pragma("wal_autocheckpoint"), 10_000);
    assert_eq!(pragma("journal_size_limit"), 64 << 20);
    // Durability is not traded for it: every commit still syncs the WAL.
    assert_eq!(pragma("synchronous"), 2, "synchronous = FULL");
}

/// A write queued while a batch runs its statements joins that batch: shown by a joining write
/// that breaks the transaction, which undoes the write already run (in a later batch of its own
/// it could not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_while_a_batch_runs_joins_it_before_the_commit() {
    use super::writer::{Answer, Job, Write};
    use std::time::{Duration, Instant};
    use tokio::sync::oneshot;

    let dir = tempfile::tempdir().unwrap();
    // The store creates the private `data` folder.
    let store = super::SqliteStore::open_file(&dir.path().join("data/claimrules.db"))
        .await
        .unwrap();

    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write(false, move |c| {
                    super::stmt::exec(
                        c,
                        "INSERT INTO login_counts (user_id, count) VALUES ('first', 1)",
                        [],
                    )?;
                    let _ = started_tx.send(());
                    // Hold the batch open until the second write is in the queue.
                    let _ = go_rx.recv_timeout(Duration::from_secs(10));
                    Ok(())
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let (tx, second) = oneshot::channel::<Result<(), StoreError>>();
    let broken = |_: &rusqlite::Connection| -> Result<(), StoreError> {
        Err(StoreError::unavailable("the disk went away"))
    };
    let job = Write {
        f: Some(broken),
        savepoint: false,
        answer: Answer::Committed { tx, result: None },
        queued: Instant::now(),
    };
    store
        .jobs
        .send(Job::Write(Box::new(job)))
        .await
        .ok()
        .unwrap();
    go_tx.send(()).unwrap();

    assert!(second.await.unwrap().is_err());
    let first = first.await.unwrap();
    assert!(
        first.is_err(),
        "the second write ran in a batch of its own: {first:?}"
    );
    // Undone with its batch: the first write's row is not there.
    let count = store
        .read(|c| {
            super::stmt::optional(
                c,
                "SELECT count FROM login_counts WHERE user_id = 'first'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(count, None);
}

/// Committed frames reach the database file within a few checkpoint periods although the WAL is
/// far below the writer's automatic checkpoint: the checkpoint thread copied them.
#[tokio::test]
async fn committed_writes_are_checkpointed_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = Store::open_in_folder(&data).await.unwrap();
    let marker = "checkpoint-marker-7f3a9c";
    store.increment_logins(marker).await.unwrap();
    let db = data.join("claimrules.db");
    within_5_s("the row is still only in the WAL after 5 s", || {
        let bytes = std::fs::read(&db).unwrap();
        bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
    });
    // The WAL still has the frames: this was not a checkpoint on close.
    assert!(data.join("claimrules.db-wal").exists());
}
