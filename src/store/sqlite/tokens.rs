//! Codes and refresh tokens on SQLite: their statements, each write run by the connection
//! thread inside the batch transaction ([`SqliteStore::write`]), each read outside it.

use rusqlite::{params, Connection};

use super::sql::{exec, optional};
use super::SqliteStore;
use crate::store::codec::{decode_grant, encode_grant};
use crate::store::{CodeRedemption, Committed, Grant, Rotation, StoreError};

/// Marks a family revoked (no-op when unknown).
fn revoke(c: &Connection, family: &str) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE refresh_families SET revoked = 1 WHERE family = ?",
        [family],
    )?;
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
            exec(
                c,
                "INSERT INTO codes (code_hash, grant_json, expires_at) VALUES (?, ?, ?)",
                params![code_hash, grant, expires_at],
            )?;
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
            let replayed: Option<i64> = optional(
                c,
                "UPDATE codes SET family = ? WHERE code_hash = ? RETURNING replayed",
                [&family, &code_hash],
                |r| r.get(0),
            )?;
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
            exec(
                c,
                "INSERT INTO refresh_families (family, grant_json) VALUES (?, ?) \
                 ON CONFLICT (family) DO UPDATE SET grant_json = excluded.grant_json",
                [&family, &grant],
            )?;
            exec(
                c,
                "INSERT INTO refresh_tokens (token_hash, family, expires_at) VALUES (?, ?, ?)",
                params![token_hash, family, expires_at],
            )?;
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
            rotate(c, &old_hash, &new_hash, now, new_expires_at)
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
                    "SELECT f.grant_json FROM refresh_tokens t \
                     JOIN refresh_families f ON f.family = t.family \
                     WHERE t.token_hash = ?1 AND t.used_at IS NULL AND f.revoked = 0 \
                       AND (t.expires_at IS NULL OR t.expires_at > ?2)",
                    params![token_hash, now],
                    |r| r.get(0),
                )
            })
            .await?;
        json.as_deref().map(decode_grant).transpose()
    }

    pub(crate) async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.write(false, move |c| purge(c, now)).await
    }
}

/// Marks a code redeemed, or tells why it cannot be; a replay revokes the linked family.
fn redeem(c: &Connection, code_hash: &str, now: i64) -> Result<CodeRedemption, StoreError> {
    let redeemed: Option<String> = optional(
        c,
        "UPDATE codes SET redeemed_at = ?1 \
         WHERE code_hash = ?2 AND redeemed_at IS NULL AND expires_at > ?1 \
         RETURNING grant_json",
        params![now, code_hash],
        |r| r.get(0),
    )?;
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
    exec(
        c,
        "UPDATE codes SET replayed = 1 WHERE code_hash = ?",
        [code_hash],
    )?;
    if let Some(family) = &family {
        revoke(c, family)?;
    }
    Ok(CodeRedemption::Replayed { family })
}

/// One rotation: marks the old token used and stores the new one, or tells why not.
fn rotate(
    c: &Connection,
    old_hash: &str,
    new_hash: &str,
    now: i64,
    new_expires_at: Option<i64>,
) -> Result<Rotation, StoreError> {
    // The common case in one statement: mark a valid token used and read its family.
    let rotated: Option<(String, String)> = optional(
        c,
        "UPDATE refresh_tokens SET used_at = ?1 \
         WHERE token_hash = ?2 AND used_at IS NULL \
           AND (expires_at IS NULL OR expires_at > ?1) \
           AND NOT EXISTS (SELECT 1 FROM refresh_families f \
                           WHERE f.family = refresh_tokens.family AND f.revoked <> 0) \
         RETURNING family, (SELECT grant_json FROM refresh_families f \
                            WHERE f.family = refresh_tokens.family)",
        params![now, old_hash],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if let Some((family, json)) = rotated {
        let done = decode_grant(&json).and_then(|grant| {
            exec(
                c,
                "INSERT INTO refresh_tokens (token_hash, family, expires_at) VALUES (?, ?, ?)",
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
    let row: Option<(String, Option<i64>, i64)> = optional(
        c,
        "SELECT t.family, t.used_at, f.revoked \
         FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family \
         WHERE t.token_hash = ?",
        [old_hash],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
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

/// Deletes what expired at `now`; the number of rows deleted.
fn purge(c: &Connection, now: i64) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for (sql, bind_now) in [
        ("DELETE FROM sessions WHERE expires_at <= ?", true),
        (
            "DELETE FROM refresh_tokens WHERE expires_at IS NOT NULL AND expires_at <= ?",
            true,
        ),
        (
            "DELETE FROM refresh_tokens WHERE family IN \
             (SELECT family FROM refresh_families WHERE revoked <> 0)",
            false,
        ),
        (
            "DELETE FROM refresh_families WHERE revoked <> 0 OR NOT EXISTS \
             (SELECT 1 FROM refresh_tokens t WHERE t.family = refresh_families.family)",
            false,
        ),
        // An expired code goes, unless it was redeemed into a refresh family that still lives:
        // that row stays as a tombstone, so a replay of the code still revokes the family (RFC
        // 6749 §4.1.2) for as long as it exists. Its grant (personal data) is not needed for
        // that and is dropped.
        (
            "DELETE FROM codes WHERE expires_at <= ? AND (family IS NULL OR NOT EXISTS \
             (SELECT 1 FROM refresh_families f WHERE f.family = codes.family AND f.revoked = 0))",
            true,
        ),
    ] {
        let changed = if bind_now {
            exec(c, sql, [now])?
        } else {
            exec(c, sql, [])?
        };
        deleted += changed as u64;
    }
    exec(
        c,
        "UPDATE codes SET grant_json = '{}' WHERE expires_at <= ? AND grant_json <> '{}'",
        [now],
    )?;
    Ok(deleted)
}
