//! Admin writes in the event log's batches: stores and their tokens. Checked in the
//! same transaction as they are written, so two enrollments or two rotations racing
//! each other cannot both pass.

use super::*;
use crate::store::reader;
use shelfsync_common::sqlite::time_text;

impl Batch<'_> {
    pub(super) fn add_token(
        &mut self,
        tx: &Transaction<'_>,
        token: TokenRecord,
    ) -> rusqlite::Result<Result<(), WriteError>> {
        if reader::live_token_named(tx, &token.role, &token.name, None).map_err(into_sqlite)? {
            return Ok(Err(WriteError::TokenNameTaken(token.name)));
        }
        tx.prepare_cached(
            "INSERT INTO tokens (id, name, role, store_id, secret_sha256, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &token.id.as_bytes()[..],
            token.name,
            token.role,
            token.store_id.map(|s| s.as_bytes().to_vec()),
            &token.secret_sha256[..],
            time_text::encode(token.created_at)?,
        ])?;
        Ok(Ok(()))
    }

    /// Revokes the selected live tokens and reports the stores they belonged to, so that
    /// whichever route revoked a store's token, the caller can end its push streams.
    pub(super) fn revoke_tokens(
        &mut self,
        tx: &Transaction<'_>,
        selector: TokenSelector,
    ) -> rusqlite::Result<RevokedTokens> {
        let now = time_text::encode(self.now)?;
        let mut stmt;
        let mut rows = match &selector {
            TokenSelector::Store(store) => {
                stmt = tx.prepare_cached(
                    "UPDATE tokens SET revoked_at = ?1 WHERE store_id = ?2 AND revoked_at IS NULL RETURNING store_id",
                )?;
                stmt.query(params![now, &store.as_bytes()[..]])?
            }
            TokenSelector::Channel(name) => {
                stmt = tx.prepare_cached(
                    "UPDATE tokens SET revoked_at = ?1 WHERE role = 'channel' AND name = ?2 AND revoked_at IS NULL
                     RETURNING store_id",
                )?;
                stmt.query(params![now, name])?
            }
        };
        let mut revoked = RevokedTokens::default();
        while let Some(row) = rows.next()? {
            revoked.count += 1;
            if let Some(store) = row.get::<_, Option<[u8; 16]>>(0)?.map(StoreId::from_bytes) {
                if !revoked.stores.contains(&store) {
                    revoked.stores.push(store);
                }
            }
        }
        Ok(revoked)
    }

    /// Revokes `store`'s tokens and stores `token` for it, in this one job. The checks come
    /// first, so a refusal changes nothing: a store is never left without a token.
    pub(super) fn rotate_store_token(
        &mut self,
        tx: &Transaction<'_>,
        store: StoreId,
        token: TokenRecord,
    ) -> rusqlite::Result<Result<RevokedTokens, WriteError>> {
        if !self.store_known(store) {
            return Ok(Err(WriteError::UnknownStore(store)));
        }
        if reader::live_token_named(tx, &token.role, &token.name, Some(store)).map_err(into_sqlite)? {
            return Ok(Err(WriteError::TokenNameTaken(token.name)));
        }
        let revoked = self.revoke_tokens(tx, TokenSelector::Store(store))?;
        // Cannot be refused: the name is free once this store's own tokens are revoked.
        Ok(self.add_token(tx, token)?.map(|()| revoked))
    }

    pub(super) fn add_store(
        &mut self,
        tx: &Transaction<'_>,
        id: StoreId,
        name: String,
        token: Option<TokenRecord>,
        allow_duplicate_name: bool,
    ) -> rusqlite::Result<Result<StoreInfo, WriteError>> {
        if self.store_known(id) {
            return Ok(Err(WriteError::StoreExists(id)));
        }
        // In this transaction: it sees the stores enrolled earlier in the same batch.
        if !allow_duplicate_name {
            if let Some(existing) = reader::store_named(tx, &name).map_err(into_sqlite)? {
                return Ok(Err(WriteError::StoreNameTaken { name, existing }));
            }
        }
        if let Some(token) = &token {
            if reader::live_token_named(tx, &token.role, &token.name, None).map_err(into_sqlite)? {
                return Ok(Err(WriteError::TokenNameTaken(token.name.clone())));
            }
        }
        // The store row first: the token references it.
        tx.prepare_cached("INSERT INTO stores (id, name, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![&id.as_bytes()[..], name, time_text::encode(self.now)?])?;
        self.changes.stores.push(id);
        if let Some(token) = token {
            // Cannot be refused: its name was checked above, in this transaction.
            if let Err(error) = self.add_token(tx, token)? {
                return Ok(Err(error));
            }
        }
        Ok(Ok(StoreInfo {
            id,
            name,
            created_at: self.now,
            revoked: false,
        }))
    }
}
