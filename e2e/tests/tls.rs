//! The agent and an HTTPS coordinator: a pinned agent claims; a wrong pin
//! sends nothing (the run stays queued, no row changes) and the real
//! `vet-agent boot` prints one line naming the certificate and keeps trying.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use common::wire::ClaimRequest;
use coordinator::config::TlsConfig;
use support::workspace_binary;
use testkit::TestCoordinator;
use vet_agent::uplink::trust::Trust;
use vet_agent::uplink::{Client, UplinkError};

const MAC: &str = "52:54:00:00:30:01";

async fn tls_coordinator() -> TestCoordinator {
    let coord = TestCoordinator::start_with(|c| c.tls = Some(TlsConfig::default())).await;
    coord.add_host("node-t", MAC, None).await;
    coord.start_run("node-t", json!({})).await;
    coord
}

fn pin_of(coord: &TestCoordinator) -> String {
    std::fs::read_to_string(coord.dir.path().join("tls/cert.sha256"))
        .unwrap()
        .trim()
        .to_string()
}

fn request() -> ClaimRequest {
    ClaimRequest::new(vec![MAC.parse().unwrap()], "boot-t", "test")
}

#[tokio::test]
async fn a_pinned_agent_claims_over_https_and_a_ca_file_works_too() {
    let coord = tls_coordinator().await;
    assert!(coord.base.starts_with("https://"));
    let pinned = Client::new(&coord.base, &Trust::pin(&pin_of(&coord)).unwrap()).unwrap();
    let claim = pinned.claim(&request()).await.expect("claim over https");
    assert!(claim.run_id > 0);
    // The certificate names 127.0.0.1, so the file works as a CA too
    // (asked for a host with nothing queued: a 404 is an answer).
    let pem = std::fs::read(coord.dir.path().join("tls/cert.pem")).unwrap();
    let by_file = Client::new(&coord.base, &Trust::CaFile(pem)).unwrap();
    let other = ClaimRequest::new(vec!["52:54:00:00:30:09".parse().unwrap()], "b", "test");
    match by_file.claim(&other).await {
        Err(UplinkError::Rejected { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_pin_sends_nothing() {
    let coord = tls_coordinator().await;
    let before = coord.row_counts();
    let wrong = Client::new(&coord.base, &Trust::Pin([7; 32])).unwrap();
    match wrong.claim(&request()).await {
        Err(UplinkError::Untrusted { sha256, .. }) => assert_eq!(sha256, pin_of(&coord)),
        other => panic!("claimed past a wrong pin: {other:?}"),
    }
    // The system's roots do not know a self-signed certificate either.
    let system = Client::new(&coord.base, &Trust::System).unwrap();
    assert!(matches!(
        system.claim(&request()).await,
        Err(UplinkError::Transient(_))
    ));
    assert_eq!(coord.row_counts(), before, "the coordinator saw a claim");
    let run = coord.op_get("/runs").await.1;
    assert_eq!(run[0]["state"], "Queued");
}

#[tokio::test]
async fn vet_agent_boot_with_a_wrong_pin_says_so_once_and_keeps_trying() {
    let coord = tls_coordinator().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = workspace_binary("vet-agent", "vet-agent");
    let mut child = Command::new(&agent)
        .args(["boot", "--coordinator", &coord.base, "--power", "none"])
        .args(["--ca-sha256", &"0f".repeat(32), "--work-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Waited for off the runtime, which serves the coordinator meanwhile.
    let (line, rx) = tokio::task::spawn_blocking(move || {
        let line = rx.recv_timeout(Duration::from_secs(30));
        (line, rx)
    })
    .await
    .unwrap();
    let line = line.expect("a line about the certificate");
    assert!(
        line.starts_with("vet-agent: ")
            && line.contains(&pin_of(&coord))
            && line.contains("not the pinned one"),
        "{line}"
    );
    // Still running (retrying every 30 s), and said it once.
    assert!(child.try_wait().unwrap().is_none(), "the agent gave up");
    assert!(rx.try_recv().is_err());
    let before = coord.row_counts();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(coord.row_counts(), before);
    let run = coord.op_get("/runs").await.1;
    assert_eq!(run[0]["state"], "Queued", "a claim got through a wrong pin");
}
