//! The tasks a [`super::RunSession`] runs beside the stages: the heartbeat,
//! the thermal sidecar and the kernel-log watch.
//!
//! Never: decide anything about the run (they publish answers and push
//! samples), or outlive the session (it owns them in a `JoinSet`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use common::event::{EventKind, EventLevel};
use common::measurement::{Finite, Sample};
use common::wire::{Directive, DirectiveResponse, Heartbeat};

use crate::sensors::Sidecar;
use crate::stages::Clock;
use crate::tools::kmsg::{KernelError, Record};
use crate::uplink::{Client, Uplink};

/// Posts a heartbeat every `every` with the running stage; publishes each answer.
pub(super) async fn heartbeat(
    client: Arc<Client>,
    every: Duration,
    stage: watch::Receiver<Option<u32>>,
    answers: watch::Sender<Option<Directive>>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let stage = *stage.borrow();
        match client
            .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage })
            .await
        {
            Ok(d) => {
                answers.send_replace(Some(d.directive));
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Samples the sensors every `every` into the uplink.
pub(super) async fn sidecar(
    uplink: Uplink,
    clock: Clock,
    root: PathBuf,
    every: Duration,
    stage: watch::Receiver<Option<u32>>,
) {
    let mut sensors = Sidecar::new(&root);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let stage = *stage.borrow();
        let ts = clock.now();
        for r in sensors.read() {
            if let Ok(value) = Finite::new(r.value) {
                let unit = r.kind.unit_for_key(&r.key).unwrap_or("").to_string();
                uplink.push(Sample {
                    ts,
                    kind: r.kind,
                    key: r.key,
                    value,
                    unit,
                    stage,
                });
            }
        }
    }
}

/// Kernel log: each hardware failure is a `kmsg` sample (the count of its
/// key within the stage) and a `kernel_error` event with the line. A failing
/// link can log thousands of AER lines a second: every line counts, but only
/// the first few per key and stage become events, then one saying the rest
/// are counted only.
pub(super) async fn kernel_watch(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(Record, KernelError)>,
    uplink: Uplink,
    client: Arc<Client>,
    clock: Clock,
    stage: watch::Receiver<Option<u32>>,
) {
    const EVENTS_PER_KEY: u32 = 5;
    let mut counts: HashMap<(Option<u32>, String), (f64, u32)> = HashMap::new();
    while let Some((record, err)) = rx.recv().await {
        let stage = *stage.borrow();
        let key = err.key();
        let (n, lines) = counts.entry((stage, key.clone())).or_default();
        *n += err.count as f64;
        *lines += 1;
        let lines = *lines;
        if let Ok(value) = Finite::new(*n) {
            uplink.push(Sample {
                ts: clock.now(),
                kind: common::measurement::Kind::Kmsg,
                key: key.clone(),
                value,
                unit: "count".into(),
                stage,
            });
        }
        if lines > EVENTS_PER_KEY + 1 {
            continue;
        }
        let message = if lines > EVENTS_PER_KEY {
            format!("{key}: more lines like this in this stage are counted in the kmsg measurement, not listed")
        } else {
            format!(
                "{key}: {}",
                record.message.chars().take(1500).collect::<String>()
            )
        };
        let event = common::wire::AgentEvent {
            kind: EventKind::KernelError,
            level: if err.is_critical() {
                EventLevel::Error
            } else {
                EventLevel::Warn
            },
            message,
        };
        if let Err(e) = client
            .post::<_, common::wire::EventAck>("/events", &event)
            .await
        {
            tracing::warn!(error = %e, "could not report a kernel error event");
        }
    }
}
