//! Row readers for what both binaries' databases store the same way: a catalog product
//! with its stream version, read as the columns (id, sku, name, price_minor, version) in
//! that order (the hub's read model names the first `id`, the agent's local catalog
//! `product_id`), so the two cannot read it differently.

use crate::domain::ids::ProductId;
use crate::domain::product::Product;
use crate::wire::api::ProductView;
use rusqlite::Row;

/// A catalog product from a row whose first five columns are its id (16 bytes), SKU,
/// name, price in minor units and catalog stream version, in that order.
pub fn product_view(row: &Row<'_>) -> rusqlite::Result<ProductView> {
    Ok(ProductView {
        product: Product {
            id: ProductId::from_bytes(row.get(0)?),
            sku: row.get(1)?,
            name: row.get(2)?,
            price_minor: row.get::<_, i64>(3)? as u64,
        },
        version: row.get::<_, i64>(4)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn a_catalog_row_reads_as_the_product_and_its_version() {
        // Given a catalog row,
        let conn = Connection::open_in_memory().unwrap();
        let id = ProductId::new_v7();
        conn.execute_batch("CREATE TABLE catalog (id BLOB, sku TEXT, name TEXT, price_minor INTEGER, version INTEGER)")
            .unwrap();
        conn.execute(
            "INSERT INTO catalog VALUES (?1, 'A-1', 'Tea', 499, 3)",
            [id.as_bytes().as_slice()],
        )
        .unwrap();
        // when it is read, then every column lands in its field.
        let read = conn
            .query_row(
                "SELECT id, sku, name, price_minor, version FROM catalog",
                [],
                product_view,
            )
            .unwrap();
        assert_eq!(
            read,
            ProductView {
                product: Product {
                    id,
                    sku: "A-1".into(),
                    name: "Tea".into(),
                    price_minor: 499,
                },
                version: 3,
            }
        );
    }
}
