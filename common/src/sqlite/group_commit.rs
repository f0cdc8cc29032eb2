//! The single group-committing writer, written once for both binaries (feature `sqlite`).
//!
//! One thread owns a database's only write connection. It blocks for the first queued
//! job, drains whatever else is queued (up to a batch), runs every write in one
//! transaction, fsyncs once on `COMMIT`, and only then lets the binary publish what the
//! batch changed and answers every caller. If SQLite fails anywhere in a batch, the
//! transaction rolls back and every caller in it, those the batch never reached included,
//! gets the binary's retryable storage error: nothing is half-written, nobody is left
//! without an answer. A checkpoint or a stop queued between writes runs alone, after
//! everything queued before it; a clean stop checkpoints and truncates the WAL first.
//!
//! A write whose request already answered "timed out" is dropped unrun (see
//! [`crate::write_gate`]). What a batch *does* is the binary's: it implements
//! [`BatchLogic`] (the hub decides commands and records store facts against its stream
//! heads; the agent records till writes and hub events into its outbox and view).
//!
//! The database is behind [`Database`]: a SQLite connection here, and the hub's
//! PostgreSQL connection (`hub/src/store/pg`), so that both backends share this one
//! loop of draining, batching, committing and answering.

use crate::sqlite::Deferred;
use crate::write_gate::{self, WriteGate};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The reply channel of one write: the binary sends the caller's result on it.
pub type Reply<T, E> = oneshot::Sender<Result<T, E>>;
/// Where a queued write's answer arrives.
pub type Answer<T, E> = oneshot::Receiver<Result<T, E>>;

/// The metric names a writer reports under.
#[derive(Debug, Clone, Copy)]
pub struct WriterMetrics {
    /// Histogram: seconds a write waited in the queue.
    pub queue_seconds: &'static str,
    /// Histogram: writes per committed batch.
    pub batch_writes: &'static str,
    /// Histogram: seconds from a batch's start to its commit.
    pub commit_seconds: &'static str,
    /// Counter: writes dropped because their request had already timed out.
    pub abandoned: &'static str,
}

/// How a writer thread is named and sized.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// The thread's name (shown in logs and debuggers).
    pub thread_name: &'static str,
    /// Writes that may wait in the queue before senders are slowed down.
    pub queue_depth: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Where it reports.
    pub metrics: WriterMetrics,
}

/// The database a writer owns the write connection of.
pub trait Database: Send + 'static {
    /// An open transaction.
    type Tx<'t>;
    /// What the database fails with (the batch rolls back, every caller is told).
    type Error: Display;

    /// Starts the transaction one batch runs in (SQLite: `BEGIN IMMEDIATE`, so the
    /// write lock is taken before the first read).
    fn begin(&mut self) -> Result<Self::Tx<'_>, Self::Error>;

    /// Commits it; returns after the database made it durable.
    fn commit(tx: Self::Tx<'_>) -> Result<(), Self::Error>;

    /// Maintenance that runs alone between batches, when asked for and at a clean stop
    /// (SQLite: checkpoint the WAL into the database file and truncate it).
    fn maintain(&mut self) -> Result<(), Self::Error>;

    /// A batch failed (and rolled back): a networked database drops its connection here,
    /// which may be what broke, and opens a new one for the next batch.
    fn failed(&mut self) {}
}

impl Database for Connection {
    type Tx<'t> = Transaction<'t>;
    type Error = rusqlite::Error;

    fn begin(&mut self) -> rusqlite::Result<Transaction<'_>> {
        self.transaction_with_behavior(TransactionBehavior::Immediate)
    }

    fn commit(tx: Transaction<'_>) -> rusqlite::Result<()> {
        tx.commit()
    }

    fn maintain(&mut self) -> rusqlite::Result<()> {
        let busy: i64 = self.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        if busy != 0 {
            tracing::debug!("WAL checkpoint could not finish: readers active");
        }
        Ok(())
    }
}

/// The error type of a batch logic's database.
pub type DbError<L> = <<L as BatchLogic>::Db as Database>::Error;

/// A binary's batch logic: everything about a batch except running it.
pub trait BatchLogic: Send + 'static {
    /// The database the batches run in.
    type Db: Database;
    /// One queued write; it carries its caller's [`Reply`].
    type Write: Send + 'static;
    /// The error a caller gets when the write cannot be made (the batch's storage
    /// failure, or the writer being gone).
    type Error: Clone + Send + 'static;
    /// What a batch changed, kept aside until its commit.
    type Changes;

    /// Runs `writes` in order inside `tx`, recording each caller's answer in `answers`
    /// (answered after the commit). A database error stops the batch: return it, leaving
    /// the writes not yet run in the iterator; their callers are failed too.
    fn run_batch(
        &mut self,
        tx: &mut <Self::Db as Database>::Tx<'_>,
        writes: &mut dyn Iterator<Item = Self::Write>,
        answers: &mut Vec<Deferred<Self::Error>>,
    ) -> Result<Self::Changes, DbError<Self>>;

    /// The batch committed: make its changes visible (in-memory heads, subscribers),
    /// before its callers are answered.
    fn committed(&mut self, changes: Self::Changes);

    /// Answers a write the batch never ran (it rolled back first) with `error`.
    fn fail(write: Self::Write, error: &Self::Error);

    /// The caller's error for a database failure (retryable: nothing was written).
    fn storage_error(error: &DbError<Self>) -> Self::Error;

    /// The caller's error when the writer is stopped or gone.
    fn unavailable() -> Self::Error;
}

enum Op<L: BatchLogic> {
    Write(L::Write),
    Checkpoint(Reply<(), L::Error>),
    Shutdown(oneshot::Sender<()>),
}

struct Job<L: BatchLogic> {
    op: Op<L>,
    queued_at: Instant,
    gate: Option<WriteGate>,
}

/// A handle on a running writer; cheap to clone.
pub struct Writer<L: BatchLogic> {
    jobs: mpsc::Sender<Job<L>>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl<L: BatchLogic> Clone for Writer<L> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            thread: self.thread.clone(),
        }
    }
}

impl<L: BatchLogic> Writer<L> {
    /// Starts the writer thread on `conn` (opened, migrated) with `logic`.
    pub fn start(conn: L::Db, logic: L, settings: WriterSettings) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(settings.queue_depth.max(1));
        let thread = std::thread::Builder::new()
            .name(settings.thread_name.into())
            .spawn(move || Thread { conn, logic, settings }.run(queue))?;
        Ok(Self {
            jobs,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Queues the write that `write` builds around its reply channel, and waits for the
    /// answer, which comes only after the batch it joined committed (or failed). The
    /// write carries the gate of the request being served, if any.
    pub async fn submit<T>(&self, write: impl FnOnce(Reply<T, L::Error>) -> L::Write) -> Result<T, L::Error> {
        self.queue(write).await?.await.unwrap_or_else(|_| Err(L::unavailable()))
    }

    /// Queues the write and returns at once with the channel its answer will come on
    /// (for callers that must know the write is queued before they go on).
    pub async fn queue<T>(
        &self,
        write: impl FnOnce(Reply<T, L::Error>) -> L::Write,
    ) -> Result<Answer<T, L::Error>, L::Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Write(write(reply))).await?;
        Ok(answer)
    }

    /// Runs the database's maintenance ([`Database::maintain`]: for SQLite, checkpoints
    /// the WAL into the database file and truncates it), alone, after what was queued
    /// before it.
    pub async fn checkpoint(&self) -> Result<(), L::Error> {
        self.queue_checkpoint()
            .await?
            .await
            .unwrap_or_else(|_| Err(L::unavailable()))
    }

    /// Queues a checkpoint and returns at once with the channel its answer will come on.
    /// Being a barrier, it also closes the batch being drained before it.
    pub async fn queue_checkpoint(&self) -> Result<Answer<(), L::Error>, L::Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Op::Checkpoint(reply)).await?;
        Ok(answer)
    }

    /// Lets the writer finish what is queued, checkpoints, stops it and waits for the
    /// thread. Writes sent after this through any clone answer [`BatchLogic::unavailable`].
    pub async fn close(&self) {
        let (reply, stopped) = oneshot::channel();
        if self.send(Op::Shutdown(reply)).await.is_ok() {
            let _ = stopped.await;
        }
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    async fn send(&self, op: Op<L>) -> Result<(), L::Error> {
        let job = Job {
            op,
            queued_at: Instant::now(),
            gate: write_gate::current(),
        };
        self.jobs.send(job).await.map_err(|_| L::unavailable())
    }
}

/// The writer thread's state.
struct Thread<L: BatchLogic> {
    conn: L::Db,
    logic: L,
    settings: WriterSettings,
}

/// A write taken from the queue.
struct Queued<W> {
    write: W,
    queued_at: Instant,
    gate: Option<WriteGate>,
}

impl<L: BatchLogic> Thread<L> {
    fn run(mut self, mut queue: mpsc::Receiver<Job<L>>) {
        while let Some(first) = queue.blocking_recv() {
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job.op {
                    Op::Checkpoint(reply) => {
                        let _ = reply.send(self.checkpoint());
                    }
                    Op::Shutdown(stopped) => {
                        // Leave no WAL behind a clean stop.
                        if let Err(error) = self.conn.maintain() {
                            tracing::warn!(%error, writer = self.settings.thread_name, "final maintenance failed");
                        }
                        tracing::info!(writer = self.settings.thread_name, "writer stopped");
                        let _ = stopped.send(());
                        return;
                    }
                    Op::Write(write) => {
                        let first = Queued {
                            write,
                            queued_at: job.queued_at,
                            gate: job.gate,
                        };
                        next = self.commit(first, &mut queue);
                    }
                }
            }
        }
        tracing::info!(
            writer = self.settings.thread_name,
            "writer stopped: every handle dropped"
        );
    }

    fn checkpoint(&mut self) -> Result<(), L::Error> {
        self.conn.maintain().map_err(|e| L::storage_error(&e))
    }

    /// Runs one batch: takes the transaction (and with it the database's write lock) for
    /// `first`, *then* drains what else is queued into the same batch, so that what
    /// arrived while the lock was awaited (another process's commit, on a shared
    /// database) commits with it. Returns the barrier that ended the drain, if any.
    fn commit(&mut self, first: Queued<L::Write>, queue: &mut mpsc::Receiver<Job<L>>) -> Option<Job<L>> {
        let started = Instant::now();
        let metrics = self.settings.metrics;
        let batch = run_locked(
            &mut self.conn,
            &mut self.logic,
            self.settings.max_batch,
            first,
            queue,
            metrics,
        );
        match batch.outcome {
            Outcome::NotBegun(write, error) => {
                tracing::error!(%error, writer = self.settings.thread_name, "could not start a write batch");
                self.conn.failed();
                L::fail(write, &L::storage_error(&error));
            }
            Outcome::Empty => {}
            Outcome::Committed { changes, answers, size } => {
                self.logic.committed(changes);
                metrics::histogram!(metrics.batch_writes).record(size as f64);
                metrics::histogram!(metrics.commit_seconds).record(started.elapsed().as_secs_f64());
                answers.into_iter().for_each(Deferred::send);
            }
            Outcome::RolledBack {
                error,
                answers,
                unrun,
                size,
            } => {
                tracing::error!(%error, writes = size, writer = self.settings.thread_name, "write batch rolled back");
                self.conn.failed();
                let error = L::storage_error(&error);
                answers.into_iter().for_each(|answer| answer.fail(&error));
                unrun.into_iter().for_each(|write| L::fail(write, &error));
            }
        }
        batch.barrier
    }
}

/// What became of one batch.
enum Outcome<L: BatchLogic> {
    /// The transaction did not start: the first write was not run.
    NotBegun(L::Write, DbError<L>),
    /// The write taken up had already been answered "timed out": nothing ran.
    Empty,
    /// Committed: `answers` are owed.
    Committed {
        changes: L::Changes,
        answers: Vec<Deferred<L::Error>>,
        size: usize,
    },
    /// Rolled back: every answer, and every write not run, fails.
    RolledBack {
        error: DbError<L>,
        answers: Vec<Deferred<L::Error>>,
        unrun: Vec<L::Write>,
        size: usize,
    },
}

/// A batch's outcome and the barrier that ended its drain.
struct Ran<L: BatchLogic> {
    outcome: Outcome<L>,
    barrier: Option<Job<L>>,
}

/// The batch inside its transaction (a function of its own, so the transaction's borrow of
/// the connection ends before the outcome is handled).
fn run_locked<L: BatchLogic>(
    conn: &mut L::Db,
    logic: &mut L,
    max_batch: usize,
    first: Queued<L::Write>,
    queue: &mut mpsc::Receiver<Job<L>>,
    metrics: WriterMetrics,
) -> Ran<L> {
    // A write whose request already answered "timed out" must not be written; one taken
    // up is claimed at once, so that its request waits for it (the lock may take long).
    let taken_up = |job: Queued<L::Write>| -> Option<L::Write> {
        metrics::histogram!(metrics.queue_seconds).record(job.queued_at.elapsed().as_secs_f64());
        if job.gate.as_ref().is_none_or(WriteGate::claim) {
            Some(job.write)
        } else {
            metrics::counter!(metrics.abandoned).increment(1);
            None
        }
    };
    let Some(first) = taken_up(first) else {
        return Ran {
            outcome: Outcome::Empty,
            barrier: None,
        };
    };
    let mut tx = match conn.begin() {
        Ok(tx) => tx,
        Err(error) => {
            return Ran {
                outcome: Outcome::NotBegun(first, error),
                barrier: None,
            }
        }
    };
    let mut queued = Vec::new();
    let mut barrier = None;
    while queued.len() + 1 < max_batch {
        match queue.try_recv() {
            Ok(Job {
                op: Op::Write(write),
                queued_at,
                gate,
            }) => queued.push(Queued { write, queued_at, gate }),
            Ok(job) => {
                barrier = Some(job);
                break;
            }
            Err(_) => break,
        }
    }
    let writes: Vec<L::Write> = std::iter::once(first)
        .chain(queued.into_iter().filter_map(taken_up))
        .collect();
    let size = writes.len();
    let mut answers = Vec::with_capacity(size);
    let mut writes = writes.into_iter();
    let outcome = match logic.run_batch(&mut tx, &mut writes, &mut answers) {
        Ok(changes) => match L::Db::commit(tx) {
            Ok(()) => Outcome::Committed { changes, answers, size },
            Err(error) => Outcome::RolledBack {
                error,
                answers,
                unrun: writes.collect(),
                size,
            },
        },
        Err(error) => Outcome::RolledBack {
            error,
            answers,
            unrun: writes.collect(),
            size,
        },
    };
    Ran { outcome, barrier }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::settle;
    use std::time::Duration;

    /// A toy log: each write inserts one number; the number 13 is refused by a CHECK
    /// constraint, which fails its whole batch.
    struct Numbers {
        committed: Arc<Mutex<Vec<i64>>>,
    }

    struct Insert(i64, Reply<i64, String>);

    impl BatchLogic for Numbers {
        type Db = Connection;
        type Write = Insert;
        type Error = String;
        type Changes = Vec<i64>;

        fn run_batch(
            &mut self,
            tx: &mut Transaction<'_>,
            writes: &mut dyn Iterator<Item = Insert>,
            answers: &mut Vec<Deferred<String>>,
        ) -> rusqlite::Result<Vec<i64>> {
            let mut batch = Vec::new();
            for Insert(n, reply) in writes {
                let result = tx.execute("INSERT INTO numbers (n) VALUES (?1)", [n]).map(|_| Ok(n));
                settle(answers, reply, result, |e| e.to_string())?;
                batch.push(n);
            }
            Ok(batch)
        }

        fn committed(&mut self, changes: Vec<i64>) {
            self.committed.lock().unwrap().extend(changes);
        }

        fn fail(Insert(_, reply): Insert, error: &String) {
            let _ = reply.send(Err(error.clone()));
        }

        fn storage_error(error: &rusqlite::Error) -> String {
            format!("storage: {error}")
        }

        fn unavailable() -> String {
            "unavailable".into()
        }
    }

    const SETTINGS: WriterSettings = WriterSettings {
        thread_name: "test-writer",
        queue_depth: 64,
        max_batch: 8,
        metrics: WriterMetrics {
            queue_seconds: "test_queue_seconds",
            batch_writes: "test_batch_writes",
            commit_seconds: "test_commit_seconds",
            abandoned: "test_abandoned_total",
        },
    };

    fn start() -> (Writer<Numbers>, Arc<Mutex<Vec<i64>>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::sqlite::open_durable(&dir.path().join("n.sqlite")).unwrap();
        conn.execute_batch("CREATE TABLE numbers (n INTEGER NOT NULL CHECK (n <> 13))")
            .unwrap();
        let committed = Arc::new(Mutex::new(Vec::new()));
        let logic = Numbers {
            committed: committed.clone(),
        };
        (Writer::start(conn, logic, SETTINGS).unwrap(), committed, dir)
    }

    fn rows(dir: &tempfile::TempDir) -> Vec<i64> {
        let conn = Connection::open(dir.path().join("n.sqlite")).unwrap();
        let mut stmt = conn.prepare("SELECT n FROM numbers ORDER BY n").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn every_caller_is_answered_after_the_commit_of_its_batch() {
        let (writer, committed, dir) = start();
        let calls = (100..140).map(|n| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.submit(|reply| Insert(n, reply)).await })
        });
        for (n, call) in (100..140).zip(calls.collect::<Vec<_>>()) {
            assert_eq!(call.await.unwrap(), Ok(n));
        }
        let mut seen = committed.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (100..140).collect::<Vec<_>>(),
            "published after commit, each once"
        );
        writer.close().await;
        assert_eq!(rows(&dir), (100..140).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failing_batch_fails_every_caller_and_writes_nothing() {
        let (writer, committed, dir) = start();
        // Hold the queue: a checkpoint first, then a batch of three with 13 in the middle.
        let batch = [12, 13, 14].map(|n| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.submit(|reply| Insert(n, reply)).await })
        });
        let mut failed = 0;
        for call in batch {
            if call.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert!(failed >= 1, "13 is refused, and every write of its batch with it");
        let written = rows(&dir);
        assert!(!written.contains(&13));
        assert_eq!(
            committed.lock().unwrap().len(),
            written.len(),
            "only committed batches are published"
        );
        assert_eq!(
            writer.submit(|reply| Insert(20, reply)).await,
            Ok(20),
            "the writer goes on"
        );
    }

    #[tokio::test]
    async fn a_write_whose_request_gave_up_is_not_written() {
        let (writer, _, dir) = start();
        let gate = WriteGate::new();
        assert!(gate.close(), "the request timed out before the writer took it up");
        let answer = write_gate::scope(gate, writer.submit(|reply| Insert(7, reply)));
        let answer = tokio::time::timeout(Duration::from_millis(500), answer).await;
        assert!(matches!(answer, Ok(Err(ref e)) if e == "unavailable"), "{answer:?}");
        assert_eq!(writer.submit(|reply| Insert(8, reply)).await, Ok(8));
        assert_eq!(rows(&dir), vec![8]);
    }

    #[tokio::test]
    async fn close_finishes_the_queue_checkpoints_and_then_refuses() {
        let (writer, _, dir) = start();
        assert_eq!(writer.submit(|reply| Insert(1, reply)).await, Ok(1));
        assert_eq!(writer.checkpoint().await, Ok(()));
        writer.close().await;
        assert_eq!(writer.submit(|reply| Insert(2, reply)).await, Err("unavailable".into()));
        let wal = dir.path().join("n.sqlite-wal");
        assert!(
            !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
            "a clean stop leaves an empty WAL"
        );
        assert_eq!(rows(&dir), vec![1]);
    }
}
