//! Group commit of measurement batches: one writer thread takes every batch
//! waiting when its previous commit finished, hands them to the store as
//! one group (one transaction, made durable once) and then answers each
//! caller with its own result.
//!
//! Never: answer a batch before its group is durable, or let one refused
//! batch fail its neighbours (the store judges each alone). A group is
//! bounded ([`MAX_GROUP_SAMPLES`]) so one commit cannot grow without end
//! under a flood.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use common::wire::{BatchAck, MeasurementBatch};

use crate::lifecycle::now;
use crate::metrics::Counters;
use crate::store::{RunFacts, Store, StoreError, StoreResult};

/// Batches waiting for the writer at most; more wait in their handlers.
const QUEUE: usize = 4096;

/// Samples one group takes at most (the batch that crosses it still goes in).
pub const MAX_GROUP_SAMPLES: usize = 100_000;

type Answer = StoreResult<(BatchAck, RunFacts)>;
/// A group's answers, or the group's failure.
type Group = StoreResult<Vec<Answer>>;

struct Job {
    run_id: i64,
    batch: MeasurementBatch,
    reply: oneshot::Sender<Answer>,
}

/// The handle request handlers append through; cheap to share.
pub struct Ingest {
    queue: mpsc::Sender<Job>,
}

impl Ingest {
    /// Starts the writer thread, which counts its groups in `counters`; it
    /// ends when the last handle is dropped.
    pub fn start(store: Arc<dyn Store>, counters: Arc<Counters>) -> std::io::Result<Ingest> {
        Self::start_with(move |group| {
            counters.group();
            store.append_batches(group, now())
        })
    }

    /// The writer thread around `commit`, which writes one group.
    fn start_with(
        commit: impl FnMut(&[(i64, &MeasurementBatch)]) -> Group + Send + 'static,
    ) -> std::io::Result<Ingest> {
        let (queue, jobs) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("vet-writer".into())
            .spawn(move || writer(commit, jobs))?;
        Ok(Ingest { queue })
    }

    /// Appends `batch` to `run_id` in the next group; answers once that
    /// group is durable.
    pub async fn append(&self, run_id: i64, batch: MeasurementBatch) -> Answer {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Backend("the store's writer stopped".into());
        self.queue
            .send(Job {
                run_id,
                batch,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn writer(
    mut commit: impl FnMut(&[(i64, &MeasurementBatch)]) -> Group,
    mut jobs: mpsc::Receiver<Job>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut samples = first.batch.samples.len();
        let mut group = vec![first];
        while samples < MAX_GROUP_SAMPLES {
            match jobs.try_recv() {
                Ok(job) => {
                    samples += job.batch.samples.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let refs: Vec<(i64, &MeasurementBatch)> =
            group.iter().map(|j| (j.run_id, &j.batch)).collect();
        let answers = commit(&refs);
        match answers {
            Ok(answers) if answers.len() == group.len() => {
                for (job, answer) in group.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Ok(answers) => {
                let message = format!(
                    "the store answered {} of a group of {} batches",
                    answers.len(),
                    group.len()
                );
                tracing::error!("{message}");
                for job in group {
                    let _ = job.reply.send(Err(StoreError::Corrupt(message.clone())));
                }
            }
            Err(e) => {
                // Nothing of the group was stored; each batch is resent.
                let message = e.to_string();
                tracing::error!(batches = group.len(), "group commit failed: {message}");
                for job in group {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Backend(message.clone().into())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::Directive;

    fn ack(seq: u64) -> Answer {
        let ack = BatchAck {
            seq,
            stored: 1,
            duplicate: false,
            directive: Directive::Continue,
        };
        let facts = RunFacts {
            run_id: 1,
            state: common::run_state::RunState::Running,
            running_stage: None,
            live_breach: None,
            hold_public_key: None,
            release_power: None,
            held_at: None,
        };
        Ok((ack, facts))
    }

    fn batch(seq: u64) -> MeasurementBatch {
        MeasurementBatch {
            seq,
            samples: Vec::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_that_wait_behind_a_commit_go_in_the_next_group_each_with_its_answer() {
        let (entered, mut entered_rx) = mpsc::unbounded_channel::<Vec<(i64, u64)>>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let ingest = Arc::new(
            Ingest::start_with(move |group| {
                let seen: Vec<(i64, u64)> = group.iter().map(|(r, b)| (*r, b.seq)).collect();
                let _ = entered.send(seen.clone());
                // The first commit is slow: held until the test lets it go.
                if seen == [(1, 1)] {
                    let _ = release_rx.recv();
                }
                // Run 3's batch is refused; its neighbours are not.
                Ok(seen
                    .iter()
                    .map(|&(run, seq)| {
                        if run == 3 {
                            Err(StoreError::BatchGap {
                                got: seq,
                                expected: 1,
                            })
                        } else {
                            ack(seq)
                        }
                    })
                    .collect())
            })
            .unwrap(),
        );
        let send = |run: i64, seq: u64| {
            let ingest = ingest.clone();
            tokio::spawn(async move { ingest.append(run, batch(seq)).await })
        };
        let first = send(1, 1);
        assert_eq!(entered_rx.recv().await.unwrap(), [(1, 1)]);
        // Three batches arrive while that commit is in flight.
        let waiting = [send(2, 7), send(3, 5), send(4, 9)];
        while ingest.queue.capacity() != QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().0.seq, 1);
        let mut next = entered_rx.recv().await.unwrap();
        next.sort();
        assert_eq!(next, [(2, 7), (3, 5), (4, 9)], "one group");
        let [a, b, c] = waiting;
        assert_eq!(a.await.unwrap().unwrap().0.seq, 7);
        assert!(matches!(
            b.await.unwrap(),
            Err(StoreError::BatchGap { got: 5, .. })
        ));
        assert_eq!(c.await.unwrap().unwrap().0.seq, 9);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_batch_of_its_group() {
        let ingest = Ingest::start_with(|_| Err(StoreError::Backend("disk full".into()))).unwrap();
        let e = ingest.append(1, batch(1)).await.unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
