//! Store conformance: every case runs against SQLite and PostgreSQL through the same `Store` API.
//!
//! PostgreSQL: `CLAIMRULES_TEST_POSTGRES_URL` or postgres://postgres@127.0.0.1:5432/test; every
//! test gets a fresh schema (`cr_test_<random>`, dropped when the test passes). When PostgreSQL
//! cannot be reached the PostgreSQL tests fail with a message naming the URL; they never skip.

use std::collections::HashSet;
use std::sync::Arc;

use claimrules::store::{CodeRedemption, Grant, Rotation, Session, Store, StoreError, StoredKey};
use sqlx::Connection;
use tokio::sync::Barrier;

const NOW: i64 = 1_800_000_000;

/// One database for one test: the store, how to reopen it, and what to clean up.
struct TestDb {
    store: Store,
    url: String,
    engine: Engine,
    /// PostgreSQL: the schema made for this test.
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Engine {
    Sqlite,
    Postgres,
}

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn postgres_url() -> String {
    std::env::var("CLAIMRULES_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// `url` with `search_path` set to `schema` (PostgreSQL's `options` connection parameter), and
/// the schema as `application_name` so the test's connections can be told apart.
fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}&application_name={schema}")
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("claimrules.db").display());
        let store = Store::open(&url).await.expect("open sqlite store");
        TestDb {
            store,
            url,
            engine: Engine::Sqlite,
            schema: None,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> TestDb {
        let base = postgres_url();
        let mut admin = sqlx::postgres::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is unreachable at {base}: {e}. The store conformance tests need \
                     it (set CLAIMRULES_TEST_POSTGRES_URL to another server); they never skip."
                )
            });
        let schema = format!("cr_test_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("create test schema");
        let url = with_search_path(&base, &schema);
        let store = Store::open(&url).await.expect("open postgres store");
        TestDb {
            store,
            url,
            engine: Engine::Postgres,
            schema: Some(schema),
            _dir: None,
        }
    }

    async fn reopen(&self) -> Result<Store, StoreError> {
        Store::open(&self.url).await
    }

    /// Runs one SQL statement outside the store (to tamper with the schema).
    async fn execute_raw(&self, sql: &str) {
        match self.engine {
            Engine::Sqlite => {
                let c = rusqlite::Connection::open(self.url.trim_start_matches("sqlite://"))
                    .expect("raw sqlite connection");
                c.execute_batch(sql).expect("raw sql");
            }
            Engine::Postgres => {
                let mut c = sqlx::postgres::PgConnection::connect(&self.url)
                    .await
                    .expect("raw postgres connection");
                sqlx::query(sql).execute(&mut c).await.expect("raw sql");
            }
        }
    }

    /// Drops the test's PostgreSQL schema (left in place when the test failed, to inspect it).
    async fn finish(self) {
        if let Some(schema) = &self.schema {
            let mut admin = sqlx::postgres::PgConnection::connect(&postgres_url())
                .await
                .expect("reconnect to drop the test schema");
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut admin)
                .await
                .expect("drop test schema");
        }
    }
}

fn grant(user: &str) -> Grant {
    Grant {
        client_id: "demo-app".into(),
        user_id: user.into(),
        audience: Some("https://api.example.com".into()),
        scopes: vec![
            "openid".into(),
            "offline_access".into(),
            "read:contacts".into(),
        ],
        redirect_uri: "http://127.0.0.1:4000/callback".into(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        auth_time: NOW - 5,
        session_id: Some("sess-1".into()),
        request: serde_json::json!({
            "query": {"scope": "openid offline_access"},
            "ip": "127.0.0.1",
            "hostname": "127.0.0.1:3000",
            "userAgent": "test"
        }),
        rule_scope: Some(vec!["read:contacts".into()]),
        claims: Some(serde_json::json!({"access_token": {"https://example.com/roles": ["admin"]}})),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn key(kid: &str, created_at: i64) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        alg: "ES256".into(),
        private_pkcs8_der: kid.as_bytes().iter().rev().copied().collect(),
        created_at,
        activates_at: created_at + 60,
        retires_at: None,
    }
}

async fn code_single_use(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_code("c1", &g, NOW + 60).await.unwrap();
    assert_eq!(
        s.redeem_code("c1", NOW).await.unwrap(),
        CodeRedemption::Redeemed(g)
    );
    assert_eq!(
        s.redeem_code("c1", NOW + 1).await.unwrap(),
        CodeRedemption::Replayed { family: None }
    );
    assert_eq!(
        s.redeem_code("nope", NOW).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert!(matches!(
        s.put_code("c1", &grant("auth0|b"), NOW + 60).await,
        Err(StoreError::Conflict { .. })
    ));
}

/// Redeems one code from 16 tasks at once, through `redeem_code` or (with `early`) through
/// `redeem_code_early` waiting for each commit; asserts exactly one winner.
async fn race_redemptions(db: &TestDb, code: &'static str, early: bool) {
    const N: usize = 16;
    db.store
        .put_code(code, &grant("auth0|r"), NOW + 60)
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (s, b) = (db.store.clone(), barrier.clone());
            tokio::spawn(async move {
                b.wait().await;
                if !early {
                    return s.redeem_code(code, NOW).await.unwrap();
                }
                let (answer, committed) = s.redeem_code_early(code, NOW).await;
                committed.wait().await.unwrap();
                answer.unwrap()
            })
        })
        .collect();
    let mut redeemed = 0;
    for t in tasks {
        match t.await.unwrap() {
            CodeRedemption::Redeemed(g) => {
                assert_eq!(g, grant("auth0|r"));
                redeemed += 1;
            }
            CodeRedemption::Replayed { family: None } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(redeemed, 1, "exactly one concurrent redemption succeeds");
}

async fn concurrent_code_redemption(db: &TestDb) {
    race_redemptions(db, "race", false).await;
}

async fn code_expiry(db: &TestDb) {
    let s = &db.store;
    s.put_code("late", &grant("auth0|a"), NOW + 60)
        .await
        .unwrap();
    s.put_code("just", &grant("auth0|a"), NOW + 60)
        .await
        .unwrap();
    assert_eq!(
        s.redeem_code("late", NOW + 60).await.unwrap(),
        CodeRedemption::Expired
    );
    // Still expired, never redeemed.
    assert_eq!(
        s.redeem_code("late", NOW + 61).await.unwrap(),
        CodeRedemption::Expired
    );
    assert!(matches!(
        s.redeem_code("just", NOW + 59).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
}

async fn replay_reports_and_revokes_family(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_code("c", &g, NOW + 60).await.unwrap();
    assert!(matches!(
        s.redeem_code("c", NOW).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    s.put_refresh("r1", "fam-c", &g, Some(NOW + 3600))
        .await
        .unwrap();
    s.link_code_family("c", "fam-c").await.unwrap();
    assert_eq!(s.refresh_grant("r1", NOW).await.unwrap(), Some(g.clone()));
    assert_eq!(
        s.redeem_code("c", NOW + 5).await.unwrap(),
        CodeRedemption::Replayed {
            family: Some("fam-c".into())
        }
    );
    assert_eq!(s.refresh_grant("r1", NOW).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh("r1", "r2", NOW, None).await.unwrap(),
        Rotation::Revoked
    );

    // A replay that comes before the family is linked: linking revokes it at once.
    s.put_code("d", &g, NOW + 60).await.unwrap();
    assert!(matches!(
        s.redeem_code("d", NOW).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    assert_eq!(
        s.redeem_code("d", NOW).await.unwrap(),
        CodeRedemption::Replayed { family: None }
    );
    s.put_refresh("d1", "fam-d", &g, None).await.unwrap();
    s.link_code_family("d", "fam-d").await.unwrap();
    assert_eq!(s.refresh_grant("d1", NOW).await.unwrap(), None);
    // Linking an unknown code is harmless.
    s.link_code_family("unknown", "fam-x").await.unwrap();
}

/// The combined read of a refresh: the same answer as `refresh_grant` and `user_metadata` of the
/// grant's user, for every user id spelling and every state of the token.
async fn refresh_grant_with_metadata_reads_the_users_metadata(db: &TestDb) {
    let s = &db.store;
    let users = ["auth0|a", "auth0|o'brien \"q\" \\ é", "auth0|b"];
    for (i, user) in users.iter().enumerate() {
        let g = grant(user);
        let token = format!("m{i}");
        s.put_refresh(&token, &format!("fam-m{i}"), &g, Some(NOW + 100))
            .await
            .unwrap();
        assert_eq!(
            s.refresh_grant_with_metadata(&token, NOW).await.unwrap(),
            Some((g.clone(), None)),
            "{user}: nothing stored yet"
        );
        if i == 2 {
            continue; // no metadata for this one: the others' must not show up
        }
        let mut app = serde_json::Map::new();
        app.insert("plan".into(), serde_json::json!(format!("pro-{i}")));
        let updates = claimrules::store::MetadataUpdates {
            app_metadata: Some(app),
            user_metadata: None,
        };
        s.update_user_metadata(user, &updates).await.unwrap();
        let stored = s.user_metadata(user).await.unwrap();
        assert!(stored.is_some());
        assert_eq!(
            s.refresh_grant_with_metadata(&token, NOW).await.unwrap(),
            Some((g.clone(), stored)),
            "{user}"
        );
    }
    assert_eq!(
        s.refresh_grant_with_metadata("m2", NOW).await.unwrap(),
        Some((grant("auth0|b"), None))
    );
    // Invalid tokens read nothing, as with `refresh_grant`: expired, used, revoked, unknown.
    assert_eq!(
        s.refresh_grant_with_metadata("m0", NOW + 100)
            .await
            .unwrap(),
        None
    );
    s.rotate_refresh("m0", "m0-next", NOW, None).await.unwrap();
    assert_eq!(
        s.refresh_grant_with_metadata("m0", NOW).await.unwrap(),
        None
    );
    assert!(s
        .refresh_grant_with_metadata("m0-next", NOW)
        .await
        .unwrap()
        .is_some_and(|(_, m)| m.is_some()));
    s.revoke_family("fam-m1").await.unwrap();
    assert_eq!(
        s.refresh_grant_with_metadata("m1", NOW).await.unwrap(),
        None
    );
    assert_eq!(
        s.refresh_grant_with_metadata("none", NOW).await.unwrap(),
        None
    );
}

async fn refresh_rotation(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_refresh("r1", "fam", &g, Some(NOW + 100))
        .await
        .unwrap();
    assert_eq!(s.refresh_grant("r1", NOW).await.unwrap(), Some(g.clone()));
    assert_eq!(
        s.rotate_refresh("r1", "r2", NOW, Some(NOW + 200))
            .await
            .unwrap(),
        Rotation::Rotated {
            grant: g.clone(),
            family: "fam".into()
        }
    );
    assert_eq!(s.refresh_grant("r1", NOW).await.unwrap(), None);
    assert_eq!(
        s.refresh_grant("r2", NOW + 150).await.unwrap(),
        Some(g.clone())
    );
    // The new token's expiry is the one given at rotation.
    assert_eq!(s.refresh_grant("r2", NOW + 200).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh("r2", "r3", NOW + 10, None).await.unwrap(),
        Rotation::Rotated {
            grant: g.clone(),
            family: "fam".into()
        }
    );
    // No expiry: valid far in the future.
    assert_eq!(
        s.refresh_grant("r3", NOW + 10_000_000).await.unwrap(),
        Some(g.clone())
    );
    assert_eq!(
        s.rotate_refresh("missing", "x", NOW, None).await.unwrap(),
        Rotation::Unknown
    );
    s.put_refresh("old", "fam2", &g, Some(NOW)).await.unwrap();
    assert_eq!(
        s.rotate_refresh("old", "x", NOW, None).await.unwrap(),
        Rotation::Expired
    );
    assert_eq!(s.refresh_grant("x", NOW).await.unwrap(), None);
    // A failed rotation (new hash already taken) leaves the old token valid.
    s.put_refresh("taken", "fam3", &g, None).await.unwrap();
    s.put_refresh("keep", "fam3", &g, None).await.unwrap();
    assert!(matches!(
        s.rotate_refresh("keep", "taken", NOW, None).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.refresh_grant("keep", NOW).await.unwrap(), Some(g));
}

async fn concurrent_rotation(db: &TestDb) {
    const N: usize = 16;
    db.store
        .put_refresh("r0", "fam", &grant("auth0|a"), None)
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (s, b) = (db.store.clone(), barrier.clone());
            tokio::spawn(async move {
                b.wait().await;
                let new = format!("next-{i}");
                (
                    new.clone(),
                    s.rotate_refresh("r0", &new, NOW, None).await.unwrap(),
                )
            })
        })
        .collect();
    let (mut winners, mut reused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            (new, Rotation::Rotated { family, .. }) => {
                assert_eq!(family, "fam");
                winners.push(new);
            }
            (_, Rotation::Reused { family }) => {
                assert_eq!(family, "fam");
                reused += 1;
            }
            (_, Rotation::Revoked) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent rotation succeeds");
    assert!(reused >= 1, "the losers are reuse of a rotated token");
    // The reuse revoked the family, the winner's token included.
    assert_eq!(
        db.store.refresh_grant(&winners[0], NOW).await.unwrap(),
        None
    );
}

async fn reuse_revokes_family(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_refresh("r1", "fam", &g, None).await.unwrap();
    s.put_refresh("o1", "other", &g, None).await.unwrap();
    assert!(matches!(
        s.rotate_refresh("r1", "r2", NOW, None).await.unwrap(),
        Rotation::Rotated { .. }
    ));
    assert!(matches!(
        s.rotate_refresh("r2", "r3", NOW, None).await.unwrap(),
        Rotation::Rotated { .. }
    ));
    assert_eq!(
        s.rotate_refresh("r1", "evil", NOW, None).await.unwrap(),
        Rotation::Reused {
            family: "fam".into()
        }
    );
    assert_eq!(s.refresh_grant("r3", NOW).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh("r3", "r4", NOW, None).await.unwrap(),
        Rotation::Revoked
    );
    assert_eq!(s.refresh_grant("evil", NOW).await.unwrap(), None);
    // Another family is untouched.
    assert_eq!(s.refresh_grant("o1", NOW).await.unwrap(), Some(g));
}

/// `rotate_refresh_without_grant` has every outcome of `rotate_refresh` (rotated, unknown,
/// expired, reused with the family revoked, revoked, a taken new hash leaving the old token
/// valid), only without the grant.
async fn rotation_without_grant(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_refresh("r1", "fam", &g, Some(NOW + 100))
        .await
        .unwrap();
    assert_eq!(
        s.rotate_refresh_without_grant("r1", "r2", NOW, Some(NOW + 200))
            .await
            .unwrap(),
        Rotation::Rotated {
            grant: (),
            family: "fam".into()
        }
    );
    assert_eq!(s.refresh_grant("r1", NOW).await.unwrap(), None);
    assert_eq!(
        s.refresh_grant("r2", NOW + 150).await.unwrap(),
        Some(g.clone())
    );
    assert_eq!(s.refresh_grant("r2", NOW + 200).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh_without_grant("missing", "x", NOW, None)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    s.put_refresh("old", "fam2", &g, Some(NOW)).await.unwrap();
    assert_eq!(
        s.rotate_refresh_without_grant("old", "x", NOW, None)
            .await
            .unwrap(),
        Rotation::Expired
    );
    // A taken new hash fails the rotation and leaves the old token valid.
    s.put_refresh("taken", "fam3", &g, None).await.unwrap();
    s.put_refresh("keep", "fam3", &g, None).await.unwrap();
    assert!(matches!(
        s.rotate_refresh_without_grant("keep", "taken", NOW, None)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.refresh_grant("keep", NOW).await.unwrap(), Some(g.clone()));
    // Reuse of r1 revokes its family: r2 is refused afterwards, by either method.
    assert_eq!(
        s.rotate_refresh_without_grant("r1", "evil", NOW, None)
            .await
            .unwrap(),
        Rotation::Reused {
            family: "fam".into()
        }
    );
    assert_eq!(s.refresh_grant("r2", NOW).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh_without_grant("r2", "r3", NOW, None)
            .await
            .unwrap(),
        Rotation::Revoked
    );
    assert_eq!(
        s.rotate_refresh("r2", "r3", NOW, None).await.unwrap(),
        Rotation::Revoked
    );
    // The other family is untouched.
    assert_eq!(s.refresh_grant("keep", NOW).await.unwrap(), Some(g));
}

async fn revoked_family_refused(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_refresh("r1", "fam", &g, None).await.unwrap();
    s.put_refresh("o1", "other", &g, None).await.unwrap();
    s.revoke_family("fam").await.unwrap();
    s.revoke_family("no-such-family").await.unwrap();
    assert_eq!(s.refresh_grant("r1", NOW).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh("r1", "r2", NOW, None).await.unwrap(),
        Rotation::Revoked
    );
    assert_eq!(s.refresh_grant("r2", NOW).await.unwrap(), None);
    assert_eq!(s.refresh_grant("o1", NOW).await.unwrap(), Some(g));
}

async fn consent_subset_superset(db: &TestDb) {
    let s = &db.store;
    let aud = "https://api.example.com";
    assert!(!s
        .consent_covers("u", "app", aud, &strings(&["read"]))
        .await
        .unwrap());
    s.save_consent("u", "app", aud, &strings(&["read", "write", "read"]))
        .await
        .unwrap();
    for (requested, covered) in [
        (&["read"][..], true),
        (&["write", "read"][..], true),
        (&[][..], true),
        (&["read", "delete"][..], false),
    ] {
        assert_eq!(
            s.consent_covers("u", "app", aud, &strings(requested))
                .await
                .unwrap(),
            covered,
            "{requested:?}"
        );
    }
    // Bound to user, client and audience.
    assert!(!s
        .consent_covers("u", "app", "https://other", &strings(&["read"]))
        .await
        .unwrap());
    assert!(!s
        .consent_covers("u", "other-app", aud, &strings(&["read"]))
        .await
        .unwrap());
    assert!(!s
        .consent_covers("v", "app", aud, &strings(&["read"]))
        .await
        .unwrap());
    // Saving replaces the set.
    s.save_consent("u", "app", aud, &strings(&["delete"]))
        .await
        .unwrap();
    assert!(!s
        .consent_covers("u", "app", aud, &strings(&["read"]))
        .await
        .unwrap());
    assert!(s
        .consent_covers("u", "app", aud, &strings(&["delete"]))
        .await
        .unwrap());
}

async fn sessions_expiry(db: &TestDb) {
    let s = &db.store;
    s.create_session("h1", "auth0|a", NOW, NOW + 100)
        .await
        .unwrap();
    let expected = Session {
        user_id: "auth0|a".into(),
        auth_time: NOW,
        expires_at: NOW + 100,
    };
    assert_eq!(s.session("h1", NOW + 99).await.unwrap(), Some(expected));
    assert_eq!(s.session("h1", NOW + 100).await.unwrap(), None);
    assert_eq!(s.session("h2", NOW).await.unwrap(), None);
    assert!(matches!(
        s.create_session("h1", "auth0|b", NOW, NOW + 100).await,
        Err(StoreError::Conflict { .. })
    ));
    s.delete_session("h1").await.unwrap();
    assert_eq!(s.session("h1", NOW).await.unwrap(), None);
    s.delete_session("h1").await.unwrap();
}

async fn login_counter(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.increment_logins("auth0|a").await.unwrap(), 1);
    assert_eq!(s.increment_logins("auth0|a").await.unwrap(), 2);
    assert_eq!(s.increment_logins("auth0|b").await.unwrap(), 1);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.increment_logins("auth0|a").await.unwrap() })
        })
        .collect();
    let mut counts = HashSet::new();
    for t in tasks {
        assert!(counts.insert(t.await.unwrap()), "every count is distinct");
    }
    assert_eq!(counts, (3..=12).collect::<HashSet<i64>>());
    assert_eq!(s.increment_logins("auth0|a").await.unwrap(), 13);
}

async fn keys_put_list_retire(db: &TestDb) {
    let s = &db.store;
    assert!(s.keys().await.unwrap().is_empty());
    s.put_key(&key("k2", NOW + 10)).await.unwrap();
    s.put_key(&key("k1", NOW)).await.unwrap();
    assert_eq!(
        s.keys().await.unwrap(),
        vec![key("k1", NOW), key("k2", NOW + 10)]
    );
    assert!(matches!(
        s.put_key(&key("k1", NOW + 99)).await,
        Err(StoreError::Conflict { .. })
    ));
    s.retire_key("k1", NOW + 500).await.unwrap();
    let keys = s.keys().await.unwrap();
    assert_eq!(keys[0].retires_at, Some(NOW + 500));
    assert_eq!(keys[1].retires_at, None);
    assert!(matches!(
        s.retire_key("k9", NOW).await,
        Err(StoreError::NotFound(_))
    ));
    // The private key never shows in debug output.
    assert!(!format!("{:?}", key("k1", NOW)).contains("49"));
}

async fn key_lock_serializes_first_key(db: &TestDb) {
    const N: usize = 8;
    let barrier = Arc::new(Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (s, b) = (db.store.clone(), barrier.clone());
            tokio::spawn(async move {
                b.wait().await;
                let inner = s.clone();
                s.with_key_lock(|| async move {
                    if inner.keys().await?.is_empty() {
                        // Widen the window a racing generator would need.
                        tokio::task::yield_now().await;
                        inner.put_key(&key(&format!("k{i}"), NOW)).await?;
                        return Ok(true);
                    }
                    Ok(false)
                })
                .await
                .unwrap()
            })
        })
        .collect();
    let mut generated = 0;
    for t in tasks {
        generated += usize::from(t.await.unwrap());
    }
    assert_eq!(generated, 1);
    assert_eq!(db.store.keys().await.unwrap().len(), 1);
    // Errors from the closure come back unchanged.
    let r: Result<(), _> = db
        .store
        .with_key_lock(|| async { Err(StoreError::NotFound("x".into())) })
        .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))));
}

async fn purge_removes_only_expired(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_code("old", &g, NOW).await.unwrap();
    s.put_code("new", &g, NOW + 60).await.unwrap();
    s.create_session("s-old", "u", NOW - 10, NOW).await.unwrap();
    s.create_session("s-new", "u", NOW, NOW + 60).await.unwrap();
    s.put_refresh("r-old", "fam-old", &g, Some(NOW))
        .await
        .unwrap();
    s.put_refresh("r-new", "fam-new", &g, Some(NOW + 60))
        .await
        .unwrap();
    s.put_refresh("r-forever", "fam-forever", &g, None)
        .await
        .unwrap();
    s.put_refresh("r-revoked", "fam-revoked", &g, None)
        .await
        .unwrap();
    s.revoke_family("fam-revoked").await.unwrap();
    let purged = s.purge_expired(NOW).await.unwrap();
    // code, session, token "r-old", token "r-revoked", families "fam-old" and "fam-revoked".
    assert_eq!(purged, 6);
    assert_eq!(
        s.redeem_code("old", NOW - 1).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert!(matches!(
        s.redeem_code("new", NOW).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    assert_eq!(s.session("s-old", NOW - 1).await.unwrap(), None);
    assert!(s.session("s-new", NOW).await.unwrap().is_some());
    assert_eq!(
        s.rotate_refresh("r-old", "x", NOW - 1, None).await.unwrap(),
        Rotation::Unknown
    );
    assert_eq!(
        s.rotate_refresh("r-revoked", "y", NOW, None).await.unwrap(),
        Rotation::Unknown
    );
    assert!(s.refresh_grant("r-new", NOW).await.unwrap().is_some());
    assert!(s.refresh_grant("r-forever", NOW).await.unwrap().is_some());
    assert_eq!(s.purge_expired(NOW).await.unwrap(), 0);
}

/// Issue 15: a redeemed code whose refresh family still lives survives the purge as a
/// tombstone, so replaying it after its 60 s still revokes the family (RFC 6749 §4.1.2).
async fn replay_after_purge_still_revokes_family(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_code("c", &g, NOW + 60).await.unwrap();
    assert!(matches!(
        s.redeem_code("c", NOW).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    s.put_refresh("r1", "fam", &g, None).await.unwrap();
    s.link_code_family("c", "fam").await.unwrap();
    // Expired codes that keep nothing alive go: one never redeemed, one redeemed without
    // a refresh token.
    s.put_code("unused", &g, NOW + 60).await.unwrap();
    s.put_code("no-family", &g, NOW + 60).await.unwrap();
    s.redeem_code("no-family", NOW).await.unwrap();
    assert_eq!(s.purge_expired(NOW + 61).await.unwrap(), 2);
    assert_eq!(
        s.redeem_code("unused", NOW + 62).await.unwrap(),
        CodeRedemption::Unknown
    );
    assert_eq!(
        s.redeem_code("c", NOW + 62).await.unwrap(),
        CodeRedemption::Replayed {
            family: Some("fam".into())
        }
    );
    assert_eq!(
        s.rotate_refresh("r1", "r2", NOW + 62, None).await.unwrap(),
        Rotation::Revoked
    );
    // With its family revoked (and then purged), the tombstone goes too.
    s.purge_expired(NOW + 63).await.unwrap();
    assert_eq!(
        s.redeem_code("c", NOW + 64).await.unwrap(),
        CodeRedemption::Unknown
    );
}

async fn restart_persistence(db: &TestDb) {
    let g = grant("auth0|a");
    {
        let s = &db.store;
        s.put_code("c", &g, NOW + 60).await.unwrap();
        s.put_refresh("r1", "fam", &g, None).await.unwrap();
        assert!(matches!(
            s.rotate_refresh("r1", "r2", NOW, None).await.unwrap(),
            Rotation::Rotated { .. }
        ));
        s.save_consent("u", "app", "aud", &strings(&["read"]))
            .await
            .unwrap();
        s.create_session("h", "u", NOW, NOW + 60).await.unwrap();
        s.increment_logins("u").await.unwrap();
        s.put_key(&key("k1", NOW)).await.unwrap();
    }
    let s = db.reopen().await.expect("reopen");
    assert_eq!(
        s.redeem_code("c", NOW).await.unwrap(),
        CodeRedemption::Redeemed(g.clone())
    );
    assert_eq!(
        s.rotate_refresh("r2", "r3", NOW, None).await.unwrap(),
        Rotation::Rotated {
            grant: g,
            family: "fam".into()
        }
    );
    assert!(s
        .consent_covers("u", "app", "aud", &strings(&["read"]))
        .await
        .unwrap());
    assert!(s.session("h", NOW).await.unwrap().is_some());
    assert_eq!(s.increment_logins("u").await.unwrap(), 2);
    assert_eq!(s.keys().await.unwrap(), vec![key("k1", NOW)]);
    // Opening an up-to-date database again migrates nothing and loses nothing.
    let again = db.reopen().await.expect("reopen twice");
    assert_eq!(again.keys().await.unwrap().len(), 1);
}

/// A database an earlier claimrules left at schema version 1 (before `user_metadata`) opens:
/// the missing migration runs once, recorded in the same `claimrules_schema` table, and the
/// data stays.
async fn schema_v1_database_upgrades(db: &TestDb) {
    db.store.put_key(&key("k1", NOW)).await.unwrap();
    db.store.increment_logins("u").await.unwrap();
    db.execute_raw("DROP TABLE user_metadata").await;
    // Versions 2 and later are run again (SQLite's version 3 rebuilds a table that exists).
    db.execute_raw("DELETE FROM claimrules_schema WHERE version >= 2")
        .await;
    let s = db.reopen().await.expect("open a version 1 database");
    assert_eq!(s.keys().await.unwrap(), vec![key("k1", NOW)]);
    assert_eq!(s.increment_logins("u").await.unwrap(), 2);
    let mut app = serde_json::Map::new();
    app.insert("plan".into(), serde_json::json!("gold"));
    let updates = claimrules::store::MetadataUpdates {
        app_metadata: Some(app),
        user_metadata: None,
    };
    s.update_user_metadata("u", &updates).await.unwrap();
    let again = db.reopen().await.expect("reopen the upgraded database");
    assert_eq!(again.user_metadata("u").await.unwrap(), Some(updates));
}

async fn newer_schema_refused(db: &TestDb) {
    db.execute_raw("INSERT INTO claimrules_schema (version) VALUES (999)")
        .await;
    match db.reopen().await {
        Err(e @ StoreError::SchemaTooNew { found: 999, .. }) => {
            assert!(e.to_string().contains("newer"), "{e}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// The early answer of `redeem_code_early` keeps single use, and its commit resolves.
async fn early_redemption(db: &TestDb) {
    race_redemptions(db, "early", true).await;
    // Once committed, the redemption is what every later caller sees.
    assert_eq!(
        db.store.redeem_code("early", NOW).await.unwrap(),
        CodeRedemption::Replayed { family: None }
    );
    let (answer, committed) = db.store.redeem_code_early("missing", NOW).await;
    committed.wait().await.unwrap();
    assert_eq!(answer.unwrap(), CodeRedemption::Unknown);
}

/// `rotate_refresh_early` (the token endpoint's rotation): the grant and the user's metadata come
/// with the rotation, durable once `Committed` resolved; a token presented by another client,
/// or invalid in any way, is not rotated, and a reuse still revokes the family.
async fn early_rotation(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_refresh("e1", "fam-e", &g, Some(NOW + 100))
        .await
        .unwrap();
    let early = |old: &'static str, new: &'static str, client: &'static str| async move {
        let (answer, committed) = s
            .rotate_refresh_early(old, new, NOW, Some(NOW + 200), client)
            .await;
        committed.wait().await.unwrap();
        answer.unwrap()
    };
    // Another client: nothing changes, the token still rotates for its own client.
    assert_eq!(early("e1", "e-x", "other-app").await, Rotation::OtherClient);
    assert_eq!(s.refresh_grant("e1", NOW).await.unwrap(), Some(g.clone()));
    assert_eq!(s.refresh_grant("e-x", NOW).await.unwrap(), None);
    assert_eq!(
        early("e1", "e2", "demo-app").await,
        Rotation::Rotated {
            grant: (g.clone(), None),
            family: "fam-e".into()
        }
    );
    assert_eq!(s.refresh_grant("e1", NOW).await.unwrap(), None);
    assert_eq!(
        s.refresh_grant("e2", NOW + 150).await.unwrap(),
        Some(g.clone())
    );
    // The user's stored metadata comes with the grant.
    let mut app = serde_json::Map::new();
    app.insert("plan".into(), serde_json::json!("pro"));
    let updates = claimrules::store::MetadataUpdates {
        app_metadata: Some(app),
        user_metadata: None,
    };
    s.update_user_metadata("auth0|a", &updates).await.unwrap();
    let stored = s.user_metadata("auth0|a").await.unwrap();
    assert!(stored.is_some());
    assert_eq!(
        early("e2", "e3", "demo-app").await,
        Rotation::Rotated {
            grant: (g.clone(), stored),
            family: "fam-e".into()
        }
    );
    assert_eq!(early("missing", "e-y", "demo-app").await, Rotation::Unknown);
    s.put_refresh("e-old", "fam-e2", &g, Some(NOW))
        .await
        .unwrap();
    assert_eq!(early("e-old", "e-z", "demo-app").await, Rotation::Expired);
    // Reuse, even by another client, revokes the family: its live token stops working.
    assert_eq!(
        early("e1", "e-w", "other-app").await,
        Rotation::Reused {
            family: "fam-e".into()
        }
    );
    assert_eq!(s.refresh_grant("e3", NOW).await.unwrap(), None);
    assert_eq!(early("e3", "e4", "demo-app").await, Rotation::Revoked);
    for unused in ["e-x", "e-y", "e-z", "e-w", "e4"] {
        assert_eq!(
            s.refresh_grant(unused, NOW).await.unwrap(),
            None,
            "{unused}"
        );
    }
}

/// `undo_rotation` puts back a rotation whose new token was never handed out: the old token is
/// valid again and rotates once more, the new one is gone; undoing twice, undoing a rotation
/// that did not happen, or undoing after the family was revoked changes nothing else.
async fn undone_rotation(db: &TestDb) {
    let s = &db.store;
    let g = grant("auth0|a");
    s.put_refresh("u1", "fam-u", &g, None).await.unwrap();
    let (answer, committed) = s
        .rotate_refresh_early("u1", "u2", NOW, None, "demo-app")
        .await;
    assert!(matches!(answer.unwrap(), Rotation::Rotated { .. }));
    // Queued before the commit resolved: the store orders it after the rotation.
    s.undo_rotation("u1", "u2").await.unwrap();
    committed.wait().await.unwrap();
    assert_eq!(s.refresh_grant("u1", NOW).await.unwrap(), Some(g.clone()));
    assert_eq!(s.refresh_grant("u2", NOW).await.unwrap(), None);
    s.undo_rotation("u1", "u2").await.unwrap();
    s.undo_rotation("never", "made").await.unwrap();
    assert_eq!(
        s.rotate_refresh("u2", "u-x", NOW, None).await.unwrap(),
        Rotation::Unknown,
        "the undone successor is gone"
    );
    // The old token rotates again, once: its earlier successor is no reuse.
    assert_eq!(
        s.rotate_refresh("u1", "u3", NOW, None).await.unwrap(),
        Rotation::Rotated {
            grant: g.clone(),
            family: "fam-u".into()
        }
    );
    assert_eq!(s.refresh_grant("u3", NOW).await.unwrap(), Some(g.clone()));
    // Undoing a rotation whose family was revoked meanwhile does not bring the family back.
    let (answer, committed) = s
        .rotate_refresh_early("u3", "u4", NOW, None, "demo-app")
        .await;
    committed.wait().await.unwrap();
    assert!(matches!(answer.unwrap(), Rotation::Rotated { .. }));
    s.revoke_family("fam-u").await.unwrap();
    s.undo_rotation("u3", "u4").await.unwrap();
    assert_eq!(s.refresh_grant("u3", NOW).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh("u3", "u5", NOW, None).await.unwrap(),
        Rotation::Revoked
    );
}

/// A purge runs in bounded steps (`src/store/purge.rs`): more expired rows of every kind than
/// one step takes are all deleted, and what lives between them in key order stays.
async fn purge_in_steps_deletes_everything_expired(db: &TestDb) {
    const EXPIRED: usize = 1_100; // over several steps (src/store/purge.rs BATCH)
    let g = grant("auth0|p");
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..EXPIRED {
        let (s, g) = (db.store.clone(), g.clone());
        writes.spawn(async move {
            s.create_session(&format!("s-{i:05}"), "u", NOW - 10, NOW)
                .await
                .unwrap();
            s.put_code(&format!("c-{i:05}"), &g, NOW).await.unwrap();
            // Each expired token leaves its family empty, so the family goes too.
            s.put_refresh(&format!("r-{i:05}"), &format!("f-{i:05}"), &g, Some(NOW))
                .await
                .unwrap();
            if i % 100 == 50 {
                // Live ones between the expired ones in key order.
                s.create_session(&format!("s-{i:05}-live"), "u", NOW, NOW + 60)
                    .await
                    .unwrap();
                s.put_code(&format!("c-{i:05}-live"), &g, NOW + 60)
                    .await
                    .unwrap();
                s.put_refresh(
                    &format!("r-{i:05}-live"),
                    &format!("f-{i:05}-live"),
                    &g,
                    None,
                )
                .await
                .unwrap();
            }
        });
    }
    while let Some(done) = writes.join_next().await {
        done.unwrap();
    }
    let s = &db.store;
    assert_eq!(s.purge_expired(NOW).await.unwrap(), 4 * EXPIRED as u64);
    for i in (50..EXPIRED).step_by(100) {
        assert!(s
            .session(&format!("s-{i:05}-live"), NOW)
            .await
            .unwrap()
            .is_some());
        assert!(s
            .refresh_grant(&format!("r-{i:05}-live"), NOW)
            .await
            .unwrap()
            .is_some());
        assert!(matches!(
            s.redeem_code(&format!("c-{i:05}-live"), NOW).await.unwrap(),
            CodeRedemption::Redeemed(_)
        ));
    }
    assert_eq!(s.session("s-00000", NOW - 1).await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh("r-01099", "x", NOW - 1, None)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    assert_eq!(s.purge_expired(NOW).await.unwrap(), 0);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = super::TestDb::sqlite().await;
                    super::$case(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = super::TestDb::postgres().await;
                    super::$case(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

conformance!(
    code_single_use,
    concurrent_code_redemption,
    early_redemption,
    early_rotation,
    undone_rotation,
    code_expiry,
    replay_reports_and_revokes_family,
    refresh_rotation,
    refresh_grant_with_metadata_reads_the_users_metadata,
    concurrent_rotation,
    reuse_revokes_family,
    revoked_family_refused,
    rotation_without_grant,
    consent_subset_superset,
    sessions_expiry,
    login_counter,
    keys_put_list_retire,
    key_lock_serializes_first_key,
    purge_removes_only_expired,
    replay_after_purge_still_revokes_family,
    purge_in_steps_deletes_everything_expired,
    restart_persistence,
    schema_v1_database_upgrades,
    newer_schema_refused,
);

#[tokio::test]
async fn open_in_folder_creates_the_folder_and_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let store = Store::open_in_folder(&data).await.unwrap();
    store.increment_logins("u").await.unwrap();
    assert!(data.join("claimrules.db").is_file());
    drop(store);
    let again = Store::open_in_folder(&data).await.unwrap();
    assert_eq!(again.increment_logins("u").await.unwrap(), 2);
}

#[tokio::test]
async fn sqlite_uses_wal() {
    let db = TestDb::sqlite().await;
    let c = rusqlite::Connection::open(db.url.trim_start_matches("sqlite://")).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    assert!(matches!(
        Store::open("mysql://localhost/db").await,
        Err(StoreError::UnsupportedUrl(_))
    ));
    assert!(matches!(
        Store::open("sqlite::memory:").await,
        Err(StoreError::InvalidUrl { .. })
    ));
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_naming_the_url() {
    // Nothing listens on port 1: the connection is refused at once.
    match Store::open("postgres://postgres:secret@127.0.0.1:1/test").await {
        Err(e @ StoreError::Unavailable { .. }) => {
            let message = e.to_string();
            assert!(message.contains("127.0.0.1:1"), "{message}");
            assert!(!message.contains("secret"), "password leaked: {message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_recovers_after_its_connections_are_killed() {
    let db = TestDb::postgres().await;
    let schema = db.schema.clone().expect("postgres test schema");
    db.store.increment_logins("u").await.unwrap();
    // Kill every server process working for this test's store (as a server restart would).
    let mut admin = sqlx::postgres::PgConnection::connect(&postgres_url())
        .await
        .expect("admin connection");
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1) k",
    )
    .bind(&schema)
    .fetch_one(&mut admin)
    .await
    .expect("terminate backends");
    assert!(killed >= 1, "no connection of the store was found to kill");
    // The pool notices the dead connections and opens new ones: bounded retries, no sleep race.
    let mut count = None;
    for _ in 0..50 {
        match db.store.increment_logins("u").await {
            Ok(n) => {
                count = Some(n);
                break;
            }
            Err(StoreError::Unavailable { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("unexpected error after the connections died: {e} ({schema})"),
        }
    }
    assert_eq!(count, Some(2), "the store did not recover");
    db.finish().await;
}
