//! The claim: ask the coordinator for the run queued for this machine's
//! MACs until one is given, the time runs out, or the answer says no.
//!
//! Never: send anything to a server the pin refused, or give up on a
//! refusal the operator can still mend (nothing queued yet, a busy run,
//! a claim secret not yet set).

use std::time::{Duration, Instant};

use anyhow::Context;

use common::wire::{ClaimRequest, ClaimResponse};

use super::BootOptions;
use crate::host;
use crate::uplink::retry::Backoff;
use crate::uplink::{Client, UplinkError};

/// How often a claim is tried again after the pin refused the server.
const UNTRUSTED_RETRY: Duration = Duration::from_secs(30);

pub(super) async fn claim(client: &Client, opts: &BootOptions) -> anyhow::Result<ClaimResponse> {
    let macs = match &opts.macs {
        Some(m) => m.clone(),
        None => host::macs(&opts.roots),
    };
    anyhow::ensure!(
        !macs.is_empty(),
        "no network interface with a MAC address: nothing to claim with"
    );
    let boot_id = opts
        .boot_id
        .clone()
        .or_else(|| host::boot_id(&opts.roots))
        .unwrap_or_else(|| "unknown-boot".into());
    let mut req = ClaimRequest::new(macs.clone(), boot_id, env!("CARGO_PKG_VERSION"));
    req.claim_secret = opts.claim_secret.clone();
    req.host_mode_run = opts.host_mode_run;
    let deadline = Instant::now() + opts.claim_timeout;
    let mut untrusted: Option<String> = None;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    loop {
        let why = match client.claim(&req).await {
            Ok(c) => return Ok(c),
            Err(UplinkError::Rejected { status: 404, .. }) => {
                "nothing queued for this machine yet".to_string()
            }
            // The run's previous agent (an earlier boot, or a process that
            // just died) still counts as alive; it is ours once it is silent.
            Err(UplinkError::Rejected {
                status: 409,
                code,
                message,
                ..
            }) if code == "claim_conflict" => {
                format!("the run is still held by an agent that heartbeats: {message}")
            }
            // The operator may still set the secret this agent carries.
            Err(UplinkError::Rejected {
                status: 403,
                code,
                message,
                ..
            }) if code == "claim_secret_mismatch" => {
                format!("the host's claim secret does not match: {message}")
            }
            Err(UplinkError::Transient(e)) => format!("coordinator unreachable: {e}"),
            // Nothing was sent. Said once per certificate; asked again slowly
            // (the operator may be fixing the pin or the server).
            Err(e @ UplinkError::Untrusted { .. }) => {
                let line = e.to_string();
                if untrusted.as_deref() != Some(line.as_str()) {
                    tracing::error!("{line}");
                    eprintln!("vet-agent: {line}");
                    untrusted = Some(line);
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no run claimed within {:?}: {}",
                    opts.claim_timeout,
                    untrusted.as_deref().unwrap_or_default()
                );
                tokio::time::sleep(UNTRUSTED_RETRY).await;
                continue;
            }
            Err(e) => return Err(e).context("claim refused"),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "no run claimed within {:?}: {why}",
            opts.claim_timeout
        );
        let delay = backoff.next_delay().max(Duration::from_millis(200));
        tracing::info!(%why, ?delay, macs = ?macs.iter().map(|m| m.to_string()).collect::<Vec<_>>(), "claim: retrying");
        tokio::time::sleep(delay).await;
    }
}
