//! Expected versions are checked against the stream: `NoStream`, `Exists`, `Exact(n)`,
//! `Any`, and the catalog stream's own version.

use super::*;

/// A product registered on a fresh store, and two shops enrolled, each with an (empty)
/// inventory stream of it.
async fn given_a_product_and_two_shops() -> (TestLog, ProductId, StoreId, StoreId) {
    let t = new_log().await;
    let product = register_product(&t.log, "EXP-1").await;
    let north = enroll_store(&t.log).await;
    let south = enroll_store(&t.log).await;
    (t, product, north, south)
}

/// Adds one unit to the stream `n` times, unconditionally.
async fn given_stream_at(log: &EventStore, product: ProductId, shop: StoreId, n: u64) {
    for _ in 0..n {
        execute(log, add_stock(product, shop, 1), ExpectedVersion::Any)
            .await
            .unwrap();
    }
}

crate::both_storages! {
    async fn no_stream_creates_a_stream_and_refuses_an_existing_one() {
        let (t, product, north, _) = given_a_product_and_two_shops().await;
        let log = &t.log;

        // When a write expects no stream, twice
        let created = execute(log, add_stock(product, north, 1), ExpectedVersion::NoStream)
            .await
            .unwrap();
        let again = execute(log, add_stock(product, north, 1), ExpectedVersion::NoStream).await;

        // Then the first creates it at version 1 and the second conflicts.
        assert_eq!(created.stream_version, 1);
        assert_eq!(
            again,
            Err(WriteError::VersionConflict {
                stream: StreamId::inventory(product, north),
                expected: ExpectedVersion::NoStream,
                current: 1
            })
        );
        check_log(&all_events(log).await);
    }
}

crate::both_storages! {
    async fn exists_refuses_a_missing_stream_without_creating_it_and_appends_to_an_existing_one() {
        let (t, product, north, south) = given_a_product_and_two_shops().await;
        let log = &t.log;
        given_stream_at(log, product, north, 1).await;
        let head = log_head(log).await;

        // When a write expects an existing stream that does not exist
        let refused = execute(log, add_stock(product, south, 1), ExpectedVersion::Exists).await;

        // Then it conflicts, writes nothing and does not create the stream
        let south_stream = StreamId::inventory(product, south);
        assert_eq!(
            refused,
            Err(WriteError::VersionConflict {
                stream: south_stream,
                expected: ExpectedVersion::Exists,
                current: 0
            })
        );
        assert_eq!(bus_head(log).await, head, "a conflict writes nothing");
        assert_eq!(
            stream_version(log, south_stream).await,
            0,
            "the refused stream was not created"
        );
        // and on an existing stream it appends.
        assert_eq!(
            execute(log, add_stock(product, north, 1), ExpectedVersion::Exists)
                .await
                .unwrap()
                .stream_version,
            2
        );
        check_log(&all_events(log).await);
    }
}

crate::both_storages! {
    async fn exact_accepts_only_the_current_version_and_zero_is_a_new_stream() {
        let (t, product, north, south) = given_a_product_and_two_shops().await;
        let log = &t.log;
        given_stream_at(log, product, north, 2).await;
        let north_stream = StreamId::inventory(product, north);

        // When writes expect a version behind and a version ahead of the stream
        // Then both conflict with the current version
        for stale in [1, 3] {
            assert_eq!(
                execute(log, add_stock(product, north, 1), ExpectedVersion::Exact(stale)).await,
                Err(WriteError::VersionConflict {
                    stream: north_stream,
                    expected: ExpectedVersion::Exact(stale),
                    current: 2
                })
            );
        }
        // and exact 0 on a missing stream creates it.
        assert_eq!(
            execute(log, add_stock(product, south, 1), ExpectedVersion::Exact(0))
                .await
                .unwrap()
                .stream_version,
            1,
            "exact 0 is a new stream"
        );
        check_log(&all_events(log).await);
    }
}

crate::both_storages! {
    async fn any_appends_at_whatever_version_the_stream_is() {
        let (t, product, north, _) = given_a_product_and_two_shops().await;
        let log = &t.log;
        given_stream_at(log, product, north, 2).await;

        // When a write expects any version
        let written = execute(log, add_stock(product, north, 1), ExpectedVersion::Any)
            .await
            .unwrap();

        // Then it is the next version.
        assert_eq!(written.stream_version, 3);
        check_log(&all_events(log).await);
    }
}

crate::both_storages! {
    async fn the_catalog_stream_has_its_own_version() {
        // Given a product registered (catalog version 1) with three stock events at a shop
        let (t, product, north, _) = given_a_product_and_two_shops().await;
        let log = &t.log;
        given_stream_at(log, product, north, 3).await;
        let renamed = Product {
            id: product,
            sku: "EXP-2".into(),
            name: "Renamed".into(),
            price_minor: 1,
        };

        // When an update expects the inventory stream's version
        // Then it conflicts with the catalog stream's
        assert_eq!(
            execute(log, update(renamed.clone()), ExpectedVersion::Exact(3)).await,
            Err(WriteError::VersionConflict {
                stream: StreamId::catalog(product),
                expected: ExpectedVersion::Exact(3),
                current: 1
            })
        );
        // and with the catalog's version it is accepted
        assert_eq!(
            execute(log, update(renamed), ExpectedVersion::Exact(1))
                .await
                .unwrap()
                .stream_version,
            2
        );
        // and registering a new product that "exists" conflicts at version 0.
        let fresh = new_product("EXP-3");
        assert_eq!(
            execute(log, register(fresh.clone()), ExpectedVersion::Exists).await,
            Err(WriteError::VersionConflict {
                stream: StreamId::catalog(fresh.id),
                expected: ExpectedVersion::Exists,
                current: 0
            })
        );
        check_log(&all_events(log).await);
    }
}
