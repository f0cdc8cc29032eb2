-- Store snapshots read every stock row of one store.
CREATE INDEX stock_by_store ON stock (store_id, product_id);
