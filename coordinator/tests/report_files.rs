//! Reports as files: `vetctl run report` writes report.json and
//! report.html and never over an existing file, and report.html is
//! self-contained, small, and renders in headless Chromium.

use testkit as support;

use std::time::Duration;

use serde_json::json;

use common::measurement::Kind;
use common::wire::StageOutcome;
use support::report::{fetch, fetch_html, stored_report};
use support::{pass_stage, sample, TestCoordinator, SPEC};

#[tokio::test(flavor = "multi_thread")]
async fn vetctl_writes_the_report_and_never_over_a_file() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-cli", "52:54:00:00:07:04", None).await;
    let run = coord.start_run("node-cli", json!({})).await;
    let out_file = coord.dir.path().join("r.json");
    let vetctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vetctl"))
            .args(args)
            .env("VET_COORDINATOR", &coord.base)
            .env("VET_TOKEN", &coord.token)
            .output()
            .unwrap()
    };
    // DESIGN's spelling: `run report RUN --json F`.
    let args = [
        "run",
        "report",
        &run.to_string(),
        "--json",
        out_file.to_str().unwrap(),
    ];
    let out = tokio::task::block_in_place(|| vetctl(&args));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.starts_with(b"run "),
        "a file, not stdout, gets it"
    );
    assert_eq!(std::fs::read(&out_file).unwrap(), fetch(&coord, run).await);
    // The same with --html beside it, in either order, and the older
    // --json-file spelling.
    let html_file = coord.dir.path().join("r.html");
    let json2 = coord.dir.path().join("r2.json");
    let succeeds = |args: &[&str]| {
        let out = tokio::task::block_in_place(|| vetctl(args));
        assert!(
            out.status.success(),
            "vetctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    succeeds(&[
        "run",
        "report",
        &run.to_string(),
        "--json",
        json2.to_str().unwrap(),
        "--html",
        html_file.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&json2).unwrap(), fetch(&coord, run).await);
    assert_eq!(
        std::fs::read_to_string(&html_file).unwrap(),
        fetch_html(&coord, run).await
    );
    let json3 = coord.dir.path().join("r3.json");
    succeeds(&[
        "run",
        "report",
        &run.to_string(),
        "--json-file",
        json3.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&json3).unwrap(), fetch(&coord, run).await);
    // A bare file name without --json is refused and writes nothing.
    let stray = coord.dir.path().join("stray.json");
    let out = tokio::task::block_in_place(|| {
        vetctl(&["run", "report", &run.to_string(), stray.to_str().unwrap()])
    });
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stray.exists());
    // The summary a person reads, and report.json itself with --json.
    let out = tokio::task::block_in_place(|| vetctl(&["run", "report", &run.to_string()]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verdict none (state Queued"), "{text}");
    let out =
        tokio::task::block_in_place(|| vetctl(&["--json", "run", "report", &run.to_string()]));
    assert_eq!(out.stdout, fetch(&coord, run).await);
    let again = tokio::task::block_in_place(|| vetctl(&args));
    assert!(
        !again.status.success(),
        "an existing file is not overwritten"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("r.json"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// Runs headless Chromium on `page` with `args`, in its own process group,
/// killed after 60 s. Returns stdout.
fn chromium(profile: &std::path::Path, args: &[&str], page: &std::path::Path) -> Vec<u8> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("chromium")
        .args(support::browser::CHROMIUM_FLAGS)
        .arg("--hide-scrollbars")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromium (Debian package chromium; scripts/setup installs it)");
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut out = Vec::new();
    std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let status = child.wait().unwrap();
    let _ = done_tx.send(());
    killer.join().unwrap();
    // Chromium leaves helpers behind in its group now and then.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    assert!(status.success(), "chromium {args:?}: {status}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn report_html_is_self_contained_small_and_renders_in_a_browser() {
    let coord = TestCoordinator::start().await;
    coord
        .add_host("node-html", "52:54:00:00:07:05", Some(SPEC))
        .await;
    let run = coord.start_run("node-html", json!({})).await;
    let mut agent = coord.agent("52:54:00:00:07:05", "boot-html").await;
    for ordinal in 0..4 {
        pass_stage(&agent, ordinal).await;
    }
    // CPUStress: 6000 samples of four sensors, then the breach.
    agent.start_stage(4).await;
    for chunk in 0..12 {
        let samples = (0..500)
            .flat_map(|i| {
                let t = (chunk * 500 + i) as f64;
                [
                    sample(
                        Kind::Temp,
                        "coretemp/Core 0",
                        45.0 + (t / 300.0).sin() * 8.0,
                        Some(4),
                    ),
                    sample(Kind::Temp, "nvme/Composite", 38.0 + t / 1000.0, Some(4)),
                    sample(
                        Kind::Power,
                        "ipmi/PSU1 Input",
                        310.0 + (t / 50.0).cos() * 20.0,
                        Some(4),
                    ),
                    sample(
                        Kind::Fan,
                        "nct6775/fan1",
                        1800.0 + (t / 90.0).sin() * 200.0,
                        Some(4),
                    ),
                ]
            })
            .collect();
        agent.send(samples).await;
    }
    agent
        .send(vec![sample(Kind::Temp, "coretemp/Core 0", 93.5, Some(4))])
        .await;
    agent.finish_stage(4, StageOutcome::Passed, None).await;
    stored_report(&coord, run, "FailedHolding").await;
    let path: String = coord
        .db()
        .query_row(
            "SELECT path FROM artifacts WHERE run_id = ?1 AND kind = 'report_html'",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    let html = std::fs::read_to_string(&path).unwrap();

    // Self-contained: nothing fetched, nothing run.
    for banned in ["<script", " src=", "href=", "url(", "@import", "<link"] {
        assert!(!html.contains(banned), "report.html contains {banned:?}");
    }
    assert!(html.len() < 2_000_000, "{} bytes", html.len());
    assert!(
        html.contains("Failed at CPUStress"),
        "the failure comes first"
    );
    assert_eq!(
        html.matches("<path d=").count(),
        4,
        "one line per sensor: 2 temperatures, 1 power, 1 fan"
    );
    // 6001 samples per line are downsampled to at most 600 points.
    let longest = html
        .split("<path d=\"")
        .skip(1)
        .map(|p| p.split('"').next().unwrap().matches('L').count() + 1)
        .max()
        .unwrap();
    assert!(longest <= 600, "{longest} points in one line");
    // The same bytes on demand.
    assert_eq!(fetch_html(&coord, run).await, html);

    // As a person would see it: saved with vetctl, rendered by Chromium.
    let dir = coord.dir.path().to_path_buf();
    let page = dir.join("report.html");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vetctl"))
            .args(["run", "report", &run.to_string(), "--html"])
            .arg(&page)
            .env("VET_COORDINATOR", &coord.base)
            .env("VET_TOKEN", &coord.token)
            .output()
            .unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&page).unwrap(), html);
    let (dom, png) = tokio::task::block_in_place(|| {
        let dom = chromium(&dir.join("chrome-a"), &["--dump-dom"], &page);
        let shot = dir.join("report.png");
        chromium(
            &dir.join("chrome-b"),
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1280,1600",
            ],
            &page,
        );
        (
            String::from_utf8(dom).unwrap(),
            std::fs::read(&shot).unwrap(),
        )
    });
    assert!(
        dom.contains("id=\"verdict\"") && dom.contains(">FAIL<"),
        "{}",
        &dom[..dom.len().min(2000)]
    );
    assert!(
        dom.contains("plot-temp-0") && dom.contains("plot-power-0") && dom.contains("plot-fan-0")
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let colors: std::collections::HashSet<&[u8]> = pixels.chunks(step).collect();
    let ink = pixels
        .chunks(step)
        .filter(|p| p.iter().take(3).any(|c| *c < 200))
        .count();
    assert!(
        colors.len() > 20 && ink * 100 > pixels.len() / step,
        "the screenshot is blank: {} colours, {ink} dark pixels of {}",
        colors.len(),
        pixels.len() / step
    );
    println!(
        "report.html: {} bytes; screenshot {}x{}, {} colours",
        html.len(),
        info.width,
        info.height,
        colors.len()
    );
}
