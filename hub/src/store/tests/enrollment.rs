//! Enrollment codes: redeemed once, refused when used, expired or unknown (changing
//! nothing), one winner when agents race with one code, and pruned once old.

use super::*;
use crate::store::{EnrollmentCodeRecord, Prunable};

fn code_digest(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

fn record(store_id: StoreId, code: &str, now: i64, ttl: i64) -> EnrollmentCodeRecord {
    EnrollmentCodeRecord {
        code_sha256: code_digest(code),
        store_id,
        created_at: now,
        expires_at: now + ttl,
    }
}

crate::both_storages! {
    async fn a_code_works_once_and_refusals_change_nothing() {
        let t = new_log().await;
        let log = t.log.clone();
        let shop = enroll_store(&log).await;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        log.add_enrollment_code(record(shop, "AAAABBBB", now, 900)).await.unwrap();
        log.add_enrollment_code(record(shop, "CCCCDDDD", now - 1000, 900)).await.unwrap();
        assert!(matches!(
            log.add_enrollment_code(record(StoreId::new_v7(), "EEEEFFFF", now, 900)).await,
            Err(WriteError::UnknownStore(_))
        ));

        let first = code_digest("first token");
        let redeemed = log.redeem_enrollment_code(code_digest("AAAABBBB"), first, now).await.unwrap();
        assert_eq!(redeemed.store, shop);
        let token = log.live_token(first).await.unwrap().expect("the new token is live");
        assert_eq!(token.store_id, Some(shop));

        let second = code_digest("second token");
        for (code, refused) in [
            ("AAAABBBB", "used"),
            ("CCCCDDDD", "expired"),
            ("ZZZZZZZZ", "unknown"),
        ] {
            let answer = log.redeem_enrollment_code(code_digest(code), second, now).await;
            let matched = match refused {
                "used" => matches!(answer, Err(WriteError::EnrollmentCodeUsed)),
                "expired" => matches!(answer, Err(WriteError::EnrollmentCodeExpired)),
                _ => matches!(answer, Err(WriteError::EnrollmentCodeUnknown)),
            };
            assert!(matched, "{code}: {answer:?}");
        }
        assert!(log.live_token(first).await.unwrap().is_some(), "a refusal revokes nothing");
        assert!(log.live_token(second).await.unwrap().is_none(), "and issues nothing");
    }

    async fn agents_racing_with_one_code_get_one_token() {
        let t = new_log().await;
        let log = t.log.clone();
        let shop = enroll_store(&log).await;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        log.add_enrollment_code(record(shop, "RACE0000", now, 900)).await.unwrap();
        let attempts = (0..8u8).map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.redeem_enrollment_code(code_digest("RACE0000"), code_digest(&format!("token {i}")), now)
                    .await
            })
        });
        let mut won = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => won += 1,
                Err(WriteError::EnrollmentCodeUsed) => {}
                Err(other) => panic!("unexpected: {other:?}"),
            }
        }
        assert_eq!(won, 1, "exactly one agent gets the store's token");
    }

    async fn old_codes_are_pruned_recent_ones_kept() {
        let t = new_log().await;
        let log = t.log.clone();
        let shop = enroll_store(&log).await;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        log.add_enrollment_code(record(shop, "OLD00000", now - 200_000, 900)).await.unwrap();
        log.add_enrollment_code(record(shop, "USED0000", now, 900)).await.unwrap();
        log.add_enrollment_code(record(shop, "NEW00000", now, 900)).await.unwrap();
        log.redeem_enrollment_code(code_digest("USED0000"), code_digest("t"), now).await.unwrap();
        let at = |unix: i64| OffsetDateTime::from_unix_timestamp(unix).unwrap();
        let prune = |cutoff| log.prune(Prunable::EnrollmentCodes, at(cutoff), 100);
        assert_eq!(prune(now - 86_400).await.unwrap(), 1, "only the long-expired one");
        assert_eq!(prune(now + 1).await.unwrap(), 1, "then the used one");
        let answer = log.redeem_enrollment_code(code_digest("NEW00000"), code_digest("u"), now).await;
        assert!(answer.is_ok(), "an open code survives both: {answer:?}");
    }
}
