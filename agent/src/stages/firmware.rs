//! Firmware: BIOS (DMI), CPU microcode, NVMe `firmware_rev`, NIC firmware
//! (`ethtool -i`), BMC (`ipmitool mc info`) when an IPMI device exists. A
//! component that does not exist is not an error.

use common::inventory::FirmwareComponent;
use common::wire::FirmwareAck;

use super::{StageCtx, StageReport};
use crate::host;
use crate::tools::{ethtool, ipmitool};

fn component(component: &str, identifier: &str, version: &str, vendor: &str) -> FirmwareComponent {
    FirmwareComponent {
        component: component.into(),
        identifier: identifier.into(),
        version: version.into(),
        vendor: vendor.into(),
        raw: serde_json::json!({}),
    }
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let mut found = Vec::new();
    let mut notes = Vec::new();
    if let Some(dmi) = host::dmi(&ctx.roots) {
        if let Some(v) = dmi.get("bios_version").and_then(|v| v.as_str()) {
            let vendor = dmi
                .get("bios_vendor")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            found.push(component("bios", "system", v, vendor));
        }
    }
    if let Some(m) = host::cpu(&ctx.roots).microcode {
        found.push(component("microcode", "cpu", &m, ""));
    }
    for d in ctx.disks().iter().filter(|d| d.transport == "nvme") {
        if let Some(fw) = &d.firmware {
            found.push(component("nvme_fw", &d.name, fw, ""));
        }
    }
    for nic in ctx.nics() {
        match ctx.run_tool(&ethtool::driver_info(&nic.name)).await {
            Ok(out) if out.status.success() => {
                let info = ethtool::parse_driver_info(&String::from_utf8_lossy(&out.stdout));
                if let Some(v) = &info.firmware_version {
                    found.push(component("nic", &nic.name, v, &info.driver));
                }
            }
            Ok(out) => notes.push(format!("ethtool -i {}: {}", nic.name, out.stderr_tail)),
            Err(e) => notes.push(e.to_string()),
        }
    }
    let has_ipmi = ["dev/ipmi0", "dev/ipmi/0", "dev/ipmidev/0"]
        .iter()
        .any(|p| std::path::Path::new("/").join(p).exists());
    if has_ipmi {
        match ctx.run_tool(&ipmitool::mc_info()).await {
            Ok(out) if out.status.success() => {
                let info = ipmitool::parse_mc_info(&String::from_utf8_lossy(&out.stdout));
                if let Some(v) = &info.firmware_revision {
                    found.push(component("bmc", "bmc", v, &info.manufacturer));
                }
            }
            Ok(out) => notes.push(format!("ipmitool mc info: {}", out.stderr_tail)),
            Err(e) => notes.push(e.to_string()),
        }
    }
    let sent: Result<FirmwareAck, _> = ctx
        .client
        .post(
            "/firmware",
            &common::wire::FirmwareReport {
                components: found.clone(),
            },
        )
        .await;
    match sent {
        Ok(_) => StageReport::passed(serde_json::json!({"components": found, "notes": notes})),
        Err(e) => StageReport::failed(format!("reporting firmware: {e}")),
    }
}
