//! Host rows.

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use common::event::{EventKind, EventLevel};
use common::time::Timestamp;
use common::wire::{Host, QueuedRun};

use super::{insert_plain_event, ts_col, ts_opt};
use crate::store::{NewHost, StoreError, StoreResult};

const COLUMNS: &str = "id, name, mac, wol_broadcast_ip, wol_port, expected_spec_yaml, notes, created_at, updated_at, last_seen_at, claim_secret_hash != '' AS claim_secret";

fn row_to_host(r: &rusqlite::Row<'_>) -> rusqlite::Result<Host> {
    Ok(Host {
        id: r.get("id")?,
        name: r.get("name")?,
        mac: r.get("mac")?,
        wol_broadcast_ip: r.get("wol_broadcast_ip")?,
        wol_port: r.get("wol_port")?,
        expected_spec_yaml: r.get("expected_spec_yaml")?,
        notes: r.get("notes")?,
        created_at: ts_col(r, "created_at")?,
        updated_at: ts_col(r, "updated_at")?,
        last_seen_at: ts_opt(r, "last_seen_at")?,
        claim_secret: r.get("claim_secret")?,
    })
}

pub fn create(tx: &Connection, host: &NewHost, now: Timestamp) -> StoreResult<Host> {
    let (ip, port) = host.wol.clone().unwrap_or_default();
    let port = if host.wol.is_some() { port } else { 9 };
    let res = tx.execute(
        "INSERT INTO hosts (name, mac, wol_broadcast_ip, wol_port, expected_spec_yaml, notes, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        (&host.name, host.mac.to_string(), ip, port, &host.expected_spec_yaml, &host.notes, now.to_string()),
    );
    match res {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
            if e.code == ErrorCode::ConstraintViolation =>
        {
            let what = if msg.contains("hosts.mac") {
                format!("a host with MAC {} already exists", host.mac)
            } else {
                format!("host {:?} already exists", host.name)
            };
            return Err(StoreError::Conflict(what));
        }
        Err(e) => return Err(e.into()),
    }
    let id = tx.last_insert_rowid();
    insert_plain_event(
        tx,
        None,
        id,
        EventLevel::Info,
        EventKind::HostAdded,
        format!("host {} registered ({})", host.name, host.mac),
        now,
    )?;
    by_id(tx, id)
}

/// The columns an edit may set.
#[derive(Clone, Copy)]
enum Edited {
    Spec,
    ClaimSecret,
}

/// Sets one column of host `name` to `value`, with a `host_edited` event
/// saying `what`.
fn edit(
    tx: &Connection,
    name: &str,
    col: Edited,
    value: &str,
    what: &str,
    now: Timestamp,
) -> StoreResult<Host> {
    let sql = match col {
        Edited::Spec => "UPDATE hosts SET expected_spec_yaml = ?1, updated_at = ?2 WHERE name = ?3",
        Edited::ClaimSecret => {
            "UPDATE hosts SET claim_secret_hash = ?1, updated_at = ?2 WHERE name = ?3"
        }
    };
    if tx.execute(sql, (value, now.to_string(), name))? == 0 {
        return Err(StoreError::NotFound(format!("host {name:?} not found")));
    }
    let host = by_name(tx, name)?;
    let message = format!("host {name}: {what}");
    insert_plain_event(
        tx,
        None,
        host.id,
        EventLevel::Info,
        EventKind::HostEdited,
        message,
        now,
    )?;
    Ok(host)
}

/// Sets (or, with `hash` empty, removes) the host's claim secret hash.
pub fn set_claim_secret(
    tx: &Connection,
    name: &str,
    hash: &str,
    now: Timestamp,
) -> StoreResult<Host> {
    let what = if hash.is_empty() {
        "claim secret removed"
    } else {
        "claim secret set"
    };
    edit(tx, name, Edited::ClaimSecret, hash, what, now)
}

pub fn update_spec(
    tx: &Connection,
    name: &str,
    spec_yaml: &str,
    now: Timestamp,
) -> StoreResult<Host> {
    edit(tx, name, Edited::Spec, spec_yaml, "spec replaced", now)
}

pub fn list(tx: &Connection) -> StoreResult<Vec<Host>> {
    let mut stmt = tx.prepare_cached(&format!("SELECT {COLUMNS} FROM hosts ORDER BY name"))?;
    let rows = stmt
        .query_map([], row_to_host)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn by_name(tx: &Connection, name: &str) -> StoreResult<Host> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM hosts WHERE name = ?1"),
        [name],
        row_to_host,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("host {name:?} not found")))
}

pub fn by_id(tx: &Connection, id: i64) -> StoreResult<Host> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM hosts WHERE id = ?1"),
        [id],
        row_to_host,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("host {id} not found")))
}

pub fn set_token(
    tx: &Connection,
    name: &str,
    token_hash: &str,
    now: Timestamp,
) -> StoreResult<Host> {
    let host = by_name(tx, name)?;
    tx.execute(
        "UPDATE hosts SET host_token_hash = ?1, updated_at = ?2 WHERE id = ?3",
        (token_hash, now.to_string(), host.id),
    )?;
    insert_plain_event(
        tx,
        None,
        host.id,
        EventLevel::Info,
        EventKind::HostToken,
        format!("host-mode token issued for {name}; any earlier one no longer works"),
        now,
    )?;
    by_id(tx, host.id)
}

pub fn heartbeat(
    tx: &Connection,
    token_hash: &str,
    now: Timestamp,
) -> StoreResult<Option<(Host, Option<QueuedRun>)>> {
    if token_hash.is_empty() {
        return Ok(None);
    }
    let id: Option<i64> = tx
        .query_row(
            "UPDATE hosts SET last_seen_at = ?1 WHERE host_token_hash = ?2 RETURNING id",
            (now.to_string(), token_hash),
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    let host = by_id(tx, id)?;
    let queued: Option<QueuedRun> = tx
        .query_row(
            "SELECT id, non_destructive FROM runs WHERE host_id = ?1 AND state = 'Queued' ORDER BY id LIMIT 1",
            [id],
            |r| Ok(QueuedRun { run_id: r.get(0)?, non_destructive: r.get(1)? }),
        )
        .optional()?;
    if let Some(q) = queued.as_ref().filter(|q| !q.non_destructive) {
        // Said once per run: the host-mode agent will not claim it.
        let told: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM events WHERE run_id = ?1 AND kind = 'host_mode_refused')",
            [q.run_id],
            |r| r.get(0),
        )?;
        if !told {
            insert_plain_event(tx, Some(q.run_id), id, EventLevel::Warn, EventKind::HostModeRefused, format!(
                    "{} runs a host-mode agent, which runs only non-destructive runs in place: cancel run {} and start it with --non-destructive",
                    host.name, q.run_id
                ), now)?;
        }
    }
    Ok(Some((host, queued)))
}
