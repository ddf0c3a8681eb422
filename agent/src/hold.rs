//! Holding a failed host for debugging: install the run's public key in the
//! authorized-keys file, make sure an SSH server listens on the hold port
//! (starting OpenSSH's sshd, or dropbear for root's own file, with our own
//! config when nothing listens there, through `exec`'s daemon), and undo
//! both on release.
//!
//! The hold ends at its deadline even when the coordinator is gone, and
//! when its owner is dropped (a SIGTERM in host mode); stale hold keys of
//! an earlier boot are removed at start. The key must be exactly one
//! `ssh-ed25519` key without options; the file is replaced atomically
//! (a temp file in the same directory with the original's owner and mode,
//! synced, renamed, the directory synced).
//!
//! Never: touch another line of the authorized-keys file, stop an SSH server
//! it did not start, or enable password logins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::exec::{self, Daemon, ToolCommand};

#[derive(Debug, Clone)]
pub struct HoldOptions {
    /// The authorized-keys file the key goes into (default root's).
    pub authorized_keys: PathBuf,
    pub ssh_port: u16,
    /// Where our sshd's config, host key and pid file live.
    pub dir: PathBuf,
    /// After a hold's deadline: how long to wait for the coordinator's
    /// verdict, and then again for it to take the sample count, before the
    /// hold timeout's power-off is carried out without it.
    pub grace: std::time::Duration,
}

impl HoldOptions {
    pub fn root_default(dir: PathBuf) -> Self {
        Self {
            authorized_keys: "/root/.ssh/authorized_keys".into(),
            ssh_port: 22,
            dir,
            grace: std::time::Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("installing the hold key in {path}: {source}")]
    Key {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Server(String),
    #[error("the hold key is refused: {0}")]
    BadKey(String),
}

/// A hold in place: undone by [`Held::end`], or when dropped.
pub struct Held {
    ended: bool,
    authorized_keys: PathBuf,
    marker: String,
    server: Option<Daemon>,
    pub ssh_port: Option<u16>,
    /// Why there is no SSH server, when there is none.
    pub ssh_error: Option<String>,
}

/// What every hold key's marker starts with.
const MARKER_PREFIX: &str = "vetting-hold-";

/// The comment that marks our line in the authorized-keys file.
fn marker(run_id: i64) -> String {
    format!("{MARKER_PREFIX}run-{run_id}")
}

/// The key line to install: exactly one `ssh-ed25519` key, no options, no
/// second line; its own comment is dropped (ours marks the line).
pub fn check_public_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    if key.contains(['\n', '\r', '\0']) {
        return Err("more than one line".into());
    }
    let mut words = key.split_whitespace();
    let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
        return Err("not a public key line".into());
    };
    if kind != "ssh-ed25519" {
        return Err(format!(
            "{:?} is not ssh-ed25519 (options such as command= are refused)",
            kind.chars().take(40).collect::<String>()
        ));
    }
    // base64 of: string "ssh-ed25519" + string of 32 bytes = 51 bytes.
    let b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if blob.len() != 68 || !blob.starts_with("AAAAC3NzaC1lZDI1NTE5") || !blob.chars().all(b64) {
        return Err("the ssh-ed25519 key data is malformed".into());
    }
    Ok(format!("{kind} {blob}"))
}

/// Replaces `path` with `text`: a temp file in the same directory with the
/// original's owner and mode (0600 for a new file), synced, renamed over
/// it, the directory synced.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    let old = std::fs::metadata(path).ok();
    let mode = old.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0o600);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("authorized_keys");
    let tmp = dir.join(format!(".{name}.vetting-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        if let Some(m) = &old {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
        }
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Adds `key` (marked with the run) unless our line is already there.
fn install_key(path: &Path, key: &str, marker: &str) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
    }
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if text.lines().any(|l| l.ends_with(marker)) {
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{key} {marker}\n"));
    replace_file(path, &text)
}

/// Removes every line whose last word `matches`, keeping every other byte;
/// returns how many went.
fn remove_lines(path: &Path, matches: impl Fn(&str) -> bool) -> std::io::Result<usize> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(0);
    };
    let mut removed = 0;
    let kept: String = text
        .split_inclusive('\n')
        .filter(|l| {
            let ours = l.split_whitespace().last().is_some_and(&matches);
            removed += ours as usize;
            !ours
        })
        .collect();
    if removed > 0 {
        replace_file(path, &kept)?;
    }
    Ok(removed)
}

fn remove_key(path: &Path, marker: &str) -> std::io::Result<()> {
    remove_lines(path, |w| w == marker).map(drop)
}

/// Removes hold keys an earlier boot of this agent left (a crash, a power
/// cut during a hold); returns how many.
pub fn remove_stale_keys(path: &Path) -> std::io::Result<usize> {
    remove_lines(path, |w| w.starts_with(MARKER_PREFIX))
}

/// Whether an SSH server answers on `port` (its banner starts with `SSH-`).
async fn ssh_listening(port: u16) -> Result<bool, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
    else {
        return Ok(false);
    };
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) if &buf == b"SSH-" => Ok(true),
        _ => Err(format!(
            "port {port} is taken by something that is not an SSH server"
        )),
    }
}

fn find(program: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Runs ssh-keygen to make our sshd's host key.
async fn make_host_key(keygen: &Path, host_key: &Path) -> Result<(), String> {
    let cmd = ToolCommand::new("ssh-keygen", "openssh-client", Duration::from_secs(30))
        .at(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(host_key);
    let out = exec::run(&cmd, &CancellationToken::new(), String::new)
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ssh-keygen failed ({}): {}",
            out.status, out.stderr_tail
        ))
    }
}

/// Starts OpenSSH's sshd with a config of our own (key-only root login,
/// our authorized-keys file); dropbear when only it is installed and the
/// key went into root's own file.
async fn start_server(opts: &HoldOptions) -> Result<Daemon, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    // The daemon has no deadline; this one is only in messages.
    let forever = Duration::MAX;
    let cmd = if let Some(sshd) = find("sshd", &["/usr/sbin/sshd"]) {
        let host_key = opts.dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            let keygen = find("ssh-keygen", &["/usr/bin/ssh-keygen"])
                .ok_or("sshd is installed but ssh-keygen is not (package openssh-client)")?;
            make_host_key(&keygen, &host_key).await?;
        }
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        let keys = std::path::absolute(&opts.authorized_keys)
            .map_err(|e| format!("{}: {e}", opts.authorized_keys.display()))?;
        let config = opts.dir.join("sshd_config");
        let text = format!(
            "Port {port}\nHostKey {hk}\nAuthorizedKeysFile {keys}\nPidFile {pid}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
            port = opts.ssh_port,
            hk = host_key.display(),
            keys = keys.display(),
            pid = opts.dir.join("sshd.pid").display(),
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        ToolCommand::new("sshd", "openssh-server", forever)
            .at(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
    } else if let Some(dropbear) = find("dropbear", &["/usr/sbin/dropbear"]) {
        if opts.authorized_keys != Path::new("/root/.ssh/authorized_keys") {
            return Err(format!(
                "only dropbear is installed, and it reads root's authorized_keys, not {}; install openssh-server",
                opts.authorized_keys.display()
            ));
        }
        ToolCommand::new("dropbear", "dropbear", forever)
            .at(dropbear)
            .args(["-F", "-E", "-R", "-s", "-p", &opts.ssh_port.to_string()])
    } else {
        return Err("no SSH server installed (packages openssh-server or dropbear)".into());
    };
    let mut daemon =
        exec::spawn_daemon(&cmd).map_err(|e| format!("starting the SSH server: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], opts.ssh_port));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((status, output)) = daemon.exited() {
            return Err(format!("the SSH server exited ({status}): {output}"));
        }
        let attempt = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        );
        if let Ok(Ok(_)) = attempt.await {
            return Ok(daemon);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the SSH server did not listen on port {} within 15 s: {}",
                opts.ssh_port,
                daemon.output_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts the hold in place. A key that cannot be installed is an error; a
/// server that cannot be started is reported in [`Held::ssh_error`] (the
/// host stays held either way).
pub async fn begin(opts: &HoldOptions, run_id: i64, public_key: &str) -> Result<Held, HoldError> {
    let marker = marker(run_id);
    let key = check_public_key(public_key).map_err(HoldError::BadKey)?;
    install_key(&opts.authorized_keys, &key, &marker).map_err(|source| HoldError::Key {
        path: opts.authorized_keys.display().to_string(),
        source,
    })?;
    let mut held = Held {
        ended: false,
        authorized_keys: opts.authorized_keys.clone(),
        marker,
        server: None,
        ssh_port: None,
        ssh_error: None,
    };
    match ssh_listening(opts.ssh_port).await {
        Ok(true) => held.ssh_port = Some(opts.ssh_port),
        Err(e) => held.ssh_error = Some(e),
        Ok(false) => match start_server(opts).await {
            Ok(child) => {
                tracing::info!(port = opts.ssh_port, "started an SSH server for the hold");
                held.server = Some(child);
                held.ssh_port = Some(opts.ssh_port);
            }
            Err(e) => held.ssh_error = Some(e),
        },
    }
    Ok(held)
}

impl Held {
    /// Removes the key and stops the SSH server this hold started.
    pub async fn end(mut self) {
        self.ended = true;
        if let Err(e) = remove_key(&self.authorized_keys, &self.marker) {
            tracing::error!(error = %e, "could not remove the hold key from {}", self.authorized_keys.display());
        }
        if let Some(server) = self.server.take() {
            server.stop(Duration::from_secs(5)).await;
        }
    }
}

impl Drop for Held {
    /// A hold dropped without [`Held::end`] (its task cancelled, a SIGTERM
    /// in host mode) is undone all the same; the server's daemon kills its
    /// process group when dropped.
    fn drop(&mut self) {
        if !self.ended {
            if let Err(e) = remove_key(&self.authorized_keys, &self.marker) {
                tracing::error!(error = %e, "could not remove the hold key from {}", self.authorized_keys.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f vetting-run-7";

    #[test]
    fn our_key_line_is_added_once_and_removed_alone_keeping_owner_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/authorized_keys");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "ssh-ed25519 AAAAother admin@site").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let key = check_public_key(&format!("{KEY}\n")).unwrap();
        install_key(&path, &key, &marker(7)).unwrap();
        install_key(&path, &key, &marker(7)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.ends_with(" vetting-hold-run-7\n"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the file's mode is kept");
        remove_key(&path, &marker(7)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ssh-ed25519 AAAAother admin@site\n"
        );
        // No temp file is left beside it.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn only_one_plain_ed25519_key_is_accepted() {
        assert!(check_public_key(KEY).is_ok());
        let blob = KEY.split_whitespace().nth(1).unwrap();
        for bad in [
            format!("command=\"/bin/sh\" ssh-ed25519 {blob}"),
            format!("no-pty ssh-ed25519 {blob}"),
            format!("ssh-ed25519 {blob}\nssh-ed25519 {blob}"),
            format!("ssh-ed25519 {blob}\rcommand=x"),
            format!("ssh-rsa {blob}"),
            "ssh-ed25519 AAAA".to_string(),
            String::new(),
        ] {
            assert!(check_public_key(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stale_hold_keys_of_any_run_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        std::fs::write(
            &path,
            "ssh-ed25519 AAAAa admin\nssh-ed25519 AAAAb vetting-hold-run-3\nssh-ed25519 AAAAc vetting-hold-run-9\n",
        )
        .unwrap();
        assert_eq!(remove_stale_keys(&path).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ssh-ed25519 AAAAa admin\n"
        );
        assert_eq!(remove_stale_keys(&dir.path().join("none")).unwrap(), 0);
    }
}
