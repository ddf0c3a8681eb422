//! Firmware: BIOS (DMI), CPU microcode, NVMe `firmware_rev`, NIC firmware
//! (`ethtool -i`), BMC (`ipmitool mc info`) when an IPMI device exists. A
//! component that does not exist is not an error.

use std::time::Duration;

use common::inventory::FirmwareComponent;
use common::wire::FirmwareAck;

use super::{StageCtx, StageReport};
use crate::exec::ToolCommand;
use crate::host;

fn component(component: &str, identifier: &str, version: &str, vendor: &str) -> FirmwareComponent {
    FirmwareComponent {
        component: component.into(),
        identifier: identifier.into(),
        version: version.into(),
        vendor: vendor.into(),
        raw: serde_json::json!({}),
    }
}

/// `key: value` lines of `ethtool -i` / `ipmitool mc info`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key)
            .then(|| v.trim())
            .filter(|v| !v.is_empty() && *v != "N/A")
    })
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
        let cmd = ToolCommand::new("ethtool", "ethtool", Duration::from_secs(10))
            .arg("-i")
            .arg(&nic.name);
        match ctx.run_tool(&cmd).await {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                if let Some(v) = field(&text, "firmware-version") {
                    found.push(component(
                        "nic",
                        &nic.name,
                        v,
                        field(&text, "driver").unwrap_or(""),
                    ));
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
        let cmd =
            ToolCommand::new("ipmitool", "ipmitool", Duration::from_secs(30)).args(["mc", "info"]);
        match ctx.run_tool(&cmd).await {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                if let Some(v) = field(&text, "Firmware Revision") {
                    found.push(component(
                        "bmc",
                        "bmc",
                        v,
                        field(&text, "Manufacturer Name").unwrap_or(""),
                    ));
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

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_ethtool_i_fields_from_a_recorded_output() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/misc/ethtool-i-virtio_net.txt"
        ))
        .unwrap();
        assert_eq!(field(&text, "driver"), Some("virtio_net"));
        // virtio reports no firmware version.
        assert_eq!(field(&text, "firmware-version"), None);
    }
}
