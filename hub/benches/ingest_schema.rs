//! Write amplification of the event store schema: batched ingest into
//! (a) the hub's schema (`migrations/0001_event_store.sql`: `events` keyed by position,
//!     `UNIQUE(event_id)` on UUIDv7 ids, `streams` heads upserted once per touched stream
//!     per batch) against
//! (b) the same plus the naive `UNIQUE(stream_key, stream_version)` index,
//! as both files grow to `INGEST_EVENTS` events (default 1,000,000).
//!
//! Both files get the same rows, in lockstep: chunk after chunk (`CHUNK_BATCHES` batches
//! of `BATCH` events, default 10 x 1,000), one chunk into (a), then the same chunk into
//! (b), alternating which goes first. Every chunk is timed and its I/O counted from
//! `/proc/self/io` (`wchar`: bytes SQLite handed to write(2), i.e. WAL frames plus
//! checkpoint writes; `write_bytes`: bytes the kernel sent to the block layer). Events go
//! to `STREAMS` (default 3,000) interleaved streams chosen at random (fixed seed); rows
//! carry ~330 bytes of JSON (`data` + `metadata`) like the hub's. Both connections use the
//! hub's pragmas: WAL, synchronous=FULL, the default page cache and auto-checkpoint.
//!
//! The report takes, at several file sizes, the `WINDOW_CHUNKS` (default 5) chunks just
//! before that size: median (min, max) events/s of each schema, the ratio (a)/(b) (of the
//! medians, and the median of the ratios of paired chunks), bytes written per event, and
//! CPU time per event (the rest of the wall time is waiting, mostly for fsync).
//!
//! ```sh
//! cargo bench -p shelfsync-hub --bench ingest_schema
//! INGEST_EVENTS=2000000 STREAMS=5000 cargo bench -p shelfsync-hub --bench ingest_schema
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes (`tests/scripts/bench.sh --quick`).
//! `BENCH_DIR` sets where the files go (default: the system temp dir). `NO_HEADS=1` skips
//! the `streams` upserts in both files, to isolate what the heads table costs.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{params, Connection, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod support;
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use support::{bench_dir, cores, cpu_model, env_usize, stats, this_thread_cpu};

const HUB_DDL: &str = include_str!("../migrations/0001_event_store.sql");
const NAIVE_INDEX: &str = "CREATE UNIQUE INDEX events_by_stream ON events (stream_key, stream_version);";

/// One event as both schemas store it.
struct Row {
    event_id: [u8; 16],
    stream: usize,
    version: u64,
    event_type: &'static str,
    data: String,
    metadata: String,
}

/// A stream's head as the writer keeps it.
struct Head {
    version: u64,
    last_position: u64,
    on_hand: i64,
}

/// Generates the same event sequence for both files.
struct Workload {
    rng: StdRng,
    keys: Vec<[u8; 32]>,
    heads: Vec<Head>,
    next_position: u64,
    clock_ms: u64,
    counter: u16,
}

impl Workload {
    fn new(streams: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(0x5e1f_5afc);
        // Streams are product x store, like the hub's keys (product id, then store id):
        // ~1 store per 30 streams.
        let stores: Vec<[u8; 16]> = (0..streams.div_ceil(30).max(1))
            .map(|_| uuid_v7(&mut rng, 1_700_000_000_000))
            .collect();
        let keys = (0..streams)
            .map(|i| {
                let product = uuid_v7(&mut rng, 1_700_000_000_000 + (i / stores.len()) as u64 * 60_000);
                let mut key = [0u8; 32];
                key[..16].copy_from_slice(&product);
                key[16..].copy_from_slice(&stores[i % stores.len()]);
                key
            })
            .collect();
        let heads = (0..streams)
            .map(|_| Head {
                version: 0,
                last_position: 0,
                on_hand: 0,
            })
            .collect();
        Self {
            rng,
            keys,
            heads,
            next_position: 1,
            clock_ms: 1_735_689_600_000,
            counter: 0,
        }
    }

    /// The next batch of `n` events (positions are assigned on insert, in order).
    fn batch(&mut self, n: usize) -> Vec<Row> {
        (0..n)
            .map(|_| {
                let stream = self.rng.random_range(0..self.keys.len());
                let head = &mut self.heads[stream];
                head.version += 1;
                head.last_position = self.next_position;
                self.next_position += 1;
                // Time-ordered event ids, as UUIDv7 gives them: a ms clock, then a 12-bit
                // counter, then random bits; the clock ticks every 4,096 ids.
                let mut event_id = uuid_v7(&mut self.rng, self.clock_ms);
                event_id[6..8].copy_from_slice(&(0x7000 | self.counter).to_be_bytes());
                self.counter += 1;
                if self.counter == 0x1000 {
                    self.counter = 0;
                    self.clock_ms += 1;
                }
                let quantity = self.rng.random_range(1..=9);
                let reservation = uuid_text(&uuid_v7(&mut self.rng, self.clock_ms));
                let (event_type, data) = if self.rng.random_bool(0.5) {
                    head.on_hand += quantity;
                    (
                        "stock_added",
                        format!(r#"{{"quantity":{quantity},"delivery_note":"DN-2025-{:06}"}}"#, head.version),
                    )
                } else {
                    (
                        "stock_reserved",
                        format!(
                            r#"{{"reservation_id":"{reservation}","quantity":{quantity},"expires_at":"2025-01-01T12:15:00.123456789Z"}}"#
                        ),
                    )
                };
                let metadata = format!(
                    r#"{{"origin":"hub","actor":"channel:web-shop","correlation_id":"{}","causation_id":"{}","occurred_at":"2025-01-01T12:00:00.123456789Z","recorded_at":"2025-01-01T12:00:00.234567891Z"}}"#,
                    uuid_text(&uuid_v7(&mut self.rng, self.clock_ms)),
                    uuid_text(&uuid_v7(&mut self.rng, self.clock_ms))
                );
                Row {
                    event_id,
                    stream,
                    version: head.version,
                    event_type,
                    data,
                    metadata,
                }
            })
            .collect()
    }

    fn state_json(&self, stream: usize) -> String {
        let head = &self.heads[stream];
        format!(
            r#"{{"kind":"inventory","on_hand":{},"reservations":{{"0194a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b":{{"quantity":2,"expires_at":"2025-01-01T12:15:00.123456789Z"}}}},"version":{}}}"#,
            head.on_hand, head.version
        )
    }
}

fn uuid_v7(rng: &mut StdRng, ms: u64) -> [u8; 16] {
    let mut b: [u8; 16] = rng.random();
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    b
}

fn uuid_text(b: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*b).hyphenated().to_string()
}

/// One schema's file.
struct Target {
    name: &'static str,
    conn: Connection,
    path: PathBuf,
    next_position: u64,
    /// Upsert `streams` heads (off with `NO_HEADS=1`, to see what they cost).
    heads: bool,
}

impl Target {
    fn open(name: &'static str, path: PathBuf, naive: bool, heads: bool) -> Self {
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
        conn.pragma_update(None, "synchronous", "FULL").expect("sync");
        conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
        conn.execute_batch(HUB_DDL).expect("ddl");
        if naive {
            conn.execute_batch(NAIVE_INDEX).expect("naive index");
        }
        Self {
            name,
            conn,
            path,
            next_position: 1,
            heads,
        }
    }

    /// Writes one batch like the hub's writer: the events, then one upsert per touched
    /// stream, then COMMIT (one fsync).
    fn ingest(&mut self, rows: &[Row], workload: &Workload) {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        let mut touched: HashMap<usize, u64> = HashMap::new();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .expect("prepare");
            for row in rows {
                let position = self.next_position;
                self.next_position += 1;
                insert
                    .execute(params![
                        position as i64,
                        &row.event_id[..],
                        &workload.keys[row.stream][..],
                        row.version as i64,
                        row.event_type,
                        1,
                        row.data,
                        row.metadata,
                        &row.event_id[..],
                    ])
                    .expect("insert");
                touched.insert(row.stream, position);
            }
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO streams (stream_key, version, last_position, state) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (stream_key) DO UPDATE
                     SET version = excluded.version, last_position = excluded.last_position, state = excluded.state",
                )
                .expect("prepare");
            for (&stream, &position) in touched.iter().filter(|_| self.heads) {
                upsert
                    .execute(params![
                        &workload.keys[stream][..],
                        workload.heads[stream].version as i64,
                        position as i64,
                        workload.state_json(stream),
                    ])
                    .expect("upsert");
            }
        }
        tx.commit().expect("commit");
    }

    fn file_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        size(&self.path) + size(Path::new(&wal))
    }
}

/// (`wchar`, `write_bytes`) of this process.
fn io_counters() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

/// One timed chunk of one schema.
#[derive(Clone, Copy)]
struct Sample {
    rate: f64,
    wchar_per_event: f64,
    disk_per_event: f64,
    cpu_us_per_event: f64,
}

fn main() {
    let total = knob("INGEST_EVENTS", 1_000_000, 2_000);
    let batch = knob("BATCH", 1_000, 100).max(1);
    let chunk_batches = knob("CHUNK_BATCHES", 10, 2).max(1);
    let streams = knob("STREAMS", 3_000, 30).max(1);
    let window = knob("WINDOW_CHUNKS", 5, 2).max(1);
    let heads = env_usize("NO_HEADS", 0) == 0;
    let chunk = batch * chunk_batches;
    let chunks = total.div_ceil(chunk).max(window);
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    println!(
        "ingest_schema: {} events ({} chunks of {} batches x {} events), {} streams{}, window {} chunks; {} cores, {}; files in {}",
        chunks * chunk,
        chunks,
        chunk_batches,
        batch,
        streams,
        if heads { "" } else { " (NO_HEADS: streams table not written)" },
        window,
        cores(),
        cpu_model(),
        dir.path().display()
    );

    let mut workload = Workload::new(streams);
    let mut targets = [
        Target::open("a", dir.path().join("hub_schema.sqlite"), false, heads),
        Target::open("b", dir.path().join("naive_schema.sqlite"), true, heads),
    ];
    let mut samples: Vec<[Sample; 2]> = Vec::with_capacity(chunks);
    let mut row_bytes = 0usize;
    let started = Instant::now();
    for c in 0..chunks {
        let batches: Vec<Vec<Row>> = (0..chunk_batches).map(|_| workload.batch(batch)).collect();
        row_bytes += batches
            .iter()
            .flatten()
            .map(|r| r.data.len() + r.metadata.len())
            .sum::<usize>();
        let mut pair = [Sample {
            rate: 0.0,
            wchar_per_event: 0.0,
            disk_per_event: 0.0,
            cpu_us_per_event: 0.0,
        }; 2];
        let order = if c % 2 == 0 { [0, 1] } else { [1, 0] };
        for t in order {
            let (w0, d0) = io_counters();
            let c0 = this_thread_cpu();
            let t0 = Instant::now();
            for rows in &batches {
                targets[t].ingest(rows, &workload);
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let c1 = this_thread_cpu();
            let (w1, d1) = io_counters();
            pair[t] = Sample {
                rate: chunk as f64 / elapsed,
                wchar_per_event: (w1 - w0) as f64 / chunk as f64,
                disk_per_event: d1.saturating_sub(d0) as f64 / chunk as f64,
                cpu_us_per_event: c1.saturating_sub(c0).as_secs_f64() * 1e6 / chunk as f64,
            };
        }
        samples.push(pair);
        let done = (c + 1) * chunk;
        if (c + 1) % 10 == 0 || c + 1 == chunks {
            eprintln!(
                "  {done:>9} events: (a) {:>7.0} ev/s {:>6.0} B/ev | (b) {:>7.0} ev/s {:>6.0} B/ev | {:.0} s",
                pair[0].rate,
                pair[0].wchar_per_event,
                pair[1].rate,
                pair[1].wchar_per_event,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "mean JSON per row (data + metadata): {:.0} bytes; total time {:.0} s",
        row_bytes as f64 / (chunks * chunk) as f64,
        started.elapsed().as_secs_f64()
    );
    for t in &targets {
        println!(
            "file {} ({}): {:.0} MB (db + wal)",
            t.name,
            t.path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            t.file_bytes() as f64 / 1e6
        );
    }

    // Report points: the first window, then 10%, 25%, 50%, 75%, 100% of the total.
    let mut points: Vec<usize> = vec![window];
    for pct in [10, 25, 50, 75, 100] {
        let end = (chunks * pct).div_ceil(100).max(window);
        if !points.contains(&end) {
            points.push(end);
        }
    }
    println!();
    println!(
        "| events in file | (a) hub schema ev/s, median (min-max) | (b) + UNIQUE(stream_key, stream_version) ev/s, median (min-max) | ratio (a)/(b): of medians, median of paired chunks | bytes written/event (a) | (b) | CPU us/event (a) | (b) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for end in points {
        let slice = &samples[end - window..end];
        let col = |t: usize, f: fn(&Sample) -> f64| slice.iter().map(|s| f(&s[t])).collect::<Vec<f64>>();
        let range = |t: usize| stats(&col(t, |s| s.rate));
        let mean = |t: usize, f: fn(&Sample) -> f64| col(t, f).iter().sum::<f64>() / slice.len() as f64;
        let (am, amin, amax) = range(0);
        let (bm, bmin, bmax) = range(1);
        let (paired, _, _) = stats(&slice.iter().map(|s| s[0].rate / s[1].rate).collect::<Vec<f64>>());
        println!(
            "| {}k-{}k | {am:.0} ({amin:.0}-{amax:.0}) | {bm:.0} ({bmin:.0}-{bmax:.0}) | {:.2}x, {paired:.2}x | {:.0} | {:.0} | {:.1} | {:.1} |",
            (end - window) * chunk / 1000,
            end * chunk / 1000,
            am / bm,
            mean(0, |s| s.wchar_per_event),
            mean(1, |s| s.wchar_per_event),
            mean(0, |s| s.cpu_us_per_event),
            mean(1, |s| s.cpu_us_per_event),
        );
    }
    let total = |t: usize, f: fn(&Sample) -> f64| samples.iter().map(|s| f(&s[t])).sum::<f64>() / samples.len() as f64;
    println!();
    println!(
        "whole run, bytes/event: (a) {:.0} written by SQLite (wchar), {:.0} sent to the block layer (write_bytes); (b) {:.0} and {:.0}",
        total(0, |s| s.wchar_per_event),
        total(0, |s| s.disk_per_event),
        total(1, |s| s.wchar_per_event),
        total(1, |s| s.disk_per_event),
    );
    // The design claim: at the file's full size, the hub's schema ingests at least twice as
    // fast as the naive unique index (paired chunks of the last window).
    let mut scenario = Scenario::new("ingest_schema_full_file", "events/s", Goal::RatioAtLeast(2.0))
        .baseline("same rows + UNIQUE(stream_key, stream_version)");
    for sample in &samples[samples.len() - window..] {
        scenario.record_pair(sample[0].rate, sample[1].rate);
    }
    scenario.report();
}
