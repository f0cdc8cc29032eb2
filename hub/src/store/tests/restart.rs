//! A reopened store keeps its stream heads and its indexes.

use super::*;

crate::both_storages! {
    async fn a_reopened_store_keeps_its_heads_and_indexes() {
        let t = new_log().await;
        let log = &t.log;
        let renamed = new_product("OLD-SKU");
        let kept = register_product(log, "KEPT").await;
        execute(log, register(renamed.clone()), ExpectedVersion::NoStream)
            .await
            .unwrap();
        let renamed = Product {
            sku: "NEW-SKU".into(),
            ..renamed
        };
        execute(log, update(renamed.clone()), ExpectedVersion::Exact(1))
            .await
            .unwrap();
        let shop = enroll_store(log).await;
        let stream = StreamId::inventory(kept, shop);
        let first = request(add_stock(kept, shop, 10), ExpectedVersion::NoStream);
        let first_written = log.execute(first.clone()).await.unwrap();
        let held = ReservationId::new_v7();
        let released = ReservationId::new_v7();
        execute(log, reserve(kept, shop, held, 4), ExpectedVersion::Exact(1))
            .await
            .unwrap();
        execute(log, reserve(kept, shop, released, 1), ExpectedVersion::Exact(2))
            .await
            .unwrap();
        execute(
            log,
            Command::Inventory {
                target: InventoryTarget::Reservation(released),
                command: InventoryCommand::ReleaseStock {
                    reservation_id: released,
                    reason: shelfsync_common::domain::event::ReleaseReason::Cancelled,
                },
            },
            ExpectedVersion::Exact(3),
        )
        .await
        .unwrap();
        let head = log_head(log).await;
        let history = all_events(log).await;

        log.close().await;
        assert_eq!(
            execute(log, add_stock(kept, shop, 1), ExpectedVersion::Any).await,
            Err(WriteError::Unavailable),
            "a closed store takes no writes"
        );

        let reopened = t.reopen().await;
        assert_eq!(reopened.bus().head(), head);
        assert_eq!(all_events(&reopened).await, history);
        assert_eq!(stream_version(&reopened, stream).await, 4);
        // Stream heads: the version is known without reading the log.
        assert_eq!(
            execute(&reopened, add_stock(kept, shop, 1), ExpectedVersion::Exact(3)).await,
            Err(WriteError::VersionConflict {
                stream,
                expected: ExpectedVersion::Exact(3),
                current: 4
            })
        );
        // Inventory state: 10 on hand, 4 held.
        assert_eq!(
            execute(
                &reopened,
                reserve(kept, shop, ReservationId::new_v7(), 7),
                ExpectedVersion::Any
            )
            .await,
            Err(WriteError::Domain(DomainError::InsufficientStock {
                requested: 7,
                available: 6
            }))
        );
        // Reservation index: the open hold is found by id, the released one is not.
        assert_eq!(
            execute(&reopened, commit(released), ExpectedVersion::Any).await,
            Err(WriteError::UnknownReservation(released))
        );
        let sold = execute(&reopened, commit(held), ExpectedVersion::Exact(4))
            .await
            .unwrap();
        assert_eq!(sold.position, head + 1, "positions continue where they stopped");
        assert_eq!(sold.stream_version, 5);
        assert_eq!(sold.events[0].stream, stream);
        assert_eq!(
            sold.events[0].payload,
            EventPayload::ReservationCommitted {
                reservation_id: held,
                quantity: 4
            }
        );
        // SKU index: taken SKUs stay taken, a SKU given up is free.
        assert_eq!(
            execute(&reopened, register(new_product("KEPT")), ExpectedVersion::NoStream).await,
            Err(WriteError::SkuTaken {
                sku: "KEPT".into(),
                owner: kept
            })
        );
        assert_eq!(
            execute(&reopened, register(new_product("NEW-SKU")), ExpectedVersion::NoStream).await,
            Err(WriteError::SkuTaken {
                sku: "NEW-SKU".into(),
                owner: renamed.id
            })
        );
        execute(&reopened, register(new_product("OLD-SKU")), ExpectedVersion::NoStream)
            .await
            .expect("the SKU a product gave up is free again");
        // Stores: still enrolled, and an unknown one still unknown.
        let stranger = StoreId::new_v7();
        assert_eq!(
            execute(&reopened, add_stock(kept, stranger, 1), ExpectedVersion::Any).await,
            Err(WriteError::UnknownStore(stranger))
        );
        // Idempotency: a retry of a write from before the restart is still a duplicate.
        let retried = reopened.execute(first).await.unwrap();
        assert!(retried.duplicate);
        assert_eq!(retried.events, first_written.events);
        let head = log_head(&reopened).await;
        reopened.close().await;

        // The commit made after the first restart survives the second.
        let again = t.reopen().await;
        assert_eq!(again.bus().head(), head);
        assert_eq!(
            execute(&again, commit(held), ExpectedVersion::Any).await,
            Err(WriteError::UnknownReservation(held))
        );
        check_log(&all_events(&again).await);
        again.close().await;
    }
}
