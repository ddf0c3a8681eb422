//! Webhook deliveries: made from `transition` events past a cursor, tried by
//! the notifier, kept as dead letters when out of attempts.
//!
//! Never: a delivery made twice for one (event, URL), or the cursor moved
//! past an event without making its deliveries (both in one transaction).

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use common::run_state::RunState;
use common::time::Timestamp;
use common::wire::{webhook_event, WebhookDelivery, WebhookPayload};

use super::{ts_col, ts_opt};
use crate::store::{DueDelivery, StoreError, StoreResult};

const CURSOR: &str = "webhook_event_cursor";

fn cursor(tx: &Connection) -> StoreResult<Option<i64>> {
    let v: Option<String> = tx
        .query_row("SELECT value FROM settings WHERE key = ?1", [CURSOR], |r| {
            r.get(0)
        })
        .optional()?;
    v.map(|v| {
        v.parse::<i64>()
            .map_err(|_| StoreError::Invalid(format!("settings {CURSOR} = {v:?} is not an id")))
    })
    .transpose()
}

fn set_cursor(tx: &Connection, id: i64) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (CURSOR, id.to_string()),
    )?;
    Ok(())
}

fn newest_event(tx: &Connection) -> StoreResult<i64> {
    Ok(tx.query_row("SELECT COALESCE(max(id), 0) FROM events", [], |r| r.get(0))?)
}

/// Whether [`enqueue`] has anything to do: events past the cursor, or no
/// cursor yet.
pub fn has_new_events(tx: &Connection) -> StoreResult<bool> {
    Ok(match cursor(tx)? {
        None => true,
        Some(from) => newest_event(tx)? > from,
    })
}

/// Makes one pending delivery per URL for every hold or end recorded since
/// the cursor, and moves the cursor. The first call starts the cursor at
/// the newest event: history from before webhooks were configured is not
/// sent. Returns how many deliveries it made.
pub fn enqueue(tx: &Connection, urls: &[String], now: Timestamp) -> StoreResult<usize> {
    let newest = newest_event(tx)?;
    let Some(from) = cursor(tx)? else {
        set_cursor(tx, newest)?;
        return Ok(0);
    };
    if newest <= from {
        return Ok(0);
    }
    let mut changes = tx.prepare(
        "SELECT e.id, e.ts, e.data_json, r.id AS run_id, r.profile, r.failed_stage, h.name AS host
         FROM events e JOIN runs r ON r.id = e.run_id JOIN hosts h ON h.id = r.host_id
         WHERE e.id > ?1 AND e.id <= ?2 AND e.kind = 'transition' ORDER BY e.id",
    )?;
    let rows = changes
        .query_map((from, newest), |r| {
            Ok((
                r.get::<_, i64>("id")?,
                ts_col(r, "ts")?,
                r.get::<_, Option<String>>("data_json")?,
                r.get::<_, i64>("run_id")?,
                r.get::<_, String>("profile")?,
                r.get::<_, Option<String>>("failed_stage")?,
                r.get::<_, String>("host")?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut made = 0;
    for (event_id, at, data, run_id, profile, failed_stage, host) in rows {
        let data: Value = data
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or(Value::Null);
        let state = |k: &str| data[k].as_str().and_then(|s| s.parse::<RunState>().ok());
        let (Some(to), Some(previous)) = (state("to"), state("from")) else {
            continue;
        };
        let Some(event) = webhook_event(to).filter(|_| to != previous) else {
            continue;
        };
        let failure_reason = match &failed_stage {
            Some(stage) => failure_reason(tx, run_id, stage)?,
            None => None,
        };
        let payload = WebhookPayload {
            event: event.to_string(),
            run_id,
            host,
            profile,
            state: to,
            previous_state: previous,
            at,
            failed_stage: failed_stage.filter(|_| to != RunState::Passed),
            failure_reason: failure_reason.filter(|_| to != RunState::Passed),
            report_html: format!("{}/runs/{run_id}/report.html", common::wire::API_PREFIX),
        };
        let json =
            serde_json::to_string(&payload).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO webhook_deliveries
               (event_id, run_id, url, event, payload_json, state, attempts, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
        )?;
        for url in urls {
            made += insert.execute((event_id, run_id, url, event, &json, now.to_string()))?;
        }
    }
    set_cursor(tx, newest)?;
    Ok(made)
}

/// The failed stage's reasons as the agent or gate wrote them.
fn failure_reason(tx: &Connection, run_id: i64, stage: &str) -> StoreResult<Option<String>> {
    let summary: Option<Option<String>> = tx
        .query_row(
            "SELECT summary_json FROM stages WHERE run_id = ?1 AND name = ?2 ORDER BY ordinal LIMIT 1",
            (run_id, stage),
            |r| r.get(0),
        )
        .optional()?;
    let summary: Value = summary
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let reasons: Vec<&str> = summary["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Ok((!reasons.is_empty()).then(|| reasons.join("; ")))
}

/// Pending deliveries whose time has come, oldest first.
pub fn due(tx: &Connection, now: Timestamp, limit: u32) -> StoreResult<Vec<DueDelivery>> {
    let rows = tx
        .prepare(
            "SELECT id, url, event, payload_json, attempts FROM webhook_deliveries
             WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2",
        )?
        .query_map((now.to_string(), limit), |r| {
            Ok(DueDelivery {
                id: r.get("id")?,
                url: r.get("url")?,
                event: r.get("event")?,
                payload_json: r.get("payload_json")?,
                attempts: r.get("attempts")?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Records one attempt: delivered, or failed with the next try (`None`:
/// out of attempts, the delivery becomes a dead letter).
pub fn record_attempt(
    tx: &Connection,
    id: i64,
    outcome: Result<(), &str>,
    next: Option<Timestamp>,
    now: Timestamp,
) -> StoreResult<()> {
    let n = match outcome {
        Ok(()) => tx.execute(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1,
               delivered_at = ?1, last_error = NULL WHERE id = ?2 AND state = 'pending'",
            (now.to_string(), id),
        )?,
        Err(error) => tx.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = ?1,
               state = CASE WHEN ?2 IS NULL THEN 'dead' ELSE 'pending' END,
               next_attempt_at = COALESCE(?2, next_attempt_at)
             WHERE id = ?3 AND state = 'pending'",
            (error, next.map(|t| t.to_string()), id),
        )?,
    };
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "webhook delivery {id} is not pending"
        )));
    }
    Ok(())
}

const COLUMNS: &str = "id, run_id, url, event, state, attempts, next_attempt_at, last_error, created_at, delivered_at";

fn row_to_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: r.get("id")?,
        run_id: r.get("run_id")?,
        url: r.get("url")?,
        event: r.get("event")?,
        state: r.get("state")?,
        attempts: r.get("attempts")?,
        next_attempt_at: ts_col(r, "next_attempt_at")?,
        last_error: r.get("last_error")?,
        created_at: ts_col(r, "created_at")?,
        delivered_at: ts_opt(r, "delivered_at")?,
    })
}

/// Deliveries, newest first, optionally only those in one state.
pub fn list(tx: &Connection, state: Option<&str>) -> StoreResult<Vec<WebhookDelivery>> {
    let rows = tx
        .prepare(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC"
        ))?
        .query_map([state], row_to_delivery)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Makes a dead letter pending again with a fresh count of attempts.
pub fn retry(tx: &Connection, id: i64, now: Timestamp) -> StoreResult<WebhookDelivery> {
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM webhook_deliveries WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    match state.as_deref() {
        None => return Err(StoreError::NotFound(format!("no webhook delivery {id}"))),
        Some("dead") => {}
        Some(other) => {
            return Err(StoreError::Conflict(format!(
                "webhook delivery {id} is {other}; only a dead letter is retried"
            )))
        }
    }
    tx.execute(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1 WHERE id = ?2",
        (now.to_string(), id),
    )?;
    let d = tx.query_row(
        &format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id = ?1"),
        [id],
        row_to_delivery,
    )?;
    Ok(d)
}
