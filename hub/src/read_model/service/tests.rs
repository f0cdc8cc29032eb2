//! The query service: cache, invalidation by touched keys, breaker, read-your-writes.

use super::*;
use crate::read_model::testing::{reach, Fixture};
use crate::read_model::{self, OpenReservation, ReadModel};
use shelfsync_common::{Origin, ReservationId};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// A read model whose answers, position and health the test sets.
#[derive(Default)]
struct Fake {
    failing: AtomicBool,
    calls: AtomicUsize,
    position: AtomicU64,
    on_hand: AtomicI64,
}

impl Fake {
    fn new(position: u64, on_hand: i64) -> Arc<Self> {
        let fake = Self::default();
        fake.set(position, on_hand);
        Arc::new(fake)
    }

    fn set(&self, position: u64, on_hand: i64) {
        self.position.store(position, Ordering::SeqCst);
        self.on_hand.store(on_hand, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn unsupported<T: Send + 'static>() -> BoxFuture<'static, Result<T, ReadError>> {
    Box::pin(async { Err(ReadError::Corrupt("not in this fake".into())) })
}

impl ReadModelQueries for Fake {
    fn stock_level(
        &self,
        product: ProductId,
        store: StoreId,
    ) -> BoxFuture<'_, Result<AtPosition<Option<StockLevel>>, ReadError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(ReadError::Corrupt("disk I/O error".into()));
            }
            let position = self.position.load(Ordering::SeqCst);
            let on_hand = self.on_hand.load(Ordering::SeqCst);
            Ok(AtPosition {
                value: Some(StockLevel {
                    product_id: product,
                    store_id: store,
                    on_hand,
                    reserved: 0,
                    available: on_hand,
                    version: 1,
                    position,
                    allocation: None,
                }),
                position,
            })
        })
    }
    fn product_stock(&self, _: ProductId) -> BoxFuture<'_, Result<AtPosition<ProductStock>, ReadError>> {
        unsupported()
    }
    fn product(&self, _: ProductId) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, ReadError>> {
        unsupported()
    }
    fn product_by_sku(&self, _: String) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, ReadError>> {
        unsupported()
    }
    fn open_reservations(&self, _: StoreId) -> BoxFuture<'_, Result<AtPosition<Vec<OpenReservation>>, ReadError>> {
        unsupported()
    }
    fn expired_reservations(
        &self,
        _: Origin,
        _: OffsetDateTime,
    ) -> BoxFuture<'_, Result<Vec<ReservationId>, ReadError>> {
        unsupported()
    }
    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, ReadError>> {
        unsupported()
    }
}

fn service_over(fake: &Arc<Fake>, projected: watch::Receiver<u64>) -> QueryService {
    QueryService::new(
        fake.clone(),
        projected,
        watch::channel(u64::MAX).1,
        Arc::new(TouchLog::new()),
        QueryConfig::default(),
    )
}

fn ids() -> (ProductId, StoreId) {
    (ProductId::new_v7(), StoreId::new_v7())
}

fn on_hand(answer: &Answer<Option<StockLevel>>) -> i64 {
    answer.value.as_ref().expect("a stock level").on_hand
}

#[test]
fn queries_can_be_awaited_from_other_threads() {
    fn send<T: Send>(_: &T) {}
    let fake = Fake::new(1, 1);
    let service = service_over(&fake, watch::channel(1).1);
    let (product, store) = ids();
    send(&service.stock_level(product, store, Some(1)));
    send(&service.product_stock(product, None));
    send(&service.product_by_sku("A".into(), None));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_five_failures_then_answers_stale_or_unavailable_and_closes_on_a_good_probe() {
    let fake = Fake::new(1, 5);
    let (_projected_tx, projected) = watch::channel(1);
    let service = service_over(&fake, projected);
    let (product, store) = ids();
    let first = service.stock_level(product, store, None).await.unwrap();
    assert_eq!((on_hand(&first), first.stale), (5, false));

    fake.failing.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(31)).await; // past the TTL: ask the read model again
    for failure in 1..=5 {
        let answer = service.stock_level(product, store, None).await.unwrap();
        assert!(
            answer.stale,
            "failure {failure} answers the last known value, marked stale"
        );
        assert_eq!(on_hand(&answer), 5);
        let expected = if failure < 5 {
            BreakerState::Closed
        } else {
            BreakerState::Open
        };
        assert_eq!(service.breaker_state(), expected, "after failure {failure}");
    }
    assert_eq!(fake.calls(), 6);
    assert_eq!(
        service.breaker_trip_reason().as_deref(),
        Some("corrupt row: disk I/O error")
    );

    // Open: nobody asks the read model.
    let answer = service.stock_level(product, store, None).await.unwrap();
    assert!(answer.stale);
    let (_, unseen) = ids();
    let error = service.stock_level(product, unseen, None).await.unwrap_err();
    assert_eq!(
        error,
        QueryError::Unavailable {
            retry_after: Duration::from_secs(5)
        }
    );
    assert_eq!(fake.calls(), 6);

    // After the open period one probe passes; a good answer closes the breaker.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(service.breaker_state(), BreakerState::HalfOpen);
    fake.failing.store(false, Ordering::SeqCst);
    fake.set(2, 7);
    let answer = service.stock_level(product, store, None).await.unwrap();
    assert_eq!((on_hand(&answer), answer.stale, answer.position), (7, false, 2));
    assert_eq!(service.breaker_state(), BreakerState::Closed);
    assert_eq!(fake.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_breaker_again() {
    let fake = Fake::new(1, 5);
    let (_projected_tx, projected) = watch::channel(1);
    let service = service_over(&fake, projected);
    let (product, store) = ids();
    fake.failing.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        let error = service.stock_level(product, store, None).await.unwrap_err();
        assert!(matches!(error, QueryError::Storage(_)), "{error:?}");
    }
    // The failure that opens the breaker already answers "unavailable, retry later".
    let error = service.stock_level(product, store, None).await.unwrap_err();
    assert!(matches!(error, QueryError::Unavailable { .. }), "{error:?}");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(service.breaker_state(), BreakerState::HalfOpen);
    let calls = fake.calls();
    assert!(service.stock_level(product, store, None).await.is_err());
    assert_eq!(fake.calls(), calls + 1, "the probe asked the read model");
    assert_eq!(service.breaker_state(), BreakerState::Open);
    assert!(service.stock_level(product, store, None).await.is_err());
    assert_eq!(fake.calls(), calls + 1);
}

#[tokio::test(start_paused = true)]
async fn a_min_position_past_the_log_head_is_refused_at_once() {
    let fake = Fake::new(3, 5);
    let (_projected_tx, projected) = watch::channel(3);
    let (_head_tx, log_head) = watch::channel(10);
    let service = QueryService::new(
        fake.clone(),
        projected,
        log_head,
        Arc::new(TouchLog::new()),
        QueryConfig::default(),
    );
    let (product, store) = ids();
    let started = Instant::now();
    let error = service.stock_level(product, store, Some(11)).await.unwrap_err();
    assert_eq!(error, QueryError::PastHead { wanted: 11, head: 10 });
    assert_eq!(started.elapsed(), Duration::ZERO, "waiting cannot help");
    assert_eq!(fake.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn min_position_waits_for_the_projection_then_gives_up_with_not_caught_up() {
    let fake = Fake::new(3, 5);
    let (projected_tx, projected) = watch::channel(3);
    let service = service_over(&fake, projected);
    let (product, store) = ids();
    let mover = tokio::spawn({
        let fake = fake.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            fake.set(10, 6);
            projected_tx.send_replace(10);
            projected_tx
        }
    });
    let started = Instant::now();
    let answer = service.stock_level(product, store, Some(10)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    assert_eq!((on_hand(&answer), answer.position), (6, 10));
    let _projected_tx = mover.await.unwrap();

    let started = Instant::now();
    let error = service.stock_level(product, store, Some(20)).await.unwrap_err();
    assert_eq!(
        error,
        QueryError::NotCaughtUp {
            wanted: 20,
            reached: 10
        }
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(service.projected_position(), 10);
}

#[tokio::test(start_paused = true)]
async fn entries_live_for_the_ttl_and_never_answer_an_older_min_position() {
    let fake = Fake::new(5, 5);
    let (projected_tx, projected) = watch::channel(5);
    let service = service_over(&fake, projected);
    let (product, store) = ids();
    assert_eq!(on_hand(&service.stock_level(product, store, None).await.unwrap()), 5);
    fake.set(7, 8);
    projected_tx.send_replace(7);
    tokio::time::advance(Duration::from_secs(29)).await;
    let cached = service.stock_level(product, store, None).await.unwrap();
    assert_eq!(
        (on_hand(&cached), cached.position, fake.calls()),
        (5, 5, 1),
        "a hit within the TTL"
    );
    let fresher = service.stock_level(product, store, Some(6)).await.unwrap();
    assert_eq!(
        (on_hand(&fresher), fresher.position, fake.calls()),
        (8, 7, 2),
        "the entry at 5 is too old for 6"
    );
    assert_eq!(on_hand(&service.stock_level(product, store, Some(7)).await.unwrap()), 8);
    assert_eq!(fake.calls(), 2, "the new entry serves min_position 7");
    fake.set(7, 9);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(
        on_hand(&service.stock_level(product, store, None).await.unwrap()),
        9,
        "expired"
    );
    assert_eq!(fake.calls(), 3);
}

#[tokio::test]
async fn an_entry_cached_before_its_touch_was_recorded_is_a_miss_afterwards() {
    // The other interleaving of the race: the stale value reaches the cache before the
    // projector records the touch (the commit happened after the snapshot).
    let fake = Fake::new(5, 5);
    let touches = Arc::new(TouchLog::new());
    let (_projected_tx, projected) = watch::channel(5);
    let service = QueryService::new(
        fake.clone(),
        projected,
        watch::channel(u64::MAX).1,
        touches.clone(),
        QueryConfig::default(),
    );
    let (product, store) = ids();
    assert_eq!(on_hand(&service.stock_level(product, store, None).await.unwrap()), 5);
    fake.set(7, 8);
    touches.record(&ViewKey::Stock(product, store), 7);
    touches.record(&ViewKey::ProductStock(product), 7);
    let answer = service.stock_level(product, store, None).await.unwrap();
    assert_eq!((on_hand(&answer), answer.position, fake.calls()), (8, 7, 2));
    assert_eq!(on_hand(&service.stock_level(product, store, None).await.unwrap()), 8);
    assert_eq!(fake.calls(), 2, "the new entry is current");
}

/// The real read model, with a gate that can hold one `stock_level` call after it has
/// read and before it answers.
struct Gated {
    inner: Arc<ReadModel>,
    gate: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    calls: AtomicUsize,
}

impl Gated {
    fn new(inner: Arc<ReadModel>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gate: Mutex::new(None),
            calls: AtomicUsize::new(0),
        })
    }

    /// Holds the next `stock_level` call: returns (has read, let it answer).
    fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (read_tx, read_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.gate.lock().unwrap() = Some((read_tx, release_rx));
        (read_rx, release_tx)
    }
}

impl ReadModelQueries for Gated {
    fn stock_level(
        &self,
        product: ProductId,
        store: StoreId,
    ) -> BoxFuture<'_, Result<AtPosition<Option<StockLevel>>, ReadError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let read = self.inner.stock_level(product, store).await;
            let gate = self.gate.lock().unwrap().take();
            if let Some((has_read, release)) = gate {
                let _ = has_read.send(());
                let _ = release.await;
            }
            read
        })
    }
    fn product_stock(&self, product: ProductId) -> BoxFuture<'_, Result<AtPosition<ProductStock>, ReadError>> {
        self.inner.product_stock(product)
    }
    fn product(&self, id: ProductId) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, ReadError>> {
        self.inner.product(id)
    }
    fn product_by_sku(&self, sku: String) -> BoxFuture<'_, Result<AtPosition<Option<ProductView>>, ReadError>> {
        self.inner.product_by_sku(sku)
    }
    fn open_reservations(&self, store: StoreId) -> BoxFuture<'_, Result<AtPosition<Vec<OpenReservation>>, ReadError>> {
        self.inner.open_reservations(store)
    }
    fn expired_reservations(
        &self,
        origin: Origin,
        now: OffsetDateTime,
    ) -> BoxFuture<'_, Result<Vec<ReservationId>, ReadError>> {
        self.inner.expired_reservations(origin, now)
    }
    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, ReadError>> {
        self.inner.checkpoint()
    }
}

struct Live {
    fixture: Fixture,
    handle: read_model::ProjectionHandle,
    model: Arc<Gated>,
    service: Arc<QueryService>,
    _stop: watch::Sender<bool>,
}

async fn live() -> Live {
    let fixture = Fixture::new().await;
    let (stop, stopped) = watch::channel(false);
    let handle = read_model::spawn(fixture.log.clone(), &fixture.read_model_path(), stopped).unwrap();
    let model = Gated::new(handle.queries());
    let service = Arc::new(QueryService::new(
        model.clone(),
        handle.projected(),
        fixture.log.bus().watch_head(),
        handle.touched(),
        QueryConfig::default(),
    ));
    Live {
        fixture,
        handle,
        model,
        service,
        _stop: stop,
    }
}

impl Live {
    async fn settle(&self, position: u64) {
        reach(&mut self.handle.projected(), position).await;
    }
}

#[tokio::test]
async fn a_committed_event_invalidates_every_cached_view_it_touched() {
    let live = live().await;
    let (f, q) = (&live.fixture, &live.service);
    live.settle(f.add(5).await.position).await;

    assert_eq!(on_hand(&q.stock_level(f.product, f.shop, None).await.unwrap()), 5);
    assert_eq!(q.product_stock(f.product, None).await.unwrap().value.total_on_hand, 5);
    assert_eq!(
        q.product(f.product, None).await.unwrap().value.unwrap().product.name,
        "Coffee"
    );
    assert!(q.product_by_sku("SKU-1".into(), None).await.unwrap().value.is_some());
    assert!(q.product_by_sku("SKU-9".into(), None).await.unwrap().value.is_none());
    // Cached: the read model is not asked again.
    assert_eq!(on_hand(&q.stock_level(f.product, f.shop, None).await.unwrap()), 5);
    assert_eq!(live.model.calls.load(Ordering::SeqCst), 1);

    live.settle(f.add(3).await.position).await;
    assert_eq!(on_hand(&q.stock_level(f.product, f.shop, None).await.unwrap()), 8);
    assert_eq!(live.model.calls.load(Ordering::SeqCst), 2);
    assert_eq!(q.product_stock(f.product, None).await.unwrap().value.total_on_hand, 8);

    live.settle(f.update(f.product, "SKU-9", "Decaf").await.position).await;
    let product = q.product(f.product, None).await.unwrap().value.unwrap();
    assert_eq!((product.product.name.as_str(), product.version), ("Decaf", 2));
    assert!(q.product_by_sku("SKU-1".into(), None).await.unwrap().value.is_none());
    assert_eq!(
        q.product_by_sku("SKU-9".into(), None)
            .await
            .unwrap()
            .value
            .map(|p| p.product.id),
        Some(f.product)
    );
}

#[tokio::test]
async fn min_position_reads_a_write_at_once() {
    let live = live().await;
    let (f, q) = (&live.fixture, &live.service);
    live.settle(f.add(5).await.position).await;
    assert_eq!(on_hand(&q.stock_level(f.product, f.shop, None).await.unwrap()), 5);
    let written = f.add(4).await;
    let answer = q.stock_level(f.product, f.shop, Some(written.position)).await.unwrap();
    assert_eq!((on_hand(&answer), answer.stale), (9, false));
    assert!(answer.position >= written.position);
}

#[tokio::test]
async fn a_value_read_before_a_commit_and_cached_after_it_is_not_served() {
    let live = live().await;
    let (f, q) = (&live.fixture, &live.service);
    let before = f.add(5).await;
    live.settle(before.position).await;

    // A query reads on_hand = 5 and is held before it caches the value...
    let (has_read, release) = live.model.arm();
    let racing = tokio::spawn({
        let q = q.clone();
        let (product, shop) = (f.product, f.shop);
        async move { q.stock_level(product, shop, None).await }
    });
    has_read.await.unwrap();
    // ...while the projector commits a change of that stream and invalidates it...
    let after = f.add(3).await;
    live.settle(after.position).await;
    // ...and only then does the query cache what it read.
    release.send(()).unwrap();
    let old = racing.await.unwrap().unwrap();
    assert_eq!((on_hand(&old), old.position), (5, before.position));

    let now = q.stock_level(f.product, f.shop, None).await.unwrap();
    assert_eq!(on_hand(&now), 8, "the old value must not be served from the cache");
    assert_eq!(now.position, after.position);
}
