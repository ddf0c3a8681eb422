//! Holding a failed host for debugging: the key and SSH server of a hold,
//! its deadline on the coordinator's clock, and what comes after it.
//!
//! Never: keep a hold past its deadline, or wait on a gone coordinator for
//! longer than the hold's grace.

use std::time::Duration;

use common::time::Timestamp;
use common::wire::{Directive, DirectiveResponse, Heartbeat, HoldReport, Power};

use super::{local_ip_towards, post_with_retry, BootOptions, RunSession};

impl RunSession {
    /// Holds the host for debugging until the coordinator says otherwise
    /// or the hold's deadline passes (then the key goes and the SSH server
    /// stops, whether or not the coordinator answers); returns what to do
    /// next, with the hold undone.
    pub(super) async fn hold(
        &mut self,
        public_key: &str,
        until: Option<Timestamp>,
        opts: &BootOptions,
    ) -> Directive {
        // On the coordinator's clock, as `until` is.
        let deadline = until.map(|u| {
            let left = u.unix_millis() - self.clock.now().unix_millis();
            tokio::time::Instant::now() + Duration::from_millis(left.max(0) as u64)
        });
        let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86400);
        let deadline_at = deadline.unwrap_or(far);
        if tokio::time::Instant::now() >= deadline_at {
            return self.after_hold_deadline(opts.hold.grace).await;
        }
        let held = crate::hold::begin(&opts.hold, self.claim.run_id, public_key).await;
        let (ssh_port, ssh_error) = match &held {
            Ok(h) => (h.ssh_port, h.ssh_error.clone()),
            Err(e) => (None, Some(e.to_string())),
        };
        if let Some(ip) = local_ip_towards(self.client.base()) {
            let report = HoldReport {
                hold_ip: ip.clone(),
                ssh_port,
                ssh_error: ssh_error.clone(),
            };
            // Refused when the operator released the host meanwhile; the
            // next heartbeat says what to do then.
            if let Err(e) =
                post_with_retry::<_, DirectiveResponse>(&self.client, "/hold-ip", &report).await
            {
                tracing::warn!(error = %e, "hold report not taken");
            }
            tracing::warn!(hold_ip = %ip, ?ssh_port, ?ssh_error, "host held for debugging; waiting for release");
        }
        let beat = async {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                match self
                    .client
                    .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage: None })
                    .await
                {
                    Ok(d)
                        if matches!(
                            d.directive,
                            Directive::Hold { .. } | Directive::Wait { .. }
                        ) => {}
                    Ok(d) => break d.directive,
                    Err(e) => tracing::warn!(error = %e, "heartbeat during hold failed"),
                }
            }
        };
        let next = tokio::time::timeout_at(deadline_at, beat).await;
        if let Ok(h) = held {
            h.end().await;
        }
        match next {
            Ok(d) => d,
            Err(_) => {
                tracing::warn!("the hold's deadline passed: key removed, SSH server stopped");
                self.after_hold_deadline(opts.hold.grace).await
            }
        }
    }

    /// After a hold's deadline the coordinator ends the run (Failed, power
    /// off); its answer is awaited for the hold's grace, then the hold
    /// timeout's power off is carried out without it.
    pub(super) async fn after_hold_deadline(&mut self, grace: Duration) -> Directive {
        let give_up = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < give_up {
            if let Ok(d) = self
                .client
                .post::<_, DirectiveResponse>("/heartbeat", &Heartbeat { stage: None })
                .await
            {
                if !matches!(d.directive, Directive::Hold { .. } | Directive::Wait { .. }) {
                    return d.directive;
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        self.unanswered = true;
        Directive::Release {
            power: Power::Poweroff,
        }
    }
}
