//! Webhook notifier: every period it turns new holds and ends into
//! deliveries (one per configured URL, in the store) and POSTs the due ones.
//! A failed try is retried with doubling, jittered delays; after
//! `webhook_max_attempts` the delivery is a dead letter that an operator
//! lists and retries (`vetctl webhook list|retry`).
//!
//! Never: hold a store transaction across a request, follow a redirect, or
//! wait on a receiver longer than [`ATTEMPT_TIMEOUT`] (the tries of a pass
//! run concurrently).

use std::sync::Arc;
use std::time::Duration;

use common::time::Timestamp;

use crate::config::Config;
use crate::lifecycle::now;
use crate::store::{DueDelivery, Store, StoreError};

/// Longest wait for one receiver's answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest delay between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Deliveries tried per pass at most.
const BATCH: u32 = 64;

/// The delay after the `failures`-th failed try: `base · 2^(failures-1)`,
/// capped at [`MAX_BACKOFF`], then scaled by `jitter` in [0.5, 1] so many
/// coordinators do not retry in step.
pub fn backoff(base: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << exp).min(MAX_BACKOFF);
    full.mul_f64(jitter.clamp(0.5, 1.0))
}

/// `url` fit to log or show: user and password, query and fragment (where
/// receivers take their credentials) each replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "(a webhook URL that does not parse)".into();
    };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("***");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        u.set_query(Some("***"));
    }
    if u.fragment().is_some() {
        u.set_fragment(Some("***"));
    }
    u.to_string()
}

/// One try: a 2xx answer is delivered, anything else is the error to keep.
async fn attempt(client: &reqwest::Client, d: &DueDelivery) -> Result<(), String> {
    let resp = client
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Vetting-Event", &d.event)
        .header("X-Vetting-Delivery", d.id.to_string())
        .body(d.payload_json.clone())
        .send()
        .await
        .map_err(|e| {
            // The URL may carry credentials: never in the error kept.
            let e = e.without_url();
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg
        })?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&*store)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("store task: {e}")),
    }
}

/// One pass: enqueue new notifications, try every due delivery, record the
/// outcomes. Returns how many were tried.
pub async fn pass(
    store: &Arc<dyn Store>,
    config: &Config,
    client: &reqwest::Client,
) -> Result<usize, String> {
    let urls = config.webhooks.clone();
    let made = blocking(store, move |s| s.webhook_enqueue(&urls, now())).await?;
    if made > 0 {
        tracing::info!(count = made, "webhook notifications queued");
    }
    let due = blocking(store, |s| s.webhooks_due(now(), BATCH)).await?;
    let mut tries = tokio::task::JoinSet::new();
    for d in due {
        let client = client.clone();
        tries.spawn(async move {
            let outcome = attempt(&client, &d).await;
            (d, outcome)
        });
    }
    let mut tried = 0;
    while let Some(joined) = tries.join_next().await {
        let Ok((d, outcome)) = joined else { continue };
        tried += 1;
        let failures = d.attempts + 1;
        let next: Option<Timestamp> = match &outcome {
            Err(error) if failures < config.webhook_max_attempts => {
                let delay = backoff(
                    config.webhook_backoff,
                    failures,
                    0.5 + rand::random::<f64>() / 2.0,
                );
                tracing::warn!(delivery = d.id, url = %redacted(&d.url), %error, attempt = failures, retry_in = ?delay, "webhook delivery failed");
                Some(now().plus_millis(delay.as_millis() as i64))
            }
            Err(error) => {
                tracing::error!(delivery = d.id, url = %redacted(&d.url), %error, attempts = failures, "webhook delivery is a dead letter");
                None
            }
            Ok(()) => None,
        };
        let id = d.id;
        blocking(store, move |s| {
            s.webhook_attempted(
                id,
                outcome.as_ref().map(|_| ()).map_err(String::as_str),
                next,
                now(),
            )
        })
        .await?;
    }
    Ok(tried)
}

/// Runs passes every `period` until aborted.
pub async fn run(store: Arc<dyn Store>, config: Arc<Config>, period: Duration) {
    let client = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vetting-coordinator/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; no notifications will be sent");
            return;
        }
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = pass(&store, &config, &client).await {
            tracing::error!(error = %e, "webhook pass failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_leave_a_redacted_url() {
        assert_eq!(
            redacted("https://u:p@hooks.example/x?key=s#frag"),
            "https://***@hooks.example/x?***#***"
        );
        assert_eq!(redacted("https://:p@h/x"), "https://***@h/x");
        assert_eq!(redacted("http://h:8080/hook"), "http://h:8080/hook");
        assert_eq!(
            redacted("not a url p@ss"),
            "(a webhook URL that does not parse)"
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(base, 2, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(base, 4, 1.0), Duration::from_secs(40));
        assert_eq!(backoff(base, 4, 0.5), Duration::from_secs(20));
        assert_eq!(backoff(base, 30, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(base, 0, 1.0), base);
        // Jitter outside [0.5, 1] is clamped.
        assert_eq!(backoff(base, 1, 7.0), base);
        assert_eq!(backoff(base, 1, 0.0), base / 2);
    }
}
