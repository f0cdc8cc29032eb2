//! Outgoing webhooks: alerts ([`crate::analytics`]) sent to the subscribers an admin
//! registered, at least once and in order per subscriber, each signed ([`signature`]).
//!
//! Each subscriber has its own cursor (the last alert id handed over), its own sender task
//! ([`sender`]) and its own circuit breaker, so a slow or dead subscriber only delays
//! itself: the senders read the analytics file and never touch the log's writer, and the
//! analytics worker never waits for them. A failed attempt is retried with exponential
//! backoff and jitter; after `webhooks.max_attempts` attempts the alert goes to the
//! subscriber's dead-letter list and the cursor moves on. A dead (or delivered) alert can
//! be queued again by hand; queued redeliveries go before new alerts. Cursors, attempt
//! counts and delivery records are in the analytics file with `synchronous=FULL`, so
//! deliveries survive a restart (an alert in flight at a crash is sent again: at least
//! once, which receivers dedupe by the `Shelfsync-Delivery` header).

pub mod sender;
pub mod signature;

use crate::analytics::AnalyticsDb;
use crate::config::WebhookConfig;
use crate::store::ReadError;
use rusqlite::{params, Connection, OptionalExtension};
use shelfsync_common::breaker::BreakerState;
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::analytics::{Delivery, RegisterWebhook, Webhook};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// A subscriber as stored.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Its id.
    pub id: Uuid,
    /// Where to send.
    pub url: String,
    /// The alert kinds it takes.
    pub events: Vec<String>,
    /// The signing secret.
    pub secret: shelfsync_common::server::secret::Secret,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// Last alert handed over.
    pub cursor: u64,
    /// Failed attempts at the next alert.
    pub attempts: u32,
}

/// A running sender: how to wake it, and its breaker's phase for the listing.
struct Running {
    wake: Arc<Notify>,
    breaker: Arc<Mutex<BreakerState>>,
}

/// The webhook subscribers and their senders.
pub struct Webhooks {
    db: Arc<AnalyticsDb>,
    config: WebhookConfig,
    alerts: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    running: Mutex<HashMap<Uuid, Running>>,
    client: reqwest::Client,
}

impl Webhooks {
    /// Starts a sender for every stored subscriber. `alerts` moves when the analytics
    /// worker commits (new alerts may be there); the senders stop when `shutdown` turns true.
    pub async fn start(
        db: Arc<AnalyticsDb>,
        config: WebhookConfig,
        alerts: watch::Receiver<u64>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, ReadError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ReadError::Corrupt(format!("webhook client: {e}")))?;
        let webhooks = Arc::new(Self {
            db,
            config,
            alerts,
            shutdown,
            running: Mutex::new(HashMap::new()),
            client,
        });
        for subscriber in webhooks.db.read(subscribers).await? {
            webhooks.launch(subscriber.id);
        }
        Ok(webhooks)
    }

    fn launch(self: &Arc<Self>, id: Uuid) {
        let wake = Arc::new(Notify::new());
        let breaker = Arc::new(Mutex::new(BreakerState::Closed));
        self.lock().insert(
            id,
            Running {
                wake: wake.clone(),
                breaker: breaker.clone(),
            },
        );
        let sender = sender::Sender::new(self.clone(), id, wake, breaker);
        tokio::spawn(sender.run());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a subscriber (validated by the caller); it receives the alerts raised
    /// after the analytics checkpoint of this moment.
    pub async fn register(self: &Arc<Self>, body: RegisterWebhook) -> Result<Webhook, ReadError> {
        let id = Uuid::now_v7();
        let now = OffsetDateTime::now_utc();
        let events = body.events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(",");
        let subscriber = self
            .db
            .write(move |tx| {
                let cursor: i64 = tx
                    .query_row("SELECT COALESCE(MAX(position), 0) FROM an_alerts", [], |row| row.get(0))?;
                tx.execute(
                    "INSERT INTO webhooks (id, url, events, secret, created_at, cursor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![&id.as_bytes()[..], body.url, events, body.secret.expose(), time_text::encode(now)?, cursor],
                )?;
                subscriber(tx, id)?.ok_or_else(|| ReadError::Corrupt("the webhook just written".into()))
            })
            .await?;
        self.launch(id);
        Ok(self.view(subscriber))
    }

    /// Every subscriber, oldest first.
    pub async fn list(&self) -> Result<Vec<Webhook>, ReadError> {
        Ok(self
            .db
            .read(subscribers)
            .await?
            .into_iter()
            .map(|s| self.view(s))
            .collect())
    }

    /// One subscriber's delivery records (`status` filters), newest first, at most `limit`;
    /// `None` when there is no such subscriber.
    pub async fn deliveries(
        &self,
        id: Uuid,
        status: Option<String>,
        limit: usize,
    ) -> Result<Option<Vec<Delivery>>, ReadError> {
        self.db
            .read(move |conn| {
                if subscriber(conn, id)?.is_none() {
                    return Ok(None);
                }
                let mut stmt = conn.prepare_cached(
                    "SELECT d.alert, COALESCE(a.kind, ''), d.status, d.attempts, d.last_error, d.updated_at
                     FROM webhook_deliveries d LEFT JOIN an_alerts a ON a.position = d.alert
                     WHERE d.webhook_id = ?1 AND (?2 IS NULL OR d.status = ?2)
                     ORDER BY d.updated_at DESC, d.alert DESC LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![&id.as_bytes()[..], status, limit as i64], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (alert, kind, status, attempts, last_error, updated_at) = row?;
                    out.push(Delivery {
                        alert_id: alert as u64,
                        kind,
                        status,
                        attempts: attempts as u32,
                        last_error,
                        updated_at: time_text::decode(&updated_at)?,
                    });
                }
                Ok(Some(out))
            })
            .await
    }

    /// Queues the alert `alert` again for subscriber `id`, ahead of new alerts. Only an
    /// alert the subscriber has a record of (delivered or dead) can be redelivered: false
    /// otherwise.
    pub async fn redeliver(&self, id: Uuid, alert: u64) -> Result<bool, ReadError> {
        let now = time_text::encode(OffsetDateTime::now_utc())?;
        let queued = self
            .db
            .write(move |tx| {
                Ok(tx.execute(
                    "UPDATE webhook_deliveries SET status = 'redeliver', attempts = 0, updated_at = ?3
                     WHERE webhook_id = ?1 AND alert = ?2",
                    params![&id.as_bytes()[..], alert as i64, now],
                )? == 1)
            })
            .await?;
        if queued {
            if let Some(running) = self.lock().get(&id) {
                running.wake.notify_one();
            }
        }
        Ok(queued)
    }

    /// Removes subscriber `id` with its delivery records, and stops its sender; false when
    /// there is no such subscriber.
    pub async fn remove(&self, id: Uuid) -> Result<bool, ReadError> {
        let removed = self
            .db
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM webhook_deliveries WHERE webhook_id = ?1",
                    [&id.as_bytes()[..]],
                )?;
                Ok(tx.execute("DELETE FROM webhooks WHERE id = ?1", [&id.as_bytes()[..]])? == 1)
            })
            .await?;
        if let Some(running) = self.lock().remove(&id) {
            running.wake.notify_one();
        }
        Ok(removed)
    }

    /// Removes delivered records older than `days` (housekeeping); says how many.
    pub async fn prune_delivered(&self, days: u32) -> Result<usize, ReadError> {
        let before = time_text::encode(OffsetDateTime::now_utc() - time::Duration::days(i64::from(days)))?;
        self.db
            .write(move |tx| {
                Ok(tx.execute(
                    "DELETE FROM webhook_deliveries WHERE status = 'delivered' AND updated_at < ?1",
                    [before],
                )?)
            })
            .await
    }

    fn view(&self, s: Subscriber) -> Webhook {
        let breaker = self.lock().get(&s.id).map_or(BreakerState::Closed, |r| {
            *r.breaker.lock().unwrap_or_else(PoisonError::into_inner)
        });
        Webhook {
            id: s.id,
            url: s.url,
            events: s.events,
            cursor: s.cursor,
            attempts: s.attempts,
            breaker: breaker.as_str().to_owned(),
            created_at: s.created_at,
        }
    }
}

const SUBSCRIBER_COLUMNS: &str = "id, url, events, secret, created_at, cursor, attempts";

/// A `webhooks` row as stored: id, url, events, secret, created_at, cursor, attempts.
type SubscriberRow = (Vec<u8>, String, String, String, String, i64, i64);

fn subscriber_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SubscriberRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn decode(row: SubscriberRow) -> Result<Subscriber, ReadError> {
    let (id, url, events, secret, created_at, cursor, attempts) = row;
    Ok(Subscriber {
        id: Uuid::from_slice(&id).map_err(|e| ReadError::Corrupt(e.to_string()))?,
        url,
        events: events.split(',').map(str::to_owned).collect(),
        secret: secret.into(),
        created_at: time_text::decode(&created_at)?,
        cursor: cursor as u64,
        attempts: attempts as u32,
    })
}

/// Every subscriber, oldest first.
fn subscribers(conn: &Connection) -> Result<Vec<Subscriber>, ReadError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SUBSCRIBER_COLUMNS} FROM webhooks ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([], subscriber_from_row)?;
    rows.map(|row| decode(row?)).collect()
}

/// One subscriber.
pub(crate) fn subscriber(conn: &Connection, id: Uuid) -> Result<Option<Subscriber>, ReadError> {
    let row = conn
        .prepare_cached(&format!("SELECT {SUBSCRIBER_COLUMNS} FROM webhooks WHERE id = ?1"))?
        .query_row([&id.as_bytes()[..]], subscriber_from_row)
        .optional()?;
    row.map(decode).transpose()
}
