//! The web dashboard in headless Chromium against the real coordinator: a
//! person is sent to the login form, a wrong token is refused, the operator
//! token gives an HttpOnly session cookie, and the runs page (held host
//! first), a run page with the report's plots, and the hosts page with
//! last-seen times render; logging out ends the session on the server.

use testkit as support;

use serde_json::json;

use common::measurement::Kind;
use common::wire::{StageFinish, StageOutcome};
use support::browser::Browser;
use support::{pass_stage, sample, TestCoordinator, SPEC};

const HELD_MAC: &str = "52:54:00:00:0c:01";

/// A run held at CPUStress after a hot core, with temperatures to plot.
async fn held_run(coord: &TestCoordinator) -> i64 {
    coord.add_host("node-hot", HELD_MAC, Some(SPEC)).await;
    let run = coord.start_run("node-hot", json!({})).await;
    let mut agent = coord.agent(HELD_MAC, "boot-hot").await;
    for ordinal in 0..4 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(4).await;
    let t0 = common::time::Timestamp::from_unix_millis(1_795_000_000_000);
    let samples = (0..300)
        .map(|i| {
            let mut s = sample(
                Kind::Temp,
                "coretemp/Core 0",
                60.0 + i as f64 / 10.0,
                Some(4),
            );
            s.ts = t0.plus_millis(i * 1000);
            s
        })
        .chain([sample(Kind::Temp, "coretemp/Core 1", 97.0, Some(4))])
        .collect();
    agent.send(samples).await;
    let (_, v) = agent
        .finish_with(4, StageFinish::of(StageOutcome::Passed))
        .await;
    assert_eq!(
        v["state"], "failed",
        "the 97 °C breach fails CPUStress: {v}"
    );
    run
}

fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_and_reads_runs_a_run_and_hosts_in_chromium() {
    let coord = TestCoordinator::start().await;
    let held = held_run(&coord).await;
    coord
        .add_host("node-idle", "52:54:00:00:0c:02", Some(SPEC))
        .await;
    let queued = coord.start_run("node-idle", json!({})).await;
    // A host-mode heartbeat gives node-idle a last_seen time.
    let (_, t) = coord.op_post("/hosts/node-idle/token", json!({})).await;
    let resp = coord
        .http
        .post(coord.url("/host/heartbeat"))
        .bearer_auth(t["token"].as_str().unwrap())
        .json(&json!({"boot_id": "b-idle", "macs": ["52:54:00:00:0c:02"], "agent_version": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let report_svgs = coord
        .http
        .get(coord.url(&format!("/runs/{held}/report.html")))
        .bearer_auth(&coord.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .matches("<svg")
        .count();
    assert!(report_svgs > 0);

    let base = coord.base.clone();
    let token = coord.token.clone();
    let (old_cookie, shot) = blocking(move || {
        let mut b = Browser::launch();

        // Not logged in: every page sends the browser to the form.
        b.navigate(&format!("{base}/ui/runs/{held}"));
        b.wait_for("the login form", "location.pathname === '/ui/login'");
        assert!(b.text().contains("Operator token"));

        // A wrong token is refused and sets nothing.
        b.eval("document.getElementById('token').value = 'not-the-token'; document.getElementById('login').click(); true");
        b.wait_for("the refusal", "document.getElementById('error') !== null");
        assert!(b.text().contains("not the operator token"));
        assert!(b.cookies().is_empty());

        // The operator token: typed into the form as a person pastes it.
        b.eval(&format!(
            "document.getElementById('token').value = '{token}'; document.getElementById('login').click(); true"
        ));
        b.wait_for(
            "the runs page",
            "location.pathname === '/ui' && document.getElementById('held') !== null",
        );
        let cookies = b.cookies();
        assert_eq!(cookies.len(), 1, "{cookies:#?}");
        let c = &cookies[0];
        assert_eq!(c["name"], "vet_session");
        assert_eq!(c["httpOnly"], true);
        assert_eq!(c["sameSite"], "Strict");
        assert_ne!(
            c["value"],
            token.as_str(),
            "the cookie is a session, not the token"
        );
        assert_eq!(
            b.eval("document.cookie"),
            "",
            "scripts cannot read the session"
        );

        let runs = b.text();
        assert!(runs.contains("Held hosts (1)"), "{runs}");
        let held_row = b.eval("document.querySelector('tr.held').innerText");
        let held_row = held_row.as_str().unwrap();
        assert!(
            held_row.contains("node-hot") && held_row.contains("CPUStress"),
            "{held_row}"
        );
        assert!(
            held_row.contains(&format!("vetctl run ssh {held}")),
            "{held_row}"
        );
        assert!(
            runs.contains("node-idle") && runs.contains("Queued"),
            "{runs}"
        );
        assert_eq!(b.eval("document.scripts.length"), 0);

        // The run page: the report with the same plots, reached by its link.
        b.eval(&format!(
            "document.querySelector('a[href=\"/ui/runs/{held}\"]').click(); true"
        ));
        b.wait_for(
            "the run page",
            &format!(
                "location.pathname === '/ui/runs/{held}' && document.readyState === 'complete'"
            ),
        );
        let page = b.text();
        assert!(page.contains(&format!("Run {held} on node-hot")), "{page}");
        assert!(
            page.contains("FAIL") && page.contains("Temperatures"),
            "{page}"
        );
        assert_eq!(
            b.eval("document.querySelectorAll('svg').length"),
            json!(report_svgs),
            "the dashboard shows the report's plots"
        );
        assert!(
            b.eval("document.querySelectorAll('svg path').length")
                .as_u64()
                .unwrap()
                > 0
        );
        let shot = b.screenshot();

        // Hosts with their last contact.
        b.eval("document.querySelector('a[href=\"/ui/hosts\"]').click(); true");
        b.wait_for(
            "the hosts page",
            "location.pathname === '/ui/hosts' && document.getElementById('hosts') !== null",
        );
        let seen: Vec<String> = serde_json::from_value(
            b.eval("Array.from(document.querySelectorAll('tr')).slice(1).map(r => r.innerText)"),
        )
        .unwrap();
        let idle = seen.iter().find(|r| r.contains("node-idle")).unwrap();
        assert!(
            idle.contains("s ago") && idle.contains(&format!("{queued}")),
            "{idle}"
        );
        let hot = seen.iter().find(|r| r.contains("node-hot")).unwrap();
        assert!(
            hot.contains("never") && hot.contains("FailedHolding"),
            "{hot}"
        );

        // Log out: the server forgets the session.
        let old_cookie = b.cookies()[0]["value"].as_str().unwrap().to_string();
        b.eval("document.getElementById('logout').click(); true");
        b.wait_for("the login form again", "location.pathname === '/ui/login'");
        assert!(b.cookies().is_empty());
        (old_cookie, shot)
    });

    // The screenshot shows a rendered page, not a blank one.
    let decoder = png::Decoder::new(std::io::Cursor::new(&shot));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    assert!(colours.len() > 50, "{} colours", colours.len());
    if let Ok(dir) = std::env::var("VET_KEEP_SCREENSHOT") {
        std::fs::write(format!("{dir}/dashboard-run.png"), &shot).unwrap();
    }

    // The ended session is refused even if a client kept the cookie.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect
        .get(format!("{}/ui", coord.base))
        .header("cookie", format!("vet_session={old_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/login");
    // Read-only: the pages answer nothing but GET.
    let resp = no_redirect
        .post(format!("{}/ui/runs/{held}", coord.base))
        .bearer_auth(&coord.token)
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), 200);
    // The run is as it was.
    let detail = coord.run_detail(held).await;
    assert_eq!(detail["state"], "FailedHolding");
    coord.stop().await;
}
