//! exec: real processes in their own group, timeouts and aborts kill the
//! whole group, stderr never blocks the child.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vet_agent::exec::{run, ToolCommand, ToolError};

fn sh(script: &str, timeout: Duration) -> ToolCommand {
    ToolCommand::new("sh", "dash", timeout)
        .arg("-c")
        .arg(script)
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

async fn wait_dead(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes {pids:?} survived their group's kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn captures_stdout_status_and_stderr_tail() {
    let out = run(
        &sh("echo hi; echo oops >&2; exit 3", Duration::from_secs(10)),
        &CancellationToken::new(),
        String::new,
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr_tail, "oops");
}

#[tokio::test]
async fn a_missing_tool_names_its_package() {
    let cmd = ToolCommand::new(
        "vet-no-such-tool",
        "vet-imaginary-tools",
        Duration::from_secs(1),
    );
    let err = run(&cmd, &CancellationToken::new(), String::new)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::NotInstalled { .. }));
    assert_eq!(
        err.to_string(),
        "vet-no-such-tool not found; install package `vet-imaginary-tools`"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let script = format!(
        "sleep 300 & echo $! > {p}; sleep 300 & echo $! >> {p}; echo started >&2; wait",
        p = pidfile.display()
    );
    let started = Instant::now();
    let err = run(
        &sh(&script, Duration::from_millis(700)),
        &CancellationToken::new(),
        String::new,
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    match &err {
        ToolError::TimedOut {
            tool, stderr_tail, ..
        } => {
            assert_eq!(*tool, "sh");
            assert_eq!(stderr_tail, "started");
        }
        other => panic!("want TimedOut, got {other:?}"),
    }
    let pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    wait_dead(&pids).await;
}

#[tokio::test]
async fn abort_kills_real_stress_ng_workers() {
    let token = CancellationToken::new();
    let cmd = ToolCommand::new("stress-ng", "stress-ng", Duration::from_secs(120)).args([
        "--cpu",
        "2",
        "--timeout",
        "100s",
        "--quiet",
    ]);
    let canceller = token.clone();
    let handle =
        tokio::spawn(async move { run(&cmd, &token, || "critical temp breach".into()).await });
    // Let stress-ng start its workers, then find them by process group.
    let deadline = Instant::now() + Duration::from_secs(20);
    let workers = loop {
        let group = stress_ng_pids();
        if group.len() >= 3 {
            break group;
        }
        assert!(
            Instant::now() < deadline,
            "stress-ng did not start its workers: {group:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    canceller.cancel();
    let err = handle.await.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "stress-ng aborted: critical temp breach; process group killed"
    );
    wait_dead(&workers).await;
}

/// Pids of stress-ng processes whose parent chain is ours.
fn stress_ng_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if !stat.contains("(stress-ng") {
            continue;
        }
        // Walk up to see if it descends from this test process.
        let mut p = pid;
        for _ in 0..8 {
            let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                break;
            };
            let ppid: i32 = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            if ppid == me {
                out.push(pid);
                break;
            }
            if ppid <= 1 {
                break;
            }
            p = ppid;
        }
    }
    out
}

#[tokio::test]
async fn a_chatty_stderr_never_blocks_the_child() {
    let script = "head -c 2000000 /dev/zero | tr '\\0' x >&2; echo done";
    let out = run(
        &sh(script, Duration::from_secs(60)),
        &CancellationToken::new(),
        String::new,
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, b"done\n");
    assert!(out.stderr_tail.len() <= 2048 && out.stderr_tail.ends_with('x'));
}

#[tokio::test]
async fn real_memtester_passes_and_a_timeout_stops_it() {
    use vet_agent::tools::memtester;
    let cmd =
        ToolCommand::new("memtester", "memtester", Duration::from_secs(120)).args(["4M", "1"]);
    let out = run(&cmd, &CancellationToken::new(), String::new)
        .await
        .expect("memtester is installed by scripts/setup");
    let judged = memtester::read(out.status.code().unwrap(), &out.stderr_tail);
    assert_eq!(
        judged,
        memtester::MemtesterResult::default(),
        "{}",
        out.stderr_tail
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Done."));

    // A pass over 512 MiB takes minutes here: the timeout ends it.
    let cmd =
        ToolCommand::new("memtester", "memtester", Duration::from_secs(2)).args(["512M", "1"]);
    let started = Instant::now();
    let err = run(&cmd, &CancellationToken::new(), String::new)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::TimedOut { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("cmdline"))
                .is_ok_and(|c| c.starts_with("memtester\x00512M"))
        }),
        "memtester was killed"
    );
}

/// Waits until `path` exists, failing after `within`.
async fn wait_for_file(path: &std::path::Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_daemon_that_writes_a_lot_keeps_running_and_stop_ends_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let (pidfile, done) = (dir.path().join("pids"), dir.path().join("done"));
    // Far more than a pipe holds, on both outputs, long after start-up.
    let script = format!(
        "sleep 300 & echo $! > {p}; head -c 2000000 /dev/zero | tr '\\0' e >&2; \
         head -c 2000000 /dev/zero | tr '\\0' o; echo finished >&2; touch {d}; wait",
        p = pidfile.display(),
        d = done.display()
    );
    let daemon = vet_agent::exec::spawn_daemon(&sh(&script, Duration::MAX)).unwrap();
    wait_for_file(&done, Duration::from_secs(30)).await;
    assert!(
        daemon.output_tail().ends_with("finished"),
        "{}",
        daemon.output_tail().len()
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    daemon.stop(Duration::from_secs(5)).await;
    wait_dead(&[pid]).await;
}

#[tokio::test]
async fn a_daemon_that_exits_says_how_and_what_it_wrote() {
    let mut daemon =
        vet_agent::exec::spawn_daemon(&sh("echo 'no host keys' >&2; exit 3", Duration::MAX))
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, output) = loop {
        if let Some(exited) = daemon.exited() {
            break exited;
        }
        assert!(Instant::now() < deadline, "the daemon never exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(3));
    // The drain may lag the exit by a moment; the tail arrives with EOF.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut output = output;
    while output.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        output = daemon.output_tail();
    }
    assert_eq!(output, "no host keys");
}
