//! Codes and refresh tokens on SQLite: their statements, each write run by the connection
//! thread inside the batch transaction ([`SqliteStore::write`]), each read outside it.

use rusqlite::{params, Connection};

use super::accounts::stored_metadata;
use super::stmt::{exec, one, optional};
use super::SqliteStore;
use crate::store::codec::{decode_grant, decode_grant_with_metadata, encode_grant};
use crate::store::purge::{self, PurgeStep, Step, StepDone};
use crate::store::sql;
use crate::store::{CodeRedemption, Committed, Grant, GrantWithMetadata};
use crate::store::{Rotation, StoreError};

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
            exec(c, PUT_REFRESH, params![token_hash, family, expires_at])?;
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
        let decode =
            |_: &Connection, json: Option<&str>| decode_grant(json.unwrap_or_default()).map(Some);
        self.rotation(
            old_hash,
            new_hash,
            now,
            new_expires_at,
            MARK_USED_READ_GRANT,
            decode,
        )
        .await
    }

    pub(crate) async fn rotate_refresh_without_grant(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
    ) -> Result<Rotation<()>, StoreError> {
        self.rotation(
            old_hash,
            new_hash,
            now,
            new_expires_at,
            MARK_USED,
            |_, _| Ok(Some(())),
        )
        .await
    }

    /// One rotation on the connection thread (see [`rotate`]).
    async fn rotation<G: Send + 'static>(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
        mark: &'static str,
        grant: fn(&Connection, Option<&str>) -> Result<Option<G>, StoreError>,
    ) -> Result<Rotation<G>, StoreError> {
        let old_hash = old_hash.to_string();
        let new_hash = new_hash.to_string();
        self.write(false, move |c| {
            rotate(c, &old_hash, &new_hash, now, new_expires_at, mark, grant)
        })
        .await
    }

    pub(crate) async fn rotate_refresh_early(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: Option<i64>,
        client_id: &str,
    ) -> (Result<Rotation<GrantWithMetadata>, StoreError>, Committed) {
        let old_hash = old_hash.to_string();
        let new_hash = new_hash.to_string();
        let client_id = client_id.to_string();
        self.write_early(move |c| {
            // The client check and the user's metadata in the rotation's transaction.
            let checked = |c: &Connection, json: Option<&str>| {
                let grant = decode_grant(json.unwrap_or_default())?;
                if grant.client_id != client_id {
                    return Ok(None);
                }
                let metadata = stored_metadata(c, &grant.user_id)?;
                Ok(Some((grant, metadata)))
            };
            let mark = MARK_USED_READ_GRANT;
            rotate(c, &old_hash, &new_hash, now, new_expires_at, mark, checked)
        })
        .await
    }

    pub(crate) async fn undo_rotation(
        &self,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        let old_hash = old_hash.to_string();
        let new_hash = new_hash.to_string();
        self.write(true, move |c| {
            // Only the rotation that made `new_hash` is undone: no successor, nothing to give back.
            if exec(c, DELETE_TOKEN, [&new_hash])? > 0 {
                exec(c, UNMARK_USED, [&old_hash])?;
            }
            Ok(())
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
                optional(
                    c,
                    sql::REFRESH_GRANT_SQLITE,
                    params![token_hash, now],
                    |r| r.get(0),
                )
            })
            .await?;
        json.as_deref().map(decode_grant).transpose()
    }

    pub(crate) async fn refresh_grant_with_metadata(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<GrantWithMetadata>, StoreError> {
        let token_hash = token_hash.to_string();
        type Row = (String, Option<String>, Option<String>);
        let row: Option<Row> = self
            .read(move |c| {
                optional(
                    c,
                    sql::REFRESH_GRANT_WITH_METADATA_SQLITE,
                    params![token_hash, now],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .await?;
        row.map(|(g, a, u)| decode_grant_with_metadata(&g, a.as_deref(), u.as_deref()))
            .transpose()
    }

    pub(crate) async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        purge::purge(self, now).await
    }
}

impl PurgeStep for SqliteStore {
    async fn purge_step(&self, step: Step, now: i64) -> Result<StepDone, StoreError> {
        self.checkpoint.bulk();
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

/// Stores refresh token `?1` in family `?2`, expiring at `?3` (or never), naming the family's
/// rowid too (migrations/sqlite/0004_refresh_families_rowid.sql); nothing when the family does
/// not exist. (`?N` binds by number; SQLite numbers `$N` by first appearance.)
const PUT_REFRESH: &str = "INSERT INTO refresh_tokens (token_hash, family, family_id, expires_at) \
     SELECT ?1, family, id, ?3 FROM refresh_families WHERE family = ?2";

/// Makes token `?` unused again: the undo of a mark whose rotation did not go through.
const UNMARK_USED: &str = "UPDATE refresh_tokens SET used_at = NULL WHERE token_hash = ?";

/// Deletes token `?` (a successor never handed out).
const DELETE_TOKEN: &str = "DELETE FROM refresh_tokens WHERE token_hash = ?";

/// Stores refresh token `?1` in family `?2` of rowid `?3`, expiring at `?4` (or never): the
/// successor of a rotated token, whose row named both.
const PUT_SUCCESSOR: &str =
    "INSERT INTO refresh_tokens (token_hash, family, family_id, expires_at) \
     VALUES (?1, ?2, ?3, ?4)";

/// Marks a valid token used and returns its family, the family's rowid and `$grant`: the common
/// case of a rotation in one statement. The family is found by rowid.
macro_rules! mark_used {
    ($grant:literal) => {
        concat!(
            "UPDATE refresh_tokens SET used_at = ?1 \
             WHERE token_hash = ?2 AND used_at IS NULL \
               AND (expires_at IS NULL OR expires_at > ?1) \
               AND NOT EXISTS (SELECT 1 FROM refresh_families f \
                               WHERE f.id = refresh_tokens.family_id AND f.revoked <> 0) \
             RETURNING family, family_id, ",
            $grant
        )
    };
}

/// [`mark_used!`] returning the family's grant JSON too.
const MARK_USED_READ_GRANT: &str =
    mark_used!("(SELECT grant_json FROM refresh_families f WHERE f.id = refresh_tokens.family_id)");
/// [`mark_used!`] returning NULL for the grant (not read).
const MARK_USED: &str = mark_used!("NULL");

/// One rotation: marks the old token used with `mark` and stores the new one, or tells why
/// not. `grant` makes what a rotation returns of the grant JSON `mark` read, or `None` to
/// refuse it ([`Rotation::OtherClient`]); it runs before the new token is stored, so a grant that
/// does not decode or is refused leaves the old token valid (unmarked while the transaction is
/// still open, so no one else ever sees the mark).
fn rotate<G>(
    c: &Connection,
    old_hash: &str,
    new_hash: &str,
    now: i64,
    new_expires_at: Option<i64>,
    mark: &str,
    grant: impl FnOnce(&Connection, Option<&str>) -> Result<Option<G>, StoreError>,
) -> Result<Rotation<G>, StoreError> {
    let rotated: Option<(String, i64, Option<String>)> =
        optional(c, mark, params![now, old_hash], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let Some((family, family_id, json)) = rotated else {
        return not_rotated(c, old_hash);
    };
    let done = grant(c, json.as_deref()).and_then(|kept| match kept {
        None => Ok(None),
        Some(grant) => exec(
            c,
            PUT_SUCCESSOR,
            params![new_hash, family, family_id, new_expires_at],
        )
        .map(|_| Some(grant)),
    });
    // Otherwise the mark is undone, so the old token stays valid (cheaper than a savepoint
    // around every rotation).
    match done {
        Ok(Some(grant)) => Ok(Rotation::Rotated { grant, family }),
        Ok(None) => {
            exec(c, UNMARK_USED, [old_hash])?;
            Ok(Rotation::OtherClient)
        }
        Err(e) => {
            exec(c, UNMARK_USED, [old_hash])?;
            Err(e)
        }
    }
}

/// Why a token was not rotated, and a reuse's revocation of its family (RFC 9700 §4.14.2).
fn not_rotated<G>(c: &Connection, old_hash: &str) -> Result<Rotation<G>, StoreError> {
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
                one(c, of.select_sqlite(), params![after, purge::BATCH], |r| {
                    r.get(0)
                })?;
            let Some(last) = last else {
                return Ok(StepDone::default());
            };
            let mut deleted = 0;
            for write in of.writes_sqlite() {
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
