//! What `/metrics` reads from the store at scrape time: one short read.

use rusqlite::Connection;

use super::ts_opt;
use crate::store::StoreResult;

pub fn snapshot(tx: &Connection) -> StoreResult<crate::store::MetricsSnapshot> {
    let runs_by_state = tx
        .prepare("SELECT state, count(*) FROM runs GROUP BY state ORDER BY state")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let hosts = tx
        .prepare("SELECT name, last_seen_at FROM hosts ORDER BY name")?
        .query_map([], |r| Ok((r.get("name")?, ts_opt(r, "last_seen_at")?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let agents = tx
        .prepare(
            "SELECT r.id, h.name, r.last_heartbeat_at FROM runs r JOIN hosts h ON h.id = r.host_id
             WHERE r.state = 'Running' ORDER BY r.id",
        )?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, ts_opt(r, "last_heartbeat_at")?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::store::MetricsSnapshot {
        runs_by_state,
        hosts,
        agents,
    })
}
