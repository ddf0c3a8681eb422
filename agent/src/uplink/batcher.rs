//! The batcher: collects samples, seals a batch every second or every 500
//! samples, spools it, and sends batches strictly in seq order until each is
//! acknowledged, retrying with backoff while the coordinator is away.
//!
//! Directives from batch acknowledgements are published on a watch channel
//! so a running stage learns of `abort_stage` at once.
//!
//! Never: send batch n+1 before batch n is acknowledged, renumber a batch,
//! or fsync on an async worker thread (spool I/O runs on the blocking pool).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use common::measurement::Sample;
use common::wire::{BatchAck, Directive, MeasurementBatch};

use super::client::{Client, UplinkError};
use super::retry::Backoff;
use super::spool::Spool;

/// Largest batch, and the longest a sample waits before its batch is sealed.
pub const BATCH_SAMPLES: usize = 500;
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);

struct State {
    current: Vec<Sample>,
    next_seq: u64,
    pending: VecDeque<MeasurementBatch>,
}

struct Inner {
    client: Arc<Client>,
    spool: Arc<Mutex<Spool>>,
    state: Mutex<State>,
    /// Wakes the sealer (batch full or flush asked for).
    seal: Notify,
    /// Wakes the sender (a batch was sealed).
    sealed: Notify,
    produced: AtomicU64,
    /// Samples the coordinator refused because the run had ended.
    refused: AtomicU64,
    /// The coordinator said the run ended: nothing more is sent.
    finished: std::sync::atomic::AtomicBool,
    /// Samples in acknowledged batches (resends counted once).
    acked_samples: watch::Sender<u64>,
    sealed_samples: AtomicU64,
    directive: watch::Sender<Option<Directive>>,
    /// Held while a batch is sealed or the batches are renumbered, so a
    /// batch is never numbered under one scheme and queued under the other.
    numbering: tokio::sync::Mutex<()>,
    /// Set once the coordinator lost batches it had acknowledged.
    lost: watch::Sender<bool>,
}

/// Handle to the uplink. Cheap to clone.
#[derive(Clone)]
pub struct Uplink {
    inner: Arc<Inner>,
}

/// The uplink's two tasks; dropping this aborts both (what is not yet
/// acknowledged stays in the spool for the next process).
pub struct UplinkTasks {
    sealer: JoinHandle<()>,
    sender: JoinHandle<()>,
}

impl UplinkTasks {
    pub fn abort(&self) {
        self.sealer.abort();
        self.sender.abort();
    }
}

impl Drop for UplinkTasks {
    fn drop(&mut self) {
        self.abort();
    }
}

impl Uplink {
    /// Starts the uplink for the claimed run. Batches left in the spool by an
    /// earlier agent process are sent first, in order.
    pub fn start(
        client: Arc<Client>,
        spool_path: &Path,
        next_seq: u64,
    ) -> std::io::Result<(Uplink, UplinkTasks)> {
        let (spool, leftover) = Spool::open(spool_path)?;
        let leftover_samples: u64 = leftover.iter().map(|b| b.samples.len() as u64).sum();
        let next_seq = leftover
            .last()
            .map(|b| b.seq + 1)
            .unwrap_or(0)
            .max(next_seq)
            .max(1);
        let inner = Arc::new(Inner {
            client,
            spool: Arc::new(Mutex::new(spool)),
            state: Mutex::new(State {
                current: Vec::new(),
                next_seq,
                pending: leftover.into(),
            }),
            seal: Notify::new(),
            sealed: Notify::new(),
            produced: AtomicU64::new(leftover_samples),
            refused: AtomicU64::new(0),
            finished: Default::default(),
            acked_samples: watch::channel(0).0,
            sealed_samples: AtomicU64::new(leftover_samples),
            directive: watch::channel(None).0,
            numbering: tokio::sync::Mutex::new(()),
            lost: watch::channel(false).0,
        });
        let sealer = tokio::spawn(sealer(inner.clone()));
        let sender = tokio::spawn(sender(inner.clone()));
        inner.sealed.notify_one();
        Ok((Uplink { inner }, UplinkTasks { sealer, sender }))
    }

    /// Queues a sample, its key made acceptable to the coordinator
    /// ([`common::measurement::clean_key`]) if a sensor named itself oddly.
    /// Never blocks.
    pub fn push(&self, mut sample: Sample) {
        if common::measurement::check_key(&sample.key).is_err() {
            sample.key = common::measurement::clean_key(&sample.key);
        }
        self.inner.produced.fetch_add(1, Ordering::SeqCst);
        let full = {
            let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            st.current.push(sample);
            st.current.len() >= BATCH_SAMPLES
        };
        if full {
            self.inner.seal.notify_one();
        }
    }

    /// Samples pushed so far (including any replayed from the spool).
    pub fn produced(&self) -> u64 {
        self.inner.produced.load(Ordering::SeqCst)
    }

    /// Samples never stored because the run had ended when they came.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Samples sealed into batches (and written to the spool) so far.
    pub fn sealed(&self) -> u64 {
        self.inner.sealed_samples.load(Ordering::SeqCst)
    }

    /// Waits until every sample pushed before this call is acknowledged.
    pub async fn flush(&self) {
        let target = self.produced();
        self.inner.seal.notify_one();
        let mut acked = self.inner.acked_samples.subscribe();
        while *acked.borrow_and_update() < target {
            if acked.changed().await.is_err() {
                return;
            }
        }
    }

    /// Becomes true once the coordinator lost batches it had acknowledged
    /// (the run's stages then need re-synchronising).
    pub fn data_lost(&self) -> watch::Receiver<bool> {
        self.inner.lost.subscribe()
    }

    /// Directives carried by batch acknowledgements.
    pub fn directives(&self) -> watch::Receiver<Option<Directive>> {
        self.inner.directive.subscribe()
    }
}

/// Seals the current batch into the spool and the pending queue.
async fn seal_now(inner: &Arc<Inner>) {
    let _numbering = inner.numbering.lock().await;
    let batch = {
        let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.current.is_empty() {
            return;
        }
        let samples = std::mem::take(&mut st.current);
        let seq = st.next_seq;
        st.next_seq += 1;
        MeasurementBatch { seq, samples }
    };
    let spool = inner.spool.clone();
    let to_write = batch.clone();
    let written = tokio::task::spawn_blocking(move || {
        spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(&to_write)
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        // The batch stays in memory and is still sent; only a crash now could lose it.
        Ok(Err(e)) => {
            tracing::error!(seq = batch.seq, error = %e, "spool write failed; batch kept in memory")
        }
        Err(e) => {
            tracing::error!(seq = batch.seq, error = %e, "spool task failed; batch kept in memory")
        }
    }
    inner
        .sealed_samples
        .fetch_add(batch.samples.len() as u64, Ordering::SeqCst);
    inner
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pending
        .push_back(batch);
    inner.sealed.notify_one();
}

async fn sealer(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(BATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.seal.notified() => {}
        }
        seal_now(&inner).await;
    }
}

async fn sender(inner: Arc<Inner>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let front = inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending
            .front()
            .cloned();
        let Some(batch) = front else {
            inner.sealed.notified().await;
            continue;
        };
        if inner.finished.load(Ordering::SeqCst) {
            after_end(&inner, &batch).await;
            continue;
        }
        match inner.client.post::<_, BatchAck>("/batches", &batch).await {
            Ok(ack) => {
                backoff.reset();
                acknowledged(&inner, batch.seq, batch.samples.len() as u64).await;
                inner.directive.send_replace(Some(ack.directive));
            }
            Err(e @ (UplinkError::Transient(_) | UplinkError::Untrusted { .. })) => {
                let why = e.to_string();
                let delay = backoff.next_delay();
                tracing::warn!(seq = batch.seq, %why, ?delay, "coordinator unreachable; batch kept, retrying");
                tokio::time::sleep(delay).await;
            }
            Err(UplinkError::Rejected {
                code,
                expected_seq: Some(expected),
                ..
            }) if code == "batch_gap" && expected > batch.seq => {
                // The coordinator already holds this batch (an ack we never saw).
                acknowledged(&inner, batch.seq, batch.samples.len() as u64).await;
            }
            Err(UplinkError::Rejected {
                code,
                expected_seq: Some(expected),
                ..
            }) if code == "batch_gap" && expected < batch.seq => {
                renumber_after_loss(&inner, expected, batch.seq).await;
            }
            Err(UplinkError::Rejected { code, .. }) if code == "run_finished" => {
                tracing::info!(
                    seq = batch.seq,
                    "the run has ended on the coordinator; samples from now on are not sent"
                );
                inner.finished.store(true, Ordering::SeqCst);
                after_end(&inner, &batch).await;
            }
            Err(UplinkError::Rejected {
                status, message, ..
            }) => {
                // A bug on one side. Say so loudly; send the batch number with
                // no samples so the run is not stalled. The coordinator's
                // count check then records the loss as an error event.
                tracing::error!(seq = batch.seq, status, %message, samples = batch.samples.len(), "batch refused; its samples are dropped");
                let empty = MeasurementBatch {
                    seq: batch.seq,
                    samples: Vec::new(),
                };
                if let Some(front) = inner
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pending
                    .front_mut()
                {
                    *front = empty;
                }
                let delay = backoff.next_delay();
                tokio::time::sleep(delay).await;
                // Count the dropped samples as settled so flush() returns.
                inner
                    .acked_samples
                    .send_modify(|n| *n += batch.samples.len() as u64);
            }
        }
    }
}

/// The coordinator expects `expected` though it had acknowledged every
/// batch below `seq`: it lost `expected..seq` (a power cut, a restore from
/// backup). Says so once (event `data_lost`), then numbers the batches not
/// yet acknowledged from `expected` on, in memory and in the spool.
async fn renumber_after_loss(inner: &Arc<Inner>, expected: u64, seq: u64) {
    let _numbering = inner.numbering.lock().await;
    let down = seq - expected;
    {
        let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        for b in st.pending.iter_mut() {
            b.seq -= down;
        }
        st.next_seq -= down;
    }
    let spool = inner.spool.clone();
    let renumbered = tokio::task::spawn_blocking(move || {
        spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .renumber(down)
    })
    .await;
    if !matches!(renumbered, Ok(Ok(()))) {
        tracing::error!(
            ?renumbered,
            "renumbering the spool failed; a restart would resend under the old numbers"
        );
    }
    let message = format!(
        "the coordinator lost batches {expected} to {} that it had acknowledged; their measurements are gone, later batches are renumbered from {expected}",
        seq - 1
    );
    tracing::error!("{message}");
    let event = common::wire::AgentEvent {
        kind: common::event::EventKind::DataLost,
        level: common::event::EventLevel::Error,
        message,
    };
    if let Err(e) = inner
        .client
        .post::<_, common::wire::EventAck>("/events", &event)
        .await
    {
        tracing::warn!(error = %e, "could not report the data loss");
    }
    inner.lost.send_replace(true);
}

/// Settles a batch the coordinator will not take because the run ended:
/// out of the queue and the spool, its samples counted as refused.
async fn after_end(inner: &Arc<Inner>, batch: &MeasurementBatch) {
    let n = batch.samples.len() as u64;
    inner.refused.fetch_add(n, Ordering::SeqCst);
    acknowledged(inner, batch.seq, n).await;
}

async fn acknowledged(inner: &Arc<Inner>, seq: u64, samples: u64) {
    {
        let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.pending.front().is_some_and(|b| b.seq == seq) {
            st.pending.pop_front();
        }
    }
    let spool = inner.spool.clone();
    let res = tokio::task::spawn_blocking(move || {
        spool.lock().unwrap_or_else(|p| p.into_inner()).ack(seq)
    })
    .await;
    if let Ok(Err(e)) = res {
        tracing::warn!(seq, error = %e, "recording an ack in the spool failed; the batch may be resent (harmless)");
    }
    inner.acked_samples.send_modify(|n| *n += samples);
}
