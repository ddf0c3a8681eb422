//! `vetctl run watch RUN`: follows a run until it can go no further — the
//! current stage and its sub-steps, the latest sensor values, breaches as
//! they happen. A progress bar on a terminal, plain lines otherwise.
//! Exit code: 0 Passed, 1 FailedHolding/Failed/Aborted, 2 Cancelled.
//!
//! Never: change the run (read-only routes only), or print a breach or a
//! stage change twice.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use common::run_state::RunState;
use common::stage::{StageReason, StageState};
use common::wire::{RunDetail, SeriesStats};

use crate::client::Client;

/// Sensor kinds whose latest values are shown.
const SENSORS: [&str; 4] = ["temp", "power", "fan", "psu_volt"];

/// The exit code a final state gives; `None` while the run can still move.
pub fn exit_code(state: RunState) -> Option<u8> {
    match state {
        RunState::Passed => Some(0),
        RunState::FailedHolding | RunState::Failed | RunState::Aborted => Some(1),
        RunState::Cancelled => Some(2),
        RunState::Queued | RunState::Running => None,
    }
}

struct Output {
    bar: Option<ProgressBar>,
}

impl Output {
    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }
}

fn stage_line(d: &RunDetail) -> String {
    match d.stages.iter().find(|s| s.state == StageState::Running) {
        Some(s) => {
            let subs: Vec<String> = s
                .sub_steps
                .iter()
                .map(|x| format!("{} {}", x.name, x.state.as_str()))
                .collect();
            let subs = if subs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", subs.join(", "))
            };
            format!("{} ({}/{}){subs}", s.name, s.ordinal + 1, d.stages.len())
        }
        None => d.run.state.to_string(),
    }
}

fn sensors_line(latest: &BTreeMap<(String, String), (f64, String)>) -> String {
    let shown: Vec<String> = latest
        .iter()
        .take(6)
        .map(|((_, key), (v, unit))| {
            format!(
                "{key} {v:.1}{}",
                if unit.is_empty() {
                    String::new()
                } else {
                    format!(" {unit}")
                }
            )
        })
        .collect();
    let more = latest.len().saturating_sub(6);
    if shown.is_empty() {
        String::new()
    } else if more > 0 {
        format!("{} (+{more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Follows `run` until its state is final; returns the exit code.
pub fn watch(client: &Client, run: i64, interval: Duration) -> anyhow::Result<u8> {
    let tty = std::io::stdout().is_terminal();
    let out = Output {
        bar: tty.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{bar:24}] {pos}/{len} stages  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        }),
    };
    let mut seen_events: HashSet<i64> = HashSet::new();
    let mut stage_states: BTreeMap<String, StageState> = BTreeMap::new();
    let mut latest: BTreeMap<(String, String), (f64, String)> = BTreeMap::new();
    let mut last_sensor_line = Instant::now() - Duration::from_secs(3600);
    let mut first = true;
    loop {
        let d: RunDetail = client.get(&format!("/runs/{run}"))?;
        if let Some(bar) = &out.bar {
            bar.set_length(d.stages.len() as u64);
        }
        if first {
            out.line(&format!(
                "run {} on {}: {} profile, {}",
                d.run.id,
                d.run.host,
                d.run.profile,
                if d.run.non_destructive {
                    "non-destructive"
                } else {
                    "destructive"
                }
            ));
            first = false;
        }
        // Stage changes, in stage order.
        for s in &d.stages {
            if stage_states.get(&s.name) != Some(&s.state) {
                if s.state != StageState::Pending {
                    let reasons: Vec<String> = s
                        .summary_json
                        .as_deref()
                        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
                        .and_then(|v| v["reasons"].as_array().cloned())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|r| r.as_str())
                        // "stage GPU skipped: no GPU", not "skipped: skipped: …".
                        .map(StageReason::after_skipped)
                        .collect();
                    let why = if reasons.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", reasons.join("; "))
                    };
                    out.line(&format!("stage {} {}{why}", s.name, s.state.as_str()));
                }
                stage_states.insert(s.name.clone(), s.state);
            }
        }
        // Breaches and other warnings, once each.
        for e in &d.events {
            if !seen_events.insert(e.id) {
                continue;
            }
            if matches!(
                e.kind.as_str(),
                "breach"
                    | "kernel_error"
                    | "interlock_refused"
                    | "tool_missing"
                    | "tool_timeout"
                    | "hold_started"
            ) {
                out.line(&format!("{} {}: {}", e.ts, e.kind, e.message));
            }
        }
        // Latest sensor values: one read of the run's series summaries,
        // however many samples a long soak has stored.
        let series: Vec<SeriesStats> = client.get(&format!("/runs/{run}/series"))?;
        for x in series {
            if SENSORS.contains(&x.kind.as_str()) {
                latest.insert((x.kind, x.key), (x.last, x.unit));
            }
        }
        let done = d
            .stages
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    StageState::Passed | StageState::Failed | StageState::Skipped
                )
            })
            .count();
        let sensors = sensors_line(&latest);
        match &out.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(format!("{}  {sensors}", stage_line(&d)));
            }
            None if !sensors.is_empty()
                && last_sensor_line.elapsed() >= Duration::from_secs(10) =>
            {
                out.line(&format!("sensors: {sensors}"));
                last_sensor_line = Instant::now();
            }
            None => {}
        }
        if let Some(code) = exit_code(d.run.state) {
            if let Some(bar) = &out.bar {
                bar.finish_and_clear();
            }
            let mut end = format!("run {run}: {}", d.run.state);
            if let Some(stage) = &d.run.failed_stage {
                end.push_str(&format!(" at {stage}"));
            }
            if let Some(ip) = &d.run.hold_ip {
                end.push_str(&format!("; held at {ip} (vetctl run ssh {run})"));
            } else if d.run.state == RunState::FailedHolding {
                end.push_str(&format!(
                    "; held, waiting for the host's address (vetctl run ssh {run})"
                ));
            }
            println!("{end}");
            return Ok(code);
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_give_the_documented_exit_codes() {
        assert_eq!(exit_code(RunState::Passed), Some(0));
        assert_eq!(exit_code(RunState::FailedHolding), Some(1));
        assert_eq!(exit_code(RunState::Failed), Some(1));
        assert_eq!(exit_code(RunState::Aborted), Some(1));
        assert_eq!(exit_code(RunState::Cancelled), Some(2));
        assert_eq!(exit_code(RunState::Running), None);
        assert_eq!(exit_code(RunState::Queued), None);
    }
}
