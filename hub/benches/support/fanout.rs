//! The push fan-out measurement the SSE benches share (`sse_fanout` on one hub,
//! `cluster_pg` on several hubs sharing one PostgreSQL database): enroll stores, open push
//! streams (stream `i` on hub `i % hubs`), write catalog events one at a time on one hub,
//! and time every delivery from the event's `recorded_at` and from the write's answer.

use super::{hub_head, quantile, thread_cpu};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::json;
use shelfsync_common::wire::api::WriteResult;
use shelfsync_common::wire::sync::{EnrolledStore, PROTOCOL_HEADER, PROTOCOL_VERSION, SSE_CAUGHT_UP, SSE_EVENT};
use shelfsync_hub::testing::{metric_value, metrics_text, ADMIN};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Longest wait for any one step (streams caught up, one event delivered, streams closed).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
pub const ROLES: [&str; 3] = ["hub", "event-store-wri", "client"];

/// One side of one round.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub deliveries: usize,
    /// From `recorded_at`, ms: p50, p99, max.
    pub recorded: [f64; 3],
    /// From the write's answer, ms: p50, p99, max.
    pub answer: [f64; 3],
    /// Per event, when its last stream received it (from `recorded_at`, ms): median and max
    /// over the round's events.
    pub last: [f64; 2],
    /// Per event, when its first stream received it (from `recorded_at`, ms): median.
    pub first: f64,
    /// CPU µs per delivery: hub runtime threads, writer thread, client runtime.
    pub cpu_us: [f64; 3],
    /// The writes' own latency (PUT sent to answer received), ms: p50 and max.
    pub put: [f64; 2],
    /// Wall time to open the streams and see every `caught-up`, s.
    pub open_secs: f64,
}

fn nanos(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos()
}

/// Enrolls `n` stores (32 requests at a time); returns their tokens.
pub async fn enroll(client: &reqwest::Client, url: &str, n: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32.min(n))
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            let endpoint = format!("{url}/v1/admin/stores");
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return tokens;
                    }
                    let response = client
                        .post(&endpoint)
                        .bearer_auth(ADMIN)
                        .json(&json!({ "name": format!("bench store {i}") }))
                        .send()
                        .await
                        .expect("enroll");
                    assert_eq!(response.status().as_u16(), 201);
                    let enrolled: EnrolledStore = response.json().await.expect("EnrolledStore");
                    tokens.push(enrolled.token.expose().to_owned());
                }
            })
        })
        .collect();
    let mut tokens = Vec::with_capacity(n);
    for task in tasks {
        tokens.extend(task.await.expect("enroll task"));
    }
    tokens
}

/// What one stream received: (position, receipt wall clock in ns).
type Log = Arc<Mutex<Vec<(u64, i128)>>>;

/// Open push streams and what they have received.
struct Streams {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    deliveries: Arc<AtomicUsize>,
    caught_up: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    /// Per stream.
    logs: Vec<Log>,
}

async fn open_streams(client: &reqwest::Client, urls: &[String], tokens: &[String], n: usize, head: u64) -> Streams {
    let deliveries = Arc::new(AtomicUsize::new(0));
    let caught_up = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(n);
    let mut logs = Vec::with_capacity(n);
    for i in 0..n {
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        logs.push(log.clone());
        let request = client
            .get(format!("{}/v1/sync/stream", urls[i % urls.len()]))
            .bearer_auth(&tokens[i % tokens.len()])
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .header("Last-Event-ID", head.to_string());
        let (deliveries, caught_up, ended, connecting) =
            (deliveries.clone(), caught_up.clone(), ended.clone(), connecting.clone());
        tasks.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore");
            let response = request.send().await.expect("open stream");
            drop(permit);
            assert_eq!(response.status().as_u16(), 200, "stream refused");
            let mut messages = response.bytes_stream().eventsource();
            while let Some(message) = messages.next().await {
                let Ok(message) = message else { break };
                if message.event == SSE_EVENT {
                    let at = nanos(OffsetDateTime::now_utc());
                    let position: u64 = message.id.parse().expect("SSE id is a position");
                    log.lock().expect("log").push((position, at));
                    deliveries.fetch_add(1, Ordering::Release);
                } else if message.event == SSE_CAUGHT_UP {
                    caught_up.fetch_add(1, Ordering::Release);
                }
            }
            ended.fetch_add(1, Ordering::Release);
        }));
    }
    Streams {
        tasks,
        deliveries,
        caught_up,
        ended,
        logs,
    }
}

/// Polls `done` every millisecond for at most [`STEP_TIMEOUT`]; panics with `what`.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn gauge(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    metric_value(&metrics_text(client, url).await, name)
}

/// One side of one round: open `n` streams spread over `stream_urls`, write `events`
/// catalog events one at a time through `url`, close the streams.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    client: &reqwest::Client,
    stream_client: &reqwest::Client,
    url: &str,
    stream_urls: &[String],
    tokens: &[String],
    n: usize,
    events: usize,
    gap: Duration,
    price: &mut u64,
) -> Measured {
    let opened = Instant::now();
    let at = hub_head(client, url).await;
    let streams = open_streams(stream_client, stream_urls, tokens, n, at).await;
    wait_until("every stream to catch up", || {
        streams.caught_up.load(Ordering::Acquire) >= n || streams.ended.load(Ordering::Acquire) > 0
    })
    .await;
    assert_eq!(
        streams.ended.load(Ordering::Acquire),
        0,
        "a stream ended before caught-up"
    );
    let open_secs = opened.elapsed().as_secs_f64();

    let products = shelfsync_hub::seed::products();
    // position -> (recorded_at ns, answer arrival ns)
    let mut written: HashMap<u64, (i128, i128)> = HashMap::new();
    let mut puts = Vec::with_capacity(events);
    let cpu_before = thread_cpu(&ROLES);
    for k in 0..events {
        let product = &products[k % products.len()];
        *price += 1;
        let body = json!({
            "sku": product.sku,
            "name": product.name,
            "price_minor": product.price_minor + *price % 1000,
        });
        let sent = Instant::now();
        let response = client
            .put(format!("{url}/v1/products/{}", product.id))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .expect("price change");
        let answered = nanos(OffsetDateTime::now_utc());
        puts.push(sent.elapsed().as_secs_f64() * 1e3);
        assert_eq!(response.status().as_u16(), 201, "price change refused");
        let result: WriteResult = response.json().await.expect("WriteResult");
        let event = result.events.first().expect("one event");
        let recorded = event.metadata.recorded_at.expect("recorded_at");
        written.insert(event.position, (nanos(recorded), answered));
        let target = (k + 1) * n;
        wait_until("every stream to receive the event", || {
            streams.deliveries.load(Ordering::Acquire) >= target || streams.ended.load(Ordering::Acquire) > 0
        })
        .await;
        assert_eq!(
            streams.ended.load(Ordering::Acquire),
            0,
            "a stream ended while events were being written"
        );
        tokio::time::sleep(gap).await;
    }
    let cpu_after = thread_cpu(&ROLES);

    // Close every stream and wait until the hub has let go of them too.
    for task in &streams.tasks {
        task.abort();
    }
    for task in streams.tasks {
        let _ = task.await;
    }
    let deadline = Instant::now() + STEP_TIMEOUT;
    while gauge(client, url, "shelfsync_hub_sse_connections").await > 0.0 {
        assert!(Instant::now() < deadline, "the hub kept closed streams open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut recorded = Vec::with_capacity(n * events);
    let mut answer = Vec::with_capacity(n * events);
    // position -> (first, last) receipt, ms after recorded_at
    let mut spread: HashMap<u64, (f64, f64)> = HashMap::new();
    for log in &streams.logs {
        let log = log.lock().expect("log");
        assert_eq!(log.len(), events, "a stream missed or repeated events");
        for (position, at) in log.iter() {
            let (rec, ans) = written.get(position).expect("a written position");
            let latency = (at - rec) as f64 / 1e6;
            recorded.push(latency);
            answer.push((at - ans) as f64 / 1e6);
            let entry = spread.entry(*position).or_insert((f64::INFINITY, f64::NEG_INFINITY));
            entry.0 = entry.0.min(latency);
            entry.1 = entry.1.max(latency);
        }
    }
    let mut firsts: Vec<f64> = spread.values().map(|s| s.0).collect();
    let mut lasts: Vec<f64> = spread.values().map(|s| s.1).collect();
    firsts.sort_by(f64::total_cmp);
    lasts.sort_by(f64::total_cmp);
    puts.sort_by(f64::total_cmp);
    recorded.sort_by(f64::total_cmp);
    answer.sort_by(f64::total_cmp);
    let deliveries = recorded.len();
    let summary = |v: &[f64]| [quantile(v, 0.5), quantile(v, 0.99), v[v.len() - 1]];
    let per_delivery = |i: usize| (cpu_after[i] - cpu_before[i]) * 1e6 / deliveries as f64;
    Measured {
        deliveries,
        recorded: summary(&recorded),
        answer: summary(&answer),
        last: [quantile(&lasts, 0.5), lasts[lasts.len() - 1]],
        first: quantile(&firsts, 0.5),
        put: [quantile(&puts, 0.5), puts[puts.len() - 1]],
        cpu_us: [per_delivery(0), per_delivery(1), per_delivery(2)],
        open_secs,
    }
}
