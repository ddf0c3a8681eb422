//! Holding a failed host for debugging: install the run's public key in the
//! authorized-keys file, make sure an SSH server listens on the hold port
//! (starting OpenSSH's sshd, or dropbear for root's own file, with our own
//! config when nothing listens there, through `exec`'s daemon), and undo
//! both on release.
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
}

impl HoldOptions {
    pub fn root_default(dir: PathBuf) -> Self {
        Self {
            authorized_keys: "/root/.ssh/authorized_keys".into(),
            ssh_port: 22,
            dir,
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
}

/// A hold in place: undone by [`Held::end`].
pub struct Held {
    authorized_keys: PathBuf,
    marker: String,
    server: Option<Daemon>,
    pub ssh_port: Option<u16>,
    /// Why there is no SSH server, when there is none.
    pub ssh_error: Option<String>,
}

/// The comment that marks our line in the authorized-keys file.
fn marker(run_id: i64) -> String {
    format!("vetting-hold-run-{run_id}")
}

/// Appends `public_key` (marked with the run) unless it is already there.
fn install_key(path: &Path, public_key: &str, marker: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
    }
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    if existing.lines().any(|l| l.ends_with(marker)) {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let sep = if existing.is_empty() || existing.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let key = public_key.trim();
    // The coordinator's key may carry its own comment; ours goes last.
    writeln!(f, "{sep}{key} {marker}")?;
    f.sync_all()
}

/// Removes exactly our line(s) from the file, keeping every other byte.
fn remove_key(path: &Path, marker: &str) -> std::io::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .split_inclusive('\n')
        .filter(|l| !l.trim_end().ends_with(marker))
        .collect();
    let out = kept.concat();
    if out != text {
        let tmp = path.with_extension("vetting-tmp");
        std::fs::write(&tmp, out)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(())
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
    install_key(&opts.authorized_keys, public_key, &marker).map_err(|source| HoldError::Key {
        path: opts.authorized_keys.display().to_string(),
        source,
    })?;
    let mut held = Held {
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
        if let Err(e) = remove_key(&self.authorized_keys, &self.marker) {
            tracing::error!(error = %e, "could not remove the hold key from {}", self.authorized_keys.display());
        }
        if let Some(server) = self.server.take() {
            server.stop(Duration::from_secs(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_key_line_is_added_once_and_removed_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/authorized_keys");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "ssh-ed25519 AAAAother admin@site").unwrap();
        install_key(&path, "ssh-ed25519 AAAAhold vetting-run-7\n", &marker(7)).unwrap();
        install_key(&path, "ssh-ed25519 AAAAhold vetting-run-7", &marker(7)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        remove_key(&path, &marker(7)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ssh-ed25519 AAAAother admin@site\n"
        );
    }
}
