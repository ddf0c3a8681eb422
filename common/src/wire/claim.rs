//! The claim: how an agent asks for its run, what it gets, and the host's
//! claim secret (the rules: `coordinator::gate::claim`).

use serde::{Deserialize, Serialize};

use super::{Iperf3Servers, Overrides, StagePlan};
use crate::mac::Mac;
use crate::profile::{Durations, Profile};
use crate::threshold::Rule;
use crate::time::Timestamp;

/// The version of the agent ⇄ coordinator protocol this build speaks. A
/// coordinator serves agents from [`MIN_PROTOCOL_VERSION`] up to it.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest protocol a coordinator of this build still serves (1: agents
/// that did not yet say which they speak).
pub const MIN_PROTOCOL_VERSION: u32 = 1;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClaimRequest {
    pub macs: Vec<Mac>,
    pub boot_id: String,
    /// The agent's version (`vet-agent --version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// The protocol the agent speaks; absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<u32>,
    /// The host's claim secret, when its host has one. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_secret: Option<String>,
    /// A host-mode agent's claim: only this run, and only while it is
    /// non-destructive (the run its heartbeat answer named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mode_run: Option<i64>,
}

impl ClaimRequest {
    /// A claim by an agent of `agent_version` speaking this build's protocol.
    pub fn new(macs: Vec<Mac>, boot_id: impl Into<String>, agent_version: &str) -> Self {
        Self {
            macs,
            boot_id: boot_id.into(),
            agent_version: Some(agent_version.to_string()),
            protocol_version: Some(PROTOCOL_VERSION),
            claim_secret: None,
            host_mode_run: None,
        }
    }
}

impl std::fmt::Debug for ClaimRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimRequest")
            .field("macs", &self.macs)
            .field("boot_id", &self.boot_id)
            .field("agent_version", &self.agent_version)
            .field("protocol_version", &self.protocol_version)
            .field(
                "claim_secret",
                &self.claim_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClaimResponse {
    pub run_id: i64,
    pub token: String,
    pub host: String,
    pub profile: Profile,
    pub non_destructive: bool,
    pub overrides: Overrides,
    /// Every stage with its current state; the agent starts at `resume_from`.
    pub stages: Vec<StagePlan>,
    pub resume_from: u32,
    pub durations: Durations,
    pub thresholds: Vec<Rule>,
    pub sidecar_interval_ms: u64,
    pub heartbeat_interval_s: u64,
    pub iperf3: Iperf3Servers,
    /// The coordinator's clock at the answer; the agent corrects by it.
    pub coordinator_time: Timestamp,
    /// The number the next measurement batch must carry.
    pub next_batch_seq: u64,
}

/// `PUT /hosts/{name}/claim-secret` (operator): the host's runs are then
/// claimed only by a claim carrying this secret; empty removes it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ClaimSecret {
    pub claim_secret: String,
}

impl ClaimSecret {
    /// Whether `secret` may be a claim secret: 16 to 256 characters, none
    /// of them spaces or controls (it travels on a kernel command line).
    pub fn check(secret: &str) -> Result<(), String> {
        if !(16..=256).contains(&secret.chars().count()) {
            return Err("a claim secret must be 16 to 256 characters".into());
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(
                "a claim secret may not contain spaces or control characters (it travels on the kernel command line)"
                    .into(),
            );
        }
        Ok(())
    }
}
