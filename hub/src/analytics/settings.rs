//! The analytics settings the admin API writes: a store's time zone and reorder points.
//! Each change commits on the durable connection and then tells the worker, which reloads
//! the settings before its next batch. A change applies from the next event the worker
//! folds (a reorder point set below the current stock raises its alert at the stream's
//! next event), and a rebuild folds the whole log with the settings of the day.

use super::{parse_time_zone, AnalyticsDb};
use crate::store::ReadError;
use rusqlite::params;
use shelfsync_common::{ProductId, StoreId};
use std::sync::Arc;

impl AnalyticsDb {
    /// Sets a store's time zone (an IANA name the caller has checked with
    /// [`parse_time_zone`]).
    pub async fn set_time_zone(self: &Arc<Self>, store: StoreId, time_zone: String) -> Result<(), ReadError> {
        debug_assert!(parse_time_zone(&time_zone).is_some());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO store_settings (store_id, time_zone) VALUES (?1, ?2)
                 ON CONFLICT (store_id) DO UPDATE SET time_zone = excluded.time_zone",
                params![&store.as_bytes()[..], time_zone],
            )?;
            Ok(())
        })
        .await?;
        self.settings_changed();
        Ok(())
    }

    /// Sets (or with `None` removes) a reorder point for `product` at `store`, or at every
    /// store without its own when `store` is `None`.
    pub async fn set_reorder_point(
        self: &Arc<Self>,
        product: ProductId,
        store: Option<StoreId>,
        point: Option<i64>,
    ) -> Result<(), ReadError> {
        let store = store.map(|s| s.as_bytes().to_vec()).unwrap_or_default();
        self.write(move |tx| {
            match point {
                Some(point) => tx.execute(
                    "INSERT INTO reorder_points (product_id, store_id, reorder_point) VALUES (?1, ?2, ?3)
                     ON CONFLICT (product_id, store_id) DO UPDATE SET reorder_point = excluded.reorder_point",
                    params![&product.as_bytes()[..], store, point],
                )?,
                None => tx.execute(
                    "DELETE FROM reorder_points WHERE product_id = ?1 AND store_id = ?2",
                    params![&product.as_bytes()[..], store],
                )?,
            };
            Ok(())
        })
        .await?;
        self.settings_changed();
        Ok(())
    }
}
