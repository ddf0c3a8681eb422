//! The Vetting coordinator: persists every measurement, owns the run state
//! machine, gates the pipeline and serves `/api/v1`.
//!
//! Layout:
//! - [`store`]: the persistence trait and its SQLite implementation.
//! - [`gate`]: pure pass/fail and directive decisions.
//! - [`api`]: the HTTP edge: router, callers, errors, the dashboard; every
//!   route is in `api/mod.rs`.
//! - [`lifecycle`]: run creation (threshold freezing, Wake-on-LAN), hold
//!   keys, spec and firmware diffs: the slow work around a transaction.
//! - [`background`], [`sweep`], [`janitor`]: the supervised background
//!   tasks; the silent-agent and hold-timeout sweep; artifact pruning.
//! - [`wol`], [`auth`], [`config`]: Wake-on-LAN, tokens, configuration.
//! - [`iperf`]: the supervised `iperf3 -s` pool agents measure against.
//! - [`report`]: `report.json` and `report.html` from one read of a run; their writer.
//! - [`metrics`]: Prometheus counters and their exposition at `/metrics`.
//!
//! Architecture invariant: nothing but SQL runs inside a store transaction;
//! the gate is the only place pass/fail is decided.

pub mod api;
pub mod auth;
pub mod background;
pub mod config;
pub mod gate;
pub mod ingest;
pub mod iperf;
pub mod janitor;
pub mod lifecycle;
pub mod metrics;
pub mod report;
pub mod store;
pub mod sweep;
pub mod tls;
pub mod webhooks;
pub mod wol;

pub use api::serve;
pub use config::Config;
