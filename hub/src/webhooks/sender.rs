//! One subscriber's sender task: takes the subscriber's next piece of work (a queued
//! redelivery first, else the next alert after its cursor), sends it through the
//! subscriber's circuit breaker, and records the outcome in one transaction with the
//! cursor. A failure waits `backoff_min_ms * 2^(attempt-1)` (capped at `backoff_max_ms`,
//! with jitter: a random point in its upper half) and tries again; the `max_attempts`-th
//! failure dead-letters the alert and moves on. While the breaker is open nothing is
//! sent and no attempt is counted: the probe after the open period is the next attempt.

use super::{signature, subscriber, Subscriber, Webhooks};
use crate::analytics::queries::{alert, alerts_after};
use crate::read_model::stopped;
use crate::store::ReadError;
use rand::Rng;
use rusqlite::{params, OptionalExtension};
use shelfsync_common::breaker::{Admission, BreakerConfig, BreakerGuard, BreakerState, Failure};
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::analytics::Alert;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// The header that names a delivery (`<webhook id>:<alert id>`): the same for every
/// attempt, so a receiver can drop what it already has.
pub const DELIVERY_HEADER: &str = "Shelfsync-Delivery";
/// The header with the alert kind.
pub const EVENT_HEADER: &str = "Shelfsync-Event";

/// What to send next.
struct Work {
    alert: Alert,
    /// A redelivery queued by hand (its record moves, not the cursor).
    redelivery: bool,
    /// Failed attempts so far.
    attempts: u32,
}

/// One subscriber's sender.
pub(super) struct Sender {
    hooks: Arc<Webhooks>,
    id: Uuid,
    wake: Arc<Notify>,
    guard: BreakerGuard,
    alerts: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
}

impl Sender {
    pub(super) fn new(hooks: Arc<Webhooks>, id: Uuid, wake: Arc<Notify>, shown: Arc<Mutex<BreakerState>>) -> Self {
        let c = &hooks.config;
        let open_for = Duration::from_secs(c.breaker_open_secs.max(1));
        let config = BreakerConfig {
            failure_threshold: c.breaker_failures,
            failure_window: Duration::from_secs(c.breaker_window_secs.max(1)),
            open_for,
            first_open_for: open_for.min(Duration::from_secs(1)),
        };
        let phase = shown.clone();
        let guard = BreakerGuard::new(config, Instant::now, move |t| {
            *phase.lock().unwrap_or_else(PoisonError::into_inner) = t.to;
            metrics::counter!("shelfsync_hub_webhook_breaker_changes_total", "to" => t.to.as_str()).increment(1);
            tracing::warn!(webhook = %id, from = t.from.as_str(), to = t.to.as_str(), reason = t.reason, "webhook breaker");
        });
        Self {
            alerts: hooks.alerts.clone(),
            shutdown: hooks.shutdown.clone(),
            hooks,
            id,
            wake,
            guard,
        }
    }

    pub(super) async fn run(mut self) {
        let mut failures_in_a_row = 0u32;
        loop {
            // Stopping, or the subscriber was removed.
            if *self.shutdown.borrow() || !self.hooks.lock().contains_key(&self.id) {
                break;
            }
            let work = match self.next().await {
                Ok(Some((subscriber, work))) => Some((subscriber, work)),
                Ok(None) => None,
                Err(error) => {
                    tracing::warn!(webhook = %self.id, %error, "webhook: reading the next alert failed; retrying");
                    if !self.pause(Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            };
            let Some((subscriber, work)) = work else {
                // Nothing to send: wait for the worker to commit more, or a redelivery.
                let mut alerts = self.alerts.clone();
                alerts.borrow_and_update();
                tokio::select! {
                    _ = alerts.changed() => {}
                    () = self.wake.notified() => {}
                    () = stopped(&mut self.shutdown) => break,
                }
                self.alerts = alerts;
                continue;
            };
            match self.guard.admission() {
                Admission::Now => {}
                Admission::AfterProbe => {
                    if !self.pause(Duration::from_millis(50)).await {
                        break;
                    }
                    continue;
                }
                Admission::In(wait) => {
                    if !self.pause(wait).await {
                        break;
                    }
                    continue;
                }
            }
            let Ok(permit) = self.guard.acquire() else { continue };
            let attempt = work.attempts + 1;
            let outcome = self.send(&subscriber, &work.alert, attempt).await;
            let ok = outcome.is_ok();
            match &outcome {
                Ok(()) => permit.succeeded(),
                Err((failure, reason)) => {
                    permit.failed(*failure, reason);
                }
            }
            let max = self.hooks.config.max_attempts;
            let recorded = self
                .record(&work, attempt, outcome.err().map(|(_, reason)| reason), max)
                .await;
            if let Err(error) = recorded {
                tracing::warn!(webhook = %self.id, %error, "webhook: recording a delivery failed; it will be sent again");
            }
            if ok || attempt >= max {
                failures_in_a_row = 0;
                continue;
            }
            failures_in_a_row += 1;
            if !self.pause(self.backoff(failures_in_a_row)).await {
                break;
            }
        }
    }

    /// The subscriber and its next piece of work, if any.
    async fn next(&self) -> Result<Option<(Subscriber, Work)>, ReadError> {
        let id = self.id;
        self.hooks
            .db
            .read(move |conn| {
                let Some(subscriber) = subscriber(conn, id)? else {
                    return Ok(None);
                };
                let queued: Option<(i64, i64)> = conn
                    .prepare_cached(
                        "SELECT alert, attempts FROM webhook_deliveries
                         WHERE status = 'redeliver' AND webhook_id = ?1 ORDER BY alert LIMIT 1",
                    )?
                    .query_row([&id.as_bytes()[..]], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                if let Some((position, attempts)) = queued {
                    if let Some(alert) = alert(conn, position as u64)? {
                        let work = Work {
                            alert,
                            redelivery: true,
                            attempts: attempts as u32,
                        };
                        return Ok(Some((subscriber, work)));
                    }
                }
                let next = alerts_after(conn, subscriber.cursor, &subscriber.events, 1)?;
                Ok(next.into_iter().next().map(|alert| {
                    let work = Work {
                        alert,
                        redelivery: false,
                        attempts: subscriber.attempts,
                    };
                    (subscriber, work)
                }))
            })
            .await
    }

    /// Sends one alert. The error says what the failure cost the receiver, and why.
    async fn send(&self, subscriber: &Subscriber, alert: &Alert, attempt: u32) -> Result<(), (Failure, String)> {
        let body = serde_json::json!({ "webhook_id": subscriber.id, "alert": alert });
        let body = serde_json::to_vec(&body).map_err(|e| (Failure::Failed, e.to_string()))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let started = Instant::now();
        let sent = self
            .hooks
            .client
            .post(&subscriber.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signature::sign(&subscriber.secret, now, &body))
            .header(DELIVERY_HEADER, format!("{}:{}", subscriber.id, alert.id))
            .header(EVENT_HEADER, alert.kind.as_str())
            .header("Shelfsync-Attempt", attempt.to_string())
            .body(body)
            .send()
            .await;
        metrics::histogram!("shelfsync_hub_webhook_send_seconds").record(started.elapsed().as_secs_f64());
        let outcome = match sent {
            Ok(answer) if answer.status().is_success() => Ok(()),
            Ok(answer) => Err((Failure::Failed, format!("answered {}", answer.status()))),
            Err(error) if error.is_connect() => Err((Failure::Refused, format!("could not connect: {error}"))),
            Err(error) if error.is_timeout() => Err((Failure::Failed, "timed out".to_owned())),
            Err(error) => Err((Failure::Failed, error.to_string())),
        };
        let label = if outcome.is_ok() { "delivered" } else { "failed" };
        metrics::counter!("shelfsync_hub_webhook_attempts_total", "result" => label).increment(1);
        outcome
    }

    /// Records an attempt's outcome with the cursor, in one transaction.
    async fn record(&self, work: &Work, attempt: u32, error: Option<String>, max: u32) -> Result<(), ReadError> {
        let (id, alert, redelivery) = (self.id, work.alert.id as i64, work.redelivery);
        let status = match &error {
            None => "delivered",
            Some(_) if attempt >= max => "dead",
            Some(_) => "retrying",
        };
        if status == "dead" {
            metrics::counter!("shelfsync_hub_webhook_dead_letters_total").increment(1);
            tracing::warn!(webhook = %id, alert, attempts = attempt, error = error.as_deref(), "webhook: alert dead-lettered");
        }
        let now = time_text::encode(OffsetDateTime::now_utc())?;
        self.hooks
            .db
            .write(move |tx| {
                let key = &id.as_bytes()[..];
                if super::subscriber(tx, id)?.is_none() {
                    // Removed while this attempt was in flight: nothing to record.
                    return Ok(());
                }
                match (status, redelivery) {
                    ("retrying", false) => {
                        tx.execute("UPDATE webhooks SET attempts = ?2 WHERE id = ?1", params![key, attempt])?;
                    }
                    ("retrying", true) => {
                        tx.execute(
                            "UPDATE webhook_deliveries SET attempts = ?3, last_error = ?4, updated_at = ?5
                             WHERE webhook_id = ?1 AND alert = ?2",
                            params![key, alert, attempt, error, now],
                        )?;
                    }
                    (status, _) => {
                        tx.execute(
                            "INSERT INTO webhook_deliveries (webhook_id, alert, status, attempts, last_error, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                             ON CONFLICT (webhook_id, alert) DO UPDATE SET status = excluded.status,
                                 attempts = excluded.attempts, last_error = excluded.last_error, updated_at = excluded.updated_at",
                            params![key, alert, status, attempt, error, now],
                        )?;
                        if !redelivery {
                            tx.execute(
                                "UPDATE webhooks SET cursor = MAX(cursor, ?2), attempts = 0 WHERE id = ?1",
                                params![key, alert],
                            )?;
                        }
                    }
                }
                Ok(())
            })
            .await
    }

    /// The wait after the `n`-th failure in a row: doubling from the minimum, capped, in
    /// its upper half at random.
    fn backoff(&self, n: u32) -> Duration {
        let c = &self.hooks.config;
        let full = c
            .backoff_min_ms
            .saturating_mul(1u64 << (n.saturating_sub(1)).min(30))
            .min(c.backoff_max_ms);
        Duration::from_millis(rand::rng().random_range(full / 2..=full))
    }

    /// Sleeps `delay`; false when shutting down meanwhile.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = stopped(&mut self.shutdown) => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}
