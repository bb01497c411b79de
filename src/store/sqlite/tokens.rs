//! Codes and refresh tokens on SQLite: their statements, each write run by the connection
//! thread inside the batch transaction ([`SqliteStore::write`]), each read outside it.

use rusqlite::{params, Connection};

use super::stmt::{exec, one, optional};
use super::SqliteStore;
use crate::store::codec::{decode_grant, encode_grant};
use crate::store::purge::{self, PurgeStep, Step, StepDone};
use crate::store::sql;
use crate::store::{CodeRedemption, Committed, Grant, Rotation, StoreError};

/// Marks a family revoked (no-op when unknown).
fn revoke(c: &Connection, family: &str) -> Result<(), StoreError> {
    exec(c, sql::REVOKE_FAMILY, [family])?;
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn put_code(
        &self,
        code_hash: &str,
        grant: &Grant,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let code_hash = code_hash.to_string();
        let grant = encode_grant(grant)?;
        self.write(false, move |c| {
            exec(c, sql::PUT_CODE, params![code_hash, grant, expires_at])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<CodeRedemption, StoreError> {
        let code_hash = code_hash.to_string();
        self.write(false, move |c| redeem(c, &code_hash, now)).await
    }

    pub(crate) async fn redeem_code_early(
        &self,
        code_hash: &str,
        now: i64,
    ) -> (Result<CodeRedemption, StoreError>, Committed) {
        let code_hash = code_hash.to_string();
        self.write_early(move |c| redeem(c, &code_hash, now)).await
    }

    pub(crate) async fn link_code_family(
        &self,
        code_hash: &str,
        family: &str,
    ) -> Result<(), StoreError> {
        let code_hash = code_hash.to_string();
        let family = family.to_string();
        self.write(false, move |c| {
            let replayed: Option<i64> =
                optional(c, sql::LINK_FAMILY, [&family, &code_hash], |r| r.get(0))?;
            if replayed.unwrap_or(0) != 0 {
                revoke(c, &family)?;
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn put_refresh(
        &self,
        token_hash: &str,
        family: &str,
        grant: &Grant,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let token_hash = token_hash.to_string();
        let family = family.to_string();
        let grant = encode_grant(grant)?;
        self.write(true, move |c| {
            exec(c, sql::PUT_FAMILY, [&family, &grant])?;
            exec(c, sql::PUT_REFRESH, params![token_hash, family, expires_at])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation, StoreError> {
        let old_hash = old_hash.to_string();
        let new_hash = new_hash.to_string();
        self.write(false, move |c| {
            rotate(
                c,
                &old_hash,
                &new_hash,
                now,
                new_expires_at,
                |json: Option<&str>| decode_grant(json.unwrap_or_default()),
            )
        })
        .await
    }

    pub(crate) async fn rotate_refresh_without_grant(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation<()>, StoreError> {
        let old_hash = old_hash.to_string();
        let new_hash = new_hash.to_string();
        self.write(false, move |c| {
            rotate(c, &old_hash, &new_hash, now, new_expires_at, NoGrant)
        })
        .await
    }

    pub(crate) async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        let family = family.to_string();
        self.write(false, move |c| revoke(c, &family)).await
    }

    pub(crate) async fn refresh_grant(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        let token_hash = token_hash.to_string();
        let json: Option<String> = self
            .read(move |c| {
                optional(c, sql::REFRESH_GRANT, params![token_hash, now], |r| {
                    r.get(0)
                })
            })
            .await?;
        json.as_deref().map(decode_grant).transpose()
    }

    pub(crate) async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        purge::purge(self, now).await
    }
}

impl PurgeStep for SqliteStore {
    async fn purge_step(&self, step: Step, now: i64) -> Result<StepDone, StoreError> {
        self.write(false, move |c| purge_step(c, step, now)).await
    }
}

/// Marks a code redeemed, or tells why it cannot be; a replay revokes the linked family.
fn redeem(c: &Connection, code_hash: &str, now: i64) -> Result<CodeRedemption, StoreError> {
    let redeemed: Option<String> =
        optional(c, sql::REDEEM_CODE, params![now, code_hash], |r| r.get(0))?;
    if let Some(json) = redeemed {
        return Ok(CodeRedemption::Redeemed(decode_grant(&json)?));
    }
    let row: Option<(Option<i64>, Option<String>)> = optional(
        c,
        "SELECT redeemed_at, family FROM codes WHERE code_hash = ?",
        [code_hash],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let Some((redeemed_at, family)) = row else {
        return Ok(CodeRedemption::Unknown);
    };
    if redeemed_at.is_none() {
        return Ok(CodeRedemption::Expired);
    }
    // Remember the replay so a family linked later is revoked too.
    exec(c, sql::MARK_REPLAYED, [code_hash])?;
    if let Some(family) = &family {
        revoke(c, family)?;
    }
    Ok(CodeRedemption::Replayed { family })
}

/// What a rotation tells of the family's grant: the grant decoded from its JSON, or nothing.
trait ReadGrant {
    /// What [`Rotation::Rotated`] carries.
    type Grant;
    /// Whether the grant's JSON is read at all.
    const READS: bool;
    /// The grant from its stored JSON (`None` when not read).
    fn grant(self, json: Option<&str>) -> Result<Self::Grant, StoreError>;
}

impl<F: FnOnce(Option<&str>) -> Result<Grant, StoreError>> ReadGrant for F {
    type Grant = Grant;
    const READS: bool = true;
    fn grant(self, json: Option<&str>) -> Result<Grant, StoreError> {
        self(json)
    }
}

/// Rotations that do not read the grant.
struct NoGrant;

impl ReadGrant for NoGrant {
    type Grant = ();
    const READS: bool = false;
    fn grant(self, _: Option<&str>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Marks a valid token used and returns its family (and the family's grant JSON, or NULL): the
/// common case of a rotation in one statement.
const MARK_USED: [&str; 2] = [
    "UPDATE refresh_tokens SET used_at = ?1 \
     WHERE token_hash = ?2 AND used_at IS NULL \
       AND (expires_at IS NULL OR expires_at > ?1) \
       AND NOT EXISTS (SELECT 1 FROM refresh_families f \
                       WHERE f.family = refresh_tokens.family AND f.revoked <> 0) \
     RETURNING family, (SELECT grant_json FROM refresh_families f \
                        WHERE f.family = refresh_tokens.family)",
    "UPDATE refresh_tokens SET used_at = ?1 \
     WHERE token_hash = ?2 AND used_at IS NULL \
       AND (expires_at IS NULL OR expires_at > ?1) \
       AND NOT EXISTS (SELECT 1 FROM refresh_families f \
                       WHERE f.family = refresh_tokens.family AND f.revoked <> 0) \
     RETURNING family, NULL",
];

/// One rotation: marks the old token used and stores the new one, or tells why not. The grant
/// is decoded before the new token is stored, so a grant that does not decode leaves the old
/// token valid.
fn rotate<R: ReadGrant>(
    c: &Connection,
    old_hash: &str,
    new_hash: &str,
    now: i64,
    new_expires_at: Option<i64>,
    read: R,
) -> Result<Rotation<R::Grant>, StoreError> {
    let mark = MARK_USED[usize::from(!R::READS)];
    let rotated: Option<(String, Option<String>)> =
        optional(c, mark, params![now, old_hash], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if let Some((family, json)) = rotated {
        let done = read.grant(json.as_deref()).and_then(|grant| {
            exec(
                c,
                sql::PUT_REFRESH,
                params![new_hash, family, new_expires_at],
            )
            .map(|_| grant)
        });
        return match done {
            Ok(grant) => Ok(Rotation::Rotated { grant, family }),
            Err(e) => {
                // Undo the mark so the old token stays valid (cheaper than a savepoint around
                // every rotation).
                exec(
                    c,
                    "UPDATE refresh_tokens SET used_at = NULL WHERE token_hash = ?",
                    [old_hash],
                )?;
                Err(e)
            }
        };
    }
    let row: Option<(String, Option<i64>, i64)> =
        optional(c, sql::REFRESH_STATE, [old_hash], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let Some((family, used_at, revoked)) = row else {
        return Ok(Rotation::Unknown);
    };
    if revoked != 0 {
        return Ok(Rotation::Revoked);
    }
    if used_at.is_some() {
        revoke(c, &family)?;
        return Ok(Rotation::Reused { family });
    }
    Ok(Rotation::Expired)
}

/// One step of a purge ([`crate::store::purge`]), inside the batch transaction.
fn purge_step(c: &Connection, step: Step, now: i64) -> Result<StepDone, StoreError> {
    match step {
        Step::Expired(statement) => Ok(StepDone {
            deleted: exec(c, statement, params![now, purge::BATCH])? as u64,
            last: None,
        }),
        Step::Window { of, after } => {
            let last: Option<String> =
                one(c, of.select(), params![after, purge::BATCH], |r| r.get(0))?;
            let Some(last) = last else {
                return Ok(StepDone::default());
            };
            let mut deleted = 0;
            for write in of.writes() {
                let changed = if write.binds_now {
                    exec(c, write.sql, params![after, last, now])?
                } else {
                    exec(c, write.sql, params![after, last])?
                };
                if write.deletes {
                    deleted += changed as u64;
                }
            }
            Ok(StepDone {
                deleted,
                last: Some(last),
            })
        }
    }
}
