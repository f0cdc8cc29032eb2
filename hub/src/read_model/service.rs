//! The query service: owns every read the API makes of the read model, and the three
//! things that stand in front of it (design, section 5).
//!
//! - **A TTL cache that events invalidate** (moka, 30 s by default). Every value is read
//!   together with the projection checkpoint of its snapshot ([`AtPosition`]) and cached
//!   with it. An entry is served only while it is younger than the TTL *and* no committed
//!   batch has touched its key after that position (the projector's [`TouchLog`]). This
//!   closes the race where a query reads an old value, the projector commits, and the
//!   query then caches the old value: the check happens on every hit, so an entry cached
//!   "too late" is still recognised as older than the last touch of its key.
//! - **A circuit breaker** ([`BreakerGuard`], 5 failures in 10 s open it for 5 s) around
//!   every read-model call (a valid cache hit needs no call). On a miss while it is open,
//!   or when a call fails, the answer is the last known good value of that key marked
//!   `stale` (kept in a second cache that outlives the TTL), else
//!   [`QueryError::Unavailable`] with a retry-after (or [`QueryError::Storage`] for a lone
//!   failure), which the API turns into a 503 `problem+json`.
//! - **Read-your-writes**: a query may pass `min_position` (a write's answer); it waits,
//!   bounded (2 s by default), until the projection has reached it, else
//!   [`QueryError::NotCaughtUp`]; and it is never answered from an entry older than that.
//!   A `min_position` past the log's head names no write at all (a write is published
//!   before it is answered), so waiting cannot help: [`QueryError::PastHead`] at once.

use super::{AtPosition, ReadModelQueries, TouchLog, ViewKey};
use crate::store::ReadError;
use futures_util::future::BoxFuture;
use moka::future::Cache;
use shelfsync_common::breaker::{BreakerConfig, BreakerGuard, BreakerState, Failure, Permit, Transition};
use shelfsync_common::wire::api::{ProductStock, ProductView, StockLevel};
use shelfsync_common::{ProductId, StoreId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Settings of the query service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryConfig {
    /// How long a cached value is served without asking the read model (30 s).
    pub ttl: Duration,
    /// How long a last-known-good value is kept for stale answers (1 h).
    pub stale_ttl: Duration,
    /// Entries per cache (a product's stock counts one per store).
    pub capacity: u64,
    /// Longest wait for the projection to reach a `min_position` (2 s).
    pub min_position_wait: Duration,
    /// A read-model call slower than this counts as failed (5 s).
    pub call_timeout: Duration,
    /// The breaker: 5 failures in 10 s open it; it probes again after 5 s.
    pub breaker: BreakerConfig,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            stale_ttl: Duration::from_secs(3600),
            capacity: 100_000,
            min_position_wait: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            breaker: BreakerConfig {
                failure_threshold: 5,
                failure_window: Duration::from_secs(10),
                // The read model is a local file: probe it again soon, every time.
                open_for: Duration::from_secs(5),
                first_open_for: Duration::from_secs(5),
            },
        }
    }
}

impl From<&crate::config::QueryConfig> for QueryConfig {
    fn from(config: &crate::config::QueryConfig) -> Self {
        Self {
            ttl: Duration::from_secs(config.cache_ttl_secs),
            min_position_wait: Duration::from_millis(config.min_position_wait_ms),
            ..Self::default()
        }
    }
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// The value.
    pub value: T,
    /// True when the read model could not be asked and this is the last known value.
    pub stale: bool,
    /// The projection position the value reflects.
    pub position: u64,
}

/// Why a query has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The read model is failing (breaker open) and nothing is cached: 503, retry later.
    #[error("the read model is unavailable; retry in {retry_after:?}")]
    Unavailable {
        /// When a new attempt may succeed.
        retry_after: Duration,
    },
    /// The projection did not reach `min_position` in time: 503, retry shortly.
    #[error("the read model reached position {reached}, not yet {wanted}")]
    NotCaughtUp {
        /// The requested `min_position`.
        wanted: u64,
        /// Where the projection is.
        reached: u64,
    },
    /// The read model failed on this query and nothing is cached.
    #[error("read model: {0}")]
    Storage(String),
    /// `min_position` is past the log's head: no write has that position yet.
    #[error("min_position {wanted} is past the log's head ({head}): no write has that position")]
    PastHead {
        /// The requested `min_position`.
        wanted: u64,
        /// The log's head.
        head: u64,
    },
}

/// A cached value of any query kind.
#[derive(Debug, Clone)]
enum Cached {
    Stock(Option<StockLevel>),
    ProductStock(ProductStock),
    Product(Option<ProductView>),
}

/// The value types the cache holds.
trait CachedValue: Clone + Send + Sync + 'static {
    fn into_cached(self) -> Cached;
    fn from_cached(cached: &Cached) -> Option<Self>;
}

impl CachedValue for Option<StockLevel> {
    fn into_cached(self) -> Cached {
        Cached::Stock(self)
    }
    fn from_cached(cached: &Cached) -> Option<Self> {
        match cached {
            Cached::Stock(value) => Some(value.clone()),
            _ => None,
        }
    }
}

impl CachedValue for ProductStock {
    fn into_cached(self) -> Cached {
        Cached::ProductStock(self)
    }
    fn from_cached(cached: &Cached) -> Option<Self> {
        match cached {
            Cached::ProductStock(value) => Some(value.clone()),
            _ => None,
        }
    }
}

impl CachedValue for Option<ProductView> {
    fn into_cached(self) -> Cached {
        Cached::Product(self)
    }
    fn from_cached(cached: &Cached) -> Option<Self> {
        match cached {
            Cached::Product(value) => Some(value.clone()),
            _ => None,
        }
    }
}

/// One cached value with the position it was read at.
#[derive(Debug)]
struct Entry {
    value: Cached,
    position: u64,
    /// On tokio's clock, so that the TTL follows paused time in tests.
    stored_at: Instant,
}

impl Entry {
    fn weight(&self) -> u32 {
        match &self.value {
            Cached::ProductStock(stock) => u32::try_from(stock.stores.len()).unwrap_or(u32::MAX).saturating_add(1),
            Cached::Stock(_) | Cached::Product(_) => 1,
        }
    }
}

type EntryCache = Cache<ViewKey, Arc<Entry>>;

/// The read side as the API sees it. Share it in an `Arc`.
pub struct QueryService {
    read_model: Arc<dyn ReadModelQueries>,
    projected: watch::Receiver<u64>,
    log_head: watch::Receiver<u64>,
    /// With several hubs on one database: the log, whose stored head tells whether a
    /// `min_position` this hub has not heard of yet was written by another hub.
    shared_log: Option<crate::store::EventStore>,
    touches: Arc<TouchLog>,
    config: QueryConfig,
    fresh: EntryCache,
    last_good: EntryCache,
    breaker: BreakerGuard,
}

impl QueryService {
    /// A service over `read_model`, following the projector's `projected` position and
    /// `touches` (see [`crate::read_model::ProjectionHandle`]) and the event log's head.
    pub fn new(
        read_model: Arc<dyn ReadModelQueries>,
        projected: watch::Receiver<u64>,
        log_head: watch::Receiver<u64>,
        touches: Arc<TouchLog>,
        config: QueryConfig,
    ) -> Self {
        let cache = |ttl: Duration| {
            Cache::builder()
                .max_capacity(config.capacity)
                .weigher(|_: &ViewKey, entry: &Arc<Entry>| entry.weight())
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build()
        };
        metrics::gauge!(BREAKER_STATE).set(BreakerState::Closed.gauge_value());
        Self {
            read_model,
            projected,
            log_head,
            shared_log: None,
            touches,
            fresh: cache(config.ttl),
            last_good: cache(config.stale_ttl.max(config.ttl)),
            breaker: BreakerGuard::new(config.breaker, now, on_breaker_change),
            config,
        }
    }

    /// Serves a hub that shares its log with other hubs: a `min_position` past this hub's
    /// head is checked against the database's head before it is called past the head,
    /// since another hub may have written it a moment ago (then the query waits for it
    /// like for any position not projected yet).
    pub fn sharing(mut self, log: crate::store::EventStore) -> Self {
        self.shared_log = Some(log);
        self
    }

    /// Stock of a product at a store (`None`: the store never had the product).
    pub async fn stock_level(
        &self,
        product: ProductId,
        store: StoreId,
        min_position: Option<u64>,
    ) -> Result<Answer<Option<StockLevel>>, QueryError> {
        self.answer(ViewKey::Stock(product, store), min_position, || {
            self.read_model.stock_level(product, store)
        })
        .await
    }

    /// Stock of a product at every store, with totals.
    pub async fn product_stock(
        &self,
        product: ProductId,
        min_position: Option<u64>,
    ) -> Result<Answer<ProductStock>, QueryError> {
        self.answer(ViewKey::ProductStock(product), min_position, || {
            self.read_model.product_stock(product)
        })
        .await
    }

    /// A product by id.
    pub async fn product(
        &self,
        id: ProductId,
        min_position: Option<u64>,
    ) -> Result<Answer<Option<ProductView>>, QueryError> {
        self.answer(ViewKey::Product(id), min_position, || self.read_model.product(id))
            .await
    }

    /// A product by SKU.
    pub async fn product_by_sku(
        &self,
        sku: String,
        min_position: Option<u64>,
    ) -> Result<Answer<Option<ProductView>>, QueryError> {
        let key = ViewKey::Sku(sku.clone());
        self.answer(key, min_position, || self.read_model.product_by_sku(sku))
            .await
    }

    /// The position the projection has reached.
    pub fn projected_position(&self) -> u64 {
        *self.projected.borrow()
    }

    /// The read-model breaker's phase (for `/readyz` and status pages).
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The failure that last opened the breaker.
    pub fn breaker_trip_reason(&self) -> Option<String> {
        self.breaker.trip_reason()
    }

    /// The read model behind the service (uncached, unguarded).
    pub fn read_model(&self) -> &Arc<dyn ReadModelQueries> {
        &self.read_model
    }

    async fn answer<'a, T: CachedValue>(
        &'a self,
        key: ViewKey,
        min_position: Option<u64>,
        fetch: impl FnOnce() -> BoxFuture<'a, Result<AtPosition<T>, ReadError>>,
    ) -> Result<Answer<T>, QueryError> {
        self.caught_up(min_position).await?;
        let wanted = min_position.unwrap_or(0);
        if let Some(entry) = self.fresh.get(&key).await {
            if let Some(value) = self.usable::<T>(&key, &entry, wanted) {
                metrics::counter!("shelfsync_hub_query_cache_total", "result" => "hit").increment(1);
                return Ok(Answer {
                    value,
                    stale: false,
                    position: entry.position,
                });
            }
            self.fresh.invalidate(&key).await;
        }
        metrics::counter!("shelfsync_hub_query_cache_total", "result" => "miss").increment(1);
        let call = match self.acquire() {
            Ok(call) => call,
            Err(open) => {
                let error = QueryError::Unavailable {
                    retry_after: open.retry_after,
                };
                return self.fallback(&key, wanted, error).await;
            }
        };
        let result = match tokio::time::timeout(self.config.call_timeout, fetch()).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.config.call_timeout)),
        };
        match result {
            Ok(AtPosition { value, position }) => {
                call.succeeded();
                let entry = Arc::new(Entry {
                    value: value.clone().into_cached(),
                    position,
                    stored_at: Instant::now(),
                });
                self.remember(key, entry).await;
                Ok(Answer {
                    value,
                    stale: false,
                    position,
                })
            }
            Err(detail) => {
                let error = if let Some(open_for) = failed(call, &key, &detail) {
                    QueryError::Unavailable { retry_after: open_for }
                } else {
                    QueryError::Storage(detail)
                };
                self.fallback(&key, wanted, error).await
            }
        }
    }

    /// Waits (bounded) until the projection has reached `min_position`.
    async fn caught_up(&self, min_position: Option<u64>) -> Result<(), QueryError> {
        let Some(wanted) = min_position else {
            return Ok(());
        };
        let mut head = *self.log_head.borrow();
        if wanted > head {
            if let Some(log) = &self.shared_log {
                head = head.max(
                    log.stored_head()
                        .await
                        .map_err(|e| QueryError::Storage(e.to_string()))?,
                );
            }
        }
        if wanted > head {
            return Err(QueryError::PastHead { wanted, head });
        }
        let mut projected = self.projected.clone();
        let reached = tokio::time::timeout(self.config.min_position_wait, projected.wait_for(|p| *p >= wanted))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if reached {
            return Ok(());
        }
        let reached = *self.projected.borrow();
        metrics::counter!("shelfsync_hub_query_not_caught_up_total").increment(1);
        tracing::debug!(wanted, reached, "the read model did not reach min_position in time");
        Err(QueryError::NotCaughtUp { wanted, reached })
    }

    /// The cached value, if the entry may still be served: younger than the TTL, at or
    /// after `wanted`, and not touched by a batch committed after it was read.
    fn usable<T: CachedValue>(&self, key: &ViewKey, entry: &Entry, wanted: u64) -> Option<T> {
        let fresh = entry.position >= wanted
            && entry.stored_at.elapsed() < self.config.ttl
            && self.touches.is_current(key, entry.position);
        if fresh {
            T::from_cached(&entry.value)
        } else {
            None
        }
    }

    async fn remember(&self, key: ViewKey, entry: Arc<Entry>) {
        let newer = self
            .last_good
            .get(&key)
            .await
            .is_none_or(|known| known.position <= entry.position);
        if newer {
            self.last_good.insert(key.clone(), entry.clone()).await;
        }
        // Touched after our snapshot: the value is already old (a hit would refuse it).
        if self.touches.is_current(&key, entry.position) {
            self.fresh.insert(key, entry).await;
        }
    }

    /// The last known good value marked stale, else `error`.
    async fn fallback<T: CachedValue>(
        &self,
        key: &ViewKey,
        wanted: u64,
        error: QueryError,
    ) -> Result<Answer<T>, QueryError> {
        if let Some(entry) = self.last_good.get(key).await {
            if entry.position >= wanted {
                if let Some(value) = T::from_cached(&entry.value) {
                    metrics::counter!("shelfsync_hub_query_stale_answers_total").increment(1);
                    tracing::debug!(?key, position = entry.position, %error, "answering the last known value, marked stale");
                    return Ok(Answer {
                        value,
                        stale: true,
                        position: entry.position,
                    });
                }
            }
        }
        Err(error)
    }

    /// Asks the breaker for a call.
    fn acquire(&self) -> Result<Permit<'_>, shelfsync_common::breaker::BreakerOpen> {
        let call = self.breaker.acquire()?;
        if call.is_probe() {
            tracing::info!("probing the read model");
        }
        Ok(call)
    }
}

/// Reports a failed call; the open period when it opened the breaker.
fn failed(call: Permit<'_>, key: &ViewKey, detail: &str) -> Option<Duration> {
    metrics::counter!("shelfsync_hub_read_model_failures_total").increment(1);
    let opened = call.failed(Failure::Failed, detail);
    if opened.is_none() {
        tracing::warn!(error = detail, ?key, "read model query failed");
    }
    opened
}

/// The read-model breaker's gauge: 0 closed, 1 half-open, 2 open.
const BREAKER_STATE: &str = "shelfsync_hub_read_model_breaker_state";

/// Logs the breaker's phase changes and sets its gauge.
fn on_breaker_change(change: Transition<'_>) {
    match change.to {
        BreakerState::Open => tracing::error!(
            error = change.reason.unwrap_or(""),
            open_for = ?change.open_for,
            "read model failing; circuit breaker opened"
        ),
        BreakerState::Closed => tracing::info!("the read model answered; circuit breaker closed"),
        BreakerState::HalfOpen => {}
    }
    metrics::gauge!(BREAKER_STATE).set(change.to.gauge_value());
}

/// Now on tokio's clock (paused in tests), as the std instant the breaker takes.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

#[cfg(test)]
mod tests;
