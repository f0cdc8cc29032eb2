//! A snapshot at position P plus the events after P is the full fold.

use super::*;

type Folded = (BTreeMap<StreamId, InventoryState>, BTreeMap<ProductId, CatalogState>);

fn fold(mut state: Folded, events: &[EventEnvelope]) -> Folded {
    for event in events {
        match event.stream.store_id {
            Some(_) => inventory::apply(
                state.0.entry(event.stream).or_default(),
                &event.payload,
                event.metadata.origin.into(),
            ),
            None => catalog::apply(state.1.entry(event.stream.product_id).or_default(), &event.payload),
        }
    }
    state
}

shelfsync_hub::both_storages! {
    async fn a_snapshot_plus_the_events_after_its_position_is_the_full_fold() {
        let hub = TestHub::spawn().await;
        let agents = [
            hub.demo_agent(0).await,
            hub.demo_agent(1).await,
            hub.demo_agent(2).await,
        ];
        let a = &agents[0];
        let (open_hold, hub_hold) = (ReservationId::new_v7(), ReservationId::new_v7());
        // History before the snapshot, at every store.
        for (n, agent) in agents.iter().enumerate() {
            let (sold, cancelled) = (ReservationId::new_v7(), ReservationId::new_v7());
            let mut batch = vec![
                agent.fact(demo_product(0), reserved(sold, 2)),
                agent.fact(demo_product(0), committed(sold, 2)),
                agent.fact(demo_product(2), reserved(cancelled, 1)),
                agent.fact(demo_product(2), released(cancelled, 1)),
                agent.fact(demo_product(3), added(5)),
                agent.fact(demo_product(4), adjusted(-100)),
            ];
            if n == 0 {
                batch.push(agent.fact(demo_product(1), reserved(open_hold, 1)));
            }
            for result in agent.upload(&batch).await.results {
                appended(&result.outcome);
            }
        }
        let body = json!({"product_id": demo_product(1), "store_id": a.store, "quantity": 2, "reservation_id": hub_hold});
        assert_eq!(call(hub.post("/v1/inventory/reservations", &body)).await.0, 201);
        let body = json!({"product_id": demo_product(3), "store_id": a.store, "quantity": 4});
        assert_eq!(call(hub.post("/v1/inventory/stock", &body)).await.0, 201);
        let rename = json!({"sku": "COFFEE-250", "name": "Espresso beans, 250 g", "price_minor": 749});
        assert_eq!(
            call(hub.put(&format!("/v1/products/{}", demo_product(0)), &rename))
                .await
                .0,
            201
        );
        let new_product = json!({"sku": "CUP-ESP", "name": "Espresso cup", "price_minor": 599});
        assert_eq!(call(hub.post("/v1/products", &new_product)).await.0, 201);

        // Let the read model reach the head first, so that the snapshot holds the history
        // above (a read with min_position waits for the projection).
        let head = hub.head().await;
        let level = format!(
            "/v1/inventory/products/{}/stores/{}?min_position={head}",
            demo_product(0),
            a.store
        );
        assert_eq!(call(hub.get(&level)).await.0, 200);
        let snapshot = a.snapshot().await;
        assert_eq!(snapshot.store_id, a.store);
        let p = snapshot.position;
        assert!(p >= head);
        assert!(p > 0);
        assert!(snapshot.stock.iter().all(|s| s.store_id == a.store));
        assert!(snapshot
            .reservations
            .iter()
            .any(|r| r.reservation_id == open_hold && r.origin == Origin::Store(a.store)));
        assert!(snapshot
            .reservations
            .iter()
            .any(|r| r.reservation_id == hub_hold && r.origin == Origin::Hub));

        // History after the snapshot.
        for agent in &agents {
            let batch = [
                agent.fact(demo_product(4), added(3)),
                agent.fact(demo_product(2), adjusted(-2)),
            ];
            agent.upload(&batch).await;
        }
        a.upload(&[a.fact(demo_product(1), committed(open_hold, 1))]).await;
        let commit = hub.post_empty(&format!("/v1/inventory/reservations/{hub_hold}/commit"));
        assert_eq!(call(commit).await.0, 201);
        let reprice = json!({"sku": "TEA-GREEN", "name": "Green tea, 20 bags", "price_minor": 379});
        assert_eq!(
            call(hub.put(&format!("/v1/products/{}", demo_product(1)), &reprice))
                .await
                .0,
            201
        );

        // The snapshot as an agent's starting state.
        let mut start: Folded = Default::default();
        for row in &snapshot.stock {
            let reservations = snapshot
                .reservations
                .iter()
                .filter(|r| r.product_id == row.product_id)
                .map(|r| {
                    (
                        r.reservation_id,
                        Reservation {
                            quantity: r.quantity,
                            expires_at: r.expires_at,
                            hub_share: r.hub_share,
                        },
                    )
                })
                .collect();
            let state = InventoryState {
                on_hand: row.on_hand,
                reservations,
                version: row.version,
                allocation: None,
            };
            assert_eq!(
                (state.reserved(), state.available()),
                (row.reserved, row.available),
                "{row:?}"
            );
            start.0.insert(StreamId::inventory(row.product_id, a.store), state);
        }
        for view in &snapshot.catalog {
            start.1.insert(
                view.product.id,
                CatalogState {
                    product: Some(view.product.clone()),
                    version: view.version,
                },
            );
        }

        let (all, _) = a.pull_all(0).await;
        let (after_p, _) = a.pull_all(p).await;
        assert!(!after_p.is_empty() && after_p.iter().all(|e| e.position > p));
        let up_to_p: Vec<EventEnvelope> = all.iter().filter(|e| e.position <= p).cloned().collect();
        assert_eq!(
            fold(Default::default(), &up_to_p),
            start,
            "the snapshot is exactly the events up to P"
        );
        let followed = fold(start, &after_p);
        let full = fold(Default::default(), &all);
        assert_eq!(followed, full);
        assert_eq!(full.0.len(), 5, "store A has a stream per demo product");
        assert_eq!(full.1.len(), 6, "the catalog holds the new product too");
        assert!(
            full.0.values().any(|s| s.available() < 0),
            "the history includes an oversell"
        );
    }
}
