//! Sample data for `shelfsync-hub demo`: three stores, a small catalog and opening stock,
//! written as ordinary commands (so the read model and the log hold them like any other
//! data). Ids are fixed, so the README's curl examples work as printed.

use crate::api::stores::store_token;
use crate::store::{Command, CommandRequest, EventStore, InventoryTarget, WriteError};
use shelfsync_common::domain::catalog::CatalogCommand;
use shelfsync_common::server::secret::write_private;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{EventId, EventMetadata, InventoryCommand, Origin, Product, ProductId, StockQuantity, StoreId};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// A demo store.
pub struct DemoStore {
    /// Fixed id.
    pub id: StoreId,
    /// Name.
    pub name: &'static str,
}

/// The demo stores.
pub fn stores() -> Vec<DemoStore> {
    [("Berlin Mitte", 1u8), ("Hamburg Altona", 2), ("Munich Schwabing", 3)]
        .into_iter()
        .map(|(name, n)| DemoStore {
            id: StoreId(fixed_id(0x5701, n)),
            name,
        })
        .collect()
}

/// The demo catalog: (sku, name, price in cents).
pub fn products() -> Vec<Product> {
    [
        ("COFFEE-250", "Espresso beans 250 g", 699u64),
        ("TEA-GREEN", "Green tea, 20 bags", 349),
        ("MUG-WHITE", "White mug 300 ml", 899),
        ("FILTER-4", "Coffee filters No. 4", 249),
        ("GRINDER-M", "Manual coffee grinder", 3499),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (sku, name, price))| Product {
        id: ProductId(fixed_id(0x9d01, i as u8 + 1)),
        sku: sku.into(),
        name: name.into(),
        price_minor: price,
    })
    .collect()
}

/// A readable fixed UUIDv7-shaped id: `0193xxxx-0000-7000-8000-0000000000nn`.
fn fixed_id(kind: u16, n: u8) -> Uuid {
    Uuid::from_fields(0x0193_0000 | u32::from(kind), 0, 0x7000, &[0x80, 0, 0, 0, 0, 0, 0, n])
}

/// Where the demo keeps a store's token: `<data_dir>/store-tokens/<store id>` (mode 0600),
/// for the demo's edge agents to read.
pub fn store_token_path(data_dir: &Path, store: StoreId) -> PathBuf {
    data_dir.join("store-tokens").join(store.to_string())
}

/// Writes the sample data into an empty store, and each demo store's token into the data
/// directory. Returns false (and writes nothing) when the log already holds the whole
/// seed, or holds anything that is not the seed.
///
/// A first start killed while seeding leaves a prefix of the seed in the log: the next
/// start finishes it (the seed's event ids are fixed), instead of serving a partial demo.
pub async fn seed_if_empty(log: &EventStore, data_dir: &Path) -> Result<bool, SeedError> {
    let mut counter = 0u32;
    let mut run = |command: Command| {
        counter += 1;
        CommandRequest {
            command,
            expected: Default::default(),
            event_id: EventId::from_name("demo-seed", &counter.to_string()),
            fingerprint: Fingerprint::from_bytes([counter as u8; 16]),
            legacy_fingerprint: None,
            metadata: EventMetadata {
                origin: Origin::Hub,
                actor: "demo-seed".into(),
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                occurred_at: time::OffsetDateTime::now_utc(),
                recorded_at: None,
            },
        }
    };
    let mut requests = Vec::new();
    for product in products() {
        requests.push(run(Command::Catalog(CatalogCommand::RegisterProduct { product })));
    }
    for (s, store_info) in stores().iter().enumerate() {
        for (p, product) in products().iter().enumerate() {
            let Ok(quantity) = StockQuantity::new(5 + ((s * 7 + p * 3) % 20) as i64) else {
                continue;
            };
            requests.push(run(Command::Inventory {
                target: InventoryTarget::Stream(product.id, store_info.id),
                command: InventoryCommand::AddStock { quantity },
            }));
        }
    }
    let written = log.read_after(0, requests.len()).await?;
    let seed_prefix = written.iter().zip(&requests).all(|(e, r)| e.event_id == r.event_id);
    if !seed_prefix || written.len() == requests.len() {
        return Ok(false);
    }
    shelfsync_common::sqlite::create_private_dir(&data_dir.join("store-tokens"))?;
    for demo in stores() {
        let path = store_token_path(data_dir, demo.id);
        let (secret, token) = store_token(demo.id);
        match log.enroll_store(demo.id, demo.name.into(), token, false).await {
            Ok(_) => write_private(&path, &secret)?,
            // Enrolled by an earlier start that was stopped while seeding.
            Err(WriteError::StoreExists(_)) if path.exists() => {}
            Err(WriteError::StoreExists(_)) => {
                // ...and stopped before the token file was written: issue a new token.
                let (secret, token) = store_token(demo.id);
                log.rotate_store_token(demo.id, token).await?;
                write_private(&path, &secret)?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    for request in requests.into_iter().skip(written.len()) {
        log.execute(request).await?;
    }
    Ok(true)
}

/// Why the demo data could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The store refused.
    #[error(transparent)]
    Append(#[from] WriteError),
    /// A token file could not be written.
    #[error("writing a demo store token: {0}")]
    Io(#[from] std::io::Error),
    /// The log could not be read.
    #[error("reading the event log: {0}")]
    Store(#[from] crate::store::ReadError),
}
