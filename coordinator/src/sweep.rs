//! The silent-agent sweep: aborts runs whose agent went silent during a
//! stage (a hang is a hardware fault) and ends holds past their timeout.
//!
//! Never: decide here what silence or an expired hold means; the store
//! applies `gate::silent_agent` and `gate::hold_expired`.

use std::sync::Arc;
use std::time::Duration;

use crate::lifecycle::now;
use crate::store::Store;

/// Aborts runs whose agent went silent during a stage (a hang is a hardware
/// fault) and ends holds past their timeout. Checks four times per period.
pub async fn run(store: Arc<dyn Store>, timeout: Duration, hold_timeout: Duration) {
    let period = (timeout.min(hold_timeout) / 4).max(Duration::from_millis(250));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        let res = tokio::task::spawn_blocking(move || {
            let now = now();
            let cutoff = now.plus_millis(-(timeout.as_millis() as i64));
            let held_since = now.plus_millis(-(hold_timeout.as_millis() as i64));
            let mut ended = store.expire_silent_agents(cutoff, now)?;
            ended.extend(store.expire_holds(held_since, now)?);
            Ok::<_, crate::store::StoreError>(ended)
        })
        .await;
        match res {
            Ok(Ok(aborted)) if !aborted.is_empty() => {
                tracing::warn!(?aborted, "ended runs with silent agents or expired holds")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "silent-agent sweep failed"),
            Err(e) => tracing::error!(error = %e, "silent-agent sweep panicked"),
            _ => {}
        }
    }
}
