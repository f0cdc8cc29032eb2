//! The hub's event store: the authoritative, append-only log of every fact.
//!
//! Writes go through one dedicated thread ([`writer`]) that owns the only write
//! connection and group-commits: whatever requests are queued share one transaction and
//! one fsync. Reads use a pool of read-only connections (`reader`, private: callers read
//! through [`EventStore`]'s methods, and offline tools through [`LogFile`] (or [`PgLog`]), so no handler
//! names a SQL function). After each commit the writer publishes the new events on the
//! [`crate::bus::EventBus`]; nothing is published that is not on disk.

mod columns;
mod enrollment;
mod facts;
mod feed;
mod log_reads;
mod log_writer;
mod pg;
mod prune;
mod reader;
mod rows;
pub mod schema;
mod writer;

#[cfg(test)]
mod tests;

use crate::bus::EventBus;
use log_reads::LogReads;
use log_writer::LogWriter;
use shelfsync_common::domain::catalog::{CatalogCommand, CatalogState};
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::api::{StoreInfo, WriteResult};
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::{UploadEvent, UploadResult};
use shelfsync_common::{
    DomainError, EventEnvelope, EventId, EventMetadata, ExpectedVersion, InventoryCommand, InventoryState, ProductId,
    ReservationId, StoreId, StreamId,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub use enrollment::{EnrollmentCodeRecord, Redeemed, StoredCode};
pub use feed::{EventFeed, Page};
pub use pg::{migrate as migrate_postgres, PgLog, PgSettings};
pub use prune::Prunable;
pub(crate) use reader::{envelope_from_row, head as log_head, EVENT_COLUMNS};
pub use reader::{ReadPool, StoreStats, TokenRecord, VisiblePage};

/// The write side's state of one stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamState {
    /// A product's catalog stream.
    Catalog(CatalogState),
    /// A product's stock at one store.
    Inventory(InventoryState),
}

impl StreamState {
    /// Events applied so far (0 = the stream does not exist).
    pub fn version(&self) -> u64 {
        match self {
            StreamState::Catalog(s) => s.version,
            StreamState::Inventory(s) => s.version,
        }
    }
}

/// A domain command and the stream it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A catalog change (the stream is the product's catalog stream).
    Catalog(CatalogCommand),
    /// A stock change.
    Inventory {
        /// Which inventory stream.
        target: InventoryTarget,
        /// What to do.
        command: InventoryCommand,
    },
}

/// Which inventory stream a command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryTarget {
    /// A product at a store.
    Stream(ProductId, StoreId),
    /// The stream that holds this open reservation.
    Reservation(ReservationId),
}

/// One strict command, as the API hands it to the writer.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// What to do, and to which stream.
    pub command: Command,
    /// Optimistic-concurrency condition.
    pub expected: ExpectedVersion,
    /// Id of the (first) event; a retry with the same id returns the first answer.
    pub event_id: EventId,
    /// Digest of the request, to tell a retry from a different request reusing the id.
    pub fingerprint: Fingerprint,
    /// The digest the hub made of the same request before the one rule of
    /// [`Fingerprint`] (route and body JSON, the body's `event_id` included, no NUL):
    /// events written then still carry it, and a retry of one of them is still the same
    /// request. Only the API sets it; the log stores `fingerprint`.
    pub legacy_fingerprint: Option<Fingerprint>,
    /// Provenance of the events.
    pub metadata: EventMetadata,
}

impl CommandRequest {
    /// Whether `stored`, the fingerprint recorded with this request's event id, says the
    /// id was used for this very request.
    pub fn matches_stored(&self, stored: Fingerprint) -> bool {
        stored == self.fingerprint || Some(stored) == self.legacy_fingerprint
    }
}

/// Why a command was not appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The rules refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The expected version did not match.
    #[error("stream {stream} is at version {current}, expected {expected}")]
    VersionConflict {
        /// The stream.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// Where the stream is.
        current: u64,
    },
    /// The event id was used before for a different request.
    #[error("event id {0} was already used for a different request")]
    IdempotencyConflict(EventId),
    /// The store is not enrolled.
    #[error("store {0} is not enrolled")]
    UnknownStore(StoreId),
    /// Another product has this SKU.
    #[error("sku {sku:?} already belongs to product {owner}")]
    SkuTaken {
        /// The SKU.
        sku: String,
        /// Its product.
        owner: ProductId,
    },
    /// A store with this id is already enrolled.
    #[error("store {0} is already enrolled")]
    StoreExists(StoreId),
    /// Another store has this name (and a duplicate was not asked for).
    #[error("store {existing} is already enrolled as {name:?}; to enroll a second store with this name, ask for it explicitly (allow_duplicate_name)")]
    StoreNameTaken {
        /// The name.
        name: String,
        /// The store that has it.
        existing: StoreId,
    },
    /// A live token already has this name.
    #[error("a live token is already named {0:?}; revoke it first or pick another name")]
    TokenNameTaken(String),
    /// No enrollment code has this digest (mistyped, or pruned long after it was used).
    #[error("no such enrollment code: check it, or make a new one at the hub")]
    EnrollmentCodeUnknown,
    /// The enrollment code was used already.
    #[error("this enrollment code was used already: make a new one at the hub")]
    EnrollmentCodeUsed,
    /// The enrollment code has expired.
    #[error("this enrollment code has expired: make a new one at the hub")]
    EnrollmentCodeExpired,
    /// No open reservation has this id.
    #[error("reservation {0} is not open")]
    UnknownReservation(ReservationId),
    /// The disk or database failed; nothing of the request was written. Retry.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The writer has stopped (shutdown). Retry against a running hub.
    #[error("the event store is shutting down")]
    Unavailable,
}

/// A storage failure while opening the log or reading it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed (or could not be reached).
    #[error("postgres: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// A blocking task failed.
    #[error("background task failed: {0}")]
    Join(String),
    /// The file could not be brought to this build's schema.
    #[error(transparent)]
    Migration(#[from] shelfsync_common::sqlite::MigrationError),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// A stored time that does not read is a corrupt row.
impl From<time_text::BadTimeText> for ReadError {
    fn from(error: time_text::BadTimeText) -> Self {
        Self::Corrupt(error.to_string())
    }
}

/// A time with no stored form (outside 1970..=9999) cannot be written: a corrupt value.
impl From<shelfsync_common::domain::timestamp::TimeOutOfRange> for ReadError {
    fn from(error: shelfsync_common::domain::timestamp::TimeOutOfRange) -> Self {
        Self::Corrupt(format!("cannot be stored: {error}"))
    }
}

/// A handle on the event store; cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    writer: LogWriter,
    reads: LogReads,
    history: Arc<feed::History>,
    bus: EventBus,
    id_key: Arc<shelfsync_common::IdKey>,
    /// On PostgreSQL: the thread that publishes other hubs' commits on this hub's bus.
    follower: Option<Arc<pg::Follower>>,
    /// This hub process among the hubs of one database (leases, presence).
    instance: Arc<str>,
}

impl EventStore {
    /// Opens (creating and migrating if needed) the SQLite store at `path` and starts its
    /// writer.
    pub fn open(path: &Path, bus: EventBus) -> Result<Self, ReadError> {
        let writer::Started { writer, head, id_key } = writer::start(path, bus.clone())?;
        let reads = LogReads::Sqlite(Arc::new(ReadPool::new(path.to_owned())));
        Ok(Self::assemble(
            LogWriter::Sqlite(writer),
            reads,
            bus,
            head,
            id_key,
            None,
        ))
    }

    /// Opens the store on PostgreSQL (migrating the database if needed: hubs starting at
    /// once take turns), starts its writer and the follower of other hubs' commits.
    pub async fn open_postgres(settings: PgSettings, bus: EventBus) -> Result<Self, ReadError> {
        let publishing = bus.clone();
        let started = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || pg::start(settings, publishing))
                .await
                .map_err(|e| ReadError::Join(e.to_string()))??
        };
        let follower = pg::Follower::start(settings.clone(), bus.clone());
        let reads = LogReads::Postgres(Arc::new(pg::PgReads::new(settings)));
        let writer::Started { writer, head, id_key } = started;
        Ok(Self::assemble(
            LogWriter::Postgres(writer),
            reads,
            bus,
            head,
            id_key,
            Some(Arc::new(follower)),
        ))
    }

    fn assemble(
        writer: LogWriter,
        reads: LogReads,
        bus: EventBus,
        head: u64,
        id_key: shelfsync_common::IdKey,
        follower: Option<Arc<pg::Follower>>,
    ) -> Self {
        bus.set_head(head);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hub".into());
        let instance = format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>());
        Self {
            writer,
            history: Arc::new(feed::History::new(reads.clone())),
            reads,
            bus,
            id_key: Arc::new(id_key),
            follower,
            instance: instance.into(),
        }
    }

    /// The writer itself (tests queue work on it without waiting for the answer).
    #[cfg(test)]
    fn writer(&self) -> &LogWriter {
        &self.writer
    }

    /// A feed of every event after `after`, in order: history from the log, then live.
    pub fn feed(&self, after: u64) -> EventFeed {
        EventFeed::new(self.history.clone(), &self.bus, after)
    }

    /// The key that derives event ids from clients' idempotency keys (kept in the log's
    /// file, see [`shelfsync_common::IdKey`]).
    pub fn id_key(&self) -> &shelfsync_common::IdKey {
        &self.id_key
    }

    /// Runs one strict command through the writer.
    pub async fn execute(&self, request: CommandRequest) -> Result<WriteResult, WriteError> {
        self.writer
            .submit(|reply| writer::WriteOp::Command(Box::new(request), reply))
            .await
    }

    /// Registers a store without a token and without the name check (tests' fixtures).
    pub async fn add_store(&self, id: StoreId, name: String) -> Result<StoreInfo, WriteError> {
        self.writer
            .submit(|reply| writer::WriteOp::AddStore {
                id,
                name,
                token: None,
                allow_duplicate_name: true,
                reply,
            })
            .await
    }

    /// Enrolls a store together with its first token, in one transaction. A name another
    /// store has is refused (`StoreNameTaken`) unless `allow_duplicate_name`; the writer
    /// checks it, so two concurrent enrollments cannot both pass.
    pub async fn enroll_store(
        &self,
        id: StoreId,
        name: String,
        token: reader::TokenRecord,
        allow_duplicate_name: bool,
    ) -> Result<StoreInfo, WriteError> {
        let token = Some(Box::new(token));
        self.writer
            .submit(|reply| writer::WriteOp::AddStore {
                id,
                name,
                token,
                allow_duplicate_name,
                reply,
            })
            .await
    }

    /// Records a store's uploaded events (design section 7); one result per event, in order.
    /// What needs no writer state (the rules' pure checks, fingerprints, encoding the
    /// columns) runs here, on the caller's thread, before the writer takes them.
    pub async fn upload(&self, store: StoreId, events: Vec<UploadEvent>) -> Result<Vec<UploadResult>, WriteError> {
        let events: Vec<facts::Prepared> = events.into_iter().map(|event| facts::prepare(store, event)).collect();
        self.writer
            .submit(|reply| writer::WriteOp::Upload { store, events, reply })
            .await
    }

    /// Stores a new bearer token (its secret already hashed). Its name must be free among
    /// the live tokens of its role.
    pub async fn add_token(&self, token: reader::TokenRecord) -> Result<(), WriteError> {
        self.writer
            .submit(|reply| writer::WriteOp::AddToken(Box::new(token), reply))
            .await
    }

    /// Revokes the selected live tokens; says how many, and whose store tokens they were.
    pub async fn revoke_tokens(&self, selector: TokenSelector) -> Result<RevokedTokens, WriteError> {
        self.writer
            .submit(|reply| writer::WriteOp::RevokeTokens(selector, reply))
            .await
    }

    /// Replaces `store`'s tokens with `token` in one writer job: the old ones are revoked
    /// and the new one is stored in the same transaction, or nothing changes.
    pub async fn rotate_store_token(
        &self,
        store: StoreId,
        token: reader::TokenRecord,
    ) -> Result<RevokedTokens, WriteError> {
        let token = Box::new(token);
        self.writer
            .submit(|reply| writer::WriteOp::RotateStoreToken { store, token, reply })
            .await
    }

    /// Removes at most `limit` rows of `what` older than `cutoff` in one writer
    /// transaction (the retention job); says how many.
    pub async fn prune(&self, what: Prunable, cutoff: time::OffsetDateTime, limit: usize) -> Result<usize, WriteError> {
        let cutoff = time_text::encode(cutoff).map_err(|e| WriteError::Storage(e.to_string()))?;
        self.writer
            .submit(|reply| writer::WriteOp::Prune {
                what,
                cutoff,
                limit,
                reply,
            })
            .await
    }

    /// Checkpoints the WAL into the main file (scheduled maintenance).
    pub async fn checkpoint(&self) -> Result<(), WriteError> {
        self.writer.checkpoint().await
    }

    /// Whether `store` is enrolled (revoked or not).
    pub async fn store_enrolled(&self, store: StoreId) -> Result<bool, ReadError> {
        self.reads.store_enrolled(store).await
    }

    /// Every enrolled store.
    pub async fn stores(&self) -> Result<Vec<StoreInfo>, ReadError> {
        self.reads.stores().await
    }

    /// Every enrolled store and the durable counters the writer keeps for each, read
    /// together.
    pub async fn stores_with_stats(&self) -> Result<(Vec<StoreInfo>, HashMap<StoreId, StoreStats>), ReadError> {
        self.reads.stores_with_stats().await
    }

    /// The live (unrevoked) token whose secret has this digest.
    pub async fn live_token(&self, digest: [u8; 32]) -> Result<Option<TokenRecord>, ReadError> {
        self.reads.live_token(digest).await
    }

    /// A page of the events `store` may see after `after`: at most `limit`, scanning at
    /// most `scan_window` positions (a bounded primary-key range read).
    pub async fn visible_after(
        &self,
        store: StoreId,
        after: u64,
        limit: usize,
        scan_window: u64,
    ) -> Result<VisiblePage, ReadError> {
        self.reads.visible_after(store, after, limit, scan_window).await
    }

    /// Whether this hub runs the scheduled job `job` now: with several hubs on one
    /// database, the hub holding its lease (taken or renewed for `lease` by this call; a
    /// dead holder's lease runs out and another hub takes it). Always on SQLite.
    pub async fn lead(&self, job: &str, lease: std::time::Duration) -> Result<bool, ReadError> {
        self.reads.lead(job, &self.instance, lease).await
    }

    /// Shares this hub's view of its agents with the other hubs of its database.
    pub async fn share_presence(&self, seen: &[(StoreId, crate::fleet::Presence)]) -> Result<(), ReadError> {
        self.reads.share_presence(&self.instance, seen).await
    }

    /// The other hubs' views of their agents (their recent rows only).
    pub async fn others_presence(&self) -> Result<Vec<(StoreId, crate::fleet::Presence)>, ReadError> {
        self.reads.others_presence(&self.instance).await
    }

    /// With several hubs on one database: the stores whose tokens any hub revoked, from
    /// now on (their open push streams on this hub must end too). `None` on SQLite, where
    /// this hub took every revocation itself.
    pub fn revocations_elsewhere(&self) -> Option<tokio::sync::broadcast::Receiver<(StoreId, uuid::Uuid)>> {
        self.follower.as_ref().map(|follower| follower.revocations())
    }

    /// The in-process bus the writer publishes to.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// Events after `after` in position order, at most `limit`.
    pub async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, ReadError> {
        self.reads.events_after(after, limit).await
    }

    /// The position of the last committed event, read from the database (the bus head
    /// is this hub's view of it).
    pub async fn stored_head(&self) -> Result<u64, ReadError> {
        self.reads.head().await
    }

    /// Lets the writer finish what is queued, stops it, and waits for it. Writes sent
    /// after this through any clone answer [`WriteError::Unavailable`].
    pub async fn close(&self) {
        if let Some(follower) = &self.follower {
            follower.stop().await;
        }
        self.reads.close_idle();
        self.writer.close().await;
    }
}

/// Which tokens to revoke. Each role names its tokens in its own namespace, so a name
/// only ever selects channel tokens and a store's tokens are selected by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// Every token of a store.
    Store(StoreId),
    /// The channel token with this name.
    Channel(String),
}

/// What a revocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedTokens {
    /// How many live tokens were revoked.
    pub count: usize,
    /// The stores whose tokens were among them.
    pub stores: Vec<StoreId>,
    /// Each revoked store token: its store and its id (the push streams opened with it
    /// must end).
    pub store_tokens: Vec<(StoreId, uuid::Uuid)>,
}

/// The log file read directly, with no hub running (offline tools such as
/// `rebuild-projections`, and checkers that read what a stopped or killed hub left).
pub struct LogFile {
    conn: rusqlite::Connection,
}

impl LogFile {
    /// Opens the log at `path` read-only.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        Ok(Self {
            conn: schema::open_read_only(path)?,
        })
    }

    /// The position of the last event (0 when empty).
    pub fn head(&self) -> Result<u64, ReadError> {
        reader::head(&self.conn)
    }

    /// Events after `after` in position order, at most `limit`.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, ReadError> {
        reader::events_after(&self.conn, after, limit)
    }
}
