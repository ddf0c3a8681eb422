//! The store's contract, checked through the `Store` trait alone, so every
//! backend runs the same checks: `coordinator/tests/store_suite.rs` runs
//! them on SQLite, and a PostgreSQL store runs them on its own.
//!
//! Each check gets a fresh, empty store from `open` and says what it found
//! wrong by panicking with the check's name. Never: reach past the trait
//! (no SQL here).

use common::event::EventKind;
use common::mac::Mac;
use common::measurement::Kind;
use common::profile::Profile;
use common::run_state::{RunEvent, RunResult, RunState};
use common::stage::{Stage, StageState, DEFAULT_STAGE_ORDER};
use common::threshold::{self, Rule};
use common::time::Timestamp;
use common::wire::{Directive, MeasurementBatch, Overrides, Power, StageFinish, StageOutcome};
use coordinator::gate;
use coordinator::store::{
    ClaimAttempt, ClaimKind, ClaimOutcome, ClaimRefusal, Claimed, NewHost, NewRun, Store,
    StoreError,
};

use crate::sample;

/// One check: what it is called and what it does to a fresh store.
pub type Check = (&'static str, fn(&dyn Store));

/// Every check of the suite, by name.
pub const CHECKS: &[Check] = &[
    ("hosts_are_unique_by_name", hosts_are_unique_by_name),
    (
        "a_claim_hands_out_the_queued_run_once_and_a_live_run_to_nobody",
        a_claim_hands_out_the_queued_run_once_and_a_live_run_to_nobody,
    ),
    (
        "batches_are_numbered_resends_acknowledged_gaps_refused",
        batches_are_numbered_resends_acknowledged_gaps_refused,
    ),
    (
        "a_group_of_batches_is_judged_batch_by_batch",
        a_group_of_batches_is_judged_batch_by_batch,
    ),
    (
        "a_critical_breach_aborts_live_and_fails_the_stage",
        a_critical_breach_aborts_live_and_fails_the_stage,
    ),
    ("every_stage_passed_is_a_pass", every_stage_passed_is_a_pass),
    (
        "a_silent_agent_is_a_failure_and_a_refused_transition_changes_nothing",
        a_silent_agent_is_a_failure_and_a_refused_transition_changes_nothing,
    ),
];

/// Runs every check, each on a store `open` makes for it.
pub fn run_all<S: Store>(mut open: impl FnMut() -> S) {
    for (name, check) in CHECKS {
        let store = open();
        eprintln!("store suite: {name}");
        check(&store);
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000 + secs * 1000)
}

fn mac(i: u8) -> Mac {
    format!("52:54:00:5a:00:{i:02x}").parse().unwrap()
}

/// A host with one queued quick, non-destructive run: (host id, run id).
fn host_with_run(store: &dyn Store, name: &str, m: Mac) -> (i64, i64) {
    let host = store
        .create_host(
            &NewHost {
                name: name.into(),
                mac: m,
                wol: None,
                expected_spec_yaml: String::new(),
                notes: String::new(),
            },
            t(0),
        )
        .unwrap();
    let rules: Vec<Rule> = Profile::definition(Profile::Quick).default_thresholds();
    let run = store
        .create_run(
            &NewRun {
                host_id: host.id,
                profile: Profile::Quick,
                non_destructive: true,
                overrides: Overrides::default(),
                require_all_disks: false,
                thresholds: threshold::merge(&rules, &[]),
            },
            t(1),
        )
        .unwrap();
    assert_eq!(run.state, RunState::Queued);
    (host.id, run.id)
}

/// A claim of `m` by `boot`, handing out a token with hash `hash`.
fn attempt(m: Mac, boot: &str, hash: &str) -> ClaimAttempt {
    ClaimAttempt::new(vec![m], boot, hash, "192.0.2.7")
}

/// The claim, which must have won.
fn won(outcome: ClaimOutcome) -> Claimed {
    match outcome {
        ClaimOutcome::Claimed(c) => *c,
        other => panic!("the claim did not win: {other:?}"),
    }
}

/// Claims the run for `m` and passes its pending stages before `pass_until`.
fn claimed(store: &dyn Store, m: Mac, pass_until: u32) {
    let claim = won(store.claim(&attempt(m, "boot-1", "hash-1"), t(2)).unwrap());
    let run = claim.run.id;
    for s in claim.stages.iter().filter(|s| s.ordinal < pass_until) {
        if s.state == StageState::Pending {
            store.start_stage(run, s.ordinal, t(3), t(3)).unwrap();
            assert_eq!(
                finish(store, run, s.ordinal, StageOutcome::Passed),
                StageState::Passed
            );
        }
    }
}

fn finish(store: &dyn Store, run: i64, ordinal: u32, outcome: StageOutcome) -> StageState {
    let report = StageFinish {
        outcome,
        absent: false,
        reason: None,
        at: None,
        summary: None,
        sub_steps: Vec::new(),
    };
    store
        .finish_stage(run, ordinal, &report, None, t(4))
        .unwrap()
        .state
}

fn hosts_are_unique_by_name(store: &dyn Store) {
    host_with_run(store, "a", mac(1));
    let again = store.create_host(
        &NewHost {
            name: "a".into(),
            mac: mac(2),
            wol: None,
            expected_spec_yaml: String::new(),
            notes: String::new(),
        },
        t(5),
    );
    assert!(
        matches!(again, Err(StoreError::Conflict(_))),
        "a second host named a: {again:?}"
    );
    assert_eq!(store.list_hosts().unwrap().len(), 1);
    assert!(matches!(store.host("b"), Err(StoreError::NotFound(_))));
}

fn a_claim_hands_out_the_queued_run_once_and_a_live_run_to_nobody(store: &dyn Store) {
    assert!(matches!(
        store.claim(&attempt(mac(9), "boot-x", "h"), t(2)).unwrap(),
        ClaimOutcome::NothingQueued
    ));
    let (_, run) = host_with_run(store, "c", mac(3));
    let first = won(store
        .claim(&attempt(mac(3), "boot-1", "hash-1"), t(2))
        .unwrap());
    assert_eq!(
        (first.run.id, first.kind, first.resume_from),
        (run, ClaimKind::First, 0)
    );
    assert_eq!(first.run.state, RunState::Running);
    assert_eq!(first.next_batch_seq, 1);
    assert_eq!(first.stages.len(), DEFAULT_STAGE_ORDER.len());
    // While the agent heartbeats, nobody takes the run: not another boot,
    // not the same boot id (anyone can send it), and the token stays.
    let beat = Profile::Quick.definition().heartbeat_interval_s as i64;
    for boot in ["evil", "boot-1"] {
        let refused = store
            .claim(&attempt(mac(3), boot, "hash-evil"), t(2 + 3 * beat - 1))
            .unwrap();
        assert!(
            matches!(&refused, ClaimOutcome::Refused { run_id, message, why: ClaimRefusal::Conflict } if *run_id == run && message.contains("192.0.2.7")),
            "{boot}: {refused:?}"
        );
        assert_eq!(store.agent_token_hash(run).unwrap(), "hash-1");
    }
    let refusals = store
        .run_detail(run)
        .unwrap()
        .events
        .iter()
        .filter(|e| e.kind == EventKind::ClaimRefused)
        .count();
    assert_eq!(refusals, 2);
    // After three silent intervals the same boot takes it back.
    let again = won(store
        .claim(&attempt(mac(3), "boot-1", "hash-2"), t(2 + 3 * beat))
        .unwrap());
    assert_eq!(again.kind, ClaimKind::SameBoot);
    assert_eq!(store.agent_token_hash(run).unwrap(), "hash-2");
}

fn batches_are_numbered_resends_acknowledged_gaps_refused(store: &dyn Store) {
    let (_, run) = host_with_run(store, "d", mac(4));
    claimed(store, mac(4), 0);
    store.start_stage(run, 0, t(3), t(3)).unwrap();
    let batch = |seq: u64, n: usize| MeasurementBatch {
        seq,
        samples: (0..n)
            .map(|i| sample(Kind::Temp, &format!("coretemp/Core {i}"), 40.0, Some(0)))
            .collect(),
    };
    let (ack, _) = store.append_batch(run, &batch(1, 3), t(5)).unwrap();
    assert_eq!((ack.seq, ack.stored, ack.duplicate), (1, 3, false));
    let (resent, _) = store.append_batch(run, &batch(1, 3), t(6)).unwrap();
    assert!(resent.duplicate, "{resent:?}");
    let gap = store.append_batch(run, &batch(3, 1), t(6));
    assert!(
        matches!(
            gap,
            Err(StoreError::BatchGap {
                got: 3,
                expected: 2
            })
        ),
        "{gap:?}"
    );
    let series = store.series(run).unwrap();
    assert_eq!(series.len(), 3, "{series:?}");
    assert_eq!(
        series.iter().map(|s| s.count).sum::<i64>(),
        3,
        "a resend stored again"
    );
}

/// One group commit of several runs' batches: a refused batch in the
/// middle (a gap; an unknown stage) changes nothing, its neighbours — before
/// and after it, of its own run too — are stored and acknowledged.
fn a_group_of_batches_is_judged_batch_by_batch(store: &dyn Store) {
    let (_, a) = host_with_run(store, "ga", mac(8));
    claimed(store, mac(8), 0);
    let (_, b) = host_with_run(store, "gb", mac(9));
    claimed(store, mac(9), 0);
    for run in [a, b] {
        store.start_stage(run, 0, t(3), t(3)).unwrap();
    }
    let batch = |seq: u64, key: &str, stage: u32| MeasurementBatch {
        seq,
        samples: (0..4)
            .map(|_| sample(Kind::Temp, key, 40.0, Some(stage)))
            .collect(),
    };
    let (a1, a2, bad_stage, b_gap, b1) = (
        batch(1, "coretemp/Core 0", 0),
        batch(2, "coretemp/Core 1", 0),
        batch(2, "coretemp/Core 9", 99),
        batch(5, "coretemp/Core 9", 0),
        batch(1, "coretemp/Core 2", 0),
    );
    let group = [(a, &a1), (b, &b_gap), (a, &bad_stage), (a, &a2), (b, &b1)];
    let answers = store.append_batches(&group, t(5)).unwrap();
    assert_eq!(answers.len(), group.len());
    assert!(
        matches!(
            answers[1],
            Err(StoreError::BatchGap {
                got: 5,
                expected: 1
            })
        ),
        "{:?}",
        answers[1]
    );
    assert!(
        matches!(answers[2], Err(StoreError::Invalid(_))),
        "{:?}",
        answers[2]
    );
    for i in [0, 3, 4] {
        let (ack, _) = answers[i].as_ref().expect("a neighbour was refused");
        assert_eq!((ack.stored, ack.duplicate), (4, false), "batch {i}");
    }
    let keys = |run| {
        let mut k: Vec<(String, i64)> = store
            .series(run)
            .unwrap()
            .into_iter()
            .map(|s| (s.key, s.count))
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(a),
        [("coretemp/Core 0".into(), 4), ("coretemp/Core 1".into(), 4)]
    );
    assert_eq!(keys(b), [("coretemp/Core 2".into(), 4)]);
    // What was refused took no number: run a's next is 3, run b's 2.
    let (ack, _) = store
        .append_batch(a, &batch(3, "coretemp/Core 3", 0), t(6))
        .unwrap();
    assert!(!ack.duplicate);
    let gap = store.append_batch(b, &batch(3, "coretemp/Core 3", 0), t(6));
    assert!(
        matches!(
            gap,
            Err(StoreError::BatchGap {
                got: 3,
                expected: 2
            })
        ),
        "{gap:?}"
    );
}

fn a_critical_breach_aborts_live_and_fails_the_stage(store: &dyn Store) {
    let (_, run) = host_with_run(store, "e", mac(5));
    let cpu = Stage::CpuStress as u32;
    claimed(store, mac(5), cpu);
    store.start_stage(run, cpu, t(10), t(10)).unwrap();
    let hot = MeasurementBatch {
        seq: 1,
        samples: vec![sample(Kind::Temp, "coretemp/Core 0", 101.0, Some(cpu))],
    };
    let (ack, facts) = store.append_batch(run, &hot, t(11)).unwrap();
    assert!(
        matches!(ack.directive, Directive::Continue),
        "the store answers facts; the API asks the gate"
    );
    assert!(
        matches!(
            gate::directive_for(&facts, Power::None, std::time::Duration::from_secs(60)),
            Directive::AbortStage { .. }
        ),
        "{facts:?}"
    );
    assert_eq!(
        finish(store, run, cpu, StageOutcome::Passed),
        StageState::Failed
    );
    let r = store.run(run).unwrap();
    assert_eq!(r.state, RunState::FailedHolding);
    assert_eq!(r.failed_stage, Some(Stage::CpuStress));
    let kinds: Vec<String> = store
        .events(run)
        .unwrap()
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "breach"), "{kinds:?}");
}

fn every_stage_passed_is_a_pass(store: &dyn Store) {
    let (_, run) = host_with_run(store, "f", mac(6));
    claimed(store, mac(6), DEFAULT_STAGE_ORDER.len() as u32);
    let r = store.run(run).unwrap();
    assert_eq!(
        (r.state, r.result),
        (RunState::Passed, Some(RunResult::Pass))
    );
    let detail = store.run_detail(run).unwrap();
    assert!(detail
        .stages
        .iter()
        .all(|s| matches!(s.state, StageState::Passed | StageState::Skipped)));
}

fn a_silent_agent_is_a_failure_and_a_refused_transition_changes_nothing(store: &dyn Store) {
    let (_, run) = host_with_run(store, "g", mac(7));
    claimed(store, mac(7), 2);
    store.start_stage(run, 2, t(20), t(20)).unwrap();
    let before = store.row_counts().unwrap();
    let refused = store.operator_transition(run, RunEvent::Cancel, None, t(21));
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.row_counts().unwrap(), before, "a refusal wrote");
    let aborted = store.expire_silent_agents(t(1000), t(1001)).unwrap();
    assert_eq!(aborted, [run]);
    let r = store.run(run).unwrap();
    assert_eq!(
        (r.state, r.result),
        (RunState::Aborted, Some(RunResult::Fail))
    );
    assert_eq!(r.failed_stage, Stage::from_ordinal(2));
    assert!(store
        .expire_silent_agents(t(2000), t(2001))
        .unwrap()
        .is_empty());
}
