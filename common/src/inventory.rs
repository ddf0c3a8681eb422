//! The hardware inventory the agent uploads (artifact `inventory`) and the
//! firmware components it reports. SpecValidate reads these.

use serde::{Deserialize, Serialize};

use crate::mac::Mac;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Inventory {
    #[serde(default)]
    pub cpu: CpuInfo,
    #[serde(default)]
    pub memory: MemoryInfo,
    #[serde(default)]
    pub disks: Vec<DiskInfo>,
    #[serde(default)]
    pub nics: Vec<NicInfo>,
    /// Devices seen but not selected for testing, with the reason.
    #[serde(default)]
    pub excluded: Vec<Excluded>,
    /// SMBIOS facts when dmidecode could read them.
    #[serde(default)]
    pub dmi: Option<serde_json::Value>,
    /// PCI devices (lspci), as the agent saw them.
    #[serde(default)]
    pub pci: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CpuInfo {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub logical_cores: u32,
    #[serde(default)]
    pub sockets: u32,
    #[serde(default)]
    pub microcode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MemoryInfo {
    /// Installed memory in bytes (SMBIOS when known, else MemTotal).
    #[serde(default)]
    pub total_bytes: u64,
}

impl MemoryInfo {
    pub fn total_gib(&self) -> f64 {
        self.total_bytes as f64 / (1u64 << 30) as f64
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DiskInfo {
    pub name: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub serial: String,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub rotational: bool,
    #[serde(default)]
    pub transport: String,
    #[serde(default)]
    pub firmware: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct NicInfo {
    pub name: String,
    pub mac: Mac,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub speed_mbps: Option<u64>,
    #[serde(default)]
    pub firmware: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Excluded {
    pub name: String,
    pub class: String,
    pub reason: String,
}

/// One firmware version capture (`firmware_snapshots` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FirmwareComponent {
    /// bios, bmc, nic, hba, microcode, nvme_fw.
    pub component: String,
    pub identifier: String,
    pub version: String,
    #[serde(default)]
    pub vendor: String,
    #[serde(default = "empty_object")]
    pub raw: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
