//! The receivers of `catalog_push`, run as a child process: `RECEIVER_STREAMS` push
//! streams on raw sockets, one current-thread runtime, frames counted on the raw bytes.
//!
//! Environment: `RECEIVER_ADDRESS` (host:port), `RECEIVER_TOKENS` (a file, one store token
//! a line; stream `i` uses line `i`), `RECEIVER_HEAD` (the `Last-Event-ID`),
//! `RECEIVER_LATENCY=1` to parse each event's `recorded_at` and keep its receipt latency.
//!
//! Protocol with the parent: every 2 ms, when a count changed, a line
//! `c <caught-up streams> <events> <ended streams>` on stdout; on stdin, `reset` clears
//! the latencies (answer `ok`), `latency` answers `<deliveries> <p50> <p99> <max>` (ms),
//! `cpu` answers this process's CPU seconds; the end of stdin stops the process.

use memchr::memmem;
use shelfsync_common::wire::sync::{PROTOCOL_HEADER, PROTOCOL_VERSION};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

const EVENT: &[u8] = b"event: event\n";
const CAUGHT_UP: &[u8] = b"event: caught-up\n";
const RECORDED_AT: &[u8] = b"\"recorded_at\":\"";

#[derive(Default)]
struct Counts {
    caught_up: AtomicU64,
    events: AtomicU64,
    ended: AtomicU64,
    latencies: Mutex<Vec<f64>>,
}

thread_local! {
    /// One read buffer for every stream: the runtime has one thread, and a read never
    /// waits while it holds the buffer.
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; 256 * 1024]);
}

pub fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let address = var("RECEIVER_ADDRESS");
    let streams: usize = var("RECEIVER_STREAMS").parse().expect("RECEIVER_STREAMS");
    let head = var("RECEIVER_HEAD");
    let latency = var("RECEIVER_LATENCY") == "1";
    let tokens = std::fs::read_to_string(var("RECEIVER_TOKENS")).expect("tokens file");
    let tokens: Vec<String> = tokens.lines().map(str::to_owned).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let counts = Arc::new(Counts::default());
        let connecting = Arc::new(tokio::sync::Semaphore::new(64));
        for i in 0..streams {
            let request = format!(
                "GET /v1/sync/stream HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
                 {PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\nLast-Event-ID: {head}\r\n\r\n",
                tokens[i % tokens.len()]
            );
            let (address, counts, connecting) = (address.clone(), counts.clone(), connecting.clone());
            tokio::spawn(async move {
                let permit = connecting.acquire_owned().await.expect("semaphore");
                let mut socket = tokio::net::TcpStream::connect(&address).await.expect("connect");
                socket.write_all(request.as_bytes()).await.expect("request");
                drop(permit);
                follow(&socket, &counts, latency).await;
                counts.ended.fetch_add(1, Ordering::Relaxed);
            });
        }
        tokio::spawn(report(counts.clone()));
        let (asked, mut questions) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if asked.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = questions.recv().await {
            let answer = match line.as_str() {
                "reset" => {
                    counts.latencies.lock().expect("latencies").clear();
                    "ok".to_owned()
                }
                "latency" => {
                    let mut all = std::mem::take(&mut *counts.latencies.lock().expect("latencies"));
                    all.sort_by(f64::total_cmp);
                    let q = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)));
                    format!(
                        "{} {} {} {}",
                        all.len(),
                        q(0.5).copied().unwrap_or(f64::NAN),
                        q(0.99).copied().unwrap_or(f64::NAN),
                        all.last().copied().unwrap_or(f64::NAN)
                    )
                }
                "cpu" => format!("{}", process_cpu()),
                other => format!("unknown {other}"),
            };
            println!("{answer}");
        }
    });
}

/// Prints the counts when they change.
async fn report(counts: Arc<Counts>) {
    let mut last = [u64::MAX; 3];
    loop {
        let now = [
            counts.caught_up.load(Ordering::Relaxed),
            counts.events.load(Ordering::Relaxed),
            counts.ended.load(Ordering::Relaxed),
        ];
        if now != last {
            println!("c {} {} {}", now[0], now[1], now[2]);
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads one stream until it ends, counting frames. A frame ends with a blank line; the
/// bytes after the last complete frame wait for the next read.
async fn follow(socket: &tokio::net::TcpStream, counts: &Counts, latency: bool) {
    let mut carry: Vec<u8> = Vec::new();
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let done = BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            match socket.try_read(&mut buffer) {
                Ok(0) => true,
                Ok(n) => {
                    let mut fresh = &buffer[..n];
                    if !carry.is_empty() {
                        // Complete the frame the last read left open (the carry stays small:
                        // at most one frame).
                        let Some(end) = memmem::find(fresh, b"\n\n") else {
                            carry.extend_from_slice(fresh);
                            return false;
                        };
                        carry.extend_from_slice(&fresh[..end + 2]);
                        frames(&carry, counts, latency);
                        carry.clear();
                        fresh = &fresh[end + 2..];
                    }
                    let used = frames(fresh, counts, latency);
                    carry.extend_from_slice(&fresh[used..]);
                    false
                }
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            }
        });
        if done {
            return;
        }
    }
}

/// Counts the complete frames in `bytes`; returns how many bytes they take.
fn frames(bytes: &[u8], counts: &Counts, latency: bool) -> usize {
    let Some(end) = memmem::rfind(bytes, b"\n\n") else {
        return 0;
    };
    let complete = &bytes[..end + 2];
    let mut events = 0;
    for at in memmem::find_iter(complete, EVENT) {
        events += 1;
        if latency {
            let rest = &complete[at..];
            let recorded = memmem::find(rest, RECORDED_AT).and_then(|start| {
                let value = &rest[start + RECORDED_AT.len()..];
                let text = std::str::from_utf8(&value[..memchr::memchr(b'"', value)?]).ok()?;
                OffsetDateTime::parse(text, &Rfc3339).ok()
            });
            if let Some(recorded) = recorded {
                let ms = (OffsetDateTime::now_utc() - recorded).as_seconds_f64() * 1e3;
                counts.latencies.lock().expect("latencies").push(ms);
            }
        }
    }
    let caught_up = memmem::find_iter(complete, CAUGHT_UP).count() as u64;
    counts.events.fetch_add(events, Ordering::Relaxed);
    counts.caught_up.fetch_add(caught_up, Ordering::Relaxed);
    end + 2
}

/// This process's CPU seconds (utime + stime, `/proc/self/stat`, USER_HZ = 100).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split(' ').collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(12) + ticks(13)) / 100.0
}
