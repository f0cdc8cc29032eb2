//! Refusals write nothing and leave their neighbours in a group commit intact; a failed
//! commit rolls back the whole batch without a gap.

use super::*;

crate::both_storages! {
    async fn refused_commands_write_nothing() {
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "REF-1").await;
        let unregistered = ProductId::new_v7();
        let shop = enroll_store(log).await;
        let stranger = StoreId::new_v7();
        execute(log, add_stock(product, shop, 5), ExpectedVersion::Any)
            .await
            .unwrap();
        let head = log_head(log).await;
        let history = all_events(log).await;

        assert_eq!(
            execute(
                log,
                reserve(product, shop, ReservationId::new_v7(), 6),
                ExpectedVersion::Any
            )
            .await,
            Err(WriteError::Domain(DomainError::InsufficientStock {
                requested: 6,
                available: 5
            }))
        );
        assert_eq!(
            execute(log, add_stock(product, stranger, 1), ExpectedVersion::Any).await,
            Err(WriteError::UnknownStore(stranger))
        );
        assert_eq!(
            execute(log, add_stock(unregistered, shop, 1), ExpectedVersion::Any).await,
            Err(WriteError::Domain(DomainError::ProductNotRegistered(unregistered)))
        );
        let nowhere = ReservationId::new_v7();
        assert_eq!(
            execute(log, commit(nowhere), ExpectedVersion::Any).await,
            Err(WriteError::UnknownReservation(nowhere))
        );
        let copycat = new_product("REF-1");
        assert_eq!(
            execute(log, register(copycat), ExpectedVersion::NoStream).await,
            Err(WriteError::SkuTaken {
                sku: "REF-1".into(),
                owner: product
            })
        );
        assert_eq!(bus_head(log).await, head, "no refusal moves the head");
        assert_eq!(all_events(log).await, history);

        // Refusals burn no positions: the next accepted write is the next position.
        let next = execute(
            log,
            reserve(product, shop, ReservationId::new_v7(), 5),
            ExpectedVersion::Any,
        )
        .await
        .unwrap();
        assert_eq!(next.position, head + 1);
        assert_eq!(next.stream_version, 2);
    }
}

crate::both_storages! {
    async fn refusals_inside_a_group_commit_leave_their_neighbours_intact() {
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "MIX-1").await;
        let shop = enroll_store(log).await;
        let stranger = StoreId::new_v7();
        let unregistered = ProductId::new_v7();
        execute(log, add_stock(product, shop, 3), ExpectedVersion::Any)
            .await
            .unwrap();
        let head = log_head(log).await;

        let held = ReservationId::new_v7();
        let twin_a = new_product("TWIN");
        let twin_b = new_product("TWIN");
        let requests = vec![
            request(add_stock(product, shop, 2), ExpectedVersion::Exact(1)), // ok: on hand 5
            request(reserve(product, shop, ReservationId::new_v7(), 6), ExpectedVersion::Any), // insufficient
            request(reserve(product, shop, held, 4), ExpectedVersion::Exact(2)), // ok: sees the add above
            request(add_stock(product, stranger, 1), ExpectedVersion::Any),  // unknown store
            request(add_stock(unregistered, shop, 1), ExpectedVersion::Any), // unregistered product
            request(commit(held), ExpectedVersion::Exact(3)),                // ok: finds the hold made in this batch
            request(commit(held), ExpectedVersion::Any),                     // the hold is gone
            request(register(twin_a.clone()), ExpectedVersion::NoStream),    // ok
            request(register(twin_b), ExpectedVersion::NoStream),            // sku taken within the batch
            request(add_stock(product, shop, 1), ExpectedVersion::Exact(3)), // stale: the commit made 4
            request(add_stock(product, shop, 1), ExpectedVersion::Exact(4)), // ok
        ];
        let results = one_batch(&t, requests).await;
        let accepted: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|w| w.position)
            .collect();
        assert_eq!(
            accepted,
            (head + 1..=head + 5).collect::<Vec<_>>(),
            "accepted commands get consecutive positions: {results:?}"
        );
        let stream = StreamId::inventory(product, shop);
        assert!(matches!(
            results[1],
            Err(WriteError::Domain(DomainError::InsufficientStock {
                requested: 6,
                available: 5
            }))
        ));
        assert_eq!(results[3], Err(WriteError::UnknownStore(stranger)));
        assert_eq!(
            results[4],
            Err(WriteError::Domain(DomainError::ProductNotRegistered(unregistered)))
        );
        match &results[5] {
            Ok(w) => assert_eq!(
                w.events[0].payload,
                EventPayload::ReservationCommitted {
                    reservation_id: held,
                    quantity: 4
                }
            ),
            other => panic!("commit refused: {other:?}"),
        }
        assert_eq!(results[6], Err(WriteError::UnknownReservation(held)));
        assert_eq!(
            results[8],
            Err(WriteError::SkuTaken {
                sku: "TWIN".into(),
                owner: twin_a.id
            })
        );
        assert_eq!(
            results[9],
            Err(WriteError::VersionConflict {
                stream,
                expected: ExpectedVersion::Exact(3),
                current: 4
            })
        );
        let events = all_events(log).await;
        check_log(&events);
        assert_eq!(events.len() as u64, head + 5);
        assert_eq!(bus_head(log).await, head + 5);
        assert_eq!(stream_version(log, stream).await, 5);
    }
}

crate::both_storages! {
    async fn a_reservation_id_open_on_one_stream_is_not_opened_on_another() {
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "HOLD-1").await;
        let north = enroll_store(log).await;
        let south = enroll_store(log).await;
        for shop in [north, south] {
            execute(log, add_stock(product, shop, 10), ExpectedVersion::Any)
                .await
                .unwrap();
        }
        let held = ReservationId::new_v7();
        execute(log, reserve(product, north, held, 2), ExpectedVersion::Any)
            .await
            .unwrap();
        let head = log_head(log).await;
        assert_eq!(
            execute(log, reserve(product, south, held, 3), ExpectedVersion::Any).await,
            Err(WriteError::Domain(DomainError::ReservationExists(held))),
            "reservations are addressed by id alone, so an open id must not be opened twice"
        );
        assert_eq!(bus_head(log).await, head);
        let committed = execute(log, commit(held), ExpectedVersion::Any).await.unwrap();
        assert_eq!(committed.events[0].stream, StreamId::inventory(product, north));
        assert_eq!(
            committed.events[0].payload,
            EventPayload::ReservationCommitted {
                reservation_id: held,
                quantity: 2
            }
        );

        // The same inside one batch.
        let twice = ReservationId::new_v7();
        let results = one_batch(
            &t,
            vec![
                request(reserve(product, north, twice, 1), ExpectedVersion::Any),
                request(reserve(product, south, twice, 1), ExpectedVersion::Any),
            ],
        )
        .await;
        assert!(results[0].is_ok());
        assert_eq!(
            results[1],
            Err(WriteError::Domain(DomainError::ReservationExists(twice)))
        );
    }
}

crate::both_storages! {
    async fn a_failed_commit_rolls_back_the_whole_batch_and_leaves_no_gap() {
        const POISON: i64 = 777;
        let t = new_log().await;
        let log = &t.log;
        let product = register_product(log, "FAIL-1").await;
        let north = enroll_store(log).await;
        let south = enroll_store(log).await;
        execute(log, add_stock(product, north, 1), ExpectedVersion::Any)
            .await
            .unwrap();
        let head = log_head(log).await;
        let history = all_events(log).await;
        // Make the database refuse one particular event, as a full disk or an I/O error would.
        t.poison_inserts(&format!("\"quantity\":{POISON}")).await;

        let north_add = request(add_stock(product, north, 1), ExpectedVersion::Exact(1));
        let south_add = request(add_stock(product, south, 1), ExpectedVersion::NoStream);
        let results = one_batch(
            &t,
            vec![
                north_add.clone(),
                request(add_stock(product, north, POISON), ExpectedVersion::Any),
                south_add.clone(),
            ],
        )
        .await;
        for result in &results {
            match result {
                Err(WriteError::Storage(message)) => assert!(message.contains("poisoned event"), "{message}"),
                other => panic!("every job of the failed batch fails: {other:?}"),
            }
        }
        assert_eq!(bus_head(log).await, head);
        assert_eq!(all_events(log).await, history, "nothing of the batch was written");

        // The writer's heads were not moved either: the same requests now succeed, in the
        // positions and versions the failed batch would have used.
        let north_written = log.execute(north_add).await.unwrap();
        let south_written = log.execute(south_add).await.unwrap();
        assert!(!north_written.duplicate && !south_written.duplicate);
        assert_eq!((north_written.position, north_written.stream_version), (head + 1, 2));
        assert_eq!((south_written.position, south_written.stream_version), (head + 2, 1));
        check_log(&all_events(log).await);
    }
}
