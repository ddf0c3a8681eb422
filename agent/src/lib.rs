//! vet-agent: the static agent run on the node under test.
//!
//! Layout:
//! - [`tools`]: one module per tool (smartctl, fio, iperf3, stress-ng): a
//!   pure `parse(&[u8])` from the tool's machine-readable output to
//!   measurements with DESIGN.md's keys and units.
//!
//! Architecture invariant: the agent never decides pass/fail of a
//! coordinated run; `tools::judge` exists for `vet-agent parse`, the
//! operator's debugging aid. The agent never depends on the coordinator.

pub mod exec;
pub mod hold;
pub mod host;
pub mod host_mode;
pub mod interlock;
pub mod kmsg_watch;
pub mod power;
pub mod run;
pub mod sensors;
pub mod stages;
pub mod sysfs;
pub mod tools;
pub mod uplink;
