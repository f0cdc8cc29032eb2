//! Admin writes in the event log's batches: stores and their tokens. Checked in the
//! same transaction as they are written, so two enrollments or two rotations racing
//! each other cannot both pass.

use super::*;

impl<R: LogRows> Batch<'_, R> {
    pub(super) fn add_token(&mut self, token: TokenRecord) -> Result<Result<(), WriteError>, R::Error> {
        if self.rows.live_token_named(&token.role, &token.name, None)? {
            return Ok(Err(WriteError::TokenNameTaken(token.name)));
        }
        self.rows.insert_token(&token)?;
        Ok(Ok(()))
    }

    /// Revokes the selected live tokens and reports the stores they belonged to, so that
    /// whichever route revoked a store's token, the caller can end its push streams.
    pub(super) fn revoke_tokens(&mut self, selector: TokenSelector) -> Result<RevokedTokens, R::Error> {
        self.rows.revoke_tokens(&selector, self.now)
    }

    /// Revokes `store`'s tokens and stores `token` for it, in this one job. The checks come
    /// first, so a refusal changes nothing: a store is never left without a token.
    pub(super) fn rotate_store_token(
        &mut self,
        store: StoreId,
        token: TokenRecord,
    ) -> Result<Result<RevokedTokens, WriteError>, R::Error> {
        if !self.store_known(store) {
            return Ok(Err(WriteError::UnknownStore(store)));
        }
        if self.rows.live_token_named(&token.role, &token.name, Some(store))? {
            return Ok(Err(WriteError::TokenNameTaken(token.name)));
        }
        let revoked = self.revoke_tokens(TokenSelector::Store(store))?;
        // Cannot be refused: the name is free once this store's own tokens are revoked.
        Ok(self.add_token(token)?.map(|()| revoked))
    }

    pub(super) fn add_store(
        &mut self,
        id: StoreId,
        name: String,
        token: Option<TokenRecord>,
        allow_duplicate_name: bool,
    ) -> Result<Result<StoreInfo, WriteError>, R::Error> {
        if self.store_known(id) {
            return Ok(Err(WriteError::StoreExists(id)));
        }
        // In this transaction: it sees the stores enrolled earlier in the same batch.
        if !allow_duplicate_name {
            if let Some(existing) = self.rows.store_named(&name)? {
                return Ok(Err(WriteError::StoreNameTaken { name, existing }));
            }
        }
        if let Some(token) = &token {
            if self.rows.live_token_named(&token.role, &token.name, None)? {
                return Ok(Err(WriteError::TokenNameTaken(token.name.clone())));
            }
        }
        // The store row first: the token references it.
        self.rows.insert_store(id, &name, self.now)?;
        self.changes.stores.push(id);
        if let Some(token) = token {
            // Cannot be refused: its name was checked above, in this transaction.
            if let Err(error) = self.add_token(token)? {
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
