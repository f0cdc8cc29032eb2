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

crate::both_storages! {
    /// Given a store token rotated (the old one revoked), a channel token revoked and a
    /// live one, when the retention runs a day later nothing goes; a month later the two
    /// revoked tokens go (one per step) and the live ones stay, however old; once the
    /// store's last token is revoked and pruned, the store still reads as revoked.
    async fn revoked_tokens_older_than_the_retention_go_live_ones_stay() {
        use crate::config::RetentionConfig;
        use crate::store::TokenSelector;
        use time::Duration as Age;
        let t = new_log().await;
        let log = t.log.clone();
        let shop = enroll_store(&log).await;
        let old = token("store", "shop", Some(shop));
        log.add_token(old.clone()).await.expect("store token");
        let live = token("store", "shop", Some(shop));
        log.rotate_store_token(shop, live.clone()).await.expect("rotate");
        log.add_token(token("channel", "old-web-shop", None)).await.expect("channel token");
        log.revoke_tokens(TokenSelector::Channel("old-web-shop".into())).await.expect("revoke");
        let web = token("channel", "web-shop", None);
        log.add_token(web.clone()).await.expect("channel token");
        let run = |keep_days: u32, batch_rows: usize, at: OffsetDateTime| {
            let keep = RetentionConfig {
                keep_days,
                batch_rows,
                ..RetentionConfig::default()
            };
            let log = log.clone();
            async move {
                let reports = crate::retention::prune(&log, &keep, at).await.expect("prune");
                let tokens = reports.iter().find(|r| r.table == "revoked_tokens").expect("a report on tokens");
                (tokens.pruned, tokens.steps)
            }
        };
        let now = OffsetDateTime::now_utc();
        let live_token = |token: &crate::store::reader::TokenRecord| {
            let (log, digest) = (log.clone(), token.secret_sha256);
            async move { log.live_token(digest).await.expect("read").map(|t| t.id) }
        };

        assert_eq!(run(30, 100, now + Age::days(1)).await, (0, 1), "younger than the retention");
        assert_eq!(run(30, 1, now + Age::days(31)).await, (2, 3), "two rows, a step each, then an empty one");
        assert_eq!(live_token(&live).await, Some(live.id));
        assert_eq!(live_token(&web).await, Some(web.id));
        assert_eq!(run(1, 100, now + Age::days(3650)).await, (0, 1), "live tokens stay whatever their age");
        assert_eq!(live_token(&old).await, None);
        let stores = log.stores().await.unwrap();
        assert!(!stores.iter().find(|s| s.id == shop).unwrap().revoked);

        log.revoke_tokens(TokenSelector::Store(shop)).await.expect("revoke");
        assert_eq!(run(1, 100, now + Age::days(2)).await, (1, 1));
        let stores = log.stores().await.unwrap();
        assert!(stores.iter().find(|s| s.id == shop).unwrap().revoked, "still revoked");
        assert!(log.store_enrolled(shop).await.unwrap());
        assert_eq!(live_token(&live).await, None);
    }
}
