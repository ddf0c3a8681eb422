//! `vet-agent boot` end to end on this machine: the real coordinator on
//! 127.0.0.1 with its iperf3 pool, the agent's run loop with real stress-ng,
//! fio on a loop device the test makes, iperf3 over loopback, and the
//! sidecar reading a hwmon tree the test lays out per the kernel ABI; the
//! crash test SIGKILLs the real `vet-coordinator` binary mid-run.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use common::run_state::RunState;
use common::time::Timestamp;
use support::{free_port, options, Coord, Loop};
use vet_agent::run::boot;

#[tokio::test(flavor = "multi_thread")]
async fn a_quick_non_destructive_run_passes_with_the_real_tools() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 256);
    let coord = Coord::start(dir.path()).await;
    let mac = "52:54:00:e2:e1:01";
    coord.operator().add_host("e2e-pass", mac, None).await;
    let run = coord
        .operator()
        .start_run(
            "e2e-pass",
            json!({"profile": "quick", "non_destructive": true}),
        )
        .await;
    let started = Instant::now();
    let agent = tokio::spawn(boot(options(&coord, dir.path(), mac, &disk.0)));
    // A real kernel block error while CPUStress runs: a loop device over a
    // full tmpfs fails writes in the loop driver, which logs it.
    let run_id = run;
    support::wait_run(&coord, run_id, Duration::from_secs(120), "CPUStress", |d| {
        d["stages"][4]["state"] == "running"
    })
    .await;
    let broken = support::provoke_block_error(dir.path());
    let end = agent.await.unwrap().expect("boot");
    eprintln!("quick non-destructive run took {:?}", started.elapsed());
    assert_eq!(
        end.state,
        RunState::Passed,
        "an I/O error is a warning by default"
    );
    assert_eq!(end.run_id, run_id);

    let d = coord.get(&format!("/runs/{}", end.run_id)).await;
    assert_eq!(d["result"], "pass");
    let stage = |name: &str| {
        d["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(stage("DiskSurface")["state"], "skipped");
    assert_eq!(stage("GPU")["state"], "skipped", "no GPU here");
    let loop_name = disk.0.trim_start_matches("/dev/");
    let smart = stage("SMART");
    assert_eq!(smart["sub_steps"][0]["name"], format!("{loop_name} SMART"));
    assert_eq!(
        smart["sub_steps"][0]["state"], "skipped",
        "a loop device has no SMART"
    );
    assert_eq!(stage("DiskPerf")["sub_steps"][0]["state"], "passed");
    assert_eq!(stage("Network")["sub_steps"][0]["state"], "passed");
    assert!(
        !d["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "sample_count_mismatch"),
        "{}",
        d["events"]
    );

    let ms = coord
        .get(&format!("/runs/{}/measurements", end.run_id))
        .await;
    let ms = ms.as_array().unwrap();
    let has = |kind: &str, key: &str| {
        ms.iter().any(|m| {
            m["kind"] == kind && m["key"] == key && m["value"].as_f64().is_some_and(|v| v > 0.0)
        })
    };
    assert!(has("stress", "cpu/bogo_ops_per_s"), "stress-ng metrics");
    assert!(
        has("stress", "vm/bogo_ops_per_s"),
        "memory stressor metrics"
    );
    assert!(
        has("fio", &format!("{loop_name}/read_bw_mbps")),
        "fio on the loop device"
    );
    assert!(has("iperf", "lo/bps"), "iperf3 over loopback");
    // Throughput over time: fio's status report every second and iperf3's
    // intervals, each placed inside the stage that measured it.
    let at = |v: &serde_json::Value| v.as_str().unwrap().parse::<Timestamp>().unwrap();
    let over_time = |kind: &str, key: &str, stage_name: &str| -> Vec<f64> {
        let s = stage(stage_name);
        let (from, to) = (at(&s["started_at"]), at(&s["completed_at"]));
        let points: Vec<(Timestamp, f64)> = ms
            .iter()
            .filter(|m| m["kind"] == kind && m["key"] == key && m["stage_id"] == s["id"])
            .map(|m| (at(&m["ts"]), m["value"].as_f64().unwrap()))
            .collect();
        for w in points.windows(2) {
            assert!(w[0].0 < w[1].0, "{key} in time order: {points:?}");
        }
        for (t, _) in &points {
            assert!(
                from <= *t && *t <= to,
                "{key} at {t} inside {stage_name} {from}..{to}"
            );
        }
        points.into_iter().map(|p| p.1).collect()
    };
    let fio_bw = over_time(
        "fio",
        &format!("{loop_name}/read_interval_bw_mbps"),
        "DiskPerf",
    );
    assert!(
        fio_bw.len() >= 8,
        "a 10 s pass reports every second: {fio_bw:?}"
    );
    // The pass's bandwidth is the time-weighted mean of its intervals.
    let pass_bw = ms
        .iter()
        .find(|m| {
            m["key"] == format!("{loop_name}/read_bw_mbps")
                && m["stage_id"] == stage("DiskPerf")["id"]
        })
        .unwrap()["value"]
        .as_f64()
        .unwrap();
    let (lo, hi) = fio_bw
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), v| (l.min(*v), h.max(*v)));
    assert!(
        lo * 0.999 <= pass_bw && pass_bw <= hi * 1.001,
        "{pass_bw} within {lo}..{hi}"
    );
    let burn_bw = over_time("fio", &format!("{loop_name}/read_interval_bw_mbps"), "Burn");
    assert!(
        burn_bw.len() >= 30,
        "the burn's fio reports too: {burn_bw:?}"
    );
    let iperf_bps = over_time("iperf", "lo/interval_bps", "Network");
    assert!(
        iperf_bps.len() >= 4,
        "a 5 s test reports every second: {iperf_bps:?}"
    );
    assert!(iperf_bps.iter().all(|v| *v > 0.0), "{iperf_bps:?}");
    // …and plotted in the report, one plot per metric, rates in Gbit/s or
    // Mbit/s, beside the sensors.
    let page = dir.path().join("report.html");
    let out = tokio::task::block_in_place(|| {
        let id = end.run_id.to_string();
        support::vetctl(
            &coord,
            &["run", "report", &id, "--html", page.to_str().unwrap()],
        )
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    for want in [
        "id=\"plot-temp-0\"".to_string(),
        "id=\"plot-fio-0\"".to_string(),
        format!("<title>{loop_name}/read_interval_bw_mbps</title>"),
        "id=\"plot-iperf-0\"".to_string(),
        "<title>lo/interval_bps</title>".to_string(),
    ] {
        assert!(html.contains(&want), "report.html lacks {want}");
    }
    assert!(html.contains(">Gbit/s</text>") || html.contains(">Mbit/s</text>"));
    assert!(has("temp", "coretemp/Package id 0"), "sidecar temperatures");
    // Every failure leaves a trace in `run show`: without ethtool (scripts/setup
    // does not install it) the Firmware stage reports the missing tool.
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    let tool_missing = d["events"].as_array().unwrap().iter().any(|e| {
        e["kind"] == "tool_missing"
            && e["message"]
                .as_str()
                .unwrap()
                .contains("install package `ethtool`")
    });
    assert_eq!(tool_missing, !on_path("ethtool"), "{}", d["events"]);
    let kernel = ms
        .iter()
        .find(|m| m["kind"] == "kmsg" && m["key"] == format!("io_error/{broken}"))
        .expect("the kernel's block error became a kmsg measurement");
    assert_eq!(
        kernel["stage_id"], d["stages"][4]["id"],
        "counted in CPUStress: {kernel}"
    );
    assert!(
        d["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "kernel_error"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("dev {broken}, sector"))),
        "a kernel_error event with the line: {}",
        d["events"]
    );
    assert_eq!(
        ms.len() as u64,
        end.samples_produced,
        "every produced sample stored once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_breach_halts_at_cpu_stress_and_holds() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 64);
    let coord = Coord::start(dir.path()).await;
    let mac = "52:54:00:e2:e1:02";
    // No machine does 10^15 bogo-ops per second.
    let spec = "thresholds:\n  - {stage: CPUStress, kind: stress, key: 'cpu/bogo_ops_per_s', op: gt, threshold: 1.0e15, unit: ops/s, severity: critical}\n";
    coord.operator().add_host("e2e-hot", mac, Some(spec)).await;
    let run = coord
        .operator()
        .start_run("e2e-hot", json!({"non_destructive": true}))
        .await;
    let run_id = run;
    let mut opts = options(&coord, dir.path(), mac, &disk.0);
    let power = std::sync::Arc::new(support::RecordedPower::default());
    opts.power = power.clone();
    let (keys_file, ssh_port) = (opts.hold.authorized_keys.clone(), opts.hold.ssh_port);
    let agent = tokio::spawn(boot(opts));
    let deadline = Instant::now() + Duration::from_secs(300);
    let d = loop {
        let d = coord.get(&format!("/runs/{run_id}")).await;
        if d["state"] == "FailedHolding" && !d["hold_ip"].is_null() {
            break d;
        }
        assert!(Instant::now() < deadline, "run never held: {}", d["state"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(d["failed_stage"], "CPUStress");
    let later: Vec<&str> = d["stages"].as_array().unwrap()[5..]
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert!(
        later.iter().all(|s| *s == "pending" || *s == "skipped"),
        "later stages not run: {later:?}"
    );

    // Log in as an engineer would: with what `vetctl run ssh` prints.
    let marker = format!("vetting-hold-run-{run_id}");
    assert!(std::fs::read_to_string(&keys_file)
        .unwrap()
        .contains(&marker));
    let vetctl = |args: &[&str]| support::vetctl(&coord, args);
    let key_dir = dir.path().join("keys");
    let out = vetctl(&[
        "run",
        "ssh",
        &run_id.to_string(),
        "--key-dir",
        key_dir.to_str().unwrap(),
    ]);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{printed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains(&format!("-p {ssh_port}")) && printed.contains("root@127.0.0.1"),
        "{printed}"
    );
    let login = Command::new("timeout")
        .arg("30")
        .arg("sh")
        .arg("-c")
        .arg(format!("{} cat {}", printed.trim(), keys_file.display()))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&login.stdout).contains(&marker),
        "ran a command on the held host: {}",
        String::from_utf8_lossy(&login.stderr)
    );

    coord
        .post(
            &format!("/runs/{run_id}/release"),
            json!({"power": "poweroff"}),
        )
        .await;
    let end = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("agent ends after release")
        .unwrap()
        .unwrap();
    assert_eq!(end.state, RunState::Failed);
    assert_eq!(
        end.power,
        common::wire::Power::Poweroff,
        "released with poweroff; --power none only logs it"
    );
    assert_eq!(
        *power.0.lock().unwrap(),
        [common::wire::Power::Poweroff],
        "the power control was called once, with poweroff"
    );
    assert!(
        !std::fs::read_to_string(&keys_file)
            .unwrap()
            .contains(&marker),
        "the release removed the hold key"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ssh_port)).is_err(),
        "the SSH server the hold started is gone"
    );
    let out = vetctl(&[
        "run",
        "ssh",
        &run_id.to_string(),
        "--key-dir",
        key_dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "no hold key once released");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_killed_with_sigkill_during_a_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 64);
    let port = free_port();
    let iperf = vec![free_port()];
    let coord = Coord::spawn_binary(dir.path(), port, &iperf).await;
    let mac = "52:54:00:e2:e1:03";
    coord.operator().add_host("e2e-crash", mac, None).await;
    let run = coord
        .operator()
        .start_run("e2e-crash", json!({"non_destructive": true}))
        .await;
    let run_id = run;
    let agent = tokio::spawn(boot(options(&coord, dir.path(), mac, &disk.0)));
    // Crash the coordinator while CPUStress runs and the sidecar streams.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = coord.get(&format!("/runs/{run_id}")).await;
        if d["stages"][4]["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "CPUStress never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    coord.crash().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let coord = Coord::spawn_binary(dir.path(), port, &iperf).await;
    let end = tokio::time::timeout(Duration::from_secs(400), agent)
        .await
        .expect("run ends")
        .unwrap()
        .expect("boot");
    assert_eq!(end.state, RunState::Passed);
    let d = coord.get(&format!("/runs/{run_id}")).await;
    assert_eq!(
        d["measurements"].as_u64(),
        Some(end.samples_produced),
        "stored = produced"
    );
    assert!(!d["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "sample_count_mismatch"));
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("vetting.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let dups: i64 = db
        .query_row("SELECT COUNT(*) FROM (SELECT 1 FROM measurements GROUP BY kind, key, ts, value HAVING COUNT(*) > 1)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dups, 0, "no sample stored twice");
    let temps: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM measurements WHERE kind = 'temp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        temps > 60,
        "the sidecar streamed through the outage: {temps} temperature samples"
    );
}
