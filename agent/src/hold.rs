//! Holding a failed host for debugging: install the run's public key in the
//! authorized-keys file, make sure an SSH server listens on the hold port
//! (starting OpenSSH's sshd, or dropbear for root's own file, with our own
//! config when nothing listens there), and undo both on release.
//!
//! Never: touch another line of the authorized-keys file, stop an SSH server
//! it did not start, or enable password logins.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

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
    server: Option<Child>,
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

async fn run_quiet(program: &Path, args: &[&str]) -> Result<(), String> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .map_err(|_| format!("{} timed out", program.display()))?
    .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Starts OpenSSH's sshd with a config of our own (key-only root login,
/// our authorized-keys file); dropbear when only it is installed and the
/// key went into root's own file.
async fn start_server(opts: &HoldOptions) -> Result<Child, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let mut cmd = if let Some(sshd) = find("sshd", &["/usr/sbin/sshd"]) {
        let host_key = opts.dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            let keygen = find("ssh-keygen", &["/usr/bin/ssh-keygen"])
                .ok_or("sshd is installed but ssh-keygen is not (package openssh-client)")?;
            let hk = host_key.to_string_lossy().into_owned();
            run_quiet(&keygen, &["-q", "-t", "ed25519", "-N", "", "-f", &hk]).await?;
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
        let mut c = Command::new(sshd);
        c.arg("-D").arg("-e").arg("-f").arg(&config);
        c
    } else if let Some(dropbear) = find("dropbear", &["/usr/sbin/dropbear"]) {
        if opts.authorized_keys != Path::new("/root/.ssh/authorized_keys") {
            return Err(format!(
                "only dropbear is installed, and it reads root's authorized_keys, not {}; install openssh-server",
                opts.authorized_keys.display()
            ));
        }
        let mut c = Command::new(dropbear);
        c.args(["-F", "-E", "-R", "-s", "-p", &opts.ssh_port.to_string()]);
        c
    } else {
        return Err("no SSH server installed (packages openssh-server or dropbear)".into());
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the SSH server: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            return Err(format!("the SSH server exited ({status}): {}", err.trim()));
        }
        if TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], opts.ssh_port)),
            Duration::from_millis(200),
        )
        .is_ok()
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the SSH server did not listen on port {} within 15 s",
                opts.ssh_port
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
        if let Some(mut child) = self.server.take() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
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
