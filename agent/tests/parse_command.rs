//! `vet-agent parse TOOL FILE`: exit codes by verdict on recorded fixtures,
//! and a clear refusal of what it cannot parse.

use std::path::Path;
use std::process::Command;

fn vet_agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vet-agent"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn parse_command_exit_codes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let failing =
        root.join("smartctl/usb-jmicron-sata-hdd-hitachi-health-FAILED-smartctl71-a.json");
    let (code, out, _) = vet_agent(&["parse", "smartctl", failing.to_str().unwrap()]);
    assert_eq!(code, 0, "a failing disk is valid smartctl output");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "fail");
    assert!(v["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["kind"] == "smart_attr" && m["key"].as_str().unwrap().starts_with("sdc/")));
    let (code, out, _) = vet_agent(&[
        "parse",
        "smartctl",
        failing.to_str().unwrap(),
        "--device",
        "sdz",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("\"sdz/5_Reallocated_Sector_Ct\""));

    let wrong = root.join("iperf3/iperf3-3.12-tcp-client-loopback.json");
    let (code, out, err) = vet_agent(&["parse", "fio", wrong.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not fio output"), "{err}");
    let (code, _, err) = vet_agent(&["parse", "iperf3", "/nonexistent/file.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("reading /nonexistent/file.json"), "{err}");
    // Host mode needs its coordinator and token file (tested in e2e/host_mode).
    let (code, _, err) = vet_agent(&["host"]);
    assert_eq!(code, 2);
    assert!(err.contains("--token-file"), "{err}");
}
