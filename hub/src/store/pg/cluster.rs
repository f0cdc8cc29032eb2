//! What the hubs of one database share besides the log: job leases (a scheduled job runs
//! on one hub at a time, and another takes over within a lease when that hub dies) and
//! the agents' presence (the fleet view shows every agent whichever hub it talks to).

use super::reads::PgReads;
use crate::fleet::Presence;
use crate::store::rows::StoredRow;
use crate::store::ReadError;
use shelfsync_common::sqlite::time_text;
use shelfsync_common::StoreId;
use std::time::Duration;
use time::OffsetDateTime;

/// A hub's presence rows older than this are ignored (that hub stopped refreshing them:
/// it stopped or died, and its agents have moved to another hub).
pub const PRESENCE_FRESH: Duration = Duration::from_secs(30);

/// Takes or renews the lease on `job` for `holder` for `lease`; whether `holder` has it.
pub async fn lead(reads: &PgReads, job: &str, holder: &str, lease: Duration) -> Result<bool, ReadError> {
    let millis = lease.as_millis() as i64;
    reads
        .run(async |client| {
            let row = client
                .query_opt(
                    "INSERT INTO job_leases (name, holder, until)
                     VALUES ($1, $2, now() + make_interval(secs => $3::bigint / 1000.0))
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                     WHERE job_leases.until < now() OR job_leases.holder = excluded.holder
                     RETURNING holder",
                    &[&job, &holder, &millis],
                )
                .await?;
            Ok(row.is_some())
        })
        .await
}

/// Writes this hub's view of its agents (one statement for all of them).
pub async fn share_presence(reads: &PgReads, hub: &str, seen: &[(StoreId, Presence)]) -> Result<(), ReadError> {
    if seen.is_empty() {
        return Ok(());
    }
    let mut stores = Vec::with_capacity(seen.len());
    let mut last_seen = Vec::with_capacity(seen.len());
    let mut heartbeats = Vec::with_capacity(seen.len());
    let mut heartbeat_at = Vec::with_capacity(seen.len());
    let mut streams = Vec::with_capacity(seen.len());
    let text = |at: Option<OffsetDateTime>| at.map(time_text::encode).transpose();
    for (store, presence) in seen {
        stores.push(store.as_bytes().to_vec());
        last_seen.push(text(presence.last_seen)?);
        heartbeats.push(
            presence
                .heartbeat
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| ReadError::Corrupt(e.to_string()))?,
        );
        heartbeat_at.push(text(presence.heartbeat_at)?);
        streams.push(i64::from(presence.push_streams));
    }
    reads
        .run(async |client| {
            client
                .execute(
                    "INSERT INTO presence (hub, store_id, last_seen, heartbeat, heartbeat_at, push_streams, updated_at)
                     SELECT $1, * , now() FROM UNNEST($2::bytea[], $3::text[], $4::text[], $5::text[], $6::bigint[])
                     ON CONFLICT (hub, store_id) DO UPDATE SET last_seen = excluded.last_seen,
                         heartbeat = excluded.heartbeat, heartbeat_at = excluded.heartbeat_at,
                         push_streams = excluded.push_streams, updated_at = excluded.updated_at",
                    &[&hub, &stores, &last_seen, &heartbeats, &heartbeat_at, &streams],
                )
                .await?;
            Ok(())
        })
        .await
}

/// The presence rows the other hubs refreshed lately.
pub async fn others_presence(reads: &PgReads, hub: &str) -> Result<Vec<(StoreId, Presence)>, ReadError> {
    let fresh = PRESENCE_FRESH.as_secs() as i64;
    let rows = reads
        .run(async |client| {
            Ok(client
                .query(
                    "SELECT store_id, last_seen, heartbeat, heartbeat_at, push_streams FROM presence
                     WHERE hub <> $1 AND updated_at > now() - make_interval(secs => $2::bigint)",
                    &[&hub, &fresh],
                )
                .await?)
        })
        .await?;
    rows.iter()
        .map(|row| {
            let time = |index: usize| -> Result<Option<OffsetDateTime>, ReadError> {
                let text: Option<&str> = row.try_get(index)?;
                Ok(text.map(time_text::decode).transpose()?)
            };
            let heartbeat: Option<&str> = row.try_get(2)?;
            Ok((
                StoreId::from_bytes(row.fixed(0)?),
                Presence {
                    last_seen: time(1)?,
                    heartbeat: heartbeat
                        .map(serde_json::from_str)
                        .transpose()
                        .map_err(|e| ReadError::Corrupt(e.to_string()))?,
                    heartbeat_at: time(3)?,
                    push_streams: u32::try_from(row.int(4)?).unwrap_or(u32::MAX),
                },
            ))
        })
        .collect()
}
