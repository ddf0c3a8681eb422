//! Background work of a serving coordinator (silent-agent sweep, report
//! writer, webhook notifier, janitor, iperf3 servers) under one owner with
//! one shutdown.
//!
//! Never: leave a task running after `shutdown` or a drop; a task that ends
//! on its own is logged, since each is meant to run until shutdown.

use std::future::Future;

use tokio::task::JoinSet;

/// Owns every background task; dropping it aborts them all.
#[derive(Default)]
pub struct Supervisor {
    tasks: JoinSet<()>,
}

impl Supervisor {
    /// Starts `work` as the task `name`.
    pub fn spawn(&mut self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(async move {
            work.await;
            tracing::error!(task = name, "background task ended before shutdown");
        });
    }

    /// How many tasks are running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Aborts every task and waits until each has stopped.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Sets its flag when dropped: the task holding it has stopped.
    struct Stopped(Arc<AtomicBool>);
    impl Drop for Stopped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn shutdown_stops_every_task() {
        let mut s = Supervisor::default();
        let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
        for f in &flags {
            let guard = Stopped(f.clone());
            s.spawn("forever", async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
        }
        assert_eq!(s.len(), 3);
        s.shutdown().await;
        assert!(flags.iter().all(|f| f.load(Ordering::SeqCst)));
    }
}
