//! The fault proxy itself, against a tiny line-echo server: each mode does what the
//! scenarios rely on.

use shelfsync_common::testing::proxy::{FaultProxy, Mode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An echo server that answers each line with the line; counts the lines it received.
async fn echo_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    if write.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, received)
}

/// Sends one line and reads one line back, within `within`.
async fn roundtrip(stream: &mut TcpStream, line: &str, within: Duration) -> Result<String, String> {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte).await {
                Ok(0) => return Err("closed".to_owned()),
                Ok(_) if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&answer).into_owned()),
                Ok(_) => answer.push(byte[0]),
                Err(e) => return Err(format!("read: {e} ({:?})", e.kind())),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| "timed out".to_owned())?
}

async fn connect(proxy: &FaultProxy) -> TcpStream {
    TcpStream::connect(proxy.url().trim_start_matches("http://"))
        .await
        .unwrap()
}

#[tokio::test]
async fn every_mode_does_what_it_says() {
    let (upstream, received) = echo_server().await;
    let proxy = FaultProxy::start("test", upstream).await;
    let short = Duration::from_millis(500);

    // Pass.
    let mut stream = connect(&proxy).await;
    assert_eq!(roundtrip(&mut stream, "a", short).await, Ok("a".into()));

    // A change closes an open connection.
    proxy.set_mode(Mode::Delay(150));
    assert!(roundtrip(&mut stream, "b", short).await.is_err());
    // Delay: answers, later.
    let mut stream = connect(&proxy).await;
    let started = Instant::now();
    assert_eq!(roundtrip(&mut stream, "c", short * 4).await, Ok("c".into()));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // Black hole: silence, for open and new connections; nothing reaches the server.
    let before = received.load(Ordering::SeqCst);
    let mut open = connect(&proxy).await;
    assert_eq!(roundtrip(&mut open, "d", short * 4).await, Ok("d".into()));
    proxy.set_mode(Mode::Blackhole);
    assert_eq!(roundtrip(&mut open, "e", short).await, Err("timed out".into()));
    let mut new = connect(&proxy).await;
    assert_eq!(roundtrip(&mut new, "f", short).await, Err("timed out".into()));
    assert_eq!(received.load(Ordering::SeqCst), before + 1);
    // ...and leaving it closes them.
    proxy.set_mode(Mode::Pass);
    assert!(roundtrip(&mut open, "g", short).await.is_err());
    assert!(roundtrip(&mut new, "h", short).await.is_err());

    // Reset.
    proxy.set_mode(Mode::Reset);
    let mut stream = connect(&proxy).await;
    assert!(roundtrip(&mut stream, "i", short).await.is_err());

    // Drop responses: the request arrives, the answer does not.
    proxy.set_mode(Mode::DropResponses);
    let before = received.load(Ordering::SeqCst);
    let mut stream = connect(&proxy).await;
    let answer = roundtrip(&mut stream, "j", short).await;
    assert!(answer.is_err(), "{answer:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(received.load(Ordering::SeqCst), before + 1, "the request went through");
    assert!(proxy.counters().dropped_responses.load(Ordering::SeqCst) >= 1);

    // Refuse: one kind of request is reset, the others pass.
    proxy.set_mode(Mode::Refuse("GET /v1/sync/stream".into()));
    let mut stream = connect(&proxy).await;
    assert_eq!(
        roundtrip(&mut stream, "POST /v1/sync/upload", short).await,
        Ok("POST /v1/sync/upload".into())
    );
    assert!(roundtrip(&mut stream, "GET /v1/sync/stream", short).await.is_err());

    // Freeze: open connections go silent, new ones work.
    proxy.heal();
    let mut open = connect(&proxy).await;
    assert_eq!(roundtrip(&mut open, "m", short).await, Ok("m".into()));
    proxy.set_mode(Mode::FreezeOpen);
    assert_eq!(roundtrip(&mut open, "n", short).await, Err("timed out".into()));
    let mut new = connect(&proxy).await;
    assert_eq!(roundtrip(&mut new, "o", short).await, Ok("o".into()));

    // Throttle: 2 KB at 4 KB/s takes about half a second.
    proxy.set_mode(Mode::Throttle(4096));
    let mut stream = connect(&proxy).await;
    let line = "x".repeat(1000);
    let started = Instant::now();
    assert_eq!(roundtrip(&mut stream, &line, short * 10).await, Ok(line.clone()));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // Flap: some connections work, some do not, and it keeps changing.
    proxy.set_mode(Mode::flap_reset(100));
    let (mut ok, mut failed) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let mut stream = connect(&proxy).await;
        match roundtrip(&mut stream, "k", short).await {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(ok > 0 && failed > 0, "flap: {ok} ok, {failed} failed");

    // Upstream moves (a restarted hub): new connections go to the new one.
    let (other, other_received) = echo_server().await;
    proxy.set_upstream(other);
    proxy.heal();
    let mut stream = connect(&proxy).await;
    assert_eq!(roundtrip(&mut stream, "l", short).await, Ok("l".into()));
    assert_eq!(other_received.load(Ordering::SeqCst), 1);
    eprintln!("{}", proxy.summary());
}
