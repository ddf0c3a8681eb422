//! ethtool: `ethtool -i NIC` (driver and firmware) and its `key: value`
//! answer.

use std::time::Duration;

use super::colon_field;
use crate::exec::ToolCommand;

/// `ethtool -i NIC`.
pub fn driver_info(nic: &str) -> ToolCommand {
    ToolCommand::new("ethtool", "ethtool", Duration::from_secs(10))
        .arg("-i")
        .arg(nic)
}

/// What `ethtool -i` says of a NIC's driver and firmware.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DriverInfo {
    pub driver: String,
    /// `None` where the NIC reports none (virtio, many onboard NICs).
    pub firmware_version: Option<String>,
}

pub fn parse_driver_info(text: &str) -> DriverInfo {
    DriverInfo {
        driver: colon_field(text, "driver").unwrap_or_default().to_string(),
        firmware_version: colon_field(text, "firmware-version").map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_driver_of_a_recorded_nic_without_firmware() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/misc/ethtool-i-virtio_net.txt"
        ))
        .unwrap();
        assert_eq!(
            parse_driver_info(&text),
            DriverInfo {
                driver: "virtio_net".into(),
                // virtio reports no firmware version.
                firmware_version: None,
            }
        );
    }
}
