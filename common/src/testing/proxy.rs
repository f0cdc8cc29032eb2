//! A fault-injecting TCP proxy between one edge agent and the hub.
//!
//! It listens on `127.0.0.1:0` (the port stays fixed for the proxy's life, so an agent
//! configured with it survives hub restarts: [`FaultProxy::set_upstream`] points it at the
//! hub's new port) and relays raw bytes, so it works below HTTP: whatever the agent's
//! client does (keep-alive, SSE, retries) meets real socket behaviour. The test sets a
//! [`Mode`]:
//!
//! - `Pass`: relay both ways.
//! - `Delay(ms)`: relay, each chunk held back `ms` in each direction, one chunk after the
//!   other (so it also caps throughput at one 16 KiB chunk per delay).
//! - `Throttle(bytes/s)`: relay at most that many bytes a second each way, reading no more
//!   than it can pass on, so the sender's socket buffers fill and it feels backpressure (a
//!   slow agent, as the hub's push stream sees it). The proxy's upstream socket has a
//!   small receive buffer and announces small segments, so that backpressure arrives after
//!   kilobytes rather than megabytes.
//! - `Blackhole`: accept, and never forward or answer; the peer only learns by timing out.
//! - `Reset`: accept and close at once with a TCP reset.
//! - `DropResponses`: forward the request bytes to the hub, and when the answer starts to
//!   arrive, reset the client connection instead of relaying it: the hub committed the
//!   request, the agent never hears so (it must retry; the hub must dedupe).
//! - `Refuse(prefix)`: relay, but reset a connection whose request starts with `prefix`
//!   (`GET /v1/sync/stream`: push is blocked, everything else works).
//! - `FreezeOpen`: the connections open at the change go silent for good (a NAT that lost
//!   their state: no reset, no data); new connections pass.
//! - `Flap { a, b, every_ms }`: alternate between two modes every `every_ms`.
//!
//! A mode change applies to existing connections too: on every change (flap phases
//! included) every open connection is closed with a reset, except that connections open
//! when the proxy enters `Blackhole` or `FreezeOpen` freeze (nothing passes, nothing is
//! closed) until the next change, which closes them. So a black hole looks like a partition (silence), and
//! whatever was half-relayed when a fault began or ended never continues.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Relay both ways.
    Pass,
    /// Relay with this many milliseconds of added latency per chunk, each way.
    Delay(u64),
    /// Relay at most this many bytes per second, each way.
    Throttle(u64),
    /// Accept, never forward, never answer.
    Blackhole,
    /// Accept and reset at once.
    Reset,
    /// Forward requests; reset the client when the answer starts.
    DropResponses,
    /// Relay, but reset a connection as soon as a request on it starts with this text
    /// (e.g. `GET /v1/sync/stream`: a middlebox that will not carry event streams).
    Refuse(String),
    /// Connections open at the change go silent (nothing passes, nothing is closed: a NAT
    /// that lost their state); new connections pass.
    FreezeOpen,
    /// Alternate between two (non-flapping) modes every `every_ms` milliseconds.
    Flap {
        /// The first phase.
        a: Box<Mode>,
        /// The second phase.
        b: Box<Mode>,
        /// Length of each phase.
        every_ms: u64,
    },
}

impl Mode {
    /// Flap between pass and black hole.
    pub fn flap_blackhole(every_ms: u64) -> Mode {
        Mode::Flap {
            a: Box::new(Mode::Pass),
            b: Box::new(Mode::Blackhole),
            every_ms,
        }
    }

    /// Flap between pass and reset.
    pub fn flap_reset(every_ms: u64) -> Mode {
        Mode::Flap {
            a: Box::new(Mode::Pass),
            b: Box::new(Mode::Reset),
            every_ms,
        }
    }
}

/// What the proxy has seen (for diagnostics and assertions).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Bytes relayed agent -> hub.
    pub up_bytes: AtomicU64,
    /// HTTP/1.1 request lines relayed agent -> hub (each ` HTTP/1.1\r\n` in what passed
    /// up: close enough to count how often an agent calls).
    pub requests: AtomicU64,
    /// Bytes relayed hub -> agent.
    pub down_bytes: AtomicU64,
    /// Connections reset because of a mode (Reset, DropResponses, a change).
    pub resets: AtomicU64,
    /// Answers dropped in `DropResponses`.
    pub dropped_responses: AtomicU64,
    /// Upstream connects that failed (the hub was down).
    pub upstream_failures: AtomicU64,
}

/// The effective (non-flapping) mode and a generation that changes with every change.
#[derive(Debug, Clone)]
struct Phase {
    generation: u64,
    mode: Mode,
}

/// A running proxy; stops (and closes every connection) when dropped.
pub struct FaultProxy {
    name: String,
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    phase: watch::Sender<Phase>,
    mode: Mutex<Mode>,
    flapper: Mutex<Option<JoinHandle<()>>>,
    accept: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Receive buffer of the upstream sockets: small, so that a throttled reader pushes back
/// on the hub soon instead of after megabytes.
const UPSTREAM_RECV_BUFFER: u32 = 16 * 1024;
/// Receive buffer of a throttled connection's upstream socket.
const THROTTLED_RECV_BUFFER: u32 = 4 * 1024;
/// Segment size a throttled connection announces to the hub.
const THROTTLED_MSS: u32 = 536;
/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;

impl FaultProxy {
    /// Starts a proxy to `upstream` in `Pass` mode.
    pub async fn start(name: &str, upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let upstream = Arc::new(Mutex::new(upstream));
        let (phase, phases) = watch::channel(Phase {
            generation: 0,
            mode: Mode::Pass,
        });
        let counters = Arc::new(Counters::default());
        let accept = tokio::spawn(accept_loop(listener, upstream.clone(), phases, counters.clone()));
        FaultProxy {
            name: name.into(),
            addr,
            upstream,
            phase,
            mode: Mutex::new(Mode::Pass),
            flapper: Mutex::new(None),
            accept,
            counters,
        }
    }

    /// `http://127.0.0.1:PORT`: give this to the agent as its hub URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Points the proxy at a new upstream (a restarted hub); open connections are closed.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = upstream;
        let mode = self.mode();
        if !matches!(mode, Mode::Flap { .. }) {
            set_phase(&self.phase, mode);
        }
    }

    /// The mode last set.
    pub fn mode(&self) -> Mode {
        self.mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes the mode; existing connections are closed (or frozen, entering `Blackhole`).
    pub fn set_mode(&self, mode: Mode) {
        eprintln!("[e2e] proxy {}: {mode:?}", self.name);
        self.stop_flapping();
        *self.mode.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = mode.clone();
        match mode {
            Mode::Flap { a, b, every_ms } => {
                assert!(
                    !matches!(*a, Mode::Flap { .. }) && !matches!(*b, Mode::Flap { .. }),
                    "flap between plain modes"
                );
                let phase = self.phase.clone();
                let task = tokio::spawn(async move {
                    let mut flip = false;
                    loop {
                        set_phase(&phase, if flip { (*b).clone() } else { (*a).clone() });
                        flip = !flip;
                        tokio::time::sleep(Duration::from_millis(every_ms)).await;
                    }
                });
                *self.flapper.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
            }
            plain => set_phase(&self.phase, plain),
        }
    }

    /// Back to `Pass`.
    pub fn heal(&self) {
        self.set_mode(Mode::Pass);
    }

    /// What the proxy has seen.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// One line of counters.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        format!(
            "proxy {}: {} connections, {} B up, {} B down, {} resets, {} answers dropped, {} upstream failures",
            self.name,
            c.accepted.load(Ordering::Relaxed),
            c.up_bytes.load(Ordering::Relaxed),
            c.down_bytes.load(Ordering::Relaxed),
            c.resets.load(Ordering::Relaxed),
            c.dropped_responses.load(Ordering::Relaxed),
            c.upstream_failures.load(Ordering::Relaxed),
        )
    }
}

impl FaultProxy {
    /// Stops the task that alternates the modes of a `Flap`, if one runs.
    fn stop_flapping(&self) {
        if let Some(flapper) = self
            .flapper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            flapper.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop_flapping();
        self.accept.abort();
        // Closing the phase channel ends every connection task.
        set_phase(&self.phase, Mode::Reset);
    }
}

fn set_phase(phase: &watch::Sender<Phase>, mode: Mode) {
    phase.send_modify(|phase| {
        phase.generation += 1;
        phase.mode = mode;
    });
}

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<Mutex<SocketAddr>>,
    phases: watch::Receiver<Phase>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        let upstream = *upstream.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let phases = phases.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            connection(client, upstream, phases, counters).await;
        });
    }
}

/// Closes a socket with a TCP reset.
fn reset(stream: TcpStream, counters: &Counters) {
    counters.resets.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Connects to the hub. A throttled connection also announces a small segment size: the
/// hub's kernel sizes its send buffer in segments, so small segments keep the bytes
/// parked between the hub's push stream and the slow reader to a few dozen kilobytes
/// (with loopback's 64 KiB segments it would be megabytes, and the hub would never feel
/// the slow reader).
async fn connect_upstream(upstream: SocketAddr, mode: &Mode) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_nodelay(true)?;
    if let Mode::Throttle(_) = mode {
        socket.set_recv_buffer_size(THROTTLED_RECV_BUFFER)?;
        socket2::SockRef::from(&socket).set_tcp_mss(THROTTLED_MSS)?;
    } else {
        socket.set_recv_buffer_size(UPSTREAM_RECV_BUFFER)?;
    }
    tokio::time::timeout(Duration::from_secs(5), socket.connect(upstream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Waits until the phase generation differs from `generation`.
async fn changed(phases: &mut watch::Receiver<Phase>, generation: u64) {
    let _ = phases.wait_for(|phase| phase.generation != generation).await;
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut phases: watch::Receiver<Phase>,
    counters: Arc<Counters>,
) {
    let Phase { generation, mode } = phases.borrow_and_update().clone();
    match mode {
        Mode::Reset => reset(client, &counters),
        Mode::Blackhole => {
            // Hold the connection open, silent, until the next change; then reset it.
            changed(&mut phases, generation).await;
            reset(client, &counters);
        }
        Mode::Pass | Mode::Delay(_) | Mode::Throttle(_) | Mode::DropResponses | Mode::Refuse(_) | Mode::FreezeOpen => {
            let server = match connect_upstream(upstream, &mode).await {
                Ok(server) => server,
                Err(_) => {
                    counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
                    reset(client, &counters);
                    return;
                }
            };
            relay(client, server, mode, generation, phases, counters).await;
        }
        Mode::Flap { .. } => unreachable!("the phase is never a flap"),
    }
}

/// Relays until either side closes or the phase changes; resets both sockets when the
/// relay ends on a fault rather than on a clean close.
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    mode: Mode,
    generation: u64,
    mut phases: watch::Receiver<Phase>,
    counters: Arc<Counters>,
) {
    let drop_answers = mode == Mode::DropResponses;
    let end = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, &mode, &counters, Direction::Up);
        let down = pump(server_read, client_write, &mode, &counters, Direction::Down);
        tokio::pin!(up, down);
        let mut up_done = false;
        let mut down_done = false;
        loop {
            tokio::select! {
                result = &mut up, if !up_done => {
                    up_done = true;
                    if result.is_err() { break End::Reset; }
                    if down_done { break End::Closed; }
                }
                result = &mut down, if !down_done => {
                    down_done = true;
                    match result {
                        Err(PumpError::AnswerArrived) if drop_answers => {
                            counters.dropped_responses.fetch_add(1, Ordering::Relaxed);
                            break End::Reset;
                        }
                        Err(_) => break End::Reset,
                        Ok(()) => if up_done { break End::Closed; },
                    }
                }
                () = changed(&mut phases, generation) => {
                    let next = phases.borrow().clone();
                    if matches!(next.mode, Mode::Blackhole | Mode::FreezeOpen) {
                        // Freeze: relay nothing, keep the sockets, reset at the next change.
                        changed(&mut phases, next.generation).await;
                    }
                    break End::Reset;
                }
            }
        }
    };
    if let End::Reset = end {
        reset(client, &counters);
        let _ = server.set_zero_linger();
    }
}

#[derive(Debug, Clone, Copy)]
enum End {
    Closed,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

#[derive(Debug)]
enum PumpError {
    Io,
    /// `DropResponses`: the first byte of an answer arrived.
    AnswerArrived,
}

/// Copies one direction according to `mode`, counting the bytes (and upward, the
/// requests) passed on.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mode: &Mode,
    counters: &Counters,
    direction: Direction,
) -> Result<(), PumpError> {
    let counter = match direction {
        Direction::Up => &counters.up_bytes,
        Direction::Down => &counters.down_bytes,
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let limit = match mode {
            // Read no more than a tenth of a second's worth at once.
            Mode::Throttle(rate) => ((rate / 10).max(1) as usize).min(CHUNK),
            _ => CHUNK,
        };
        let n = from.read(&mut buf[..limit]).await.map_err(|_| PumpError::Io)?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        if let (Direction::Up, Mode::Refuse(prefix)) = (direction, mode) {
            // Requests start at the beginning of a write; that is good enough here.
            if buf[..n].starts_with(prefix.as_bytes()) {
                return Err(PumpError::Io);
            }
        }
        if direction == Direction::Down && *mode == Mode::DropResponses {
            return Err(PumpError::AnswerArrived);
        }
        match mode {
            Mode::Delay(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Mode::Throttle(rate) => {
                tokio::time::sleep(Duration::from_micros(n as u64 * 1_000_000 / (*rate).max(1))).await
            }
            _ => {}
        }
        to.write_all(&buf[..n]).await.map_err(|_| PumpError::Io)?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if direction == Direction::Up {
            counters.requests.fetch_add(request_lines(&buf[..n]), Ordering::Relaxed);
        }
    }
}

/// How many HTTP/1.1 request lines `chunk` holds.
fn request_lines(chunk: &[u8]) -> u64 {
    const MARK: &[u8] = b" HTTP/1.1\r\n";
    chunk.windows(MARK.len()).filter(|w| *w == MARK).count() as u64
}

#[cfg(test)]
mod tests {
    use super::request_lines;

    #[test]
    fn request_lines_counts_each_request_of_a_pipelined_chunk() {
        // Given two requests in one chunk, and a body that mentions HTTP without a request line
        let chunk = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\n\r\n{\"note\":\"HTTP/1.1\"}";
        // Then two request lines are counted
        assert_eq!(request_lines(chunk), 2);
    }
}
