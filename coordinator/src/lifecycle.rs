//! Run lifecycle work that surrounds the store's transactions: creating a
//! run (freezing thresholds, Wake-on-LAN), issuing hold keys, computing the
//! SpecValidate and Firmware diffs from uploaded data (the gate judges them).
//!
//! Everything slow (sockets, files, key generation, hashing, YAML) happens
//! here, outside any transaction, and the results go to the store.

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use common::event::{EventKind, EventLevel};
use common::profile::Profile;
use common::spec::{self, DiffSeverity, HostSpec, SpecDiff};
use common::stage::Stage;
use common::threshold;
use common::time::Timestamp;
use common::wire::{Host, Run, RunCreate};

use crate::config::Config;
use crate::store::{ComputedDiffs, NewArtifact, NewEvent, NewRun, RunFacts, Store, StoreError};
use crate::wol;

/// How recently a host-mode agent must have been seen for the host to count
/// as in production (only non-destructive runs then).
pub const HOST_MODE_RECENT_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

/// The host's spec, parsed. A stored spec was checked when it was stored.
pub fn host_spec(host: &Host) -> Result<HostSpec, LifecycleError> {
    HostSpec::parse(&host.expected_spec_yaml)
        .map_err(|e| LifecycleError::Invalid(format!("host {}: stored {e}", host.name)))
}

/// Creates a queued run: checks the request, freezes profile thresholds plus
/// the host's overrides, then sends the Wake-on-LAN packet (after commit).
pub fn create_run(
    store: &dyn Store,
    req: &RunCreate,
    now: Timestamp,
) -> Result<Run, LifecycleError> {
    if req.non_destructive && req.overrides.wipe {
        return Err(LifecycleError::Invalid(
            "override wipe=true contradicts --non-destructive: a non-destructive run never writes to disks".into(),
        ));
    }
    let host = store.host(&req.host)?;
    if !req.non_destructive {
        if let Some(seen) = host.last_seen_at {
            if now.unix_millis() - seen.unix_millis() < HOST_MODE_RECENT_MS {
                return Err(LifecycleError::Conflict(format!(
                    "host {} has a host-mode agent seen at {seen}: it is in use, so only non-destructive runs are allowed (add --non-destructive)",
                    host.name
                )));
            }
        }
    }
    let spec = host_spec(&host)?;
    let profile_rules = Profile::definition(req.profile).default_thresholds();
    let thresholds = threshold::merge(&profile_rules, &spec.thresholds);
    let run = store.create_run(
        &NewRun {
            host_id: host.id,
            profile: req.profile,
            non_destructive: req.non_destructive,
            overrides: req.overrides.clone(),
            require_all_disks: req.require_all_disks,
            thresholds,
        },
        now,
    )?;
    wake(store, &host, run.id, now)?;
    Ok(run)
}

fn wake(store: &dyn Store, host: &Host, run_id: i64, now: Timestamp) -> Result<(), LifecycleError> {
    let (level, kind, message) = if host.wol_broadcast_ip.is_empty() {
        (EventLevel::Info, EventKind::WolSent, format!("no Wake-on-LAN address configured for {}; no packet sent (power the host on by other means)", host.name))
    } else {
        match (
            host.mac.parse(),
            host.wol_broadcast_ip.parse::<std::net::IpAddr>(),
        ) {
            (Ok(mac), Ok(ip)) => {
                let target = SocketAddr::new(ip, host.wol_port);
                match wol::send(mac, target) {
                    Ok(()) => (
                        EventLevel::Info,
                        EventKind::WolSent,
                        format!("Wake-on-LAN magic packet for {} sent to {target}", host.mac),
                    ),
                    Err(e) => (
                        EventLevel::Warn,
                        EventKind::WolFailed,
                        format!("Wake-on-LAN to {target} failed: {e}"),
                    ),
                }
            }
            _ => (
                EventLevel::Warn,
                EventKind::WolFailed,
                format!(
                    "Wake-on-LAN address {:?} or MAC {:?} unusable",
                    host.wol_broadcast_ip, host.mac
                ),
            ),
        }
    };
    let event = NewEvent {
        run_id: Some(run_id),
        host_id: Some(host.id),
        level,
        kind,
        message,
        data: None,
    };
    store.record_event(&event, now)?;
    Ok(())
}

/// Diffs the coordinator computes for a stage it judges from data:
/// SpecValidate from the uploaded inventory, Firmware from the snapshots.
pub fn computed_diffs(
    store: &dyn Store,
    run: &Run,
    stage: Stage,
) -> Result<Option<ComputedDiffs>, LifecycleError> {
    let diffs = match stage {
        Stage::SpecValidate => {
            let host = store.host(&run.host)?;
            let spec = host_spec(&host)?;
            match store.latest_artifact(run.id, "inventory")? {
                None => vec![missing("inventory", "an uploaded inventory")],
                Some(a) => match std::fs::read(&a.path) {
                    Err(e) => vec![SpecDiff {
                        field: "inventory".into(),
                        expected: Some("a readable inventory artifact".into()),
                        actual: Some(format!("{}: {e}", a.path)),
                        severity: DiffSeverity::Critical,
                        ignored: false,
                    }],
                    Ok(bytes) => match serde_json::from_slice(&bytes) {
                        Ok(inv) => spec::diff_inventory(&spec, &inv),
                        Err(e) => vec![SpecDiff {
                            field: "inventory".into(),
                            expected: Some("inventory JSON".into()),
                            actual: Some(format!("unparseable: {e}")),
                            severity: DiffSeverity::Critical,
                            ignored: false,
                        }],
                    },
                },
            }
        }
        Stage::Firmware => {
            let host = store.host(&run.host)?;
            let spec = host_spec(&host)?;
            spec::diff_firmware(&spec, &store.firmware(run.id)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(ComputedDiffs(diffs)))
}

fn missing(field: &str, what: &str) -> SpecDiff {
    SpecDiff {
        field: field.into(),
        expected: Some(what.into()),
        actual: None,
        severity: DiffSeverity::Critical,
        ignored: false,
    }
}

/// Digests of a file's content.
pub struct Digests {
    pub sha256: String,
    pub blake3: String,
    pub size: u64,
}

pub fn digest_bytes(bytes: &[u8]) -> Digests {
    use sha2::Digest;
    Digests {
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        blake3: blake3::hash(bytes).to_hex().to_string(),
        size: bytes.len() as u64,
    }
}

/// Writes `bytes` content-addressed under `dir` (`<blake3>`), mode `mode`.
/// Held while an artifact file and its row are written, and while the
/// janitor marks and deletes files, so a file is never deleted under a row
/// that is about to reference it. One coordinator process per data dir.
pub fn artifact_files() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn write_content_addressed(
    dir: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(std::path::PathBuf, Digests), LifecycleError> {
    use std::io::Write;
    let d = digest_bytes(bytes);
    let path = dir.join(&d.blake3);
    let io = |context: String| move |source| LifecycleError::Io { context, source };
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    if !path.exists() {
        let tmp = dir.join(format!(".{}.tmp", d.blake3));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(format!("creating {}", tmp.display())))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("renaming to {}", path.display())))?;
    }
    Ok((path, d))
}

/// Makes sure a held run has its ephemeral ed25519 key pair: the private key
/// on disk (0600, artifact `hold_key`), the public key for the `hold`
/// directive.
pub fn ensure_hold_key(
    store: &dyn Store,
    config: &Config,
    facts: RunFacts,
    now: Timestamp,
) -> Result<RunFacts, LifecycleError> {
    use common::run_state::RunState;
    if facts.state != RunState::FailedHolding || facts.hold_public_key.is_some() {
        return Ok(facts);
    }
    let mut key =
        ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(|e| LifecycleError::Invalid(format!("generating hold key: {e}")))?;
    key.set_comment(format!("vetting-hold-run-{}", facts.run_id));
    let private = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| LifecycleError::Invalid(format!("encoding hold key: {e}")))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| LifecycleError::Invalid(format!("encoding hold key: {e}")))?;
    let _files = artifact_files();
    let (path, d) = write_content_addressed(&config.artifacts_dir(), private.as_bytes(), 0o600)?;
    let artifact = NewArtifact {
        run_id: facts.run_id,
        stage_ordinal: None,
        kind: "hold_key".into(),
        path: path.display().to_string(),
        sha256: d.sha256,
        blake3: d.blake3,
        size_bytes: d.size as i64,
    };
    let facts = match store.set_hold_key(facts.run_id, &public, &artifact, now) {
        Ok(f) => f,
        Err(
            crate::store::StoreError::Conflict(_) | crate::store::StoreError::RunFinished { .. },
        ) => {
            // Released while the key was being made: no hold, no key.
            let _ = std::fs::remove_file(&path);
            return Ok(store.facts(facts.run_id)?);
        }
        Err(e) => return Err(e.into()),
    };
    if facts.hold_public_key.as_deref() != Some(public.as_str()) {
        // A concurrent request issued the key first; ours was never recorded.
        let _ = std::fs::remove_file(&path);
    }
    Ok(facts)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::NewHost;
    use common::wire::{Overrides, StageFinish, StageOutcome};

    /// A run failed at `now` whose hold key was never made.
    pub(crate) fn failed_run(store: &SqliteStore, now: Timestamp) -> (i64, RunFacts) {
        let mac = "52:54:00:00:00:42".parse().unwrap();
        let host = NewHost {
            name: "h".into(),
            mac,
            wol: None,
            expected_spec_yaml: String::new(),
            notes: String::new(),
        };
        store.create_host(&host, now).unwrap();
        let req = RunCreate {
            host: "h".into(),
            profile: Profile::Quick,
            non_destructive: true,
            overrides: Overrides::default(),
            require_all_disks: false,
        };
        let run = create_run(store, &req, now).unwrap();
        let attempt = crate::store::ClaimAttempt::new(vec![mac], "b", "x", "test");
        let claimed = store.claim(&attempt, now).unwrap();
        assert!(matches!(claimed, crate::store::ClaimOutcome::Claimed(_)));
        store.start_stage(run.id, 0, now, now).unwrap();
        let failed = StageFinish {
            outcome: StageOutcome::Failed,
            absent: false,
            reason: Some("test".into()),
            at: None,
            summary: None,
            sub_steps: vec![],
        };
        let stale = store
            .finish_stage(run.id, 0, &failed, None, now)
            .unwrap()
            .facts;
        assert_eq!(stale.state, common::run_state::RunState::FailedHolding);
        assert!(stale.hold_public_key.is_none());
        (run.id, stale)
    }

    #[test]
    fn a_hold_times_out_from_the_failure_even_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path());
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let store = SqliteStore::open(&config.db_path(), now).unwrap();
        // The coordinator died before making the key, or the node did
        // before asking for it: the hold must still end.
        let (run_id, _) = failed_run(&store, now);
        let later = now.plus_millis(61_000);
        assert_eq!(
            store.expire_holds(now.plus_millis(60_000), later).unwrap(),
            [run_id]
        );
        assert_eq!(
            store.run(run_id).unwrap().state,
            common::run_state::RunState::Failed
        );
    }

    #[test]
    fn racing_hold_key_requests_leave_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path());
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let store = SqliteStore::open(&config.db_path(), now).unwrap();
        let (run_id, stale) = failed_run(&store, now);
        // Two requests both saw the run without a key.
        let a = ensure_hold_key(&store, &config, stale.clone(), now).unwrap();
        let b = ensure_hold_key(&store, &config, stale, now).unwrap();
        assert_eq!(a.hold_public_key, b.hold_public_key, "the first key stands");
        let files: Vec<_> = std::fs::read_dir(config.artifacts_dir())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(files.len(), 1, "the losing key file is removed: {files:?}");
        let recorded = store.latest_artifact(run_id, "hold_key").unwrap().unwrap();
        assert_eq!(std::path::Path::new(&recorded.path), files[0].path());
    }
}
