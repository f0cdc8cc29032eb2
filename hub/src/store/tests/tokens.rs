//! Tokens: names per role, and revocations that name the stores they hit.

use super::*;

fn token(role: &str, name: &str, store_id: Option<StoreId>) -> crate::store::reader::TokenRecord {
    crate::store::reader::TokenRecord {
        id: uuid::Uuid::now_v7(),
        name: name.into(),
        role: role.into(),
        store_id,
        secret_sha256: Sha256::digest(uuid::Uuid::now_v7().as_bytes()).into(),
        created_at: OffsetDateTime::now_utc(),
        revoked_at: None,
    }
}

crate::both_storages! {
    async fn token_names_are_per_role_and_revocations_name_the_stores_they_hit() {
        use crate::store::{RevokedTokens, TokenSelector};
        let t = new_log().await;
        let log = t.log.clone();
        let shop = enroll_store(&log).await;
        let name = format!("store-{shop}");
        let first = token("store", &name, Some(shop));
        log.add_token(first.clone()).await.expect("store token");
        log.add_token(token("channel", &name, None))
            .await
            .expect("same name, other role");
        assert!(matches!(
            log.add_token(token("channel", &name, None)).await,
            Err(WriteError::TokenNameTaken(_))
        ));

        let by_name = log.revoke_tokens(TokenSelector::Channel(name.clone())).await.unwrap();
        assert_eq!(
            by_name,
            RevokedTokens {
                count: 1,
                stores: vec![],
                store_tokens: vec![]
            },
            "only the channel token"
        );
        let second = token("store", &name, Some(shop));
        let rotated = log.rotate_store_token(shop, second.clone()).await.unwrap();
        assert_eq!(
            rotated,
            RevokedTokens {
                count: 1,
                stores: vec![shop],
                store_tokens: vec![(shop, first.id)]
            }
        );
        let revoked = log.revoke_tokens(TokenSelector::Store(shop)).await.unwrap();
        assert_eq!(
            revoked,
            RevokedTokens {
                count: 1,
                stores: vec![shop],
                store_tokens: vec![(shop, second.id)]
            },
            "the rotated token was live"
        );

        let unknown = StoreId::new_v7();
        assert!(matches!(
            log.rotate_store_token(unknown, token("store", "store-x", Some(unknown)))
                .await,
            Err(WriteError::UnknownStore(_))
        ));
    }
}
