//! The agent's link to the coordinator: HTTP client, batcher, spool, retry.

pub mod batcher;
pub mod client;
pub mod retry;
pub mod spool;
pub mod trust;

pub use batcher::Uplink;
pub use client::{Client, UplinkError};
