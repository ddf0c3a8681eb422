//! ipmitool: `ipmitool mc info` (the BMC's firmware) over the local IPMI
//! device, and its `key : value` answer.

use std::time::Duration;

use super::colon_field;
use crate::exec::ToolCommand;

/// `ipmitool mc info`.
pub fn mc_info() -> ToolCommand {
    ToolCommand::new("ipmitool", "ipmitool", Duration::from_secs(30)).args(["mc", "info"])
}

/// What `ipmitool mc info` says of the BMC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct McInfo {
    pub manufacturer: String,
    pub firmware_revision: Option<String>,
}

pub fn parse_mc_info(text: &str) -> McInfo {
    McInfo {
        manufacturer: colon_field(text, "Manufacturer Name")
            .unwrap_or_default()
            .to_string(),
        firmware_revision: colon_field(text, "Firmware Revision").map(str::to_string),
    }
}
