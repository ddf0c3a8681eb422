//! A hold always ends: the `hold` directive carries its deadline, and the
//! agent alone removes the key and stops the SSH server it started when the
//! deadline passes, though the coordinator was killed during the hold; and
//! then the node powers off though the coordinator never comes back.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;

use std::sync::Arc;

use common::wire::Power;
use support::{free_port, options, Coord, Loop, RecordedPower};
use vet_agent::run::boot;

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hold_ends_at_its_deadline_with_the_coordinator_gone() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 64);
    let hold_timeout = Duration::from_secs(20);
    let coord = Coord::start_with(dir.path(), 0, |c| {
        c.hold_timeout = hold_timeout;
        c.iperf3_ports = vec![free_port()];
    })
    .await;
    let mac = "52:54:00:e2:e1:06";
    coord
        .operator()
        .add_host("e2e-held", mac, Some(support::HELD_AT_CPU_STRESS))
        .await;
    let run = coord
        .operator()
        .start_run("e2e-held", json!({"non_destructive": true}))
        .await;
    let mut opts = options(&coord, dir.path(), mac, &disk.0);
    let grace = Duration::from_secs(3);
    opts.hold.grace = grace;
    let power = Arc::new(RecordedPower::default());
    opts.power = power.clone();
    let (keys_file, ssh_port) = (opts.hold.authorized_keys.clone(), opts.hold.ssh_port);
    // A key an earlier boot left behind goes at start.
    std::fs::create_dir_all(keys_file.parent().unwrap()).unwrap();
    std::fs::write(
        &keys_file,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f vetting-hold-run-99\n",
    )
    .unwrap();
    let agent = tokio::spawn(boot(opts));
    let marker = format!("vetting-hold-run-{run}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let d = coord.get(&format!("/runs/{run}")).await;
        if d["state"] == "FailedHolding" && !d["hold_ip"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "run never held: {}", d["state"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_since = Instant::now();
    let keys = std::fs::read_to_string(&keys_file).unwrap();
    assert!(keys.contains(&marker), "{keys}");
    assert!(
        !keys.contains("vetting-hold-run-99"),
        "the stale key stayed: {keys}"
    );
    assert!(listening(ssh_port), "no SSH server for the hold");

    coord.crash().await;
    // Well before the deadline the hold stands without its coordinator.
    assert!(std::fs::read_to_string(&keys_file)
        .unwrap()
        .contains(&marker));
    let gone = loop {
        let key_gone = !std::fs::read_to_string(&keys_file)
            .unwrap_or_default()
            .contains(&marker);
        if key_gone && !listening(ssh_port) {
            break held_since.elapsed();
        }
        assert!(
            held_since.elapsed() < hold_timeout + Duration::from_secs(15),
            "the hold outlived its deadline by 15 s (key gone: {key_gone})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("the hold ended {gone:?} after it was reported (timeout {hold_timeout:?})");
    assert!(
        gone > hold_timeout / 2,
        "ended long before its deadline: {gone:?}"
    );
    // The coordinator stays gone: the agent waits its grace for a verdict,
    // again for the sample count, then carries out the hold timeout's
    // power-off instead of keeping the node up for ever.
    let end = tokio::time::timeout(grace * 2 + Duration::from_secs(60), agent)
        .await
        .expect("the agent never ended after the hold's deadline")
        .unwrap()
        .expect("the agent's run ended in an error");
    assert_eq!(end.power, Power::Poweroff);
    assert_eq!(*power.0.lock().unwrap(), vec![Power::Poweroff]);
}
